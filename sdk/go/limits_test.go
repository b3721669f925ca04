package meshplane

// What the control plane would refuse of an agent is refused in the caller's own call (limits.go):
// a publish fails at once, and an output over max_payload_bytes fails the attempt at once, not
// retryable, instead of an `error` frame nobody sees or a stream the output breaks on every resend.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const testPayloadLimit = 1024

// registeredWithLimit is registered() from a plane announcing max_payload_bytes.
func (s *fakeSession) registeredWithLimit(limit int64) {
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Registered{Registered: &pb.Registered{
		SessionId: "s", HeartbeatInterval: durationpb.New(50 * time.Millisecond), LeaseTimeout: durationpb.New(time.Second),
		MaxPayloadBytes: limit,
	}}}
}

// jsonTextOf is a JSON string whose encoding is size bytes (its quotes included).
func jsonTextOf(size int) string { return strings.Repeat("x", size-2) }

func connectedWithLimit(t *testing.T, register func(*Agent)) (*harness, *fakeSession) {
	t.Helper()
	h, run := startAgent(t)
	register(h.agent)
	run(h.agent)
	s := h.session()
	s.registeredWithLimit(testPayloadLimit)
	select {
	case <-h.agent.Ready():
	case <-time.After(waitFor):
		t.Fatal("Ready not closed")
	}
	return h, s
}

func TestPublishRefusesAtOnceWhatThePlaneWouldRefuse(t *testing.T) {
	refused := make(chan error, 1)
	h, s := connectedWithLimit(t, func(a *Agent) {
		a.Handle("publish", func(_ context.Context, task *Task) (any, error) {
			refused <- task.Publish("..bad", 1)
			return nil, nil
		})
	})
	s.assign("t1", "publish", `{}`)
	if err := <-refused; !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "invalid channel name") {
		t.Fatalf("a task's publish to a bad channel: %v", err)
	}
	for _, name := range []string{"", ".lead", "trail.", "a..b", "has space", strings.Repeat("x", 201), "ünï", "line\n"} {
		if err := h.agent.Publish(name, 1); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("channel %q: %v", name, err)
		}
	}

	tooMany := map[string]string{}
	for n := range maxHeaders + 1 {
		tooMany[fmt.Sprintf("k%d", n)] = "v"
	}
	for what, headers := range map[string]map[string]string{
		"65 headers":        tooMany,
		"an empty key":      {"": "v"},
		"a 257-rune key":    {strings.Repeat("é", 257): "v"},
		"a 4097-rune value": {"k": strings.Repeat("é", 4097)},
	} {
		if err := h.agent.PublishWithHeaders("fine", 1, headers); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", what, err)
		}
	}

	err := h.agent.Publish("fine", jsonTextOf(testPayloadLimit+1))
	want := "meshplane: payload is 1025 bytes; the limit is 1024 bytes (max_payload_bytes)"
	if !errors.Is(err, ErrResourceExhausted) || err.Error() != want {
		t.Fatalf("a payload over the limit: %v", err)
	}

	// What the plane takes, the SDK takes too: a payload of exactly the limit and the most headers, of
	// the most characters (counted as the plane counts them: runes, not bytes).
	most := map[string]string{strings.Repeat("😀", maxHeaderKeyLength): strings.Repeat("😀", maxHeaderValueLength)}
	for n := range maxHeaders - 1 {
		most[fmt.Sprintf("k%d", n)] = "v"
	}
	if err := h.agent.PublishWithHeaders("a.fine-channel_1", jsonTextOf(testPayloadLimit), most); err != nil {
		t.Fatalf("a publish the plane takes: %v", err)
	}
	s.waitFrame(t, "the publish", func(f *pb.ConnectRequest) bool {
		p := f.GetPublish()
		return p != nil && len(p.GetPayload().GetData()) == testPayloadLimit && len(p.GetHeaders()) == maxHeaders
	})
}

func TestAnOutputOverMaxPayloadBytesFailsTheAttemptAtOnceWithoutRetry(t *testing.T) {
	_, s := connectedWithLimit(t, func(a *Agent) {
		a.Handle("sized", Typed(func(_ context.Context, _ *Task, size int) (any, error) {
			return jsonTextOf(size), nil
		}))
		a.Handle("blob", func(context.Context, *Task) (any, error) {
			return Blob{Data: make([]byte, 4*testPayloadLimit)}, nil
		})
	})
	s.assign("fits", "sized", fmt.Sprint(testPayloadLimit))
	if r := s.result(t, "fits"); len(r.GetOutput().GetData()) != testPayloadLimit {
		t.Fatalf("an output of the limit: %v", r)
	}
	s.assign("over", "sized", fmt.Sprint(testPayloadLimit+1))
	e := s.result(t, "over").GetError()
	if e.GetCode() != CodeOutputTooLarge || e.GetRetryable() ||
		e.GetMessage() != "output is 1025 bytes; the limit is 1024 bytes (max_payload_bytes)" {
		t.Fatalf("an output over the limit: %v", e)
	}
	s.assign("blob", "blob", `{}`)
	if e := s.result(t, "blob").GetError(); e.GetCode() != CodeOutputTooLarge || e.GetRetryable() {
		t.Fatalf("a blob over the limit: %v", e)
	}
}

func TestJSONNestedDeeperThanThePlaneTakesIsToldApart(t *testing.T) {
	const tooDeep = "JSON nested more than 32 levels deep"
	for _, c := range []struct {
		text string
		want string
	}{
		{strings.Repeat("[", 32) + "1" + strings.Repeat("]", 32), ""},
		{strings.Repeat("[", 33) + "1" + strings.Repeat("]", 33), tooDeep},
		{strings.Repeat(`{"a":`, 33) + "1" + strings.Repeat("}", 33), tooDeep},
		{`["` + strings.Repeat("[{", 40) + `"]`, ""},                            // brackets in a string do not nest
		{`["\"` + strings.Repeat("[", 40) + `"]`, ""},                           // nor after an escaped quote
		{`["\\",` + strings.Repeat("[", 40) + strings.Repeat("]", 41), tooDeep}, // a string ending in an escaped backslash ends there
		{strings.Repeat("[]", 100), ""},                                         // many brackets, none deep
	} {
		if got := jsonDepthProblem([]byte(c.text)); got != c.want {
			t.Errorf("jsonDepthProblem(%.40q...) = %q, want %q", c.text, got, c.want)
		}
	}
	deep := &pb.Payload{Kind: &pb.Payload_Data{Data: []byte(strings.Repeat("[", 33) + strings.Repeat("]", 33))}, ContentType: "application/json"}
	if err := checkJSONDepth(deep); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tooDeep) {
		t.Errorf("checkJSONDepth = %v, want ErrInvalidArgument naming the depth", err)
	}
	deep.ContentType = "application/octet-stream"
	if err := checkJSONDepth(deep); err != nil {
		t.Errorf("bytes are not JSON: checkJSONDepth = %v", err)
	}
}
