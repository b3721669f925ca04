package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many log lines contain s.
func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// TestKeyPairFilesReload drives the holder with a clock of its own: the
// files are looked at again only once the interval has passed, a changed
// pair replaces the loaded one, and a broken one leaves it in service with
// one warning per change.
func TestKeyPairFilesReload(t *testing.T) {
	ca := newTestCA(t, "CA")
	certFile, keyFile := keyPairPaths(t, ca.issue(t, 1))
	logs := &lockedBuffer{}
	pair, err := loadKeyPairFiles(certFile, keyFile, "tls-cert-file", "tls-key-file", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(certCheckInterval) // past the check the load scheduled
	pair.now = func() time.Time { return clock }
	tick := func() { clock = clock.Add(certCheckInterval) }
	serial := func() int64 { return pair.certificate().Leaf.SerialNumber.Int64() }
	if got := serial(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	writeKeyPair(t, ca.issue(t, 2), certFile, keyFile)
	if got := serial(); got != 1 {
		t.Errorf("within the interval: serial %d, want the loaded 1", got)
	}
	tick()
	if got := serial(); got != 2 {
		t.Errorf("after the interval: serial %d, want the new 2", got)
	}
	if logs.count("TLS certificate reloaded") != 1 {
		t.Errorf("reload not logged once:\n%s", logs.buf.String())
	}

	// Half a rotation: a new certificate, the old key.
	newer := ca.issue(t, 3)
	_, otherKey := keyPairPaths(t, newer)
	writeKeyPair(t, newer, certFile, otherKey)
	for range 3 {
		tick()
		if got := serial(); got != 2 {
			t.Errorf("with a mismatched key: serial %d, want the loaded 2", got)
		}
	}
	if n := logs.count("do not load"); n != 1 {
		t.Errorf("%d warnings for one broken change, want 1:\n%s", n, logs.buf.String())
	}

	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tick()
		if got := serial(); got != 2 {
			t.Errorf("with the key missing: serial %d, want the loaded 2", got)
		}
	}
	if n := logs.count("cannot read"); n != 1 || !strings.Contains(logs.buf.String(), "--tls-key-file") {
		t.Errorf("%d warnings for a missing key, want 1 naming --tls-key-file:\n%s", n, logs.buf.String())
	}

	writeKeyPair(t, newer, certFile, keyFile)
	tick()
	if got := serial(); got != 3 {
		t.Errorf("once the key matches: serial %d, want 3", got)
	}
}

// TestClientCAFileReload drives the holder with a clock of its own: a
// certificate of a new CA is refused until the bundle is replaced and the
// interval has passed, then accepted; a replacement that does not load, or a
// missing file, leaves the last good pool in service with one warning each.
func TestClientCAFileReload(t *testing.T) {
	oldCA, newCA := newTestCA(t, "client CA 1"), newTestCA(t, "client CA 2")
	path := oldCA.pemFile(t)
	logs := &lockedBuffer{}
	cas, err := loadClientCAFile(path, "tls-client-ca-file", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(certCheckInterval) // past the check the load scheduled
	cas.now = func() time.Time { return clock }
	tick := func() { clock = clock.Add(certCheckInterval) }
	oldClient, newClient := oldCA.issue(t, 30), newCA.issue(t, 40)
	// verifies reports whether a client certificate verifies against the pool
	// in service, as crypto/tls verifies it.
	verifies := func(cert tls.Certificate) bool {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: cas.pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	if !verifies(oldClient) || verifies(newClient) {
		t.Fatal("the loaded bundle: want the old CA's client only")
	}

	writeFile(t, path, newCA.pemBytes())
	if !verifies(oldClient) || verifies(newClient) {
		t.Error("within the interval: want the loaded bundle still")
	}
	tick()
	if verifies(oldClient) || !verifies(newClient) {
		t.Error("after the interval: want the new CA's client only")
	}
	if logs.count("TLS client CA bundle reloaded") != 1 {
		t.Errorf("reload not logged once:\n%s", logs.buf.String())
	}

	writeFile(t, path, []byte("-----BEGIN GARBAGE-----\nnot a certificate\n"))
	for range 3 {
		tick()
		if !verifies(newClient) {
			t.Error("after a garbage replacement: want the new CA's bundle kept")
		}
	}
	if n := logs.count("does not load"); n != 1 || !strings.Contains(logs.buf.String(), "--tls-client-ca-file") {
		t.Errorf("%d warnings for one broken change, want 1 naming --tls-client-ca-file:\n%s", n, logs.buf.String())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tick()
		if !verifies(newClient) {
			t.Error("with the file missing: want the new CA's bundle kept")
		}
	}
	if n := logs.count("cannot read"); n != 1 {
		t.Errorf("%d warnings for a missing file, want 1:\n%s", n, logs.buf.String())
	}

	writeFile(t, path, append(oldCA.pemBytes(), newCA.pemBytes()...))
	tick()
	if !verifies(oldClient) || !verifies(newClient) {
		t.Error("a bundle of both CAs: want both clients")
	}
	if logs.count("TLS client CA bundle reloaded") != 2 {
		t.Errorf("second reload not logged:\n%s", logs.buf.String())
	}
}

// writeFile replaces the content of path.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
