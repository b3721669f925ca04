package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// route is one HTTP binding of a client-facing RPC, from its google.api.http
// rule: the method and the path template, split into segments that are a
// literal, "*" (one segment) or "**" (the rest of the path), and a verb.
type route struct {
	method   string
	segments []string
	verb     string
	// lastVar is the field the last segment is captured into ("task_id"),
	// "" when the template ends in a literal.
	lastVar string
	rpc     protoreflect.MethodDescriptor // nil for a template parsed alone
	body    bool                          // the request has a body (the rule's body is set)
}

// streaming reports whether the route's RPC streams its responses.
func (rt *route) streaming() bool { return rt.rpc != nil && rt.rpc.IsStreamingServer() }

// input returns the request message of the route's RPC, nil if unknown.
func (rt *route) input() protoreflect.MessageDescriptor {
	if rt == nil || rt.rpc == nil {
		return nil
	}
	return rt.rpc.Input()
}

// methodInput returns the request message of the routed RPC with the full
// method name ("/meshplane.v1.TaskService/WatchTask"), nil if none.
func methodInput(routes []route, method string) protoreflect.MessageDescriptor {
	for i := range routes {
		md := routes[i].rpc
		if md != nil && method == "/"+string(md.Parent().FullName())+"/"+string(md.Name()) {
			return md.Input()
		}
	}
	return nil
}

// clientRoutes returns the HTTP bindings of every client-facing service, as
// the generated handlers register them. It only reads the compiled-in proto
// descriptors, so an error is a build problem, not a runtime condition.
func clientRoutes() ([]route, error) {
	var routes []route
	for _, s := range clientServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(s.name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", s.name)
		}
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if !ok || rule == nil {
				continue
			}
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				method, template := httpBinding(r)
				if method == "" {
					continue
				}
				rt, err := parseTemplate(method, template)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", md.FullName(), err)
				}
				rt.rpc, rt.body = md, r.GetBody() != ""
				routes = append(routes, rt)
			}
		}
	}
	return routes, nil
}

// httpBinding returns a rule's HTTP method and path template ("" if it has none).
func httpBinding(r *annotations.HttpRule) (method, template string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind(), p.Custom.GetPath()
	}
	return "", ""
}

// parseTemplate parses a google.api.http path template, e.g.
// "/v1/tasks/{task_id}:cancel" or "/v1/{name=projects/*/items/*}".
func parseTemplate(method, template string) (route, error) {
	if !strings.HasPrefix(template, "/") {
		return route{}, fmt.Errorf("path template %q does not start with /", template)
	}
	rest := template[1:]
	rt := route{method: method}
	// The verb is a ":LITERAL" after the last segment (not inside a variable).
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.ContainsAny(rest[i:], "/}") {
		rest, rt.verb = rest[:i], rest[i+1:]
	}
	depth, start := 0, 0
	for i := 0; i <= len(rest); i++ {
		if i < len(rest) {
			switch rest[i] {
			case '{':
				depth++
				continue
			case '}':
				depth--
				continue
			case '/':
				if depth > 0 {
					continue
				}
			default:
				continue
			}
		}
		segment := rest[start:i]
		start = i + 1
		switch {
		case segment == "":
			return route{}, fmt.Errorf("path template %q has an empty segment", template)
		case strings.HasPrefix(segment, "{") && strings.HasSuffix(segment, "}"):
			field, inner, found := strings.Cut(segment[1:len(segment)-1], "=")
			if !found {
				inner = "*"
			}
			rt.segments = append(rt.segments, strings.Split(inner, "/")...)
			rt.lastVar = field
		default:
			rt.segments = append(rt.segments, segment)
			rt.lastVar = ""
		}
	}
	if depth != 0 {
		return route{}, fmt.Errorf("path template %q has unbalanced braces", template)
	}
	return rt, nil
}

// matches reports whether the route's template matches the request path,
// split into components as grpc-gateway's ServeMux splits it.
func (rt route) matches(components []string) bool {
	if rt.verb != "" {
		last := components[len(components)-1]
		idx := len(last) - len(rt.verb) - 1
		if idx <= 0 || last[idx:] != ":"+rt.verb {
			return false
		}
		components = append(slices.Clone(components[:len(components)-1]), last[:idx])
	}
	for i, segment := range rt.segments {
		switch {
		case segment == "**":
			return true
		case i >= len(components):
			return false
		case segment != "*" && segment != components[i]:
			return false
		}
	}
	return len(components) == len(rt.segments)
}

// allowedMethods lists, sorted, the methods of the routes matching r's path.
// A path that ends in a custom method's verb ("/v1/tasks/t-1:cancel") names
// that custom method (AIP-136), as in the OpenAPI document, even though a
// plain template ("/v1/tasks/{task_id}") would also take "t-1:cancel" as an id.
func allowedMethods(routes []route, r *http.Request) []string {
	components := pathComponents(r)
	if components == nil {
		return nil
	}
	var matching []route
	custom := false
	for _, rt := range routes {
		if rt.matches(components) {
			matching = append(matching, rt)
			custom = custom || rt.verb != ""
		}
	}
	var methods []string
	for _, rt := range matching {
		if (rt.verb != "" || !custom) && !slices.Contains(methods, rt.method) {
			methods = append(methods, rt.method)
		}
	}
	slices.Sort(methods)
	return methods
}

// pathComponents splits r's path as grpc-gateway's ServeMux does (nil if it
// does not start with "/").
func pathComponents(r *http.Request) []string {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	if !strings.HasPrefix(path, "/") {
		return nil
	}
	return strings.Split(path[1:], "/")
}

// routeFor returns the route grpc-gateway serves r with, or nil: of the
// routes with r's method that match its path, the one with a custom verb, if
// any (a generated handler with a verb is only reached for that verb).
func routeFor(routes []route, r *http.Request) *route {
	components := pathComponents(r)
	if components == nil {
		return nil
	}
	var plain *route
	for i := range routes {
		rt := &routes[i]
		if rt.method != r.Method || !rt.matches(components) {
			continue
		}
		if rt.verb != "" {
			return rt
		}
		if plain == nil {
			plain = rt
		}
	}
	return plain
}

// colonFreeFields are the path variables whose values never contain ':'
// (task ids are generated; agent names, instance ids and channel names are
// names of [A-Za-z0-9._-]). State keys may contain ':' and are not here.
var colonFreeFields = map[string]bool{"task_id": true, "agent_name": true, "instance_id": true, "channel": true}

// customVerbMethods returns the methods bound to the custom verb r's path ends
// with ("/v1/tasks/t-1:cancel": POST), or nil when the path names no custom
// method. Only verbs after a variable of colonFreeFields count: there
// "t-1:cancel" cannot be an id, so a GET must not reach GetTask with it.
func customVerbMethods(routes []route, r *http.Request) []string {
	components := pathComponents(r)
	if components == nil || !strings.Contains(components[len(components)-1], ":") {
		return nil
	}
	var methods []string
	for _, rt := range routes {
		if rt.verb != "" && colonFreeFields[rt.lastVar] && rt.matches(components) && !slices.Contains(methods, rt.method) {
			methods = append(methods, rt.method)
		}
	}
	slices.Sort(methods)
	return methods
}

// routingErrorHandler answers requests no handler takes. grpc-gateway's
// default maps a known path with another method to 501 Not Implemented, a
// server error; it is the client's mistake, so this answers 405 Method Not
// Allowed with an Allow header (RFC 9110, section 15.5.6) and the usual
// status body (code 12, UNIMPLEMENTED). Everything else keeps the default.
func routingErrorHandler(routes []route) runtime.RoutingErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
		if httpStatus != http.StatusMethodNotAllowed {
			runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
			return
		}
		methodNotAllowed(ctx, mux, m, w, r, allowedMethods(routes, r))
	}
}

// methodNotAllowed answers 405 with an Allow header listing allow, and HEAD
// with GET (withHeadAsGet serves it).
func methodNotAllowed(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, allow []string) {
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(withHead(allow), ", "))
	}
	err := status.Error(codes.Unimplemented, http.StatusText(http.StatusMethodNotAllowed))
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusMethodNotAllowed, Err: err})
}
