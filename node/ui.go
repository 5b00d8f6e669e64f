package node

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"path"
)

// uiFiles is the status page: plain HTML, CSS and JavaScript, no build
// step. index.html is a html/template (it only carries the token into the
// asset URLs); the others are served as they are.
//
//go:embed ui/*
var uiFiles embed.FS

// uiContentType is the type of a file under ui/; a file without one is
// not served.
func uiContentType(name string) (string, bool) {
	switch name {
	case "app.js":
		return "text/javascript; charset=utf-8", true
	case "style.css":
		return "text/css; charset=utf-8", true
	}
	return "", false
}

// uiPolicy keeps the page to its own files and its own agent: no inline
// script, nothing from elsewhere, no framing.
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// statusPage serves the read-only status page at /ui/. It reads the
// cluster through the same API as any client (GET /v1/shoal/ui/state, a
// blocking query), so the API's access rules apply to it unchanged: with
// --http-token-reads, open it as /ui/?token=TOKEN.
type statusPage struct {
	index *template.Template
}

func newStatusPage() *statusPage {
	return &statusPage{index: template.Must(template.ParseFS(uiFiles, "ui/index.html"))}
}

// uiRoutes registers the page, its files, its data and the redirect of the
// API's root to it.
func (s *api) uiRoutes(mux *http.ServeMux) {
	p := newStatusPage()
	mux.HandleFunc("GET /{$}", p.redirect)
	mux.HandleFunc("GET /ui", p.redirect)
	mux.HandleFunc("GET /ui/{$}", p.serveIndex)
	mux.HandleFunc("GET /ui/{file}", p.serveFile)
	mux.HandleFunc("GET /v1/shoal/ui/state", s.uiState)
}

// redirect sends a browser from the API's root (or /ui) to the page,
// keeping the query (a ?token= in particular).
func (p *statusPage) redirect(w http.ResponseWriter, r *http.Request) {
	target := "/ui/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, target, http.StatusFound)
}

func (p *statusPage) serveIndex(w http.ResponseWriter, r *http.Request) {
	// The guard let the request in, so a ?token= it carries is the agent's
	// token (or the agent has none): the page's own files need it too when
	// reads require a token.
	var buf bytes.Buffer
	if err := p.index.Execute(&buf, struct{ Token string }{r.URL.Query().Get("token")}); err != nil {
		writeError(w, http.StatusInternalServerError, "status page: %v", err)
		return
	}
	uiHeaders(w, "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (p *statusPage) serveFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ctype, ok := uiContentType(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no such file: /ui/%s", name)
		return
	}
	b, err := uiFiles.ReadFile(path.Join("ui", name))
	if err != nil {
		writeError(w, http.StatusNotFound, "no such file: /ui/%s", name)
		return
	}
	uiHeaders(w, ctype)
	w.Write(b)
}

func uiHeaders(w http.ResponseWriter, ctype string) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", uiPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate each time: an upgraded agent serves its own page.
	h.Set("Cache-Control", "no-cache")
}
