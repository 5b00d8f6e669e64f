package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// demoBackend is one sample HTTP service instance of "shoal demo". It
// answers "hello from ID on NODE" and has a /health endpoint whose answer a
// user can flip, to watch health checks take it out of the proxies' pools.
//
//	GET  /         hello from ID on NODE
//	GET  /health   200 while healthy, 503 while failing
//	POST /fail     start failing the health check
//	POST /recover  pass it again
//	GET|POST /toggle  flip between the two (handy from a browser)
type demoBackend struct {
	id, node string
	ln       net.Listener
	srv      *http.Server
	failing  atomic.Bool
	done     sync.WaitGroup
}

// startDemoBackend listens on a free loopback port and serves until
// shutdown.
func startDemoBackend(id, node string, log *slog.Logger) (*demoBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo backend %s: %w", id, err)
	}
	b := &demoBackend{id: id, node: node, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", b.hello)
	mux.HandleFunc("GET /health", b.health)
	mux.HandleFunc("POST /fail", b.set(true))
	mux.HandleFunc("POST /recover", b.set(false))
	mux.HandleFunc("/toggle", b.toggle)
	b.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	b.done.Add(1)
	go func() {
		defer b.done.Done()
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("demo backend stopped", "instance", id, "err", err)
		}
	}()
	return b, nil
}

// addr is the backend's host:port.
func (b *demoBackend) addr() string { return b.ln.Addr().String() }

// port is the backend's port.
func (b *demoBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// url returns the backend's URL of path.
func (b *demoBackend) url(path string) string { return "http://" + b.addr() + path }

func (b *demoBackend) hello(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello from %s on %s\n", b.id, b.node)
}

func (b *demoBackend) health(w http.ResponseWriter, r *http.Request) {
	if b.failing.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s is failing on purpose (POST /recover heals it)\n", b.id)
		return
	}
	fmt.Fprintf(w, "%s is healthy\n", b.id)
}

func (b *demoBackend) set(failing bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b.failing.Store(failing)
		b.report(w)
	}
}

func (b *demoBackend) toggle(w http.ResponseWriter, r *http.Request) {
	for {
		old := b.failing.Load()
		if b.failing.CompareAndSwap(old, !old) {
			break
		}
	}
	b.report(w)
}

func (b *demoBackend) report(w http.ResponseWriter) {
	if b.failing.Load() {
		fmt.Fprintf(w, "%s now fails its health check: within a few seconds it is critical and the proxies stop using it\n", b.id)
		return
	}
	fmt.Fprintf(w, "%s now passes its health check: within a few seconds the proxies use it again\n", b.id)
}

// shutdown stops serving, letting requests in flight finish.
func (b *demoBackend) shutdown(ctx context.Context) {
	if err := b.srv.Shutdown(ctx); err != nil {
		b.srv.Close()
	}
	b.done.Wait()
}
