package server

import (
	"bytes"
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
