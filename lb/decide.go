package lb

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// decision is where the traffic policy sends one request or connection:
// the route that matched, the split leg drawn, the pool of the target that
// leg resolved to (its own, or a failover's), and the failover targets
// after that one, for a request whose every connect fails. Without a
// traffic policy only pool is set.
type decision struct {
	route    *rule
	leg      *leg
	pool     *pool
	failover []*target
}

// decide draws a leg of rt and resolves its target.
func (p *Proxy) decide(rt *rule) decision {
	lg := rt.pick()
	pl, rest := p.resolve(lg.target)
	return decision{route: rt, leg: lg, pool: pl, failover: rest}
}

// resolve returns the pool of tg, or of the first of its failover targets
// that has an instance that may take traffic while tg has none (none in
// the view, or every one ejected by passive health), and the failover
// targets after the one returned.
func (p *Proxy) resolve(tg *target) (*pool, []*target) {
	pl := p.targetPool(tg)
	if len(tg.failover) == 0 || pl.current().anyAvailable() {
		return pl, tg.failover
	}
	for i, f := range tg.failover {
		if fp := p.targetPool(f); fp.current().anyAvailable() {
			return fp, tg.failover[i+1:]
		}
	}
	return pl, tg.failover
}

// anyAvailable reports whether an endpoint of the snapshot may take a
// request: one at least, not ejected.
func (s *snapshot) anyAvailable() bool {
	now := time.Now().UnixNano()
	for _, e := range s.all.eps {
		if until := e.ejectedUntil.Load(); until == 0 || now >= until {
			return true
		}
	}
	return false
}

// decideTCP applies the traffic policy of a service to a connection: its
// splitter and resolver (routes are HTTP's).
func (p *Proxy) decideTCP(service string) decision {
	if ch := p.table.Load().chainOf(service); ch != nil {
		return p.decide(ch.def)
	}
	return decision{pool: p.ensurePool(service, "", "")}
}

// applyFast changes an HTTP/1 request as the decision says: the path
// prefix rewritten, then the route's header changes and the leg's. buf is
// scratch space, returned for reuse.
func (d *decision) applyFast(req *fasthttp.Request, buf []byte) []byte {
	rt := d.route
	if rt.hasRewrite {
		uri := req.URI()
		path := uri.PathOriginal()
		keep := 0 // bytes of the path after the matched part
		if rt.match.PathPrefix != "" {
			keep = len(path) - len(rt.match.PathPrefix)
		}
		buf = append(append(buf[:0], rt.rewrite...), path[len(path)-keep:]...)
		uri.SetPathBytes(buf)
	}
	rt.reqOps.apply(foldedRequestHeader{&req.Header})
	d.leg.reqOps.apply(foldedRequestHeader{&req.Header})
	return buf
}

// headerEditor is what fasthttp's request and response headers and
// net/http's Header share, and what header changes need.
type headerEditor interface {
	Del(name string)
	Set(name, value string)
	Add(name, value string)
}

// apply makes the changes: removals, then replacements, then additions.
func (o *headerOps) apply(h headerEditor) {
	if o == nil {
		return
	}
	for _, name := range o.remove {
		h.Del(name)
	}
	for _, kv := range o.set {
		h.Del(kv[0])
		h.Set(kv[0], kv[1])
	}
	for _, kv := range o.add {
		h.Add(kv[0], kv[1])
	}
}

// foldedRequestHeader is an HTTP/1 request's header for changes: the
// proxy's server keeps header names as the client sent them, and fasthttp
// deletes only an exact match, so Del takes every case.
type foldedRequestHeader struct{ h *fasthttp.RequestHeader }

func (f foldedRequestHeader) Set(name, value string) { f.h.Set(name, value) }
func (f foldedRequestHeader) Add(name, value string) { f.h.Add(name, value) }

func (f foldedRequestHeader) Del(name string) {
	f.h.Del(name)
	for {
		found := false
		for k := range f.h.All() {
			if len(k) == len(name) && strings.EqualFold(unsafeString(k), name) {
				f.h.DelBytes(k)
				found = true
				break
			}
		}
		if !found {
			return
		}
	}
}

// debugInstance and debugRoute are the opt-in answer headers naming what
// served a request (Config.DebugHeaders).
const (
	debugInstance = "X-Shoal-Instance"
	debugRoute    = "X-Shoal-Route"
)

// debugRouteValue describes the decision: "route=1 target=web/v2 zone=b".
func debugRouteValue(e *endpoint, d *decision) string {
	var b strings.Builder
	if d.route != nil {
		b.WriteString("route=")
		b.WriteString(d.route.name)
		b.WriteByte(' ')
	}
	b.WriteString("target=")
	b.WriteString(Target{d.pool.service, d.pool.subset}.String())
	if e.zone != "" {
		b.WriteString(" zone=")
		b.WriteString(e.zone)
	}
	return b.String()
}

func setDebugHeaders(h *fasthttp.ResponseHeader, e *endpoint, d decision) {
	h.Set(debugInstance, e.id)
	h.Set(debugRoute, debugRouteValue(e, &d))
}

// applyStd changes an h2c request as the decision says (see applyFast).
func (d *decision) applyStd(req *http.Request) {
	rt := d.route
	if rt.hasRewrite {
		path := (&stdRequest{r: req}).path()
		keep := 0
		if rt.match.PathPrefix != "" {
			keep = len(path) - len(rt.match.PathPrefix)
		}
		rewritten := rt.rewrite + path[len(path)-keep:]
		u := *req.URL
		u.RawPath = ""
		if p, err := url.PathUnescape(rewritten); err == nil {
			u.Path = p
			if u.EscapedPath() != rewritten {
				u.RawPath = rewritten
			}
		} else {
			u.Path = rewritten
		}
		req.URL = &u
	}
	rt.reqOps.apply(req.Header)
	d.leg.reqOps.apply(req.Header)
}
