package main

import "testing"

// The serving path is tested in internal/server; here only the exit codes.
func TestRunExitCodes(t *testing.T) {
	if code := run([]string{"--max-request-bytes", "0"}); code != 2 {
		t.Errorf("invalid flag value: exit %d, want 2", code)
	}
	if code := run([]string{"-h"}); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
}
