package meshplane

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TLSConfig says how to connect to the control plane over TLS ([WithTLS]).
type TLSConfig struct {
	// CAFile is a PEM file of the root certificates that verify the control plane's certificate
	// ("": the system's roots).
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its private key, for a control plane
	// that requires client certificates (mutual TLS). Both or neither.
	CertFile string
	KeyFile  string
	// ServerName is the name verified in the control plane's certificate instead of the
	// target's host (e.g. when dialing an IP address).
	ServerName string
}

// The environment variables read when no [WithTLS] is given.
const (
	// EnvTLS "true" or "1": TLS, verified with the system's roots (unless EnvTLSCAFile is set).
	EnvTLS = "MESHPLANE_TLS"
	// EnvTLSCAFile set: TLS, verified with the roots of this PEM file.
	EnvTLSCAFile = "MESHPLANE_TLS_CA_FILE"
	// EnvTLSClientCertFile and EnvTLSClientKeyFile: a client certificate and its key (TLS).
	EnvTLSClientCertFile = "MESHPLANE_TLS_CLIENT_CERT_FILE"
	EnvTLSClientKeyFile  = "MESHPLANE_TLS_CLIENT_KEY_FILE"
	// EnvTLSServerName: the name to verify in the plane's certificate (with TLS on), not the target's host.
	EnvTLSServerName = "MESHPLANE_TLS_SERVER_NAME"
)

// WithTLS connects to the control plane over TLS (at least TLS 1.2), for agents and clients.
// It wins over the MESHPLANE_TLS* environment variables, which are otherwise read by NewAgent
// and NewClient: MESHPLANE_TLS_CA_FILE set means TLS verified with that CA;
// MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE, a client certificate (and
// TLS); MESHPLANE_TLS "true" or "1", TLS with the system's roots. Without either, connections
// are plaintext. NewAgent and NewClient read the files first, and fail naming the setting when
// one is unreadable or a certificate comes without its key (or the reverse).
//
// The client certificate renews without a restart: every new connection to the plane (an agent's
// reconnect, a Client's connection) presents the pair currently in CertFile and KeyFile, read
// again when their content changed (at most once a second, on a handshake). New files that do not
// load (a key that does not match the certificate mid-rotation, a missing file) leave the last
// good pair in use, with one warning per change (the agent's logger; slog.Default for a Client).
// Connections already open keep their certificate. The CA file is read once.
// Transport credentials given with [WithDialOptions] still override these, and are never re-read.
func WithTLS(cfg TLSConfig) SharedOption {
	return sharedOption{
		agent:  func(c *agentConfig) { c.tls = &cfg },
		client: func(c *clientConfig) { c.tls = &cfg },
	}
}

// tlsSettings names the settings of a TLSConfig in errors: the option's fields or the
// environment variables they came from.
type tlsSettings struct{ ca, cert, key string }

var (
	optionSettings = tlsSettings{ca: "TLSConfig.CAFile", cert: "TLSConfig.CertFile", key: "TLSConfig.KeyFile"}
	envSettings    = tlsSettings{ca: EnvTLSCAFile, cert: EnvTLSClientCertFile, key: EnvTLSClientKeyFile}
)

// tlsSetup is the TLS of an agent or a client, from WithTLS or the environment.
type tlsSetup struct {
	creds      credentials.TransportCredentials
	settings   tlsSettings
	clientCert bool // a client certificate is configured
}

// transportCredentials are the TLS credentials of the explicit setting, else of the
// environment; nil means plaintext. logger takes the warnings of the client certificate's renewal.
func transportCredentials(explicit *TLSConfig, logger *slog.Logger) (*tlsSetup, error) {
	cfg, settings := explicit, optionSettings
	if cfg == nil {
		cfg, settings = tlsFromEnv(), envSettings
		if cfg == nil {
			return nil, nil
		}
	}
	conf, err := cfg.build(settings, logger)
	if err != nil {
		return nil, err
	}
	return &tlsSetup{creds: credentials.NewTLS(conf), settings: settings, clientCert: cfg.CertFile != ""}, nil
}

// credentials are the transport credentials; nil (plaintext) without TLS.
func (s *tlsSetup) credentials() credentials.TransportCredentials {
	if s == nil {
		return nil
	}
	return s.creds
}

// hint says what to check when a connection attempt failed as a plane refusing the TLS handshake
// does (see refusedHandshake); "" without TLS.
func (s *tlsSetup) hint(err error) string {
	if s == nil || !refusedHandshake(err) {
		return ""
	}
	if !s.clientCert {
		return fmt.Sprintf("over TLS, no client certificate was shown: if the plane requires one, set %s and %s",
			s.settings.cert, s.settings.key)
	}
	return fmt.Sprintf("over TLS: if the plane requires client certificates, check %s / %s and that the plane's client CA signed the certificate",
		s.settings.cert, s.settings.key)
}

// refusedHandshake: err is a connection attempt that failed as one does when the plane ends the
// TLS handshake, e.g. for a missing or untrusted client certificate. The client then sees a TLS
// alert, or the connection closed or reset (TLS 1.3: on its first write after the handshake), not
// why. A refused TCP connection or a plane certificate that did not verify is not that.
func refusedHandshake(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "failed to verify") {
		return false // the client refused the plane's certificate: the message says so
	}
	for _, sign := range []string{"remote error: tls", "handshake failed", "error reading server preface", "broken pipe", "connection reset"} {
		if strings.Contains(msg, sign) {
			return true
		}
	}
	return false
}

// tlsFromEnv is the TLS setting of the environment, nil when it asks for none.
func tlsFromEnv() *TLSConfig {
	cfg := &TLSConfig{
		CAFile:   os.Getenv(EnvTLSCAFile),
		CertFile: os.Getenv(EnvTLSClientCertFile),
		KeyFile:  os.Getenv(EnvTLSClientKeyFile),
		// The server name alone does not turn TLS on.
		ServerName: os.Getenv(EnvTLSServerName),
	}
	on := strings.ToLower(strings.TrimSpace(os.Getenv(EnvTLS)))
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" && on != "true" && on != "1" {
		return nil
	}
	return cfg
}

func (c *TLSConfig) build(s tlsSettings, logger *slog.Logger) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("meshplane: TLS %s: %w", s.ca, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("meshplane: TLS %s: no PEM certificate in %s", s.ca, c.CAFile)
		}
		conf.RootCAs = roots
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		return nil, fmt.Errorf("meshplane: TLS %s is set without %s: a client certificate needs its key", s.cert, s.key)
	case c.CertFile == "" && c.KeyFile != "":
		return nil, fmt.Errorf("meshplane: TLS %s is set without %s: a client key needs its certificate", s.key, s.cert)
	case c.CertFile != "":
		files, err := loadClientCertFiles(c.CertFile, c.KeyFile, s, logger)
		if err != nil {
			return nil, err
		}
		// Asked for on every handshake: each new connection presents the pair now in the files.
		conf.GetClientCertificate = files.getClientCertificate
	}
	return conf, nil
}
