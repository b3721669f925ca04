package meshplane

// Renewed client certificates (the files replaced in place, as cert-manager does) and the hint
// logged when a plane refuses the TLS handshake: agents and clients against in-process planes over
// real sockets, whose trusted client CA the tests switch, and whose connections they drop.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// rotationPKI is two CAs, a server certificate of the first, and files for a client's pair.
type rotationPKI struct {
	ca1, ca2          testCA
	caFile            string // CA1: verifies the plane
	serverPair        tls.Certificate
	certFile, keyFile string // the client's pair, as the agent or client is configured
	dir               string
}

func newRotationPKI(t *testing.T) *rotationPKI {
	t.Helper()
	p := &rotationPKI{ca1: newTestCA(t, "client CA 1"), ca2: newTestCA(t, "client CA 2"), dir: t.TempDir()}
	serverCert, serverKey := p.ca1.issue(t, 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "control plane"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	pair, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	p.serverPair = pair
	p.caFile = writeFile(t, p.dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca1.cert.Raw}))
	p.certFile, p.keyFile = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key")
	return p
}

// clientPair is a new client certificate of ca, and its key.
func clientPair(t *testing.T, ca testCA, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.issue(t, serial, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "agent"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// replace writes data to path by an atomic rename, as cert-manager (a Secret volume) does.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// trackingListener remembers the connections it accepted, so a test can drop them.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, conn)
		l.mu.Unlock()
	}
	return conn, err
}

// drop closes every connection accepted so far (the client sees them break).
func (l *trackingListener) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, conn := range l.conns {
		_ = conn.Close()
	}
	l.conns = nil
}

// rotatingPlane is a mutual-TLS plane (the agent link and GetTask) whose trusted client CA can be
// switched; it records the issuer of the client certificate of each GetTask.
type rotatingPlane struct {
	addr       string
	ln         *trackingListener
	agents     *fakePlane
	clientCAs  atomic.Pointer[x509.CertPool]
	lastIssuer atomic.Pointer[string]
}

func startRotatingPlane(t *testing.T, pki *rotationPKI) *rotatingPlane {
	t.Helper()
	p := &rotatingPlane{agents: &fakePlane{sessions: make(chan *fakeSession, 64)}}
	p.trust(pki.ca1)
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{pki.serverPair},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    p.clientCAs.Load(),
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		issuer := issuerOf(peerOf(ctx))
		p.lastIssuer.Store(&issuer)
		return handler(ctx, req)
	}
	server := grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)), grpc.UnaryInterceptor(record))
	pb.RegisterAgentLinkServiceServer(server, p.agents)
	pb.RegisterTaskServiceServer(server, &peerRecorder{calls: map[string]int{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = &trackingListener{Listener: ln}
	p.addr = ln.Addr().String()
	go func() { _ = server.Serve(p.ln) }()
	t.Cleanup(server.Stop)
	return p
}

// trust makes ca the only one whose client certificates the plane accepts (new handshakes).
func (p *rotatingPlane) trust(ca testCA) {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	p.clientCAs.Store(pool)
}

func peerOf(ctx context.Context) *peer.Peer {
	p, _ := peer.FromContext(ctx)
	return p
}

// issuerOf is the common name of the issuer of the client certificate a peer presented.
func issuerOf(p *peer.Peer) string {
	if p == nil {
		return "no peer"
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "no client certificate"
	}
	return info.State.PeerCertificates[0].Issuer.CommonName
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An agent configured from the environment's files presents the renewed certificate when it
// reconnects: after a half-written rotation (new certificate, old key) it keeps the old pair
// (with one warning), once the rotation is complete it presents the new one to a plane that trusts
// only the new CA.
func TestAgentPresentsTheRenewedClientCertificate(t *testing.T) {
	pki := newRotationPKI(t)
	cert1, key1 := clientPair(t, pki.ca1, 10)
	replace(t, pki.certFile, cert1)
	replace(t, pki.keyFile, key1)
	plane := startRotatingPlane(t, pki)

	t.Setenv(EnvTLSCAFile, pki.caFile)
	t.Setenv(EnvTLSClientCertFile, pki.certFile)
	t.Setenv(EnvTLSClientKeyFile, pki.keyFile)
	logs := &logBuffer{}
	agent, err := NewAgent("tester", WithInstanceID("test-1"), WithLogger(logs.logger()),
		WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond), WithDrainTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	agent.Handle("echo", func(_ context.Context, t *Task) (any, error) { return t.Input, nil })
	h := &harness{t: t, plane: plane.agents, agent: agent, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.done <- agent.Run(ctx, plane.addr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})

	s := h.session()
	if got := issuerOf(s.peer); got != "client CA 1" {
		t.Fatalf("first session: client certificate of %q", got)
	}
	s.registered()

	// Half-written: the new certificate is there, its key not yet. The agent keeps presenting the
	// old pair (which the plane still trusts) on every reconnect, and warns once.
	cert2, key2 := clientPair(t, pki.ca2, 20)
	replace(t, pki.certFile, cert2)
	const doNotLoad = "files changed but do not load"
	eventually(t, "the warning about the half-written pair", func() bool {
		plane.ln.drop()
		s := h.session()
		if got := issuerOf(s.peer); got != "client CA 1" {
			t.Fatalf("after the half-written rotation: client certificate of %q", got)
		}
		s.registered()
		return strings.Contains(logs.String(), doNotLoad)
	})

	// The rotation completes, and the plane now trusts only CA2: the agent's next connection
	// presents the new pair (once the files are read again).
	replace(t, pki.keyFile, key2)
	plane.trust(pki.ca2)
	plane.ln.drop()
	s = h.session()
	if got := issuerOf(s.peer); got != "client CA 2" {
		t.Fatalf("after the rotation: client certificate of %q", got)
	}
	s.registered()
	select {
	case <-agent.Ready():
	case <-time.After(waitFor):
		t.Fatal("Ready not closed")
	}
	s.assign("t1", "echo", `{"renewed":true}`)
	if r := s.result(t, "t1"); string(r.GetOutput().GetData()) != `{"renewed":true}` {
		t.Fatalf("echo: %v", r)
	}
	out := logs.String()
	if n := strings.Count(out, doNotLoad); n != 1 {
		t.Errorf("%d warnings about the half-written pair, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "TLS client certificate reloaded") || !strings.Contains(out, "CN=client CA 2") {
		t.Errorf("the reload is not logged:\n%s", out)
	}
}

// A Client's new connections present the renewed certificate too (WithTLS files).
func TestClientPresentsTheRenewedClientCertificate(t *testing.T) {
	pki := newRotationPKI(t)
	cert1, key1 := clientPair(t, pki.ca1, 10)
	replace(t, pki.certFile, cert1)
	replace(t, pki.keyFile, key1)
	plane := startRotatingPlane(t, pki)
	logs := &logBuffer{} // a Client logs to slog.Default
	defaultLogger := slog.Default()
	slog.SetDefault(logs.logger())
	t.Cleanup(func() { slog.SetDefault(defaultLogger) })

	client, err := NewClient(plane.addr, WithTLS(TLSConfig{CAFile: pki.caFile, CertFile: pki.certFile, KeyFile: pki.keyFile}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := client.Get(ctx, "t-1")
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	if got := *plane.lastIssuer.Load(); got != "client CA 1" {
		t.Fatalf("client certificate of %q", got)
	}

	cert2, key2 := clientPair(t, pki.ca2, 20)
	replace(t, pki.certFile, cert2)
	replace(t, pki.keyFile, key2)
	plane.trust(pki.ca2)
	plane.ln.drop()
	// Calls fail (Unavailable) until a handshake reads the files again.
	eventually(t, "a call over a connection with the new certificate", func() bool { return get() == nil })
	if got := *plane.lastIssuer.Load(); got != "client CA 2" {
		t.Fatalf("after the rotation: client certificate of %q", got)
	}
	if !strings.Contains(logs.String(), "TLS client certificate reloaded") {
		t.Errorf("the reload is not logged:\n%s", logs.String())
	}
}

// The files are read again at most once per certCheckInterval; a pair that does not load, or
// files that cannot be read, keep the last good pair in use, with one warning per change.
func TestClientCertFilesKeepTheLastGoodPair(t *testing.T) {
	pki := newRotationPKI(t)
	cert1, key1 := clientPair(t, pki.ca1, 10)
	cert2, key2 := clientPair(t, pki.ca2, 20)
	replace(t, pki.certFile, cert1)
	replace(t, pki.keyFile, key1)
	logs := &logBuffer{}
	files, err := loadClientCertFiles(pki.certFile, pki.keyFile, envSettings, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	files.now = func() time.Time { return now }
	later := func() { now = now.Add(certCheckInterval) }
	issuer := func() string {
		t.Helper()
		cert, err := files.getClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Issuer.CommonName
	}
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }

	replace(t, pki.certFile, cert2) // the certificate is renewed, its key not yet
	if got := issuer(); got != "client CA 1" {
		t.Fatalf("within the interval: %q", got) // not read again yet
	}
	for range 3 {
		later()
		if got := issuer(); got != "client CA 1" {
			t.Fatalf("half-written: %q", got)
		}
	}
	if warnings() != 1 || !strings.Contains(logs.String(), "MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE") {
		t.Fatalf("want one warning naming the settings:\n%s", logs.String())
	}

	replace(t, pki.keyFile, key2)
	if got := issuer(); got != "client CA 1" {
		t.Fatalf("within the interval: %q", got)
	}
	later()
	if got := issuer(); got != "client CA 2" {
		t.Fatalf("complete: %q", got)
	}
	if warnings() != 1 || !strings.Contains(logs.String(), "TLS client certificate reloaded") {
		t.Fatalf("want the reload logged:\n%s", logs.String())
	}

	if err := os.Remove(pki.keyFile); err != nil { // mid-rotation by remove and create
		t.Fatal(err)
	}
	for range 3 {
		later()
		if got := issuer(); got != "client CA 2" {
			t.Fatalf("key missing: %q", got)
		}
	}
	if warnings() != 2 || !strings.Contains(logs.String(), "cannot read the TLS client certificate files again") {
		t.Fatalf("want one more warning, for the missing key:\n%s", logs.String())
	}
	replace(t, pki.keyFile, key2) // back: the same pair, nothing to reload or warn about
	later()
	if got := issuer(); got != "client CA 2" || warnings() != 2 {
		t.Fatalf("restored: %q\n%s", got, logs.String())
	}
}

// runRefusedAgent runs an agent (its TLS from the environment the caller set) against target
// until it has logged two refused attempts; it returns the log.
func runRefusedAgent(t *testing.T, target string) string {
	t.Helper()
	logs := &logBuffer{}
	agent, err := NewAgent("tester", WithLogger(logs.logger()), WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	agent.Handle("echo", func(_ context.Context, t *Task) (any, error) { return t.Input, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, target) }()
	eventually(t, "two reconnect warnings", func() bool { return strings.Count(logs.String(), "link lost; reconnecting") >= 2 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	return logs.String()
}

// The reconnect warning says what to check when the plane refuses the TLS handshake; not without
// TLS, nor when the cause is elsewhere.
func TestReconnectWarningHintsAtClientCertificates(t *testing.T) {
	pki := newTestPKI(t)
	_, mutual := startMutualTLSPlane(t, pki)
	stranger := newTestPKI(t) // a client certificate of another CA

	const hintNone = `hint="over TLS, no client certificate was shown: if the plane requires one, set MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE"`
	const hintCheck = `hint="over TLS: if the plane requires client certificates, check MESHPLANE_TLS_CLIENT_CERT_FILE / MESHPLANE_TLS_CLIENT_KEY_FILE and that the plane's client CA signed the certificate"`
	t.Run("no client certificate", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		out := runRefusedAgent(t, mutual.Addr().String())
		if !strings.Contains(out, hintNone) {
			t.Fatalf("no hint:\n%s", out)
		}
	})
	t.Run("a client certificate of another CA", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		t.Setenv(EnvTLSClientCertFile, stranger.clientCert)
		t.Setenv(EnvTLSClientKeyFile, stranger.clientKey)
		out := runRefusedAgent(t, mutual.Addr().String())
		if !strings.Contains(out, hintCheck) {
			t.Fatalf("no hint:\n%s", out)
		}
	})
	t.Run("TLS off", func(t *testing.T) {
		out := runRefusedAgent(t, mutual.Addr().String()) // plaintext to a TLS plane: refused too
		if strings.Contains(out, "hint=") {
			t.Fatalf("a hint without TLS:\n%s", out)
		}
	})
	t.Run("the plane's certificate does not verify", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.otherCAFile)
		out := runRefusedAgent(t, mutual.Addr().String())
		if strings.Contains(out, "hint=") || !strings.Contains(out, "x509") {
			t.Fatalf("want the verification error without a hint:\n%s", out)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		addr := closedAddress(t)
		t.Setenv(EnvTLSCAFile, pki.caFile)
		out := runRefusedAgent(t, addr)
		if strings.Contains(out, "hint=") || !strings.Contains(out, "connection refused") {
			t.Fatalf("want the refused connection without a hint:\n%s", out)
		}
	})
}
