package server

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// Calls through the gateway take the upstream connections in turn, so the
// plane's accept loops share them (see connPool).
func TestCallsAreSpreadOverTheUpstreamConnections(t *testing.T) {
	for _, tc := range []struct {
		connections int
		want        []int
	}{
		{1, []int{9}},
		{3, []int{3, 3, 3}},
	} {
		t.Run(fmt.Sprintf("%d connections", tc.connections), func(t *testing.T) {
			up := startUpstream(t)
			gw := startGateway(t, up.addr, "--upstream-connections", fmt.Sprint(tc.connections))
			for i := range 9 {
				resp, body := do(t, newRequest(t, http.MethodGet, fmt.Sprintf("%s/v1/tasks/t-%d", gw.URL, i), nil))
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
			}
			if got := up.callsByConnection(); !slices.Equal(got, tc.want) {
				t.Errorf("calls by upstream connection %v, want %v", got, tc.want)
			}
		})
	}
}
