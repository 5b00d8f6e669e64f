package lb

import (
	"bufio"
	"errors"
	"io"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// One HTTP/1.1 exchange with an instance, on the endpoint's pool of
// keep-alive connections. fasthttp's HostClient keeps the pool and dials;
// the exchange itself is ours, so that a response is read the way a proxy
// wants it: a small body of known length into the response's own reused
// buffer, allocating nothing, and anything larger, chunked or delimited by
// the connection's end streamed to the client as it arrives, never held
// whole in memory. (HostClient's own streaming allocates four objects per
// response, whatever its size.)

// maxBufferedResponse is the largest response body of known length that is
// read in full before the answer goes to the client.
const maxBufferedResponse = 64 << 10

// maxInterimResponses bounds the 1xx answers skipped before the final one.
const maxInterimResponses = 8

// errTooManyInterim reports an instance that sent nothing but 1xx answers.
var errTooManyInterim = errors.New("too many interim (1xx) responses")

// errNoGuard reports a pooled connection that fastClient's dialer did not
// make: a bug, refused rather than used without its idle check.
var errNoGuard = errors.New("upstream connection without its stale-connection guard")

// roundTrip sends req to the instance and reads the response headers into
// resp; the body is in resp or streams from the connection. deadline (zero:
// none) bounds the whole exchange, body included, as fasthttp's own client
// does. A pooled connection the instance had closed while idle costs one
// more try on a fresh connection, which is no failure of the instance: the
// other idle connections, as old or older, are closed first, so that the
// try connects anew (and, when the instance is gone, fails to connect,
// which sends the request elsewhere).
func (e *endpoint) roundTrip(identity string, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	hc := e.fastClient(identity)
	// The request target goes on byte for byte: the instance, not the
	// proxy, decides what "/a/../b" or "%2F" means.
	req.URI().DisablePathNormalizing = true
	err := exchangeOnce(hc, req, resp, deadline)
	if isStale(err) && !req.IsBodyStream() {
		hc.CloseIdleConnections()
		err = exchangeOnce(hc, req, resp, deadline)
	}
	if errors.Is(err, io.EOF) {
		err = fasthttp.ErrConnectionClosed
	}
	return err
}

func exchangeOnce(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	var wait time.Duration
	if !deadline.IsZero() {
		if wait = time.Until(deadline); wait <= 0 {
			return fasthttp.ErrTimeout
		}
	}
	cc, err := hc.AcquireConn(wait, req.ConnectionClose())
	if err != nil {
		return err
	}
	conn := cc.Conn()
	g, ok := conn.(*staleGuardConn)
	if !ok {
		hc.CloseConn(cc)
		return errNoGuard
	}
	if err := g.setDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return err
	}

	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return timeoutAsErrTimeout(err)
	}

	br := hc.AcquireReader(conn)
	resp.Header.DisableNormalizing()
	if err := readFinalHeader(&resp.Header, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return timeoutAsErrTimeout(err)
	}
	// A connection that switched protocols (101 to a request that asked
	// for no upgrade; upgrades are tunnelled elsewhere) speaks HTTP no more.
	keep := !req.ConnectionClose() && !resp.ConnectionClose() &&
		resp.StatusCode() != fasthttp.StatusSwitchingProtocols

	if status := resp.StatusCode(); req.Header.IsHead() || status == fasthttp.StatusNoContent ||
		status == fasthttp.StatusNotModified || status < 200 {
		resp.SkipBody = true
	} else if n := resp.Header.ContentLength(); n >= 0 && n <= maxBufferedResponse {
		err = resp.ReadBody(br, maxBufferedResponse)
	} else {
		// Streamed: the connection goes back when fasthttp closes the body
		// after writing the response. Only this path allocates (the
		// closure), as the connection's type is fasthttp's own.
		b := upstreamBodyPool.Get().(*upstreamBody)
		b.start(resp, br, func(discard bool) {
			hc.ReleaseReader(br)
			if keep && !discard {
				hc.ReleaseConn(cc)
			} else {
				hc.CloseConn(cc)
			}
		})
		size := resp.Header.ContentLength()
		if size < 0 {
			size = -1 // chunked to the client, whatever the instance sent
		}
		resp.SetBodyStream(b, size)
		return nil
	}
	hc.ReleaseReader(br)
	if keep && err == nil {
		hc.ReleaseConn(cc)
	} else {
		hc.CloseConn(cc)
	}
	return timeoutAsErrTimeout(err)
}

// readFinalHeader reads the response header, skipping interim 1xx answers
// (101 is final: it switches protocols).
func readFinalHeader(h *fasthttp.ResponseHeader, br *bufio.Reader) error {
	for n := 0; ; n++ {
		if err := h.Read(br); err != nil {
			return err
		}
		if s := h.StatusCode(); s < 100 || s > 199 || s == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n == maxInterimResponses {
			return errTooManyInterim
		}
	}
}

// timeoutAsErrTimeout reports any timeout as fasthttp.ErrTimeout, as
// fasthttp's client does, so that the request loop reads a read or write
// deadline as a timeout rather than as a broken connection (a reset).
func timeoutAsErrTimeout(err error) error {
	if err != nil && isNetTimeout(err) {
		return fasthttp.ErrTimeout
	}
	return err
}

// upstreamBody streams a response body from the instance's connection to
// the client. fasthttp closes it after writing the response (or when the
// response is reset); Close hands the connection back to the pool, or
// closes it when the body was not read to its end. Only the client
// connection's serving goroutine reads and closes it.
type upstreamBody struct {
	header  *fasthttp.ResponseHeader // for a chunked body's trailer
	br      *bufio.Reader
	r       io.Reader // &fixed, the chunked decoder, or br
	fixed   io.LimitedReader
	chunked bool
	toEOF   bool // delimited by the end of the connection
	done    bool // read to its end
	release func(discard bool)
}

var upstreamBodyPool = sync.Pool{New: func() any { return new(upstreamBody) }}

func (b *upstreamBody) start(resp *fasthttp.Response, br *bufio.Reader, release func(bool)) {
	b.header, b.br, b.release = &resp.Header, br, release
	switch n := resp.Header.ContentLength(); {
	case n >= 0:
		b.fixed = io.LimitedReader{R: br, N: int64(n)}
		b.r = &b.fixed
	case n == -1:
		b.r, b.chunked = httputil.NewChunkedReader(br), true
	default:
		b.r, b.toEOF = br, true
	}
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	switch {
	case b.r == &b.fixed && b.fixed.N == 0:
		b.done, err = true, io.EOF
	case err == io.EOF && b.chunked:
		// The last chunk: the trailer and its blank line follow.
		if terr := b.header.ReadTrailer(b.br); terr != nil {
			return n, terr
		}
		b.done = true
	case err == io.EOF && b.toEOF:
		b.done = true
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close hands the connection back: to the pool when the body was read to
// its end on a connection that stays open, else closed.
func (b *upstreamBody) Close() error {
	if b.release != nil {
		b.release(!b.done || b.toEOF)
	}
	*b = upstreamBody{}
	upstreamBodyPool.Put(b)
	return nil
}
