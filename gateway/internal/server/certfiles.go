package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshplane/meshplane/gateway/internal/config"
)

// certCheckInterval is how often, at most, a keyPairFiles looks at its files
// again: on the first handshake after the interval has passed.
const certCheckInterval = time.Second

// keyPairFiles holds a certificate and its key read from PEM files, and reads
// them again when they are replaced (Kubernetes Secret volumes, cert-manager
// rotate them in place), so new connections get the new pair without a
// restart; connections already open keep the one they were made with.
//
// It compares the files' content, not their modification time or size: a
// renewed certificate of the same shape often has the same size, and files
// rewritten within one timestamp tick keep their mtime. The files are small
// and read at most once per certCheckInterval.
//
// A pair that cannot be read or does not load (say the certificate was
// replaced and its key not yet) leaves the last good one in service; the
// problem is logged once, until the files change again.
type keyPairFiles struct {
	certFile, keyFile     string
	certOption, keyOption string // the settings they come from, for messages
	logger                *slog.Logger
	now                   func() time.Time

	mu        sync.Mutex
	current   *tls.Certificate
	certPEM   []byte // the content last tried, good or not
	keyPEM    []byte
	readError string // the last failure to read the files, already logged
	nextCheck time.Time
}

// loadKeyPairFiles reads the pair from the files given by the settings
// certFlag and keyFlag; an error names the setting at fault.
func loadKeyPairFiles(certFile, keyFile, certFlag, keyFlag string, logger *slog.Logger) (*keyPairFiles, error) {
	k := &keyPairFiles{
		certFile:   certFile,
		keyFile:    keyFile,
		certOption: config.Option(certFlag),
		keyOption:  config.Option(keyFlag),
		logger:     logger,
		now:        time.Now,
	}
	certPEM, keyPEM, err := k.read()
	if err != nil {
		return nil, err
	}
	cert, err := k.parse(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	k.current, k.certPEM, k.keyPEM = cert, certPEM, keyPEM
	k.nextCheck = k.now().Add(certCheckInterval)
	logger.Info("TLS certificate loaded", certAttrs(cert)...)
	return k, nil
}

// certificate returns the pair to present, reading the files again first if
// certCheckInterval has passed since they were last looked at.
func (k *keyPairFiles) certificate() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if now.Before(k.nextCheck) {
		return k.current
	}
	k.nextCheck = now.Add(certCheckInterval)

	certPEM, keyPEM, err := k.read()
	if err != nil {
		if msg := err.Error(); msg != k.readError {
			k.readError = msg
			k.logger.Warn("cannot read the TLS certificate files again; keeping the loaded certificate", "error", err)
		}
		return k.current
	}
	k.readError = ""
	if bytes.Equal(certPEM, k.certPEM) && bytes.Equal(keyPEM, k.keyPEM) {
		return k.current
	}
	k.certPEM, k.keyPEM = certPEM, keyPEM
	cert, err := k.parse(certPEM, keyPEM)
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

func (k *keyPairFiles) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(k.certFile); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", k.certOption, err)
	}
	if keyPEM, err = os.ReadFile(k.keyFile); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", k.keyOption, err)
	}
	return certPEM, keyPEM, nil
}

func (k *keyPairFiles) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if !hasPEMBlock(certPEM, func(kind string) bool { return kind == "CERTIFICATE" }) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", k.certOption, k.certFile)
	}
	if !hasPEMBlock(keyPEM, func(kind string) bool { return strings.HasSuffix(kind, "PRIVATE KEY") }) {
		return nil, fmt.Errorf("%s: %s holds no PEM private key", k.keyOption, k.keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil { // e.g. "tls: private key does not match public key"
		return nil, fmt.Errorf("%s and %s: %w", k.certOption, k.keyOption, err)
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

// loadCAFile reads a PEM CA bundle given by the setting flagName.
func loadCAFile(path, flagName string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.Option(flagName), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", config.Option(flagName), path)
	}
	return pool, nil
}
