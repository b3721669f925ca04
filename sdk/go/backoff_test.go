package meshplane

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToTheMaximum(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	b.random = func() float64 { return 0.5 } // no jitter
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("delay %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: got %v, want 100ms", got)
	}
}

func TestBackoffJitterIsPlusMinusHalf(t *testing.T) {
	b := newBackoff(time.Second, time.Second)
	b.random = func() float64 { return 0 }
	if got := b.Next(); got != 500*time.Millisecond {
		t.Fatalf("lowest jitter: got %v, want 500ms", got)
	}
	b.random = func() float64 { return 0.999999 }
	if got := b.Next(); got < 1499*time.Millisecond || got > 1500*time.Millisecond {
		t.Fatalf("highest jitter: got %v, want ~1.5s", got)
	}
	b = newBackoff(100*time.Millisecond, 5*time.Second) // real randomness stays in bounds
	for range 1000 {
		d := b.Next()
		if d < 50*time.Millisecond || d > 7500*time.Millisecond {
			t.Fatalf("delay %v outside [50ms, 7.5s]", d)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	b := newBackoff(0, 0)
	if b.initial != DefaultBackoffInitial || b.max != DefaultBackoffInitial {
		t.Fatalf("got initial %v max %v", b.initial, b.max)
	}
}
