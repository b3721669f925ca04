package meshplane

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
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
// are plaintext. The files are read once, by NewAgent or NewClient, which fail naming the
// setting when one is unreadable or a certificate comes without its key (or the reverse).
// Transport credentials given with [WithDialOptions] still override these.
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

// transportCredentials are the TLS credentials of the explicit setting, else of the
// environment; nil means plaintext.
func transportCredentials(explicit *TLSConfig) (credentials.TransportCredentials, error) {
	cfg, settings := explicit, optionSettings
	if cfg == nil {
		cfg, settings = tlsFromEnv(), envSettings
		if cfg == nil {
			return nil, nil
		}
	}
	conf, err := cfg.build(settings)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(conf), nil
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

func (c *TLSConfig) build(s tlsSettings) (*tls.Config, error) {
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
		certPEM, err := os.ReadFile(c.CertFile)
		if err != nil {
			return nil, fmt.Errorf("meshplane: TLS %s: %w", s.cert, err)
		}
		keyPEM, err := os.ReadFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("meshplane: TLS %s: %w", s.key, err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("meshplane: TLS %s and %s (%s, %s): %w", s.cert, s.key, c.CertFile, c.KeyFile, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}
