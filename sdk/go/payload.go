package meshplane

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const contentTypeJSON = "application/json"

// Blob is a non-JSON payload: opaque bytes with a MIME type. Return one from a handler (or
// pass one to Publish/Submit) to send bytes as they are instead of JSON.
type Blob struct {
	Data        []byte
	ContentType string
}

// encodePayload turns a Go value into a payload: JSON as UTF-8 bytes with content type
// application/json (docs/agent-link.md §10), a Blob as its bytes.
func encodePayload(v any) (*pb.Payload, error) {
	switch value := v.(type) {
	case Blob:
		return blobPayload(value), nil
	case *Blob:
		if value != nil {
			return blobPayload(*value), nil
		}
	case json.RawMessage:
		if !json.Valid(value) {
			return nil, fmt.Errorf("meshplane: json.RawMessage is not valid JSON")
		}
		return jsonPayload(value), nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("meshplane: value is not JSON-encodable: %w", err)
	}
	return jsonPayload(data), nil
}

func jsonPayload(data []byte) *pb.Payload {
	return &pb.Payload{Kind: &pb.Payload_Data{Data: data}, ContentType: contentTypeJSON}
}

func blobPayload(b Blob) *pb.Payload {
	ct := b.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &pb.Payload{Kind: &pb.Payload_Data{Data: b.Data}, ContentType: ct}
}

// decodePayload returns a payload's bytes and content type. Both input forms are accepted:
// a google.protobuf.Value (rendered as JSON) and bytes. A missing payload is JSON null.
func decodePayload(p *pb.Payload) ([]byte, string, error) {
	if p == nil {
		return []byte("null"), contentTypeJSON, nil
	}
	switch kind := p.GetKind().(type) {
	case *pb.Payload_Json:
		data, err := protojson.Marshal(kind.Json)
		if err != nil {
			return nil, "", fmt.Errorf("meshplane: bad JSON payload: %w", err)
		}
		ct := p.GetContentType()
		if ct == "" {
			ct = contentTypeJSON
		}
		return data, ct, nil
	case *pb.Payload_Data:
		ct := p.GetContentType()
		if ct == "" {
			ct = "application/octet-stream"
		}
		return kind.Data, ct, nil
	default:
		return []byte("null"), contentTypeJSON, nil
	}
}

func isJSON(contentType string) bool {
	base, _, _ := strings.Cut(contentType, ";")
	base = strings.TrimSpace(strings.ToLower(base))
	return base == contentTypeJSON || strings.HasSuffix(base, "+json")
}

// decodeJSON decodes JSON bytes of the given content type into v.
func decodeJSON(data []byte, contentType string, v any) error {
	if !isJSON(contentType) {
		return fmt.Errorf("payload is %s, not JSON", contentType)
	}
	if len(data) == 0 {
		data = []byte("null")
	}
	return json.Unmarshal(data, v)
}

// asTime converts a timestamp; unset is the zero time.
func asTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// detailsStruct converts error details to a Struct, falling back to their printed form when
// they hold values JSON cannot carry.
func detailsStruct(details map[string]any) *structpb.Struct {
	if s, err := structpb.NewStruct(details); err == nil {
		return s
	}
	// Round-trip through encoding/json: it knows more types (structs, typed slices, ...).
	if data, err := json.Marshal(details); err == nil {
		var plain map[string]any
		if json.Unmarshal(data, &plain) == nil {
			if s, err := structpb.NewStruct(plain); err == nil {
				return s
			}
		}
	}
	s, _ := structpb.NewStruct(map[string]any{"details": fmt.Sprint(details)})
	return s
}
