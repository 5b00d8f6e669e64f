package lb

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// Header rules of the proxy, in one place: what is hop-by-hop, what is
// idempotent, and what the proxy adds. The h2c path runs on net/http's
// ReverseProxy, which applies the same RFC 9110 rules itself.

// hopHeaders are removed in both directions (RFC 9110, section 7.6.1), with
// the headers named by Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade",
}

// upgradeHopHeaders are removed from an Upgrade request, which must keep
// Connection and Upgrade for the instance to switch protocols.
var upgradeHopHeaders = []string{"Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te"}

// headerPeekDeler is what fasthttp's request and response headers share.
type headerPeekDeler interface {
	Peek(key string) []byte
	DelBytes(key []byte)
	Del(key string)
}

// stripHopRequest removes hop-by-hop request headers, including those named
// in Connection. fasthttp frames the body itself (Content-Length or chunked).
func stripHopRequest(h *fasthttp.RequestHeader) { stripHop(h, true) }

// stripHopResponse removes hop-by-hop response headers but keeps Trailer,
// which announces the trailers that follow the body.
func stripHopResponse(h *fasthttp.ResponseHeader) { stripHop(h, false) }

func stripHop(h headerPeekDeler, trailer bool) {
	if conn := h.Peek("Connection"); len(conn) > 0 {
		for len(conn) > 0 {
			var tok []byte
			tok, conn, _ = bytes.Cut(conn, []byte(","))
			if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("keep-alive")) && !bytes.EqualFold(tok, []byte("close")) {
				h.DelBytes(tok)
			}
		}
	}
	for _, name := range hopHeaders {
		if trailer || name != "Trailer" {
			h.Del(name)
		}
	}
}

// setForwarded appends the client to X-Forwarded-For and sets
// X-Forwarded-Host and -Proto, as net/http's ReverseProxy does. It builds
// the new value in buf and returns buf for reuse.
func setForwarded(h *fasthttp.RequestHeader, client net.Addr, host []byte, buf []byte) []byte {
	buf = append(buf[:0], h.Peek("X-Forwarded-For")...)
	if len(buf) > 0 {
		buf = append(buf, ", "...)
	}
	buf = appendIP(buf, client)
	h.SetBytesV("X-Forwarded-For", buf)
	h.SetBytesV("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Proto", "http")
	return buf
}

// appendIP appends the IP address of a TCP client without allocating.
func appendIP(buf []byte, a net.Addr) []byte {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap().AppendTo(buf)
		}
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return append(buf, a.String()...)
	}
	return append(buf, host...)
}

// isIdempotentMethod reports a method that may be sent twice (RFC 9110,
// section 9.2.2, less PUT and DELETE, which proxies do not retry blindly).
func isIdempotentMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}
