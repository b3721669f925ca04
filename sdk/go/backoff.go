package meshplane

import (
	"math/rand/v2"
	"time"
)

// Reconnect backoff defaults (docs/agent-link.md §9: 0.1 s doubling to 5 s, ±50 % jitter).
const (
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
	backoffJitter         = 0.5
)

// reconnectBackoff yields delays doubling from initial to max, each randomised by ±jitter (a fraction).
type reconnectBackoff struct {
	initial, max time.Duration
	jitter       float64
	random       func() float64 // in [0, 1)
	next         time.Duration
}

func newBackoff(initial, max time.Duration) *reconnectBackoff {
	if initial <= 0 {
		initial = DefaultBackoffInitial
	}
	if max < initial {
		max = initial
	}
	return &reconnectBackoff{initial: initial, max: max, jitter: backoffJitter, random: rand.Float64, next: initial}
}

// Next returns the delay before the next attempt and doubles the following one (up to max).
func (b *reconnectBackoff) Next() time.Duration {
	base := b.next
	b.next = min(b.max, b.next*2)
	factor := 1 - b.jitter + 2*b.jitter*b.random()
	return time.Duration(float64(base) * factor)
}

// Reset goes back to the initial delay (after a connection that worked).
func (b *reconnectBackoff) Reset() { b.next = b.initial }
