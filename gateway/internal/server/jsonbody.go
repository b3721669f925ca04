package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// bodyJSON is runtime.JSONPb, reading request bodies into messages with
// decodeBody.
type bodyJSON struct {
	runtime.JSONPb
}

func (b *bodyJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		msg, ok := v.(proto.Message)
		if !ok {
			return b.JSONPb.NewDecoder(r).Decode(v)
		}
		var raw json.RawMessage
		if err := json.NewDecoder(r).Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return err // no body: the generated handlers take an empty message
			}
			return noteProblem(r, &badRequest{message: "invalid JSON body: " + err.Error()})
		}
		if problem := decodeBody(raw, msg); problem != nil {
			return noteProblem(r, problem)
		}
		return nil
	})
}

func (b *bodyJSON) Unmarshal(data []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return b.JSONPb.Unmarshal(data, v)
	}
	if problem := decodeBody(data, msg); problem != nil {
		return problem
	}
	return nil
}

// noteProblem leaves problem for the error handler, when body is a request's.
func noteProblem(body io.Reader, problem *badRequest) error {
	if rb, ok := body.(*requestBody); ok {
		rb.problem = problem
	}
	return problem
}

var (
	strictJSON  = protojson.UnmarshalOptions{}
	lenientJSON = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// decodeBody reads the proto3 JSON raw into msg. Unknown fields are ignored
// (forward compatibility), but an unknown enum name is refused:
// protojson's DiscardUnknown would drop it silently, leaving the field at its
// default (a strategy of SCHEDULING_STRATEGY_UNSPECIFIED for "BOGUS").
//
// The strict reading succeeds for almost every body. When it fails, the
// lenient one decides whether the body is readable at all, and the fields the
// lenient one knows are then searched for enum names their enum lacks, so an
// unknown field and a bad enum name in one body still refuse the enum.
func decodeBody(raw []byte, msg proto.Message) *badRequest {
	if strictJSON.Unmarshal(raw, msg) == nil {
		return nil
	}
	if err := lenientJSON.Unmarshal(raw, msg); err != nil {
		return protojsonProblem(raw, err)
	}
	var found []violation
	unknownEnumNames(raw, msg.ProtoReflect().Descriptor(), "", &found)
	if len(found) > 0 {
		return &badRequest{violations: found}
	}
	return nil
}

// unknownEnumNames appends a violation for each enum name in the JSON object
// raw (of message md, at path) that its enum does not have: names are
// case-sensitive, so "round_robin" is unknown too. Unknown fields are skipped.
func unknownEnumNames(raw []byte, md protoreflect.MessageDescriptor, path string, found *[]violation) {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return // well-known types have JSON forms of their own, with no enum names
	}
	var object map[string]json.RawMessage
	if json.Unmarshal(raw, &object) != nil {
		return // null (protojson accepted the body, so nothing else)
	}
	for _, key := range slices.Sorted(maps.Keys(object)) {
		fd := fieldNamed(md, key)
		if fd == nil {
			continue
		}
		at := joinPath(path, key)
		switch {
		case fd.IsMap():
			var entries map[string]json.RawMessage
			_ = json.Unmarshal(object[key], &entries)
			for _, k := range slices.Sorted(maps.Keys(entries)) {
				checkEnumNames(fd.MapValue(), entries[k], joinPath(at, k), found)
			}
		case fd.IsList():
			var items []json.RawMessage
			_ = json.Unmarshal(object[key], &items)
			for i, item := range items {
				checkEnumNames(fd, item, at+"["+strconv.Itoa(i)+"]", found)
			}
		default:
			checkEnumNames(fd, object[key], at, found)
		}
	}
}

// checkEnumNames checks one value of field fd (an element, for a list).
func checkEnumNames(fd protoreflect.FieldDescriptor, raw []byte, path string, found *[]violation) {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		var name string
		if json.Unmarshal(raw, &name) == nil && fd.Enum().Values().ByName(protoreflect.Name(name)) == nil {
			*found = append(*found, violation{path, fmt.Sprintf("unknown value %q", name)})
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		unknownEnumNames(raw, fd.Message(), path, found)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	// protojsonError is the text of a protojson error with a position:
	// "proto: (line 1:53): invalid value for int32 field priority: 1.5". (The
	// space after "proto:" is at times a non-breaking one.)
	protojsonError  = regexp.MustCompile(`^proto:[\s\x{a0}]*(?:syntax error )?\(line (\d+):(\d+)\): (.*)$`)
	protojsonPrefix = regexp.MustCompile(`^proto:[\s\x{a0}]*`)
	// invalidFieldValue is protojson's most common complaint.
	invalidFieldValue = regexp.MustCompile(`^invalid value for (\S+) field \S+: (.*)$`)
)

// protojsonProblem turns a protojson error about raw into a badRequest
// naming the field at the position the error gives, in a message without the
// Go package's prefix: "priority: invalid value 1.5 (want int32)".
func protojsonProblem(raw []byte, err error) *badRequest {
	text := err.Error()
	m := protojsonError.FindStringSubmatch(text)
	if m == nil {
		return &badRequest{message: "invalid JSON body: " + protojsonPrefix.ReplaceAllString(text, "")}
	}
	line, _ := strconv.Atoi(m[1])
	column, _ := strconv.Atoi(m[2])
	description := m[3]
	if v := invalidFieldValue.FindStringSubmatch(description); v != nil {
		description = fmt.Sprintf("invalid value %s (want %s)", v[2], v[1])
	}
	field := jsonPathAt(raw, offsetOf(raw, line, column))
	if field == "" {
		return &badRequest{message: "invalid JSON body: " + description}
	}
	return &badRequest{violations: []violation{{field, description}}}
}

// offsetOf converts a protojson position (1-based line, and column in runes)
// into a byte offset in doc.
func offsetOf(doc []byte, line, column int) int {
	i := 0
	for l := 1; l < line; l++ {
		j := bytes.IndexByte(doc[i:], '\n')
		if j < 0 {
			return len(doc)
		}
		i += j + 1
	}
	for c := 1; c < column && i < len(doc); c++ {
		_, n := utf8.DecodeRune(doc[i:])
		i += n
	}
	return i
}

// jsonPathAt returns the path of the deepest key or value of the valid JSON
// document doc that spans byte offset off: object keys joined by ".", array
// indexes as "[i]" ("requests[1].target.strategy"); "" for the document itself.
func jsonPathAt(doc []byte, off int) string {
	s := pathScanner{doc: doc, off: off}
	s.value("")
	return s.path
}

type pathScanner struct {
	doc   []byte
	i     int
	off   int
	path  string
	found bool
}

func (s *pathScanner) value(path string) {
	s.space()
	start := s.i
	if s.i >= len(s.doc) {
		return
	}
	switch s.doc[s.i] {
	case '{':
		s.i++
		for !s.found {
			s.space()
			if s.i >= len(s.doc) || s.doc[s.i] == '}' {
				s.i++
				break
			}
			keyStart := s.i
			s.str()
			var key string
			_ = json.Unmarshal(s.doc[keyStart:s.i], &key)
			at := joinPath(path, key)
			if keyStart <= s.off && s.off < s.i {
				s.path, s.found = at, true
				return
			}
			s.space()
			s.i++ // the ':'
			s.value(at)
			s.space()
			if s.i < len(s.doc) && s.doc[s.i] == ',' {
				s.i++
			}
		}
	case '[':
		s.i++
		for n := 0; !s.found; n++ {
			s.space()
			if s.i >= len(s.doc) || s.doc[s.i] == ']' {
				s.i++
				break
			}
			s.value(path + "[" + strconv.Itoa(n) + "]")
			s.space()
			if s.i < len(s.doc) && s.doc[s.i] == ',' {
				s.i++
			}
		}
	case '"':
		s.str()
	default:
		for s.i++; s.i < len(s.doc) && !strings.ContainsRune(",:}] \t\r\n", rune(s.doc[s.i])); s.i++ {
		}
	}
	if !s.found && start <= s.off && s.off < s.i {
		s.path, s.found = path, true
	}
}

// str skips the string at s.i.
func (s *pathScanner) str() {
	for s.i++; s.i < len(s.doc); s.i++ {
		switch s.doc[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return
		}
	}
}

func (s *pathScanner) space() {
	for s.i < len(s.doc) && strings.IndexByte(" \t\r\n", s.doc[s.i]) >= 0 {
		s.i++
	}
}
