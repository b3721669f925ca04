package meshplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// StateEntry is one key/value state entry.
type StateEntry struct {
	Namespace string
	Key       string
	// Value is the stored value: JSON unless ContentType says otherwise.
	Value       json.RawMessage
	ContentType string
	// Version starts at 1 and grows with every write.
	Version    int64
	ExpireTime time.Time // zero: never expires
	CreateTime time.Time
	UpdateTime time.Time
}

// Decode decodes the JSON value into v.
func (e *StateEntry) Decode(v any) error { return decodeJSON(e.Value, e.ContentType, v) }

// StateOption modifies a State.Put or State.Delete.
type StateOption func(*stateOptions)

type stateOptions struct {
	expected *int64
	ttl      time.Duration
}

// ExpectVersion makes a write compare-and-set: it applies only if the stored version is v
// (0: the key must not exist); otherwise it fails with a *VersionConflictError.
func ExpectVersion(v int64) StateOption {
	return func(o *stateOptions) { o.expected = &v }
}

// IfAbsent is ExpectVersion(0): create the entry only if it does not exist.
func IfAbsent() StateOption { return ExpectVersion(0) }

// WithTTL makes the entry expire d after the write (Put only; 0: never). A negative d makes Put
// fail with an error matching ErrInvalidArgument, writing nothing.
func WithTTL(d time.Duration) StateOption {
	return func(o *stateOptions) { o.ttl = d }
}

// State is key/value state in one namespace, through StateService on the agent's (or
// client's) connection. An agent's state namespace is its name.
type State struct {
	namespace string
	client    func() (pb.StateServiceClient, error)
}

// Namespace is the namespace this State reads and writes.
func (s *State) Namespace() string { return s.namespace }

// Get returns an entry; an error matching ErrNotFound if it is absent or expired.
func (s *State) Get(ctx context.Context, key string) (*StateEntry, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	resp, err := c.GetState(ctx, &pb.GetStateRequest{Namespace: s.namespace, Key: key})
	if err != nil {
		return nil, rpcError(err)
	}
	return stateEntry(resp.GetEntry()), nil
}

// Put creates or replaces an entry and returns it as stored. With ExpectVersion (or IfAbsent)
// it is compare-and-set and fails with a *VersionConflictError (errors.Is ErrVersionConflict)
// on a mismatch, changing nothing. A value that does not encode, or a negative TTL, is an error
// matching ErrInvalidArgument (nothing is sent).
func (s *State) Put(ctx context.Context, key string, value any, opts ...StateOption) (*StateEntry, error) {
	var o stateOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.ttl < 0 {
		return nil, fmt.Errorf("%w: state %s/%s: the TTL must not be negative, got %s", ErrInvalidArgument, s.namespace, key, o.ttl)
	}
	payload, err := encodePayload(value)
	if err != nil {
		return nil, invalidArgument(err)
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	req := &pb.PutStateRequest{Namespace: s.namespace, Key: key, Value: payload, ExpectedVersion: o.expected}
	if o.ttl > 0 {
		req.Ttl = durationpb.New(o.ttl)
	}
	resp, err := c.PutState(ctx, req)
	if err != nil {
		return nil, s.conflict(key, o.expected, rpcError(err))
	}
	return stateEntry(resp.GetEntry()), nil
}

// Delete removes an entry: an error matching ErrNotFound if it is absent; with ExpectVersion a
// *VersionConflictError on a mismatch.
func (s *State) Delete(ctx context.Context, key string, opts ...StateOption) error {
	var o stateOptions
	for _, opt := range opts {
		opt(&o)
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	_, err = c.DeleteState(ctx, &pb.DeleteStateRequest{Namespace: s.namespace, Key: key, ExpectedVersion: o.expected})
	return s.conflict(key, o.expected, rpcError(err))
}

// List returns the namespace's live entries whose key starts with prefix, by key.
func (s *State) List(ctx context.Context, prefix string) ([]*StateEntry, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	var entries []*StateEntry
	token := ""
	for {
		resp, err := c.ListStates(ctx, &pb.ListStatesRequest{
			Namespace: s.namespace, KeyPrefix: prefix, PageSize: 1000, PageToken: token,
		})
		if err != nil {
			return nil, rpcError(err)
		}
		for _, e := range resp.GetEntries() {
			entries = append(entries, stateEntry(e))
		}
		token = resp.GetNextPageToken()
		if token == "" {
			return entries, nil
		}
	}
}

func (s *State) conflict(key string, expected *int64, err error) error {
	var rpc *RPCError
	if expected != nil && errors.As(err, &rpc) && rpc.Code == codes.FailedPrecondition {
		return &VersionConflictError{Namespace: s.namespace, Key: key, Expected: *expected, Message: rpc.Message}
	}
	return err
}

func stateEntry(e *pb.StateEntry) *StateEntry {
	data, ct, err := decodePayload(e.GetValue())
	if err != nil {
		data, ct = nil, "application/octet-stream"
	}
	entry := &StateEntry{
		Namespace:   e.GetNamespace(),
		Key:         e.GetKey(),
		Value:       data,
		ContentType: ct,
		Version:     e.GetVersion(),
		ExpireTime:  asTime(e.GetExpireTime()),
		CreateTime:  asTime(e.GetCreateTime()),
		UpdateTime:  asTime(e.GetUpdateTime()),
	}
	return entry
}
