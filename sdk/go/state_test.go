package meshplane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// fakeState records PutState requests and stores nothing.
type fakeState struct {
	pb.UnimplementedStateServiceServer
	puts recorder[*pb.PutStateRequest]
}

func (f *fakeState) PutState(_ context.Context, req *pb.PutStateRequest) (*pb.PutStateResponse, error) {
	f.puts.add(req)
	entry := &pb.StateEntry{Namespace: req.GetNamespace(), Key: req.GetKey(), Value: req.GetValue(), Version: 1}
	if req.GetTtl() != nil {
		entry.ExpireTime = timestamppb.New(time.Now().Add(req.GetTtl().AsDuration()))
	}
	return &pb.PutStateResponse{Entry: entry}, nil
}

func TestStatePutSendsItsTTL(t *testing.T) {
	fake := &fakeState{}
	state := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterStateServiceServer(srv, fake) }).State("ns")
	ctx := testContext(t)
	if _, err := state.Put(ctx, "a", 1, WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Put(ctx, "b", 1, WithTTL(0)); err != nil {
		t.Fatal(err)
	}
	puts := fake.puts.all()
	if len(puts) != 2 || puts[0].GetTtl().AsDuration() != time.Minute || puts[1].GetTtl() != nil {
		t.Errorf("requests %v; want a TTL of 1m, then none", puts)
	}
}

// The reported bug: a negative TTL was written as no expiry at all. The Python and TypeScript
// SDKs refuse it; so does Put now, writing nothing.
func TestStatePutRefusesANegativeTTL(t *testing.T) {
	fake := &fakeState{}
	state := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterStateServiceServer(srv, fake) }).State("ns")
	entry, err := state.Put(testContext(t), "k", 1, WithTTL(-time.Second))
	if entry != nil || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "TTL must not be negative") {
		t.Errorf("Put = %+v, %v; want an error matching ErrInvalidArgument", entry, err)
	}
	if n := len(fake.puts.all()); n != 0 {
		t.Errorf("%d PutState calls, want none", n)
	}
}

func TestStatePutOfAValueThatDoesNotEncodeIsAnInvalidArgument(t *testing.T) {
	fake := &fakeState{}
	state := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterStateServiceServer(srv, fake) }).State("ns")
	_, err := state.Put(testContext(t), "k", func() {})
	if !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "meshplane: value is not JSON-encodable") {
		t.Errorf("Put = %v; want an error matching ErrInvalidArgument", err)
	}
	if n := len(fake.puts.all()); n != 0 {
		t.Errorf("%d PutState calls, want none", n)
	}
}
