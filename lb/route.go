package lb

import "strings"

// route maps a Host (or CONNECT authority) to a service and optional tag:
// "NAME", "NAME.service.DOMAIN" and "TAG.NAME.service.DOMAIN", any port
// ignored, a trailing dot allowed. ok is false for anything else.
func route(host, domain string) (service, tag string, ok bool) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || strings.ContainsAny(host, "[]/ ") {
		return "", "", false
	}
	rest, found := strings.CutSuffix(host, ".service."+domain)
	if !found {
		if strings.Contains(host, ".") {
			return "", "", false
		}
		return host, "", true
	}
	tag, service, dotted := strings.Cut(rest, ".")
	if !dotted {
		return rest, "", rest != ""
	}
	if tag == "" || service == "" || strings.Contains(service, ".") {
		return "", "", false
	}
	return service, tag, true
}
