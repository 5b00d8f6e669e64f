// Package browsertest drives headless Chromium from tests through
// chromedriver's WebDriver HTTP API (W3C), with nothing but net/http: load a
// page, read its text, click, take a screenshot. It needs the Debian
// packages chromium and chromium-driver; New skips the test without them.
//
// It lives under testdata/ because the top level of the repository is fixed
// and it is test support, not product code; go test ./... never builds it
// on its own, only as an import of the browser tests.
package browsertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// elementKey is the W3C name of an element reference in JSON.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// Browser is one headless Chromium session. Its methods fail the test on
// error; it is closed when the test ends.
type Browser struct {
	t       testing.TB
	base    string // chromedriver's URL
	session string
	http    *http.Client
}

// chromiumArgs are Chromium's flags for tests: no sandbox (containers), no
// GPU and nothing talking to Google or updating itself in the background.
func chromiumArgs() []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
	}
}

// Paths returns the chromium and chromedriver binaries, or a reason why
// they are missing.
func Paths() (chromium, driver string, err error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, e := exec.LookPath(name); e == nil {
			chromium = p
			break
		}
	}
	driver, _ = exec.LookPath("chromedriver")
	if chromium == "" || driver == "" {
		return "", "", errors.New("chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver)")
	}
	return chromium, driver, nil
}

// New starts chromedriver on a free port and opens a Chromium session with
// a width x height window. It skips the test when Chromium is missing.
func New(t testing.TB, width, height int) *Browser {
	t.Helper()
	chromium, driver, err := Paths()
	if err != nil {
		t.Skip(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(driver, "--port="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	// Not t.TempDir: its cleanup would run before this one, while Chromium
	// still writes its cache there.
	profile, err := os.MkdirTemp("", "browsertest-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Browser{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port), http: &http.Client{Timeout: 60 * time.Second}}
	t.Cleanup(func() {
		if b.session != "" {
			b.call(http.MethodDelete, "/session/"+b.session, nil, nil)
		}
		cmd.Process.Kill()
		<-exited
		removeAll(profile)
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		var status struct{ Ready bool }
		if err := b.call(http.MethodGet, "/status", nil, &status); err == nil && status.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("chromedriver did not become ready within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	args := append([]string{"--user-data-dir=" + profile, fmt.Sprintf("--window-size=%d,%d", width, height)}, chromiumArgs()...)
	var created struct{ SessionID string }
	err = b.call(http.MethodPost, "/session", map[string]any{
		"capabilities": map[string]any{"alwaysMatch": map[string]any{
			"browserName":        "chrome",
			"goog:chromeOptions": map[string]any{"binary": chromium, "args": args},
		}},
	}, &created)
	if err != nil || created.SessionID == "" {
		t.Fatalf("start a chromium session: %v", err)
	}
	b.session = created.SessionID
	return b
}

// Open loads url and waits for the page's load event.
func (b *Browser) Open(url string) {
	b.t.Helper()
	if err := b.call(http.MethodPost, b.path("/url"), map[string]string{"url": url}, nil); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

// Eval runs a JavaScript function body in the page and decodes its return
// value into out (which may be nil).
func (b *Browser) Eval(script string, out any) {
	b.t.Helper()
	if err := b.call(http.MethodPost, b.path("/execute/sync"), map[string]any{"script": script, "args": []any{}}, out); err != nil {
		b.t.Fatalf("eval %q: %v", script, err)
	}
}

// Text is what a person sees on the page: the body's innerText.
func (b *Browser) Text() string {
	b.t.Helper()
	var s string
	b.Eval("return document.body.innerText", &s)
	return s
}

// WaitText polls the page's text until cond holds, failing the test with
// the last text after timeout.
func (b *Browser) WaitText(timeout time.Duration, what string, cond func(text string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		text := b.Text()
		if cond(text) {
			return text
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %v waiting for the page to show %s; it shows:\n%s", timeout, what, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Click clicks the first element matching a CSS selector.
func (b *Browser) Click(selector string) {
	b.t.Helper()
	// A live page may re-render between finding the element and clicking
	// it ("stale element reference"): find it again, a few times.
	var err error
	for try := 0; try < 10; try++ {
		var el map[string]string
		if err = b.call(http.MethodPost, b.path("/element"), map[string]string{"using": "css selector", "value": selector}, &el); err != nil {
			b.t.Fatalf("find %q: %v", selector, err)
		}
		err = b.call(http.MethodPost, b.path("/element/"+el[elementKey]+"/click"), map[string]any{}, nil)
		if err == nil || !strings.Contains(err.Error(), "stale element") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("click %q: %v", selector, err)
	}
}

// Screenshot returns a PNG of the window.
func (b *Browser) Screenshot() []byte {
	b.t.Helper()
	var s string
	if err := b.call(http.MethodGet, b.path("/screenshot"), nil, &s); err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	png, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	return png
}

// SaveScreenshot writes a PNG of the window to path.
func (b *Browser) SaveScreenshot(path string) {
	b.t.Helper()
	if err := os.WriteFile(path, b.Screenshot(), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *Browser) path(p string) string { return "/session/" + b.session + p }

// call does one WebDriver command and decodes its "value" into out.
func (b *Browser) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var envelope struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &envelope); err != nil {
		return fmt.Errorf("%s %s: %s: undecodable answer %.200q", method, path, resp.Status, raw)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		json.Unmarshal(envelope.Value, &e)
		return fmt.Errorf("%s %s: %s: %s: %s", method, path, resp.Status, e.Error, e.Message)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(envelope.Value, out)
}

// removeAll removes a profile directory; Chromium's last processes may
// still be writing to it for a moment after the session ends.
func removeAll(dir string) {
	for range 50 {
		if os.RemoveAll(dir) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
