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
	return runLoggingForLines(t, upstream, slog.New(slog.DiscardHandler), lines, args...)
}

// runLoggingForLines is runForLines, logging to logger.
func runLoggingForLines(t *testing.T, upstream string, logger *slog.Logger, lines int, args ...string) []string {
	t.Helper()
	cfg := testConfig(t, upstream, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, logger, pw)
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
	// The handshake is made with a configuration of its own (with the
	// bundle's pool of the moment): it still offers both HTTP versions.
	for _, proto := range []string{"h2", "http/1.1"} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"),
			&tls.Config{RootCAs: caPool(serverCA), Certificates: []tls.Certificate{clientCert}, NextProtos: []string{proto}})
		if err != nil {
			t.Errorf("TLS offering only %s: %v", proto, err)
			continue
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != proto {
			t.Errorf("TLS offering only %s: negotiated %q", proto, got)
		}
		conn.Close()
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

// TestServingTLSClientCAReload: the client CA file is replaced in place by
// another CA's; new connections to both listeners are verified against it.
// A replacement that does not load leaves it in service. HTTP/2 is
// negotiated throughout.
func TestServingTLSClientCAReload(t *testing.T) {
	up := startUpstream(t)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	serverCA, oldCA, newCA := newTestCA(t, "gateway CA"), newTestCA(t, "client CA 1"), newTestCA(t, "client CA 2")
	certFile, keyFile := keyPairPaths(t, serverCA.issue(t, 10, loopback))
	caFile := oldCA.pemFile(t)
	logs := &lockedBuffer{}
	lines := runLoggingForLines(t, up.addr, slog.New(slog.NewTextHandler(logs, nil)), 2,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", caFile, "--grpc-listen", "127.0.0.1:0")
	url := match(t, `^meshplane gateway listening on (https://\S+) `, lines[0])
	grpcAddr := match(t, `^meshplane gateway serving gRPC on (\S+) with TLS `, lines[1])
	// The client certificates, by the CA that signed them.
	certs := map[string]tls.Certificate{"old": oldCA.issue(t, 30), "new": newCA.issue(t, 40)}
	httpsClients := map[string]*http.Client{}
	for ca, cert := range certs {
		httpsClients[ca] = httpsClient(t, []*testCA{serverCA}, cert)
	}
	// viaHTTPS reports whether a new connection presenting the certificate of
	// ca gets an HTTP/2 answer from /readyz; viaGRPC whether one to the ingress
	// gets through.
	viaHTTPS := func(ca string) bool {
		client := httpsClients[ca]
		client.CloseIdleConnections()
		resp, body, err := get(t, client, url+"/readyz")
		if err != nil {
			return false
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Errorf("HTTPS: %s %d %s, want HTTP/2 200", resp.Proto, resp.StatusCode, strings.TrimSpace(body))
		}
		return true
	}
	viaGRPC := func(ca string) bool {
		creds := credentials.NewTLS(&tls.Config{RootCAs: caPool(serverCA), Certificates: []tls.Certificate{certs[ca]}})
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err == nil
	}
	// expect checks which client certificates both listeners accept.
	expect := func(when string, accepted map[string]bool) {
		t.Helper()
		for listener, through := range map[string]func(string) bool{"HTTPS": viaHTTPS, "gRPC": viaGRPC} {
			for ca, want := range accepted {
				if got := through(ca); got != want {
					t.Errorf("%s: %s with the %s CA's client certificate: accepted %v, want %v", when, listener, ca, got, want)
				}
			}
		}
	}

	expect("before the replacement", map[string]bool{"old": true, "new": false})

	writeFile(t, caFile, newCA.pemBytes())
	waitFor(t, "the new client CA on HTTPS", func() bool { return viaHTTPS("new") })
	waitFor(t, "the new client CA on gRPC", func() bool { return viaGRPC("new") })
	expect("after the replacement", map[string]bool{"old": false, "new": true})
	if n := logs.count("TLS client CA bundle reloaded"); n != 1 {
		t.Errorf("%d reloads logged, want 1:\n%s", n, logs.buf.String())
	}

	writeFile(t, caFile, []byte("not a certificate"))
	waitFor(t, "the warning about the garbage replacement", func() bool {
		viaHTTPS("new")
		return logs.count("does not load") > 0
	})
	expect("after a garbage replacement", map[string]bool{"old": false, "new": true})
	if n := logs.count("does not load"); n != 1 {
		t.Errorf("%d warnings for one garbage replacement, want 1:\n%s", n, logs.buf.String())
	}
}

// TestServingTLSClientCAResumption: a TLS session made under a CA that the
// replaced bundle no longer holds is not resumed.
func TestServingTLSClientCAResumption(t *testing.T) {
	up := startUpstream(t)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	serverCA, oldCA, newCA := newTestCA(t, "gateway CA"), newTestCA(t, "client CA 1"), newTestCA(t, "client CA 2")
	certFile, keyFile := keyPairPaths(t, serverCA.issue(t, 10, loopback))
	caFile := oldCA.pemFile(t)
	lines := runForLines(t, up.addr, 1, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", caFile)
	url := match(t, `^meshplane gateway listening on (https://\S+) `, lines[0])

	client := httpsClient(t, []*testCA{serverCA}, oldCA.issue(t, 30))
	client.Transport.(*http.Transport).TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	// readyz reports whether a new connection gets /readyz, and whether it
	// resumed a session.
	readyz := func() (ok, resumed bool) {
		client.CloseIdleConnections()
		resp, _, err := get(t, client, url+"/readyz")
		if err != nil {
			return false, false
		}
		return resp.StatusCode == http.StatusOK, resp.TLS.DidResume
	}
	if ok, _ := readyz(); !ok {
		t.Fatal("first connection refused")
	}
	if ok, resumed := readyz(); !ok || !resumed {
		t.Fatalf("second connection: ok %v, resumed %v; want a resumed session", ok, resumed)
	}

	writeFile(t, caFile, newCA.pemBytes())
	newClient := httpsClient(t, []*testCA{serverCA}, newCA.issue(t, 40))
	waitFor(t, "the new client CA", func() bool {
		newClient.CloseIdleConnections()
		_, _, err := get(t, newClient, url+"/readyz")
		return err == nil
	})
	if ok, resumed := readyz(); ok {
		t.Errorf("the old CA's client after the replacement: accepted (resumed %v)", resumed)
	}
}

// TestMetricsListenerHealthWithClientCertificates: while the HTTPS listener
// requires client certificates, probes get /healthz and /readyz over plain
// HTTP on the metrics listener.
func TestMetricsListenerHealthWithClientCertificates(t *testing.T) {
	up := startUpstream(t)
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	serverCA, clientCA := newTestCA(t, "gateway CA"), newTestCA(t, "client CA")
	certFile, keyFile := keyPairPaths(t, serverCA.issue(t, 10, loopback))
	lines := runForLines(t, up.addr, 2, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-client-ca-file", clientCA.pemFile(t), "--metrics-listen", "127.0.0.1:0")
	url := match(t, `^meshplane gateway listening on (https://\S+) `, lines[0])
	metricsBase := match(t, `^meshplane gateway serving metrics on (http://\S+)/metrics\n$`, lines[1])

	if _, _, err := get(t, httpsClient(t, []*testCA{serverCA}), url+"/healthz"); err == nil {
		t.Error("HTTPS /healthz without a client certificate succeeded")
	}
	probe := func(path string) (int, healthBody) {
		resp, body, err := get(t, http.DefaultClient, metricsBase+path)
		if err != nil {
			t.Fatalf("plain HTTP %s on the metrics listener: %v", path, err)
		}
		return resp.StatusCode, decodeHealth(t, []byte(body))
	}
	if code, h := probe("/healthz"); code != http.StatusOK || h.Status != "ok" {
		t.Errorf("/healthz: %d %+v", code, h)
	}
	if code, h := probe("/readyz"); code != http.StatusOK || h.Upstream != up.addr {
		t.Errorf("/readyz, upstream serving: %d %+v", code, h)
	}
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if code, h := probe("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(h.Reason, "NOT_SERVING") {
		t.Errorf("/readyz, upstream not serving: %d %+v", code, h)
	}
}
