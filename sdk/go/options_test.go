package meshplane

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The reported bug: every agent of a process got the same default instance id (so two agents of
// one process replaced each other's sessions on the plane). The default is now per agent, from
// its name, as in the Python and TypeScript SDKs: "<name>-<host>-<pid>-<8 hex digits>".
func TestDefaultInstanceIDIsPerAgentAndNamedAfterIt(t *testing.T) {
	shape := regexp.MustCompile(fmt.Sprintf(`^greeter-[A-Za-z0-9._-]+-%d-[0-9a-f]{8}$`, os.Getpid()))
	a, b, c := DefaultInstanceID("greeter"), DefaultInstanceID("greeter"), DefaultInstanceID("summarizer")
	for _, id := range []string{a, b} {
		if !shape.MatchString(id) || !nameRE.MatchString(id) {
			t.Errorf("DefaultInstanceID(greeter) = %q, want a valid id shaped like %s", id, shape)
		}
	}
	if a == b || a == c || !strings.HasPrefix(c, "summarizer-") {
		t.Errorf("ids %q, %q, %q: want one of its own for each agent, starting with its name", a, b, c)
	}
	if a == ProcessInstanceID() {
		t.Error("the default instance id is still the process's")
	}
}

func TestDefaultInstanceIDOfALongNameIsCutToAValidID(t *testing.T) {
	name := strings.Repeat("n", 128)
	if id := DefaultInstanceID(name); len(id) != 128 || !nameRE.MatchString(id) {
		t.Errorf("DefaultInstanceID(128 chars) = %q (%d chars), want a valid 128-character id", id, len(id))
	}
}

func TestResolveTarget(t *testing.T) {
	t.Setenv("MESHPLANE_TARGET", "")
	if got := resolveTarget(""); got != DefaultTarget || DefaultTarget != "127.0.0.1:50051" {
		t.Errorf("resolveTarget(\"\") without MESHPLANE_TARGET = %q, want 127.0.0.1:50051", got)
	}
	t.Setenv("MESHPLANE_TARGET", " plane:7000 ")
	if got := resolveTarget(""); got != "plane:7000" {
		t.Errorf("resolveTarget(\"\") = %q, want MESHPLANE_TARGET", got)
	}
	if got := resolveTarget("other:1"); got != "other:1" {
		t.Errorf("resolveTarget(other:1) = %q, want the target given", got)
	}
}

func TestResolveToken(t *testing.T) {
	t.Setenv("MESHPLANE_TOKEN", "  env-token\n")
	for _, c := range []struct {
		token string
		given bool
		want  string
	}{
		{"", false, "env-token"},
		{"mine\n", true, "mine"},
		{"", true, ""},
	} {
		if got, err := resolveToken(c.token, c.given); err != nil || got != c.want {
			t.Errorf("resolveToken(%q, %v) = %q, %v; want %q", c.token, c.given, got, err, c.want)
		}
	}
	t.Setenv("MESHPLANE_TOKEN", "")
	if got, err := resolveToken("", false); err != nil || got != "" {
		t.Errorf("resolveToken without MESHPLANE_TOKEN = %q, %v; want no token", got, err)
	}
	for _, bad := range []string{"a\nb", "a\x00b", "naïve"} {
		if _, err := resolveToken(bad, true); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("resolveToken(%q) = %v, want an error matching ErrInvalidArgument", bad, err)
		}
	}
}

func TestInvalidChannelNamesMatchErrInvalidArgument(t *testing.T) {
	for _, name := range []string{"", ".a", "a.", "a..b", "a b", strings.Repeat("a", 201)} {
		if err := validChannel(name); !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "meshplane: invalid channel name") {
			t.Errorf("validChannel(%q) = %v, want an error matching ErrInvalidArgument", name, err)
		}
	}
	if err := validChannel("orders.eu-1"); err != nil {
		t.Errorf("validChannel(orders.eu-1) = %v", err)
	}
}
