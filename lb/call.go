package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The request loop. Every request and every connection that the proxy
// forwards, over HTTP/1.x, h2c or TCP, goes through forward: it picks an
// endpoint, accounts for it, tries it, ejects it when it fails, and retries
// on another endpoint when the rules below allow. The transports differ only
// in how one try is made (an exchange); the rules are written once here.

// exchange is one transport's side of a call: how to send the request to
// one endpoint, and what the request allows after a failed try.
//
// Implementations are used by one goroutine at a time, the one running the
// call's request loop. try must honour the deadline (zero: none) and must
// return a *dialError when it failed to connect: nothing of the request was
// sent, so any request may go elsewhere.
type exchange interface {
	// try sends the request to e and returns the response status (0 for
	// a TCP connection) or why it failed.
	try(e *endpoint, deadline time.Time) (status int, err error)
	// bodyTouched reports whether any of the request body has been read,
	// so that a try that failed even before sending cannot be repeated.
	bodyTouched() bool
	// replayable reports whether the whole request can be sent again: it
	// has no body, or the body is held in memory.
	replayable() bool
	// discard drops the answer of a successful try that is retried on
	// another instance (a route's RetryOnStatusCodes).
	discard()
}

// call is the state of one request or connection in the request loop.
// Calls are pooled: the steady-state HTTP/1 path allocates nothing.
type call struct {
	p    *Proxy
	pl   *pool
	snap *snapshot
	// service and tag are as the request named them (the pool of a name the
	// view does not know has none); they may view request buffers.
	service, tag string

	began    time.Time
	deadline time.Time     // the whole call's, retries included; zero: none
	inTries  time.Duration // spent in tries, for the proxy's overhead
	// key is the hash policy's key for this request ("" for other policies).
	key string
	// idempotent requests may be tried again after they may have been
	// delivered (a reset, a per-try timeout).
	idempotent bool

	// route is the router's decision (nil: no traffic policy applies) and
	// retry its rules (nil: the proxy's); maxRetries is the number of
	// retries allowed.
	route      *rule
	retry      *retryRules
	maxRetries int
	// failover lists the targets a request goes on to, in order, when
	// every connect to the current pool fails (see failoverNext).
	failover []*target

	sel      selection // pick's scratch space
	triedBuf [4]*endpoint
	tried    []*endpoint

	scratch []byte // header rewrites (X-Forwarded-For)

	fx fastExchange // the HTTP/1 exchange, kept here to allocate nothing
}

var callPool = sync.Pool{New: func() any { return new(call) }}

// newCall starts a call to service (and tag) on its pool pl. The caller
// must release it.
func (p *Proxy) newCall(pl *pool, service, tag string, now time.Time) *call {
	c := callPool.Get().(*call)
	c.p, c.pl, c.service, c.tag, c.began = p, pl, service, tag, now
	c.snap = pl.current()
	if p.cfg.Timeout > 0 {
		c.deadline = now.Add(p.cfg.Timeout)
	}
	c.maxRetries = p.cfg.MaxRetries
	c.tried = c.triedBuf[:0]
	return c
}

// follow applies a routing decision to the call: the route's timeout (or
// the target's), its retry rules, and the failover targets left.
func (c *call) follow(d *decision) {
	rt, tg := d.route, d.leg.target
	c.route, c.failover = rt, d.failover
	timeout := rt.timeout
	if timeout == 0 && tg != nil {
		timeout = tg.RequestTimeout
	}
	if timeout > 0 {
		c.deadline = c.began.Add(timeout)
	}
	if rt.retry != nil {
		c.retry, c.maxRetries = rt.retry, rt.retry.max
	}
}

// release returns c to the pool.
func (c *call) release() {
	scratch := c.scratch[:0]
	*c = call{scratch: scratch}
	callPool.Put(c)
}

// noInstance is the error of a call that has nowhere (left) to go.
func (c *call) noInstance() error {
	return &errNoInstance{service: strings.Clone(c.service), tag: strings.Clone(c.tag), subset: c.pl.subset}
}

// forward runs the request loop: it returns the endpoint that took the
// request, with its in-flight count raised (the caller lowers it when the
// exchange is over), or the error that ended the loop.
func (p *Proxy) forward(c *call, x exchange) (*endpoint, error) {
	for attempt := 0; ; attempt++ {
		e := c.snap.pick(p, &c.sel, c.key, c.tried)
		if e == nil {
			return nil, c.noInstance()
		}
		e.inflight.Add(1)
		start := time.Now()
		status, err := x.try(e, c.tryDeadline(start))
		end := time.Now()
		c.inTries += end.Sub(start)
		if err == nil && c.retry.has(status) && c.mayRetryAnswer(attempt, end, x) {
			// An answer the route retries: the instance is fine, the
			// request goes elsewhere.
			e.inflight.Add(-1)
			x.discard()
			c.tried = append(c.tried, e)
			c.retried(e)
			continue
		}
		if err == nil {
			e.observeLatency(end.Sub(start), end.UnixNano())
			c.pl.stats.latency.observe(end.Sub(c.began))
			e.requests.Add(1)
			c.served(e)
			if status >= 500 && p.cfg.EjectAfter5xx > 0 {
				c.snap.failed(p, e, p.cfg.EjectAfter5xx)
			} else {
				e.succeeded()
			}
			return e, nil
		}
		e.inflight.Add(-1)
		f := classify(err)
		if (f.dial || f.reset) && !f.final {
			c.snap.failed(p, e, p.cfg.EjectAfterErrors)
		}
		c.tried = append(c.tried, e)
		expired := !c.deadline.IsZero() && !end.Before(c.deadline)
		if f.dial && !f.final && !expired && (attempt >= c.maxRetries || len(c.tried) == len(c.snap.all.eps)) &&
			!x.bodyTouched() && c.failoverNext() {
			// Nothing was sent and this target takes no connection: on to
			// its failover, with a fresh round of tries.
			c.retried(e)
			attempt = -1
			continue
		}
		if f.final || expired || attempt >= c.maxRetries || len(c.tried) == len(c.snap.all.eps) ||
			!c.safeToRetry(f, x) || (!f.free && !p.budget.allow(end.UnixNano())) {
			te := &tryError{err: err, addr: e.addr, service: strings.Clone(c.service), timeout: f.timeout || expired}
			if te.timeout {
				c.timedOut(e)
			}
			return nil, te
		}
		c.retried(e)
	}
}

// failoverNext moves the call to the next failover target that has an
// instance in the view; false when none is left.
func (c *call) failoverNext() bool {
	for len(c.failover) > 0 {
		t := c.failover[0]
		c.failover = c.failover[1:]
		pl := c.p.targetPool(t)
		if snap := pl.current(); len(snap.all.eps) > 0 {
			c.pl, c.snap, c.service = pl, snap, pl.service
			c.tried = c.triedBuf[:0]
			return true
		}
	}
	return false
}

// mayRetryAnswer reports whether an answer of try number attempt, which
// ended at end, may be retried: retries and instances are left, the whole
// request can be sent again, and the retry budget allows it.
func (c *call) mayRetryAnswer(attempt int, end time.Time, x exchange) bool {
	return attempt < c.maxRetries && len(c.tried)+1 < len(c.snap.all.eps) && x.replayable() &&
		c.p.budget.allow(end.UnixNano())
}

// served counts the request against the decisions that sent it to e.
func (c *call) served(e *endpoint) {
	if c.route != nil {
		c.route.stats.requests.Add(1)
	}
	if e.zstats != nil {
		e.zstats.requests.Add(1)
	}
}

// retried counts a retry after a failed try on e.
func (c *call) retried(e *endpoint) {
	c.p.metrics.retries.Add(1)
	c.pl.stats.retries.Add(1)
	if c.route != nil {
		c.route.stats.retries.Add(1)
	}
	if e.zstats != nil {
		e.zstats.retries.Add(1)
	}
}

// timedOut counts a call that ran out of time on e.
func (c *call) timedOut(e *endpoint) {
	c.pl.stats.timeouts.Add(1)
	if c.route != nil {
		c.route.stats.timeouts.Add(1)
	}
	if e.zstats != nil {
		e.zstats.timeouts.Add(1)
	}
}

// tryDeadline is the deadline of one try starting at start: the call's, or
// sooner by the per-try timeout.
func (c *call) tryDeadline(start time.Time) time.Time {
	d := c.deadline
	if t := c.p.cfg.TryTimeout; t > 0 {
		if td := start.Add(t); d.IsZero() || td.Before(d) {
			d = td
		}
	}
	return d
}

// safeToRetry reports whether the request may be sent again after failure
// f: a try that sent nothing (a failed connect, a connection found closed)
// only a body already read stops;
// anything else may have reached the instance, so only idempotent requests
// that can be sent in full again go once more.
func (c *call) safeToRetry(f failure, x exchange) bool {
	if f.unsent {
		return !x.bodyTouched()
	}
	return (c.idempotent || (c.retry != nil && c.retry.onReset)) && x.replayable()
}

// failure is what a failed try tells the request loop.
type failure struct {
	dial    bool // the connect failed: nothing was sent
	unsent  bool // nothing was sent: the connect failed, or the connection was found closed
	reset   bool // the connection broke: counts against the instance
	timeout bool // a deadline passed
	free    bool // costs the instance nothing: no draw on the retry budget
	final   bool // the caller gave up or its deadline passed: stop
}

// classify reads a try's error.
//
// A failed connect is never final and never draws on the retry budget:
// nothing was sent, so trying elsewhere loads no instance twice, whatever
// made the connect fail (refused, unreachable, timed out). Note that a
// dial timeout from package net matches context.DeadlineExceeded, so the
// caller's deadline is told apart by the error not being a dial error;
// the exchanges never mark a try cut short by the caller's context as one.
func classify(err error) failure {
	var de *dialError
	f := failure{dial: errors.As(err, &de)}
	f.timeout = errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err)
	f.reset = !f.dial && (isReset(err) || errors.Is(err, fasthttp.ErrConnectionClosed))
	// A connect that failed, or a pooled connection found closed before
	// anything was written on it, sent nothing.
	f.unsent = f.dial || isStale(err)
	// A connection reset while the request was being written delivered
	// nothing and costs the instance nothing either (it is gone).
	f.free = f.unsent || isWriteReset(err)
	var denied *DeniedError
	f.final = errors.Is(err, context.Canceled) || (!f.dial && errors.Is(err, context.DeadlineExceeded)) ||
		errors.As(err, &denied)
	return f
}

// tryError is the error of a call whose last try failed.
type tryError struct {
	err     error
	addr    string
	service string
	timeout bool
}

func (e *tryError) Error() string {
	return fmt.Sprintf("%v (instance %s of %q)", e.err, e.addr, e.service)
}

func (e *tryError) Unwrap() error { return e.err }

// statusOf is the HTTP status that answers a call that failed with err.
func statusOf(err error) int {
	var noInst *errNoInstance
	var te *tryError
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		return fasthttp.StatusForbidden
	case errors.As(err, &noInst):
		return fasthttp.StatusServiceUnavailable
	case errors.As(err, &te) && te.timeout:
		return fasthttp.StatusGatewayTimeout
	}
	return fasthttp.StatusBadGateway
}

// errNoInstance is returned when a service has no instance to send to.
type errNoInstance struct{ service, tag, subset string }

func (e *errNoInstance) Error() string {
	if e.subset != "" {
		return fmt.Sprintf("no healthy instance of service %q in subset %q", e.service, e.subset)
	}
	if e.tag != "" {
		return fmt.Sprintf("no healthy instance of service %q with tag %q", e.service, e.tag)
	}
	return fmt.Sprintf("no healthy instance of service %q", e.service)
}

// dialError marks a failure to connect: nothing of the request was sent, so
// it is always safe to try another instance.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isNetTimeout reports a timeout, which may mean an overloaded instance.
func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isWriteReset reports a connection the instance reset while the request
// was still being written: the instance is gone and processed nothing.
func isWriteReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "write" && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// isReset reports a connection that broke before the response headers.
func isReset(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(errors.As(err, &op) && (op.Op == "read" || op.Op == "write"))
}
