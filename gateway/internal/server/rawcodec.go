package server

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// rawMessage is a message the gateway passes on without decoding it: the
// gRPC ingress forwards bytes, and so does the submit coalescer.
type rawMessage struct{ data []byte }

// rawCodec moves rawMessage bytes as they are. It is named "proto" so calls
// keep the content type application/grpc+proto on both sides.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("raw codec cannot marshal %T", v)
	}
	return m.data, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("raw codec cannot unmarshal into %T", v)
	}
	m.data = append([]byte(nil), data...) // gRPC may reuse data once we return
	return nil
}

func (rawCodec) Name() string { return "proto" }

// forwardRaw sends and receives rawMessage bytes on a client call.
var forwardRaw = grpc.ForceCodec(rawCodec{})

// encode returns the wire bytes of a request given as a rawMessage or a
// generated message (the REST handlers pass those).
func encode(v any) ([]byte, error) {
	switch m := v.(type) {
	case *rawMessage:
		return m.data, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("cannot encode %T", v)
}

// decode fills reply, a rawMessage or a generated message, from wire bytes.
func decode(data []byte, reply any) error {
	switch m := reply.(type) {
	case *rawMessage:
		m.data = data
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("cannot decode into %T", reply)
}
