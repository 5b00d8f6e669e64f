// Command backend is the fault scenarios' application: a tiny HTTP server
// that answers every request with 200 and its own name, so that a test can
// tell which instance served a request that went through a Shoal proxy.
// The netns tests build it once and run one per host.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen `ADDR` host:port")
	name := flag.String("name", "backend", "`NAME` written in every answer")
	flag.Parse()
	body := []byte(*name + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	log.SetFlags(0)
	log.Printf("backend %s listening on %s", *name, *addr)
	if err := http.ListenAndServe(*addr, h); err != nil {
		log.Fatal(fmt.Errorf("backend %s: %w", *name, err))
	}
}
