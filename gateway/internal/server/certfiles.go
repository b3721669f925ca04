package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshplane/meshplane/gateway/internal/config"
)

// certCheckInterval is how often, at most, a keyPairFiles or a clientCAFile
// looks at its files again: on the first handshake after the interval has
// passed.
const certCheckInterval = time.Second

// watchedFiles is what keyPairFiles and clientCAFile share: when to look at
// their files again, and whether what is there is new.
//
// It compares the files' content, not their modification time or size: a
// renewed certificate of the same shape often has the same size, and files
// rewritten within one timestamp tick keep their mtime. The files are small
// and read at most once per certCheckInterval.
//
// It does no locking of its own: its holder does.
type watchedFiles struct {
	paths       []string
	options     []string // the settings the paths come from, for messages
	readWarning string   // logged when the files cannot be read again
	logger      *slog.Logger
	now         func() time.Time

	content   [][]byte // what was last tried, good or not
	readError string   // the last failure to read the files, already logged
	nextCheck time.Time
}

// read returns the files' content; an error names the setting at fault.
func (w *watchedFiles) read() ([][]byte, error) {
	content := make([][]byte, len(w.paths))
	for i, path := range w.paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.options[i], err)
		}
		content[i] = data
	}
	return content, nil
}

// loaded records content as the one in service and schedules the next look.
func (w *watchedFiles) loaded(content [][]byte) {
	w.content = content
	w.nextCheck = w.now().Add(certCheckInterval)
}

// changed reads the files again if certCheckInterval has passed since they
// were last looked at, and returns their content if it differs from what was
// last tried; otherwise nil. A failure to read them is logged once, until it
// changes.
func (w *watchedFiles) changed() [][]byte {
	now := w.now()
	if now.Before(w.nextCheck) {
		return nil
	}
	w.nextCheck = now.Add(certCheckInterval)

	content, err := w.read()
	if err != nil {
		if msg := err.Error(); msg != w.readError {
			w.readError = msg
			w.logger.Warn(w.readWarning, "error", err)
		}
		return nil
	}
	w.readError = ""
	if slices.EqualFunc(content, w.content, bytes.Equal) {
		return nil
	}
	w.content = content
	return content
}

// keyPairFiles holds a certificate and its key read from PEM files, and reads
// them again when they are replaced (Kubernetes Secret volumes, cert-manager
// rotate them in place), so new connections get the new pair without a
// restart; connections already open keep the one they were made with.
//
// A pair that cannot be read or does not load (say the certificate was
// replaced and its key not yet) leaves the last good one in service; the
// problem is logged once, until the files change again.
type keyPairFiles struct {
	watchedFiles // the certificate file, then the key file

	mu      sync.Mutex
	current *tls.Certificate
}

// loadKeyPairFiles reads the pair from the files given by the settings
// certFlag and keyFlag; an error names the setting at fault.
func loadKeyPairFiles(certFile, keyFile, certFlag, keyFlag string, logger *slog.Logger) (*keyPairFiles, error) {
	k := &keyPairFiles{watchedFiles: watchedFiles{
		paths:       []string{certFile, keyFile},
		options:     []string{config.Option(certFlag), config.Option(keyFlag)},
		readWarning: "cannot read the TLS certificate files again; keeping the loaded certificate",
		logger:      logger,
		now:         time.Now,
	}}
	content, err := k.read()
	if err != nil {
		return nil, err
	}
	cert, err := k.parse(content)
	if err != nil {
		return nil, err
	}
	k.current = cert
	k.loaded(content)
	logger.Info("TLS certificate loaded", certAttrs(cert)...)
	return k, nil
}

// certificate returns the pair to present, reading the files again first if
// certCheckInterval has passed since they were last looked at.
func (k *keyPairFiles) certificate() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	content := k.changed()
	if content == nil {
		return k.current
	}
	cert, err := k.parse(content)
	if err != nil {
		k.logger.Warn("the TLS certificate files changed but do not load; keeping the loaded certificate", "error", err)
		return k.current
	}
	k.current = cert
	k.logger.Info("TLS certificate reloaded", certAttrs(cert)...)
	return cert
}

// getCertificate serves as tls.Config.GetCertificate.
func (k *keyPairFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.certificate(), nil
}

// getClientCertificate serves as tls.Config.GetClientCertificate.
func (k *keyPairFiles) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.certificate(), nil
}

// parse loads the pair from content: the certificate file's, then the key
// file's.
func (k *keyPairFiles) parse(content [][]byte) (*tls.Certificate, error) {
	certPEM, keyPEM := content[0], content[1]
	certOption, keyOption := k.options[0], k.options[1]
	if !hasPEMBlock(certPEM, func(kind string) bool { return kind == "CERTIFICATE" }) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", certOption, k.paths[0])
	}
	if !hasPEMBlock(keyPEM, func(kind string) bool { return strings.HasSuffix(kind, "PRIVATE KEY") }) {
		return nil, fmt.Errorf("%s: %s holds no PEM private key", keyOption, k.paths[1])
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil { // e.g. "tls: private key does not match public key"
		return nil, fmt.Errorf("%s and %s: %w", certOption, keyOption, err)
	}
	return &cert, nil
}

// hasPEMBlock reports whether data holds a PEM block of a kind that fits.
func hasPEMBlock(data []byte, fits func(kind string) bool) bool {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return false
		}
		if fits(block.Type) {
			return true
		}
	}
}

// certAttrs describes a certificate for the log.
func certAttrs(cert *tls.Certificate) []any {
	if cert.Leaf == nil {
		return nil
	}
	return []any{"subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339)}
}

// clientCAFile holds the pool of a PEM CA bundle that client certificates
// are verified against, and reads the file again when it is replaced, as
// keyPairFiles does: new handshakes use the new bundle, connections already
// open stay. A file that cannot be read or holds no PEM certificate leaves
// the last good pool in service; the problem is logged once, until the file
// changes again.
type clientCAFile struct {
	watchedFiles // the bundle

	mu      sync.Mutex
	current *x509.CertPool
}

// loadClientCAFile reads the bundle from path, given by the setting
// flagName; an error names the setting.
func loadClientCAFile(path, flagName string, logger *slog.Logger) (*clientCAFile, error) {
	c := &clientCAFile{watchedFiles: watchedFiles{
		paths:       []string{path},
		options:     []string{config.Option(flagName)},
		readWarning: "cannot read the TLS client CA file again; keeping the loaded bundle",
		logger:      logger,
		now:         time.Now,
	}}
	content, err := c.read()
	if err != nil {
		return nil, err
	}
	pool, err := parseCABundle(content[0], c.options[0], path)
	if err != nil {
		return nil, err
	}
	c.current = pool
	c.loaded(content)
	logger.Info("TLS client CA bundle loaded")
	return c, nil
}

// pool returns the pool to verify client certificates against, reading the
// file again first if certCheckInterval has passed since it was last looked
// at.
func (c *clientCAFile) pool() *x509.CertPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	content := c.changed()
	if content == nil {
		return c.current
	}
	pool, err := parseCABundle(content[0], c.options[0], c.paths[0])
	if err != nil {
		c.logger.Warn("the TLS client CA file changed but does not load; keeping the loaded bundle", "error", err)
		return c.current
	}
	c.current = pool
	c.logger.Info("TLS client CA bundle reloaded")
	return pool
}

// loadCAFile reads a PEM CA bundle given by the setting flagName.
func loadCAFile(path, flagName string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.Option(flagName), err)
	}
	return parseCABundle(data, config.Option(flagName), path)
}

// parseCABundle returns the pool of the certificates in data, read from path
// given by option.
func parseCABundle(data []byte, option, path string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", option, path)
	}
	return pool, nil
}
