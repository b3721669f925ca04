package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

var loopback = net.IPv4(127, 0, 0, 1)

// runForLines runs the gateway as main does, on loopback port 0, and returns
// the start-up lines it prints, as many as given by lines. It is stopped at
// the end of the test.
func runForLines(t *testing.T, upstream string, lines int, args ...string) []string {
	t.Helper()
	cfg := testConfig(t, upstream, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	out := bufio.NewReader(pr)
	var got []string
	for range lines {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the start-up lines: %v (so far %q)", err, got)
		}
		got = append(got, line)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return got
}

// match returns the first group of re in line, or fails the test.
func match(t *testing.T, re, line string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("line %q does not match %s", line, re)
	}
	return m[1]
}

// httpsClient trusts the given CAs and presents certs, if any. It speaks
// HTTP/2 where the server offers it.
func httpsClient(t *testing.T, cas []*testCA, certs ...tls.Certificate) *http.Client {
	t.Helper()
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: caPool(cas...), Certificates: certs},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport}
}

// get sends a GET with client and returns the response with its body read.
func get(t *testing.T, client *http.Client, url string) (*http.Response, string, error) {
	t.Helper()
	resp, err := client.Do(newRequest(t, http.MethodGet, url, nil))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// dialTLSIngress connects to the gRPC ingress over TLS.
func dialTLSIngress(t *testing.T, addr string, config *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestServingTLS(t *testing.T) {
	up := startUpstream(t)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	ca := newTestCA(t, "gateway CA")
	certFile, keyFile := keyPairPaths(t, ca.issue(t, 10, loopback))
	lines := runForLines(t, up.addr, 3, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	url := match(t, `^meshplane gateway listening on (https://127\.0\.0\.1:[1-9][0-9]*) \(upstream `, lines[0])
	grpcAddr := match(t, `^meshplane gateway serving gRPC on (\S+) with TLS \(upstream `, lines[1])
	metricsURL := match(t, `^meshplane gateway serving metrics on (http://\S+/metrics)\n$`, lines[2])

	client := httpsClient(t, []*testCA{ca})
	for _, path := range []string{"/v1/agents", "/healthz", "/readyz"} {
		resp, body, err := get(t, client, url+path)
		if err != nil {
			t.Fatalf("GET %s over HTTPS: %v", path, err)
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || resp.TLS == nil {
			t.Errorf("GET %s over HTTPS: %s %d %s, want HTTP/2 200", path, resp.Proto, resp.StatusCode, body)
		}
	}

	// Plain HTTP to the HTTPS listener gets Go's 400, not the API.
	plainURL := "http://" + strings.TrimPrefix(url, "https://")
	if resp, body, err := get(t, http.DefaultClient, plainURL+"/healthz"); err == nil && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the HTTPS listener: %d %s", resp.StatusCode, body)
	}
	// The metrics listener stays plain HTTP.
	if resp, _, err := get(t, http.DefaultClient, metricsURL); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("metrics over plain HTTP: %v, %v", resp, err)
	}

	conn := dialTLSIngress(t, grpcAddr, &tls.Config{RootCAs: caPool(ca)})
	task, err := meshplanev1.NewTaskServiceClient(conn).GetTask(t.Context(), &meshplanev1.GetTaskRequest{TaskId: "t-1"})
	if err != nil || task.GetTask().GetId() != "t-1" {
		t.Errorf("GetTask through the ingress over TLS: %v, %v", task, err)
	}
	plain, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := healthpb.NewHealthClient(plain).Check(t.Context(), &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("plaintext gRPC to the TLS ingress succeeded")
	}
}

// servedSerial makes a new TLS connection to addr and returns the serial
// number of the certificate it is served.
func servedSerial(t *testing.T, addr string, cas []*testCA) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: caPool(cas...), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestServingTLSRotation: the files are replaced in place by a pair from
// another CA; new connections to both listeners are served the new one.
func TestServingTLSRotation(t *testing.T) {
	up := startUpstream(t)
	oldCA, newCA := newTestCA(t, "gateway CA 1"), newTestCA(t, "gateway CA 2")
	certFile, keyFile := keyPairPaths(t, oldCA.issue(t, 10, loopback))
	lines := runForLines(t, up.addr, 2, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--grpc-listen", "127.0.0.1:0")
	url := match(t, `^meshplane gateway listening on (https://\S+) `, lines[0])
	httpAddr := strings.TrimPrefix(url, "https://")
	grpcAddr := match(t, `^meshplane gateway serving gRPC on (\S+) with TLS `, lines[1])
	both := []*testCA{oldCA, newCA}
	for _, addr := range []string{httpAddr, grpcAddr} {
		if got := servedSerial(t, addr, both); got != 10 {
			t.Fatalf("%s serves serial %d, want 10", addr, got)
		}
	}

	writeKeyPair(t, newCA.issue(t, 20, loopback), certFile, keyFile)
	for _, addr := range []string{httpAddr, grpcAddr} {
		waitFor(t, "the rotated certificate on "+addr, func() bool { return servedSerial(t, addr, both) == 20 })
	}
	// A client that trusts only the new CA gets through.
	if resp, body, err := get(t, httpsClient(t, []*testCA{newCA}), url+"/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz with the new certificate: %v %s %v", resp, body, err)
	}
}

func TestServingTLSClientCA(t *testing.T) {
	up := startUpstream(t)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	serverCA, clientCA, strangerCA := newTestCA(t, "gateway CA"), newTestCA(t, "client CA"), newTestCA(t, "stranger CA")
	certFile, keyFile := keyPairPaths(t, serverCA.issue(t, 10, loopback))
	lines := runForLines(t, up.addr, 2, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-client-ca-file", clientCA.pemFile(t), "--grpc-listen", "127.0.0.1:0")
	url := match(t, `^meshplane gateway listening on (https://\S+) `, lines[0])
	grpcAddr := match(t, `^meshplane gateway serving gRPC on (\S+) with TLS `, lines[1])
	servers := []*testCA{serverCA}
	clientCert, strangerCert := clientCA.issue(t, 30), strangerCA.issue(t, 40)

	if resp, body, err := get(t, httpsClient(t, servers, clientCert), url+"/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HTTPS with a client certificate: %v %s %v", resp, body, err)
	}
	for name, certs := range map[string][]tls.Certificate{"without": nil, "with a stranger's": {strangerCert}} {
		if _, _, err := get(t, httpsClient(t, servers, certs...), url+"/readyz"); err == nil {
			t.Errorf("HTTPS %s client certificate succeeded", name)
		}
	}

	check := func(certs ...tls.Certificate) error {
		conn := dialTLSIngress(t, grpcAddr, &tls.Config{RootCAs: caPool(serverCA), Certificates: certs})
		_, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(clientCert); err != nil {
		t.Errorf("gRPC with a client certificate: %v", err)
	}
	if err := check(); err == nil {
		t.Error("gRPC without a client certificate succeeded")
	}
	if err := check(strangerCert); err == nil {
		t.Error("gRPC with a stranger's client certificate succeeded")
	}
}
