package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testPKI makes a CA and a server certificate for DNS name "plane.test",
// returning the server's TLS certificate and the CA as a PEM file.
func testPKI(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, serverKey := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meshplane test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	serverTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "plane.test"},
		DNSNames:     []string{"plane.test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTmpl, caTmpl, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}, caFile
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
		if _, err := dialOptions(cfg); err == nil {
			t.Errorf("CA file %s accepted", path)
		}
	}
}
