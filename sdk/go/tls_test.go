package meshplane

// TLS to the control plane: clients and agents against in-process fakes (the GetTask recorder of
// client_test.go, the scripted AgentLinkService of agent_test.go) serving TLS, with and without
// client certificates. The certificates are made here, into t.TempDir().

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// TestMain keeps the tests hermetic: TLS settings of the environment running them would change
// how every client and agent of the package's tests connects.
func TestMain(m *testing.M) {
	for _, name := range []string{EnvTLS, EnvTLSCAFile, EnvTLSClientCertFile, EnvTLSClientKeyFile} {
		_ = os.Unsetenv(name)
	}
	os.Exit(m.Run())
}

// testPKI is a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and
// another CA that signed neither, as PEM files.
type testPKI struct {
	caFile, otherCAFile   string
	clientCert, clientKey string
	serverPair            tls.Certificate
	roots                 *x509.CertPool
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue returns the PEM certificate and key of a leaf signed by ca.
func (ca testCA) issue(t *testing.T, serial int64, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, other := newTestCA(t, "meshplane test CA"), newTestCA(t, "another CA")
	serverCert, serverKey := ca.issue(t, 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "control plane"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	clientCert, clientKey := ca.issue(t, 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "test client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	pair, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return &testPKI{
		caFile:      writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})),
		otherCAFile: writeFile(t, dir, "other-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw})),
		clientCert:  writeFile(t, dir, "client.pem", clientCert),
		clientKey:   writeFile(t, dir, "client-key.pem", clientKey),
		serverPair:  pair,
		roots:       roots,
	}
}

// serverCreds are the plane's TLS credentials; requireClientCert makes it mutual TLS.
func (p *testPKI) serverCreds(requireClientCert bool) grpc.ServerOption {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.serverPair}}
	if requireClientCert {
		conf.ClientAuth = tls.RequireAndVerifyClientCert
		conf.ClientCAs = p.roots
	}
	return grpc.Creds(credentials.NewTLS(conf))
}

// getTask makes one GetTask call (bounded, so a failing connection cannot hang the test).
func getTask(t *testing.T, addr string, opts ...ClientOption) error {
	t.Helper()
	client, err := NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	task, err := client.Get(ctx, "t-1")
	if err == nil && task.ID != "t-1" {
		t.Fatalf("Get answered %+v", task)
	}
	return err
}

// wantUnavailable checks err is the refused connection (not a timeout), its message containing want.
func wantUnavailable(t *testing.T, err error, want string) {
	t.Helper()
	var rpcErr *RPCError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &rpcErr) || rpcErr.Code != codes.Unavailable {
		t.Fatalf("error %v, want Unavailable", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not mention %q", err, want)
	}
}

func TestClientOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	addr, _ := startRecorder(t, pki.serverCreds(false))
	port := addr[strings.LastIndex(addr, ":"):]

	t.Run("the plane's CA verifies it", func(t *testing.T) {
		if err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile})); err != nil {
			t.Fatal(err)
		}
		if err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile}), WithConnections(3)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a host name in the certificate", func(t *testing.T) {
		if err := getTask(t, "localhost"+port, WithTLS(TLSConfig{CAFile: pki.caFile})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ServerName is what is verified", func(t *testing.T) {
		if err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile, ServerName: "localhost"})); err != nil {
			t.Fatal(err)
		}
		err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile, ServerName: "plane.example.com"}))
		wantUnavailable(t, err, "plane.example.com")
	})
	t.Run("plaintext is refused", func(t *testing.T) {
		start := time.Now()
		wantUnavailable(t, getTask(t, addr), "")
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("another CA does not verify it", func(t *testing.T) {
		wantUnavailable(t, getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.otherCAFile})), "certificate")
	})
	t.Run("the system's roots do not verify it", func(t *testing.T) {
		wantUnavailable(t, getTask(t, addr, WithTLS(TLSConfig{})), "certificate")
	})
	t.Run("WithDialOptions overrides WithTLS", func(t *testing.T) {
		creds := credentials.NewTLS(&tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12})
		err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.otherCAFile}), WithDialOptions(grpc.WithTransportCredentials(creds)))
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestClientOverMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	addr, _ := startRecorder(t, pki.serverCreds(true))

	// The plane refuses the handshake (TLS 1.3: right after it) and the call fails, without hanging.
	wantUnavailable(t, getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile})), "")
	err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}))
	if err != nil {
		t.Fatal(err)
	}
	// A client certificate that the plane's CA did not sign is refused too.
	wrongCA := newTestPKI(t)
	err = getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile, CertFile: wrongCA.clientCert, KeyFile: wrongCA.clientKey}))
	wantUnavailable(t, err, "")
}

func TestClientTLSFromTheEnvironment(t *testing.T) {
	pki := newTestPKI(t)
	addr, _ := startRecorder(t, pki.serverCreds(false))
	mutual, _ := startRecorder(t, pki.serverCreds(true))
	plain, _ := startRecorder(t)

	t.Run("MESHPLANE_TLS_CA_FILE", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		if err := getTask(t, addr); err != nil {
			t.Fatal(err)
		}
		wantUnavailable(t, getTask(t, plain), "") // TLS now, to a plaintext plane
	})
	t.Run("client certificate and key", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		t.Setenv(EnvTLSClientCertFile, pki.clientCert)
		t.Setenv(EnvTLSClientKeyFile, pki.clientKey)
		if err := getTask(t, mutual); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MESHPLANE_TLS_SERVER_NAME", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		t.Setenv(EnvTLSServerName, "plane.example.com") // the test certificate names localhost and 127.0.0.1
		wantUnavailable(t, getTask(t, addr), "plane.example.com")
		t.Setenv(EnvTLSServerName, "localhost")
		if err := getTask(t, addr); err != nil {
			t.Fatal(err)
		}
	})
	for _, on := range []string{"true", "1", "TRUE"} {
		t.Run("MESHPLANE_TLS="+on, func(t *testing.T) {
			t.Setenv(EnvTLS, on)
			// TLS with the system's roots: the handshake happens, and they do not know the test CA.
			wantUnavailable(t, getTask(t, addr), "certificate")
		})
	}
	for _, off := range []string{"", "false", "0"} {
		t.Run("MESHPLANE_TLS="+off, func(t *testing.T) {
			t.Setenv(EnvTLS, off)
			if err := getTask(t, plain); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("WithTLS wins", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, filepath.Join(t.TempDir(), "missing.pem")) // never read
		t.Setenv(EnvTLSClientCertFile, pki.clientCert)                    // no key: ignored too
		if err := getTask(t, addr, WithTLS(TLSConfig{CAFile: pki.caFile})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("WithDialOptions wins", func(t *testing.T) {
		t.Setenv(EnvTLSCAFile, pki.caFile)
		if err := getTask(t, plain, WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTLSSettingErrorsNameTheSetting(t *testing.T) {
	pki := newTestPKI(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := writeFile(t, t.TempDir(), "not.pem", []byte("hello"))
	for _, tc := range []struct {
		name string
		tls  *TLSConfig
		env  map[string]string
		want []string
	}{
		{"cert without key", &TLSConfig{CertFile: pki.clientCert}, nil, []string{"TLSConfig.CertFile is set without TLSConfig.KeyFile"}},
		{"key without cert", &TLSConfig{KeyFile: pki.clientKey}, nil, []string{"TLSConfig.KeyFile is set without TLSConfig.CertFile"}},
		{"unreadable CA", &TLSConfig{CAFile: missing}, nil, []string{"TLSConfig.CAFile", missing}},
		{"CA without certificates", &TLSConfig{CAFile: notPEM}, nil, []string{"TLSConfig.CAFile", "no PEM certificate"}},
		{"unreadable cert", &TLSConfig{CertFile: missing, KeyFile: pki.clientKey}, nil, []string{"TLSConfig.CertFile", missing}},
		{"unreadable key", &TLSConfig{CertFile: pki.clientCert, KeyFile: missing}, nil, []string{"TLSConfig.KeyFile", missing}},
		{"mismatched cert and key", &TLSConfig{CertFile: pki.clientCert, KeyFile: newTestPKI(t).clientKey}, nil,
			[]string{"TLSConfig.CertFile and TLSConfig.KeyFile"}},
		{"env cert without key", nil, map[string]string{EnvTLSClientCertFile: pki.clientCert},
			[]string{"MESHPLANE_TLS_CLIENT_CERT_FILE is set without MESHPLANE_TLS_CLIENT_KEY_FILE"}},
		{"env key without cert", nil, map[string]string{EnvTLSClientKeyFile: pki.clientKey},
			[]string{"MESHPLANE_TLS_CLIENT_KEY_FILE is set without MESHPLANE_TLS_CLIENT_CERT_FILE"}},
		{"env unreadable CA", nil, map[string]string{EnvTLSCAFile: missing}, []string{"MESHPLANE_TLS_CA_FILE", missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var clientOpts []ClientOption
			agentOpts := []Option{WithLogger(discardLogger())}
			if tc.tls != nil {
				clientOpts = append(clientOpts, WithTLS(*tc.tls))
				agentOpts = append(agentOpts, WithTLS(*tc.tls))
			}
			_, clientErr := NewClient("127.0.0.1:1", clientOpts...)
			_, agentErr := NewAgent("tester", agentOpts...)
			for what, err := range map[string]error{"NewClient": clientErr, "NewAgent": agentErr} {
				if err == nil {
					t.Fatalf("%s: no error", what)
				}
				for _, want := range tc.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not mention %q", what, err, want)
					}
				}
			}
		})
	}
}

// startMutualTLSPlane serves the fake agent link over TLS, requiring client certificates of pki's CA.
func startMutualTLSPlane(t *testing.T, pki *testPKI) (*fakePlane, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer(pki.serverCreds(true))
	plane := &fakePlane{sessions: make(chan *fakeSession, 8)}
	pb.RegisterAgentLinkServiceServer(server, plane)
	go func() { _ = server.Serve(ln) }()
	t.Cleanup(server.Stop)
	return plane, ln
}

// An agent's link over mutual TLS: it registers, serves a task and leaves gracefully.
func TestAgentOverMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	plane, ln := startMutualTLSPlane(t, pki)

	// A client certificate without its key in the environment would be an error: WithTLS wins,
	// the environment is not read.
	t.Setenv(EnvTLSClientCertFile, pki.clientCert)
	agent, err := NewAgent("tester",
		WithInstanceID("test-1"),
		WithLogger(discardLogger()),
		WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond),
		WithDrainTimeout(time.Second),
		WithTLS(TLSConfig{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}),
	)
	if err != nil {
		t.Fatal(err)
	}
	agent.Handle("echo", func(_ context.Context, t *Task) (any, error) { return t.Input, nil })
	h := &harness{t: t, plane: plane, agent: agent, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { h.done <- agent.Run(ctx, ln.Addr().String()) }()

	s := h.session()
	if s.register.GetAgentName() != "tester" {
		t.Fatalf("register: %v", s.register)
	}
	s.registered()
	select {
	case <-agent.Ready():
	case <-time.After(waitFor):
		t.Fatal("Ready not closed")
	}
	s.assign("t1", "echo", `{"over":"tls"}`)
	if r := s.result(t, "t1"); string(r.GetOutput().GetData()) != `{"over":"tls"}` {
		t.Fatalf("echo: %v", r)
	}
	s.ack("t1")
	cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
}

// An agent without a client certificate never gets through a mutual-TLS plane's handshake: it
// keeps retrying (no session reaches the plane) until stopped.
func TestAgentWithoutClientCertificateIsRefused(t *testing.T) {
	pki := newTestPKI(t)
	plane, ln := startMutualTLSPlane(t, pki)

	t.Setenv(EnvTLSCAFile, pki.caFile) // the environment's TLS: the CA, no client certificate
	logs := runRefusedAgent(t, ln.Addr().String())
	select {
	case s := <-plane.sessions:
		t.Fatalf("a session reached the plane: %v", s.register)
	default:
	}
	if !strings.Contains(logs, "code = Unavailable") {
		t.Fatalf("the refused handshakes are not logged: %s", logs)
	}
}
