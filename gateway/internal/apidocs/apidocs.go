// Package apidocs serves the OpenAPI document generated from the protos
// (/openapi.json) and a Swagger UI page for it (/docs), both embedded in the
// binary: nothing is fetched from the internet at run time.
package apidocs

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
)

// The spec is generated into generated/openapi/ by `make gen`; go:embed cannot
// reach outside this module, so the build copies it here first (the copy is
// gitignored). A missing copy fails the build rather than shipping a binary
// without its spec.
//
//go:generate cp ../../../generated/openapi/meshplane.swagger.json meshplane.swagger.json
//go:embed meshplane.swagger.json
var embeddedSpec []byte

//go:embed swagger-ui/index.html swagger-ui/swagger-initializer.js swagger-ui/swagger-ui-bundle.js swagger-ui/swagger-ui.css
var swaggerUI embed.FS

// EmbeddedSpec returns the OpenAPI v2 document built into the binary.
func EmbeddedSpec() []byte {
	return embeddedSpec
}

// LoadSpec returns the document at path, or the embedded one when path is
// empty. The document must be valid JSON.
func LoadSpec(path string) ([]byte, error) {
	if path == "" {
		return embeddedSpec, nil
	}
	spec, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading OpenAPI file: %w", err)
	}
	if !json.Valid(spec) {
		return nil, fmt.Errorf("OpenAPI file %s is not valid JSON", path)
	}
	return spec, nil
}

// Register adds GET /openapi.json, /docs and /docs/ to mux.
func Register(mux *http.ServeMux, spec []byte) {
	ui, err := fs.Sub(swaggerUI, "swagger-ui")
	if err != nil {
		panic(err) // the directory is embedded above, so this cannot happen
	}
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(spec)
	})
	mux.HandleFunc("GET /docs", func(w http.ResponseWriter, _ *http.Request) {
		// Relative, so the redirect also works behind a path-prefixing proxy.
		w.Header().Set("Location", "docs/")
		w.WriteHeader(http.StatusMovedPermanently)
	})
	mux.Handle("GET /docs/", http.StripPrefix("/docs", http.FileServerFS(ui)))
}
