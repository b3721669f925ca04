package meshplane

// A Client takes the targets an Agent takes: a list of addresses ("ipv4:a,b", "ipv6:..."), whose
// addresses it calls in turn (round_robin), and whose first address is, over TLS, the name verified.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// callsAt is how many calls each recorder answered.
func callsAt(recorders ...*peerRecorder) []int {
	counts := make([]int, len(recorders))
	for i, rec := range recorders {
		for _, n := range rec.callsByConnection() {
			counts[i] += n
		}
	}
	return counts
}

// calledEach makes calls until every recorder answered some (round_robin reaches each address
// once its connection is ready), failing the test if that does not come within waitFor.
func calledEach(t *testing.T, client *Client, recorders ...*peerRecorder) {
	t.Helper()
	call := 0
	eventually(t, "calls at every address of the list", func() bool {
		call++
		id := fmt.Sprintf("t-%d", call)
		if task, err := client.Get(context.Background(), id); err != nil || task.ID != id {
			t.Fatalf("Get(%s) = %+v, %v", id, task, err)
		}
		for _, n := range callsAt(recorders...) {
			if n == 0 {
				return false
			}
		}
		return true
	})
}

func TestAClientCallsEveryAddressOfAnIPList(t *testing.T) {
	first, firstCalls := startRecorder(t)
	second, secondCalls := startRecorder(t)
	for _, opts := range [][]ClientOption{nil, {WithConnections(2)}} {
		client, err := NewClient("ipv4:"+first+","+second, opts...)
		if err != nil {
			t.Fatal(err)
		}
		calledEach(t, client, firstCalls, secondCalls)
		_ = client.Close()
	}
}

func TestAClientOverTLSVerifiesTheFirstAddressOfAnIPList(t *testing.T) {
	pki := newTestPKI(t) // the plane's certificate names 127.0.0.1, not "127.0.0.1:p1,127.0.0.1:p2"
	first, firstCalls := startRecorder(t, pki.serverCreds(false))
	second, secondCalls := startRecorder(t, pki.serverCreds(false))
	client, err := NewClient("ipv4:"+first+","+second, WithTLS(TLSConfig{CAFile: pki.caFile}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	calledEach(t, client, firstCalls, secondCalls)
}

func TestAClientWithABadIPListFailsAtOnce(t *testing.T) {
	_, err := NewClient("ipv4:127.0.0.1:1,plane.example:50051")
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NewClient: %v, want an invalid argument", err)
	}
	if want := `"plane.example" is not an IPv4 address`; !strings.Contains(err.Error(), want) {
		t.Fatalf("NewClient: %q does not say %q", err, want)
	}
}
