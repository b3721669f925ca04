package server

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// startMTLSUpstream starts a fake upstream that serves a plane.test
// certificate of serverCA and requires client certificates signed by one of
// clientCAs.
func startMTLSUpstream(t *testing.T, serverCA *testCA, clientCAs []*testCA, opts ...grpc.ServerOption) *fakeUpstream {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serverCA.issue(t, 2)},
		ClientCAs:    caPool(clientCAs...),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	up := startUpstream(t, append(opts, grpc.Creds(creds))...)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return up
}

func TestUpstreamClientCertificate(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "plane CA"), newTestCA(t, "gateway client CA")
	up := startMTLSUpstream(t, serverCA, []*testCA{clientCA})
	certFile, keyFile := keyPairPaths(t, clientCA.issue(t, 100))
	tlsArgs := []string{"--upstream-tls", "--upstream-ca-file", serverCA.pemFile(t), "--upstream-server-name", "plane.test"}

	gw := startGateway(t, up.addr, append(tlsArgs, "--upstream-cert-file", certFile, "--upstream-key-file", keyFile)...)
	if resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/agents", nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("with a client certificate: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/readyz", nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("readyz with a client certificate: %d %s", resp.StatusCode, body)
	}
	if !up.sawClientCertificate(100) {
		t.Error("the upstream did not see the client certificate")
	}

	without := startGateway(t, up.addr, tlsArgs...)
	if resp, body := do(t, newRequest(t, http.MethodGet, without.URL+"/v1/agents", nil)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("without a client certificate: %d %s, want 503", resp.StatusCode, body)
	}
	if resp, body := do(t, newRequest(t, http.MethodGet, without.URL+"/readyz", nil)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz without a client certificate: %d %s, want 503", resp.StatusCode, body)
	}
}

// TestUpstreamClientCertificateRotation: the files are replaced in place by
// a pair from another CA; the gateway's next connections to the upstream
// present it.
func TestUpstreamClientCertificateRotation(t *testing.T) {
	serverCA, oldCA, newCA := newTestCA(t, "plane CA"), newTestCA(t, "client CA 1"), newTestCA(t, "client CA 2")
	// The upstream ends each connection soon, so the gateway keeps making new ones.
	up := startMTLSUpstream(t, serverCA, []*testCA{oldCA, newCA},
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 50 * time.Millisecond, MaxConnectionAgeGrace: time.Second}))
	certFile, keyFile := keyPairPaths(t, oldCA.issue(t, 100))
	gw := startGateway(t, up.addr, "--upstream-tls", "--upstream-ca-file", serverCA.pemFile(t), "--upstream-server-name", "plane.test",
		"--upstream-cert-file", certFile, "--upstream-key-file", keyFile, "--upstream-connections", "1")

	// Calls may meet a connection being replaced (503); only what the upstream saw counts.
	call := func() { do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/agents", nil)) }
	waitFor(t, "the first client certificate", func() bool { call(); return up.sawClientCertificate(100) })

	writeKeyPair(t, newCA.issue(t, 200), certFile, keyFile)
	waitFor(t, "the rotated client certificate", func() bool { call(); return up.sawClientCertificate(200) })
}

// TestTLSFilesCheckedAtStartUp: a missing, unreadable or mismatched file
// stops New with one line naming the setting.
func TestTLSFilesCheckedAtStartUp(t *testing.T) {
	ca := newTestCA(t, "CA")
	certFile, keyFile := keyPairPaths(t, ca.issue(t, 2))
	_, otherKey := keyPairPaths(t, ca.issue(t, 3))
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not PEM at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := ca.pemFile(t)

	upstreamTLS := []string{"--upstream-tls", "--upstream-ca-file", caFile}
	upstreamPair := func(cert, key string) []string {
		return append(upstreamTLS, "--upstream-cert-file", cert, "--upstream-key-file", key)
	}
	servingPair := func(cert, key string) []string { return []string{"--tls-cert-file", cert, "--tls-key-file", key} }
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"upstream cert missing", upstreamPair(missing, keyFile), []string{"--upstream-cert-file", "MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE", "missing.pem"}},
		{"upstream key missing", upstreamPair(certFile, missing), []string{"--upstream-key-file", "missing.pem"}},
		{"upstream cert not PEM", upstreamPair(notPEM, keyFile), []string{"--upstream-cert-file", "no PEM certificate"}},
		{"upstream key not PEM", upstreamPair(certFile, notPEM), []string{"--upstream-key-file", "no PEM private key"}},
		{"upstream key of another certificate", upstreamPair(certFile, otherKey), []string{"--upstream-cert-file", "--upstream-key-file", "does not match"}},
		{"upstream cert and key swapped", upstreamPair(keyFile, certFile), []string{"--upstream-cert-file", "no PEM certificate"}},
		{"upstream CA missing", []string{"--upstream-tls", "--upstream-ca-file", missing}, []string{"--upstream-ca-file", "missing.pem"}},
		{"serving cert missing", servingPair(missing, keyFile), []string{"--tls-cert-file", "MESHPLANE_GATEWAY_TLS_CERT_FILE", "missing.pem"}},
		{"serving key missing", servingPair(certFile, missing), []string{"--tls-key-file", "missing.pem"}},
		{"serving cert not PEM", servingPair(notPEM, keyFile), []string{"--tls-cert-file", "no PEM certificate"}},
		{"serving key not PEM", servingPair(certFile, notPEM), []string{"--tls-key-file", "no PEM private key"}},
		{"serving key of another certificate", servingPair(certFile, otherKey), []string{"--tls-cert-file", "--tls-key-file", "does not match"}},
		{"client CA not PEM", append(servingPair(certFile, keyFile), "--tls-client-ca-file", notPEM), []string{"--tls-client-ca-file", "no PEM certificate"}},
	} {
		gw, err := New(testConfig(t, "127.0.0.1:1", tc.args...), slog.New(slog.DiscardHandler))
		if err == nil {
			gw.Close()
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, want)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q is more than one line", tc.name, err)
		}
	}

	// Without --upstream-tls the client pair is ignored, not read.
	gw, err := New(testConfig(t, "127.0.0.1:1", "--upstream-cert-file", missing, "--upstream-key-file", missing), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("client pair without --upstream-tls: %v", err)
	}
	gw.Close()
}
