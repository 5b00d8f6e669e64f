package lb

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"
)

// matchable is what route matching reads of a request. The HTTP/1 path
// implements it over fasthttp's request without copying (fastRequest), the
// h2c path over net/http's (stdRequest). Strings returned may view request
// buffers: they must not outlive the match.
type matchable interface {
	path() string // as sent, without the query string
	method() string
	header(name string) (value string, ok bool)
	query(name string) (value string, ok bool)
}

// match returns the first route whose match holds, or the default.
func (c *chain) match(r matchable) *rule {
	for _, rt := range c.routes {
		if rt.match.holds(r) {
			return rt
		}
	}
	return c.def
}

// holds reports whether every condition of m holds for r.
func (m *RouteMatch) holds(r matchable) bool {
	if m.PathExact != "" || m.PathPrefix != "" || m.PathRegex != nil {
		p := r.path()
		switch {
		case m.PathExact != "":
			if !equal(p, m.PathExact, m.CaseInsensitive) {
				return false
			}
		case m.PathPrefix != "":
			if len(p) < len(m.PathPrefix) || !equal(p[:len(m.PathPrefix)], m.PathPrefix, m.CaseInsensitive) {
				return false
			}
		default:
			if !m.PathRegex.MatchString(p) {
				return false
			}
		}
	}
	if len(m.Methods) > 0 && !slices.Contains(m.Methods, r.method()) {
		return false
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		v, ok := r.header(h.Name)
		if h.test(v, ok) == h.Invert {
			return false
		}
	}
	for i := range m.Query {
		q := &m.Query[i]
		v, ok := r.query(q.Name)
		switch {
		case !ok:
			return false
		case q.Exact != "" && v != q.Exact:
			return false
		case q.Regex != nil && !q.Regex.MatchString(v):
			return false
		}
	}
	return true
}

// test reports whether the header's value (ok: it is present) matches,
// before Invert.
func (h *HeaderMatch) test(v string, ok bool) bool {
	switch {
	case !ok:
		return false
	case h.Present:
		return true
	case h.Exact != "":
		return v == h.Exact
	case h.Prefix != "":
		return strings.HasPrefix(v, h.Prefix)
	case h.Suffix != "":
		return strings.HasSuffix(v, h.Suffix)
	case h.Regex != nil:
		return h.Regex.MatchString(v)
	}
	return false
}

func equal(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// fastRequest is an HTTP/1 request as route matching reads it.
type fastRequest fasthttp.Request

func (r *fastRequest) path() string {
	return unsafeString((*fasthttp.Request)(r).URI().PathOriginal())
}

func (r *fastRequest) method() string {
	return unsafeString(r.Header.Method())
}

func (r *fastRequest) header(name string) (string, bool) {
	v, ok := peekHeader(&r.Header, name)
	return unsafeString(v), ok
}

// peekHeader returns the first value of a request header, its name in any
// case: the proxy's server keeps header names as the client sent them, and
// fasthttp's Peek then compares them exactly.
func peekHeader(h *fasthttp.RequestHeader, name string) ([]byte, bool) {
	if v := h.Peek(name); len(v) > 0 {
		return v, true
	}
	for k, v := range h.All() {
		if len(k) == len(name) && strings.EqualFold(unsafeString(k), name) {
			return v, true
		}
	}
	return nil, false
}

func (r *fastRequest) query(name string) (string, bool) {
	args := (*fasthttp.Request)(r).URI().QueryArgs()
	if !args.Has(name) {
		return "", false
	}
	return unsafeString(args.Peek(name)), true
}

// stdRequest is an h2c request as route matching reads it.
type stdRequest struct {
	r *http.Request
	q url.Values // parsed on first use
}

func (r *stdRequest) path() string { return r.r.URL.EscapedPath() }

func (r *stdRequest) method() string { return r.r.Method }

func (r *stdRequest) header(name string) (string, bool) {
	v, ok := r.r.Header[http.CanonicalHeaderKey(name)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func (r *stdRequest) query(name string) (string, bool) {
	if r.q == nil {
		r.q = r.r.URL.Query()
	}
	v, ok := r.q[name]
	if !ok || len(v) == 0 {
		return "", ok
	}
	return v[0], true
}

var (
	_ matchable = (*fastRequest)(nil)
	_ matchable = (*stdRequest)(nil)
)
