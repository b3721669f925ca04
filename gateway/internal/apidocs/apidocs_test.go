package apidocs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestEmbeddedSpecIsTheMergedSwagger(t *testing.T) {
	var spec struct {
		Swagger string         `json:"swagger"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(EmbeddedSpec(), &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Swagger != "2.0" || spec.Paths["/v1/tasks"] == nil || spec.Paths["/v1/namespaces/{namespace}/states/{key}"] == nil {
		t.Errorf("embedded spec: swagger %q, %d paths", spec.Swagger, len(spec.Paths))
	}
}

func TestLoadSpec(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(`{"swagger": "2.0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"swagger": `), 0o600); err != nil {
		t.Fatal(err)
	}
	if spec, err := LoadSpec(""); err != nil || len(spec) == 0 {
		t.Errorf("embedded: %v", err)
	}
	if spec, err := LoadSpec(good); err != nil || string(spec) != `{"swagger": "2.0"}` {
		t.Errorf("file: %q, %v", spec, err)
	}
	if _, err := LoadSpec(bad); err == nil {
		t.Error("invalid JSON accepted")
	}
	if _, err := LoadSpec(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}
