package meshplane

// What the control plane refuses of an agent, checked before anything is sent (docs/agent-link.md §3, §7).
//
// A publish goes out on the agent's stream, where the plane can only answer a refusal with an `error`
// frame, long after Publish returned; and an output larger than the plane's gRPC message limit breaks
// the stream instead of failing the task. So the SDK applies the plane's own rules first
// (controlplane/validation.py, the channel service, the agent link servicer) and the caller learns at
// once. Keep these in step with the plane's.

import (
	"errors"
	"fmt"
	"regexp"
	"unicode/utf8"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const (
	maxChannelLength     = 200
	maxHeaders           = 64
	maxHeaderKeyLength   = 256
	maxHeaderValueLength = 4096
	maxJSONDepth         = 32 // objects and arrays within each other, in a JSON payload
)

// channelRE: dot-separated segments of [A-Za-z0-9_-], so no leading, trailing or double dot.
var channelRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// validChannel refuses, as ErrInvalidArgument, a channel name the plane does not take.
func validChannel(name string) error {
	if len(name) > maxChannelLength || !channelRE.MatchString(name) {
		return invalidArgument(fmt.Errorf("meshplane: invalid channel name %q: 1-%d characters of [A-Za-z0-9_.-], no leading, trailing or double dot",
			name, maxChannelLength))
	}
	return nil
}

// validHeaders refuses, as ErrInvalidArgument, message headers the plane does not take. It counts
// characters as the plane does: runes, not bytes.
func validHeaders(headers map[string]string) error {
	if len(headers) > maxHeaders {
		return invalidArgument(fmt.Errorf("meshplane: invalid headers: at most %d entries (got %d)", maxHeaders, len(headers)))
	}
	for key, value := range headers {
		if key == "" || utf8.RuneCountInString(key) > maxHeaderKeyLength {
			return invalidArgument(fmt.Errorf("meshplane: invalid header %q: keys must be 1-%d characters", key, maxHeaderKeyLength))
		}
		if utf8.RuneCountInString(value) > maxHeaderValueLength {
			return invalidArgument(fmt.Errorf("meshplane: invalid header %q: values must be at most %d characters", key, maxHeaderValueLength))
		}
	}
	return nil
}

// tooLarge is the plane's own words for a `what` of size bytes over limit (its max_payload_bytes), or
// "" when it fits. A limit of 0 is one the plane did not announce (an older plane): nothing is checked.
func tooLarge(what string, size int, limit int64) string {
	if limit <= 0 || int64(size) <= limit {
		return ""
	}
	return fmt.Sprintf("%s is %d bytes; the limit is %d bytes (max_payload_bytes)", what, size, limit)
}

// checkPayloadSize refuses, as ErrResourceExhausted, a published payload over limit.
func checkPayloadSize(p *pb.Payload, limit int64) error {
	if problem := tooLarge("payload", len(p.GetData()), limit); problem != "" {
		return resourceExhausted(errors.New("meshplane: " + problem))
	}
	return nil
}

// jsonDepthProblem is the plane's words for JSON text that nests objects and arrays more than
// maxJSONDepth levels deep, or "". Brackets inside strings do not count (a multi-byte UTF-8
// character never holds an ASCII byte).
func jsonDepthProblem(data []byte) string {
	depth, inString, escaped := 0, false, false
	for _, b := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case inString:
			inString = b != '"'
		case b == '"':
			inString = true
		case b == '[' || b == '{':
			depth++
			if depth > maxJSONDepth {
				return fmt.Sprintf("JSON nested more than %d levels deep", maxJSONDepth)
			}
		case b == ']' || b == '}':
			depth--
		}
	}
	return ""
}

// checkJSONDepth refuses, as ErrInvalidArgument, a published JSON payload nesting deeper than the
// plane takes.
func checkJSONDepth(p *pb.Payload) error {
	if !isJSON(p.GetContentType()) {
		return nil
	}
	if problem := jsonDepthProblem(p.GetData()); problem != "" {
		return invalidArgument(errors.New("meshplane: invalid payload: " + problem))
	}
	return nil
}
