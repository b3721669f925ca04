package meshplane

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckInterval is how often, at most, the client certificate files are read again: on the
// first handshake after it has passed.
const certCheckInterval = time.Second

// clientCertFiles is the client certificate of a [TLSConfig] (or of the environment), read from
// its PEM files and read again when they change (cert-manager renews them in place), so that
// every new connection to the plane presents the certificate currently in the files; connections
// already open keep the one they were made with.
//
// It compares the files' content (not their modification time): a renewed certificate often has
// the same size, and a file rewritten within one timestamp tick keeps its mtime. The files are
// small and read at most once per certCheckInterval, when a handshake asks for the certificate.
//
// New files that cannot be read or do not load (say the certificate was replaced and its key not
// yet) leave the last good pair in use; that is logged once per change of the files, not once per
// handshake.
type clientCertFiles struct {
	certFile, keyFile string
	settings          tlsSettings
	logger            *slog.Logger
	now               func() time.Time

	mu              sync.Mutex
	current         *tls.Certificate
	certPEM, keyPEM []byte // the content last tried, good or not
	readFailure     string // the last failure to read the files, already logged
	nextCheck       time.Time
}

// loadClientCertFiles reads the pair once; an error names the setting at fault.
func loadClientCertFiles(certFile, keyFile string, s tlsSettings, logger *slog.Logger) (*clientCertFiles, error) {
	f := &clientCertFiles{certFile: certFile, keyFile: keyFile, settings: s, logger: logger, now: time.Now}
	certPEM, keyPEM, err := f.read()
	if err != nil {
		return nil, err
	}
	pair, err := f.parse(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	f.current, f.certPEM, f.keyPEM = pair, certPEM, keyPEM
	f.nextCheck = f.now().Add(certCheckInterval)
	return f, nil
}

// certificate is the pair to present now: the files are read again first when certCheckInterval
// has passed since they were last looked at.
func (f *clientCertFiles) certificate() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Before(f.nextCheck) {
		return f.current
	}
	f.nextCheck = now.Add(certCheckInterval)

	certPEM, keyPEM, err := f.read()
	if err != nil {
		if msg := err.Error(); msg != f.readFailure {
			f.readFailure = msg
			f.logger.Warn("meshplane: cannot read the TLS client certificate files again; still presenting the previous certificate",
				"error", err)
		}
		return f.current
	}
	f.readFailure = ""
	if bytes.Equal(certPEM, f.certPEM) && bytes.Equal(keyPEM, f.keyPEM) {
		return f.current
	}
	f.certPEM, f.keyPEM = certPEM, keyPEM
	pair, err := f.parse(certPEM, keyPEM)
	if err != nil {
		f.logger.Warn("meshplane: the TLS client certificate files changed but do not load; still presenting the previous certificate",
			"error", err)
		return f.current
	}
	f.current = pair
	attrs := []any{"cert_file", f.certFile}
	if leaf := pair.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "issuer", leaf.Issuer.String(), "not_after", leaf.NotAfter)
	}
	f.logger.Info("meshplane: TLS client certificate reloaded; new connections present it", attrs...)
	return pair
}

// getClientCertificate serves as tls.Config.GetClientCertificate.
func (f *clientCertFiles) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return f.certificate(), nil
}

func (f *clientCertFiles) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(f.certFile); err != nil {
		return nil, nil, fmt.Errorf("meshplane: TLS %s: %w", f.settings.cert, err)
	}
	if keyPEM, err = os.ReadFile(f.keyFile); err != nil {
		return nil, nil, fmt.Errorf("meshplane: TLS %s: %w", f.settings.key, err)
	}
	return certPEM, keyPEM, nil
}

func (f *clientCertFiles) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil { // e.g. "tls: private key does not match public key"
		return nil, fmt.Errorf("meshplane: TLS %s and %s (%s, %s): %w", f.settings.cert, f.settings.key, f.certFile, f.keyFile, err)
	}
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0]) // for the log only
	}
	return &pair, nil
}
