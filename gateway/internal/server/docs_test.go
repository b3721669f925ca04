package server

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshplane/meshplane/gateway/internal/apidocs"
)

func TestOpenAPIServed(t *testing.T) {
	gw := startGateway(t, closedAddr(t))
	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/openapi.json", nil))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, %v", resp.StatusCode, resp.Header)
	}
	if !bytes.Equal(body, apidocs.EmbeddedSpec()) {
		t.Error("/openapi.json is not the embedded spec")
	}
}

func TestOpenAPIFileOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, []byte(`{"swagger": "2.0", "info": {"title": "override"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, closedAddr(t), "--openapi-file", path)
	_, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/openapi.json", nil))
	if !strings.Contains(string(body), "override") {
		t.Errorf("got %s", body)
	}
}

func TestDocsPage(t *testing.T) {
	gw := startGateway(t, closedAddr(t))

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(newRequest(t, http.MethodGet, gw.URL+"/docs", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "docs/" {
		t.Errorf("/docs: %d to %q, want a redirect to docs/", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, page := do(t, newRequest(t, http.MethodGet, gw.URL+"/docs/", nil))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Every asset the page loads is served by the gateway itself.
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 3 {
		t.Fatalf("page references %v", refs)
	}
	for _, ref := range refs {
		if strings.Contains(ref[1], "//") {
			t.Errorf("page loads %s from elsewhere", ref[1])
			continue
		}
		resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/docs/"+strings.TrimPrefix(ref[1], "./"), nil))
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: status %d, %d bytes", ref[1], resp.StatusCode, len(body))
		}
	}
	_, init := do(t, newRequest(t, http.MethodGet, gw.URL+"/docs/swagger-initializer.js", nil))
	if !strings.Contains(string(init), `"../openapi.json"`) {
		t.Errorf("initializer does not load the gateway's spec: %s", init)
	}
}
