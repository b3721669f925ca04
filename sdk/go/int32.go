package meshplane

import "math"

// int32Field is n for an int32 request field, saturated at int32's bounds instead of wrapping: a value out
// of int32's range reaches the control plane as out of range (refused there, or clamped for page sizes), not
// as some other, valid-looking number (1<<32 + 7 would otherwise arrive as 7).
func int32Field(n int) int32 {
	switch {
	case n > math.MaxInt32:
		return math.MaxInt32
	case n < math.MinInt32:
		return math.MinInt32
	default:
		return int32(n)
	}
}
