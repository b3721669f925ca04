package meshplane

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func TestPayloadsAreJSONBytes(t *testing.T) {
	p, err := encodePayload(map[string]any{"a": 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetContentType() != "application/json" || string(p.GetData()) != `{"a":1}` {
		t.Fatalf("got %v", p)
	}
	raw, _ := encodePayload(json.RawMessage(`{"kept":  "as is"}`))
	if string(raw.GetData()) != `{"kept":  "as is"}` {
		t.Fatalf("raw JSON must pass unchanged: %s", raw.GetData())
	}
	if _, err := encodePayload(json.RawMessage(`{broken`)); err == nil {
		t.Fatal("invalid raw JSON must be refused")
	}
	if _, err := encodePayload(make(chan int)); err == nil {
		t.Fatal("unencodable values must be refused")
	}
	blob, _ := encodePayload(Blob{Data: []byte{0, 1}})
	if blob.GetContentType() != "application/octet-stream" || len(blob.GetData()) != 2 {
		t.Fatalf("got %v", blob)
	}
}

func TestPayloadsDecodeFromBothForms(t *testing.T) {
	value, _ := structpb.NewValue(map[string]any{"x": []any{1.0, "y"}})
	for _, p := range []*pb.Payload{
		{Kind: &pb.Payload_Json{Json: value}},
		jsonPayload([]byte(`{"x":[1,"y"]}`)),
		{Kind: &pb.Payload_Data{Data: []byte(`{"x":[1,"y"]}`)}, ContentType: "application/json; charset=utf-8"},
	} {
		data, ct, err := decodePayload(p)
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ X []any }
		if err := decodeJSON(data, ct, &got); err != nil || len(got.X) != 2 || got.X[1] != "y" {
			t.Fatalf("%v: got %+v, %v", p, got, err)
		}
	}
	data, ct, _ := decodePayload(nil)
	if string(data) != "null" || ct != "application/json" {
		t.Fatal("a missing payload is JSON null")
	}
	bin := &pb.Payload{Kind: &pb.Payload_Data{Data: []byte{1}}}
	data, ct, _ = decodePayload(bin)
	if ct != "application/octet-stream" || decodeJSON(data, ct, new(any)) == nil {
		t.Fatal("bytes without a JSON content type are not decoded as JSON")
	}
}

func TestTaskDecodeFailureIsValidationFailed(t *testing.T) {
	task := &Task{Input: json.RawMessage(`{"steps":"many"}`), ContentType: "application/json"}
	var in struct{ Steps int }
	err := task.Decode(&in)
	te := toTaskError(err)
	if te.Code != CodeValidationFailed || te.Retryable {
		t.Fatalf("got %+v", te)
	}
}

func TestTypedHandlersDecodeTheirInput(t *testing.T) {
	h := Typed(func(_ ctxT, _ *Task, in struct {
		Name string `json:"name"`
	}) (string, error) {
		return "hi " + in.Name, nil
	})
	out, err := h(nil, &Task{Input: json.RawMessage(`{"name":"go"}`), ContentType: "application/json"})
	if err != nil || out != "hi go" {
		t.Fatalf("got %v, %v", out, err)
	}
	_, err = h(nil, &Task{Input: json.RawMessage(`[1]`), ContentType: "application/json"})
	if toTaskError(err).Code != CodeValidationFailed {
		t.Fatalf("got %v", err)
	}
}

func TestAsTime(t *testing.T) {
	if !asTime(nil).IsZero() {
		t.Fatal("unset timestamps are the zero time")
	}
	if asTime(timestamppb.New(asTime(nil).AddDate(2000, 0, 0))).Year() != 2001 {
		t.Fatal("round trip")
	}
}
