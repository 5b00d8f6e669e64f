// Command backend is the fault scenarios' application: a tiny HTTP server
// that answers every request with 200 and its own name, so that a test can
// tell which instance served a request that went through a Shoal proxy.
// The netns tests build it once and run one per host.
//
// PUT /backend/delay?d=DURATION makes it answer every other request that
// much later (0 stops it): an instance that becomes slow, as an overloaded
// one does, without going down.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen `ADDR` host:port")
	name := flag.String("name", "backend", "`NAME` written in every answer")
	flag.Parse()
	body := []byte(*name + "\n")
	var delay atomic.Int64 // nanoseconds
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/backend/delay" && r.Method == http.MethodPut {
			d, err := time.ParseDuration(r.URL.Query().Get("d"))
			if err != nil || d < 0 {
				http.Error(w, "want ?d=DURATION, at least 0", http.StatusBadRequest)
				return
			}
			delay.Store(int64(d))
			log.Printf("backend %s: answers delayed by %v", *name, d)
			return
		}
		if d := time.Duration(delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	log.SetFlags(0)
	log.Printf("backend %s listening on %s", *name, *addr)
	if err := http.ListenAndServe(*addr, h); err != nil {
		log.Fatal(fmt.Errorf("backend %s: %w", *name, err))
	}
}
