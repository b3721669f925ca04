package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// violationList returns the google.rpc.BadRequest violations of an error
// body in order, as "field: description".
func violationList(t *testing.T, st statusBody) []string {
	t.Helper()
	var list []string
	for _, detail := range st.Details {
		if detail["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
			continue
		}
		violations, _ := detail["fieldViolations"].([]any)
		for _, v := range violations {
			fv, _ := v.(map[string]any)
			list = append(list, str(fv["field"])+": "+str(fv["description"]))
		}
	}
	return list
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func detailTypes(st statusBody) []string {
	var types []string
	for _, d := range st.Details {
		types = append(types, str(d["@type"]))
	}
	return types
}

// The plane's INVALID_ARGUMENT names fields the proto way; over REST they get
// the JSON names the client uses, in the BadRequest detail and in a message
// that is the join of the violations. Other details stay.
func TestPlaneBadRequestNamesJSONFields(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct {
		name, method, path, body string
		message                  string
		violations               []string
	}{
		{"body", http.MethodPost, "/v1/tasks", `{"target": {"capability": "plane-violations"}}`,
			"", []string{
				"retryPolicy.maxAttempts: must be between 1 and 100 (got 0)",
				"timeouts.startToClose: must not be negative (got -1)",
				"metadata['team_id']: values must be at most 4096 characters",
				"target.labelSelector['zone.name']: keys must be 1-256 characters",
			}},
		{"body sent with proto names", http.MethodPost, "/v1/tasks", `{"target": {"capability": "plane-violations"}, "retry_policy": {}}`,
			"", []string{
				"retryPolicy.maxAttempts: must be between 1 and 100 (got 0)",
				"timeouts.startToClose: must not be negative (got -1)",
				"metadata['team_id']: values must be at most 4096 characters",
				"target.labelSelector['zone.name']: keys must be 1-256 characters",
			}},
		{"message not the join", http.MethodPost, "/v1/tasks", `{"target": {"capability": "plane-message"}}`,
			"the task was refused (see the details)",
			[]string{"retryPolicy.maxAttempts: must be between 1 and 100 (got 0)"}},
		{"list", http.MethodPost, "/v1/tasks:batchSubmit",
			`{"requests": [{"target": {"capability": "c"}}, {"target": {"capability": "plane-violations"}}]}`,
			"requests[1].target.capability: capability is unknown; requests[1].retryPolicy.initialBackoff: must not be negative (got -1)",
			[]string{
				"requests[1].target.capability: capability is unknown",
				"requests[1].retryPolicy.initialBackoff: must not be negative (got -1)",
			}},
		{"query", http.MethodGet, "/v1/tasks?pageSize=-1", "",
			"pageSize: must not be negative", []string{"pageSize: must not be negative"}},
		{"query sent with the proto name", http.MethodGet, "/v1/tasks?page_size=-1", "",
			"pageSize: must not be negative", []string{"pageSize: must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader(tc.body)))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			st := decodeStatus(t, body)
			message := tc.message
			if message == "" { // the join
				message = strings.Join(tc.violations, "; ")
			}
			if codes.Code(st.Code) != codes.InvalidArgument || st.Message != message {
				t.Errorf("body %s\nwant code 3 and message %q", body, message)
			}
			if got := violationList(t, st); !slices.Equal(got, tc.violations) {
				t.Errorf("violations %q, want %q", got, tc.violations)
			}
			if got := detailTypes(st); !slices.Equal(got, []string{
				"type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.BadRequest",
			}) {
				t.Errorf("details %v, want the ErrorInfo and the BadRequest, in order", got)
			}
		})
	}
}

// On a streaming route the plane's refusal before the first message, and an
// error after it, name JSON fields too.
func TestPlaneBadRequestOnStreamsNamesJSONFields(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/scripted:watch?afterSequence=-1", nil))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
	}
	var l streamLine
	if err := json.Unmarshal(body, &l); err != nil || l.Error == nil {
		t.Fatalf("body %s, want one error line", body)
	}
	if l.Error.Message != "afterSequence: must not be negative" ||
		!slices.Equal(violationList(t, *l.Error), []string{"afterSequence: must not be negative"}) {
		t.Errorf("error %s, want afterSequence named", body)
	}

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_RUNNING)
	resp, r := openStream(t, gw.URL+"/v1/tasks/scripted:watch")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if l := readLine(t, r); l.Result == nil {
		t.Fatalf("first line %+v", l)
	}
	up.watch <- watchStep{err: planeInvalidArgument("", "after_sequence", "is past the end")}
	l = readLine(t, r)
	if l.Error == nil || l.Error.Message != "afterSequence: is past the end" ||
		!slices.Equal(violationList(t, *l.Error), []string{"afterSequence: is past the end"}) {
		t.Errorf("error line %+v, want afterSequence named", l.Error)
	}
}

// The gRPC ingress passes the plane's status on as it came: proto names.
func TestIngressKeepsPlaneFieldNames(t *testing.T) {
	up := startUpstream(t)
	tasks := meshplanev1.NewTaskServiceClient(dialIngress(t, up.addr))
	_, err := tasks.ListTasks(t.Context(), &meshplanev1.ListTasksRequest{PageSize: -1})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != "page_size: must not be negative" {
		t.Fatalf("ListTasks through the ingress: %v", err)
	}
	var fields []string
	for _, d := range st.Details() {
		if bad, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range bad.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Equal(fields, []string{"page_size"}) {
		t.Errorf("fields %q, want the plane's [page_size]", fields)
	}
}

func TestJSONFieldPath(t *testing.T) {
	submit := (&meshplanev1.SubmitTaskRequest{}).ProtoReflect().Descriptor()
	batch := (&meshplanev1.BatchSubmitTasksRequest{}).ProtoReflect().Descriptor()
	custom := customJSONNameMessage(t)
	for _, tc := range []struct {
		md         protoreflect.MessageDescriptor
		path, want string
	}{
		{submit, "retry_policy.max_attempts", "retryPolicy.maxAttempts"},
		{submit, "retryPolicy.maxAttempts", "retryPolicy.maxAttempts"},
		{submit, "timeouts.start_to_close", "timeouts.startToClose"},
		{submit, "idempotency_key", "idempotencyKey"},
		{submit, "input.content_type", "input.contentType"},
		{submit, "metadata['team_id']", "metadata['team_id']"},
		{submit, "target.label_selector['a.b_c']", "target.labelSelector['a.b_c']"},
		{submit, `target.label_selector["it's.x_y"]`, `target.labelSelector["it's.x_y"]`},
		{submit, `target.label_selector['a\'b]c_d']`, `target.labelSelector['a\'b]c_d']`},
		{submit, "retry_policy.non_retryable_error_codes[2]", "retryPolicy.nonRetryableErrorCodes[2]"},
		{submit, "retry_policy.initial_backoff.nanos", "retryPolicy.initialBackoff.nanos"},
		{batch, "requests[1].target.capability", "requests[1].target.capability"},
		{batch, "requests[0].retry_policy.max_backoff", "requests[0].retryPolicy.maxBackoff"},
		{batch, "requests", "requests"},
		// Segments that do not resolve: the plain conversion, from there on.
		{submit, "no_such.max_attempts", "noSuch.maxAttempts"},
		{submit, "retry_policy.max_attempts.deeper_still", "retryPolicy.maxAttempts.deeperStill"},
		{submit, "priority[0].some_field", "priority[0].someField"},
		{nil, "end_time", "endTime"},
		{nil, "expected_version", "expectedVersion"},
		{nil, "requests[1].target.agent_name", "requests[1].target.agentName"},
		{nil, "request", "request"},
		{nil, "", ""},
		// The descriptor's JSON name, not the conversion, where it resolves.
		{custom, "foo_bar", "theFoo"},
		{custom, "foo_bar_baz", "fooBarBaz"},
		// Brackets or quotes that do not close: as it came.
		{submit, "metadata['team_id", "metadata['team_id"},
		{submit, "retry_policy[1", "retry_policy[1"},
	} {
		if got := jsonFieldPath(tc.md, tc.path); got != tc.want {
			t.Errorf("jsonFieldPath(%v, %q) = %q, want %q", nameOf(tc.md), tc.path, got, tc.want)
		}
	}
}

func nameOf(md protoreflect.MessageDescriptor) protoreflect.FullName {
	if md == nil {
		return ""
	}
	return md.FullName()
}

// customJSONNameMessage is a message with a field "foo_bar" whose json_name
// is "theFoo".
func customJSONNameMessage(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	file, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:    proto.String("fieldnames_test.proto"),
		Package: proto.String("fieldnamestest"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("M"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name:     proto.String("foo_bar"),
				JsonName: proto.String("theFoo"),
				Number:   proto.Int32(1),
				Type:     descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			}},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return file.Messages().Get(0)
}

func TestJSONFieldNamesStatus(t *testing.T) {
	list := (&meshplanev1.ListTasksRequest{}).ProtoReflect().Descriptor()
	withDetails := func(c codes.Code, message string, details ...protoadapt.MessageV1) *status.Status {
		st, err := status.New(c, message).WithDetails(details...)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	bad := func(fields ...string) *errdetails.BadRequest {
		b := &errdetails.BadRequest{}
		for _, f := range fields {
			b.FieldViolations = append(b.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: "bad"})
		}
		return b
	}
	info := &errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "meshplane.dev"}
	for _, tc := range []struct {
		name        string
		in          *status.Status
		wantChanged bool
		message     string
		fields      []string
	}{
		{"join rebuilt", withDetails(codes.InvalidArgument, "page_size: bad; page_token: bad", info, bad("page_size", "page_token")),
			true, "pageSize: bad; pageToken: bad", []string{"pageSize", "pageToken"}},
		{"other message kept", withDetails(codes.InvalidArgument, "page_size is wrong", bad("page_size")),
			true, "page_size is wrong", []string{"pageSize"}},
		{"join of other violations kept", withDetails(codes.InvalidArgument, "page_size: other", bad("page_size")),
			true, "page_size: other", []string{"pageSize"}},
		{"already JSON names", withDetails(codes.InvalidArgument, "pageSize: bad", bad("pageSize")),
			false, "pageSize: bad", []string{"pageSize"}},
		{"another code", withDetails(codes.FailedPrecondition, "page_size: bad", bad("page_size")),
			false, "page_size: bad", []string{"page_size"}},
		{"no BadRequest", withDetails(codes.InvalidArgument, "page_size: bad", info),
			false, "page_size: bad", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := jsonFieldNamesStatus(tc.in, list)
			if changed != tc.wantChanged || got.Message() != tc.message || got.Code() != tc.in.Code() {
				t.Errorf("got %v (changed %v), want message %q (changed %v)", got.Proto(), changed, tc.message, tc.wantChanged)
			}
			var fields []string
			for _, d := range got.Details() {
				if b, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range b.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if !slices.Equal(fields, tc.fields) {
				t.Errorf("fields %q, want %q", fields, tc.fields)
			}
			if len(got.Details()) != len(tc.in.Details()) {
				t.Errorf("%d details, want %d", len(got.Details()), len(tc.in.Details()))
			}
		})
	}
}
