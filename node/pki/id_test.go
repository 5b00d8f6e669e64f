package pki

import (
	"net/url"
	"strings"
	"testing"
)

func TestIDURI(t *testing.T) {
	tests := []struct {
		id   ID
		want string
	}{
		{ID{TrustDomain: testTD, Node: "a"}, "spiffe://a.test.shoal/node"},
		{ID{TrustDomain: testTD, Node: "a", Service: "web"}, "spiffe://a.test.shoal/svc/web"},
		{ID{TrustDomain: testTD, Node: "Web_1", Service: "API.v2"}, "spiffe://web_1.test.shoal/svc/API.v2"},
	}
	for _, tt := range tests {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.id, got, tt.want)
		}
		u, err := url.Parse(tt.want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseID(u, testTD)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", tt.want, err)
		}
		want := tt.id
		want.Node = strings.ToLower(want.Node)
		if got != want {
			t.Errorf("ParseID(%q) = %+v, want %+v", tt.want, got, want)
		}
	}
}

func TestParseIDCaseInsensitiveHost(t *testing.T) {
	u, _ := url.Parse("SPIFFE://Web-1.Test.Shoal/svc/Api")
	id, err := ParseID(u, "TEST.shoal")
	if err != nil {
		t.Fatal(err)
	}
	if want := (ID{TrustDomain: testTD, Node: "web-1", Service: "Api"}); id != want {
		t.Errorf("ParseID = %+v, want %+v", id, want)
	}
}

func TestParseIDRefuses(t *testing.T) {
	tests := []struct{ uri, want string }{
		{"https://a.test.shoal/node", `scheme is "https"`},
		{"spiffe:a.test.shoal/node", "no host"},
		{"spiffe:///node", "no host"},
		{"spiffe://eve@a.test.shoal/node", "user information"},
		{"spiffe://a.test.shoal:443/node", "port"},
		{"spiffe://a.test.shoal/node?x=1", "query"},
		{"spiffe://a.test.shoal/node#x", "fragment"},
		{"spiffe://a.test.shoal/svc/%77eb", "escapes"},
		{"spiffe://a.other.shoal/node", `not in trust domain "test.shoal"`},
		{"spiffe://a.eviltest.shoal/node", "not in trust domain"},
		{"spiffe://test.shoal/node", "not in trust domain"},
		{"spiffe://x.a.test.shoal/node", `node name "x.a"`},
		{"spiffe://-a.test.shoal/node", `node name "-a"`},
		{"spiffe://" + strings.Repeat("n", 64) + ".test.shoal/node", "node name"},
		{"spiffe://a.test.shoal", "neither /node nor /svc/SERVICE"},
		{"spiffe://a.test.shoal/", "neither"},
		{"spiffe://a.test.shoal/svc", "neither"},
		{"spiffe://a.test.shoal/node/x", "neither"},
		{"spiffe://a.test.shoal/svc/", `service name ""`},
		{"spiffe://a.test.shoal/svc/a/b", `service name "a/b"`},
		{"spiffe://a.test.shoal/svc/..", `service name ".."`},
		{"spiffe://a.test.shoal/svc/" + strings.Repeat("s", 129), "service name"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.uri)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tt.uri, err)
		}
		id, err := ParseID(u, testTD)
		if err == nil {
			t.Errorf("ParseID(%q) = %+v, want an error", tt.uri, id)
			continue
		}
		wantErrText(t, err, tt.want)
	}
	if _, err := ParseID(nil, testTD); err == nil {
		t.Error("ParseID(nil) succeeded")
	}
}

func TestValidateTrustDomain(t *testing.T) {
	for _, td := range []string{"shoal", "test.shoal", "a-b.c1.example", "9c1fbf3e-0d7c-4b44-8a46-6a2b9c0e5f1d.shoal", strings.Repeat("a", 63)} {
		if err := validateTrustDomain(td); err != nil {
			t.Errorf("validateTrustDomain(%q): %v", td, err)
		}
	}
	long := strings.Repeat(strings.Repeat("a", 62)+".", 3) + "a" // 190 characters
	for _, td := range []string{"", "Shoal", "a..b", ".a", "a.", "-a", "a-", "a_b", "a b", "a/b", "a:1", strings.Repeat("a", 64), long} {
		if err := validateTrustDomain(td); err == nil {
			t.Errorf("validateTrustDomain(%q) accepted it", td)
		}
	}
}
