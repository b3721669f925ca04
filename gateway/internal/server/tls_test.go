package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testCA is a throwaway certificate authority for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newTestKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, der: der}
}

// pemBytes returns the CA certificate as PEM.
func (ca *testCA) pemBytes() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// pemFile writes the CA certificate to a new PEM file and returns its path.
func (ca *testCA) pemFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.pemBytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// caPool returns a pool of the given CAs' certificates.
func caPool(cas ...*testCA) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.cert)
	}
	return pool
}

// issue makes a certificate with the given serial for DNS name "plane.test"
// and the given IP addresses, usable by servers and clients alike.
func (ca *testCA) issue(t *testing.T, serial int64, ips ...net.IP) tls.Certificate {
	t.Helper()
	key := newTestKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "plane.test"},
		DNSNames:     []string{"plane.test"},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writeKeyPair writes cert and its key as PEM to certFile and keyFile,
// overwriting them in place.
func writeKeyPair(t *testing.T, cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// keyPairPaths writes cert to a new cert.pem and key.pem and returns their paths.
func keyPairPaths(t *testing.T, cert tls.Certificate) (string, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeKeyPair(t, cert, certFile, keyFile)
	return certFile, keyFile
}

// testPKI makes a CA and a server certificate for DNS name "plane.test",
// returning the server's TLS certificate and the CA as a PEM file.
func testPKI(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	ca := newTestCA(t, "meshplane test CA")
	return ca.issue(t, 2), ca.pemFile(t)
}

func TestUpstreamTLS(t *testing.T) {
	cert, caFile := testPKI(t)
	up := startUpstream(t, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	gw := startGateway(t, up.addr, "--upstream-tls", "--upstream-ca-file", caFile, "--upstream-server-name", "plane.test")
	if resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/agents", nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("over TLS: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/readyz", nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("readyz over TLS: %d %s", resp.StatusCode, body)
	}

	// The certificate is for plane.test, not for the address dialled.
	wrongName := startGateway(t, up.addr, "--upstream-tls", "--upstream-ca-file", caFile)
	if resp, body := do(t, newRequest(t, http.MethodGet, wrongName.URL+"/v1/agents", nil)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("wrong server name: %d %s, want 503", resp.StatusCode, body)
	}
}

func TestUpstreamCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{notPEM, filepath.Join(dir, "missing.pem")} {
		cfg := testConfig(t, "127.0.0.1:1", "--upstream-tls", "--upstream-ca-file", path)
		if _, err := dialOptions(cfg, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("CA file %s accepted", path)
		}
	}
}
