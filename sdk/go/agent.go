package meshplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// Agent serves capabilities on a Meshplane control plane. Create it with [NewAgent], add
// handlers with [Agent.Handle] and [Agent.OnChannel], then call [Agent.Run] (once).
type Agent struct {
	name string
	cfg  agentConfig

	mu       sync.Mutex
	handlers map[string]*taskHandler
	order    []string
	channels map[string]ChannelHandler
	chOrder  []string
	started  bool
	rt       *runtime
	state    *State
	ready    chan struct{}
}

type taskHandler struct {
	capability   string
	fn           HandlerFunc
	description  string
	inputSchema  map[string]any
	outputSchema map[string]any
}

// HandleOption describes a capability (Agent.Handle).
type HandleOption func(*taskHandler)

// WithCapabilityDescription sets the capability's human-readable description.
func WithCapabilityDescription(description string) HandleOption {
	return func(h *taskHandler) { h.description = description }
}

// WithInputSchema declares the JSON Schema of the capability's input (informational).
func WithInputSchema(schema map[string]any) HandleOption {
	return func(h *taskHandler) { h.inputSchema = schema }
}

// WithOutputSchema declares the JSON Schema of the capability's output (informational).
func WithOutputSchema(schema map[string]any) HandleOption {
	return func(h *taskHandler) { h.outputSchema = schema }
}

// ChannelHandler handles one message of a subscribed channel; an error is logged. Up to 64
// messages of one channel are handled at once (so a handler must be safe for concurrent use,
// and messages may finish out of order); up to 1,000 more (32 MiB of bodies) wait, and past
// that the oldest waiting message is dropped (with a warning at the first drop). Once the agent
// stops, ctx is cancelled and messages still waiting are dropped.
type ChannelHandler func(ctx context.Context, m *Message) error

// Message is a message received on a channel.
type Message struct {
	Channel string
	ID      string
	// Data is the message body: JSON unless ContentType says otherwise.
	Data        json.RawMessage
	ContentType string
	Headers     map[string]string
	// Publisher is "agent/<name>/<instance_id>" or "client".
	Publisher   string
	PublishTime time.Time
}

// Decode decodes the JSON body into v.
func (m *Message) Decode(v any) error { return decodeJSON(m.Data, m.ContentType, v) }

// NewAgent returns an agent named name (1-128 characters of [A-Za-z0-9._-], starting with a
// letter or digit). It connects in plaintext unless [WithTLS] or the MESHPLANE_TLS* environment
// variables ask for TLS (whose files it reads now).
func NewAgent(name string, opts ...Option) (*Agent, error) {
	cfg := agentConfig{
		version:        "0.0.0",
		labels:         map[string]string{},
		maxConcurrency: DefaultMaxConcurrency,
		weight:         1,
		backoffInitial: DefaultBackoffInitial,
		backoffMax:     DefaultBackoffMax,
		drainTimeout:   DefaultDrainTimeout,
	}
	for _, opt := range opts {
		opt.applyAgent(&cfg)
	}
	if cfg.instanceID == "" {
		cfg.instanceID = DefaultInstanceID(name)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if err := cfg.validate(name); err != nil {
		return nil, err
	}
	transport, err := transportCredentials(cfg.tls, cfg.logger.With("agent", name, "instance_id", cfg.instanceID))
	if err != nil {
		return nil, err
	}
	cfg.transport = transport
	a := &Agent{
		name:     name,
		cfg:      cfg,
		handlers: map[string]*taskHandler{},
		channels: map[string]ChannelHandler{},
		ready:    make(chan struct{}),
	}
	a.state = &State{namespace: name, client: func() (pb.StateServiceClient, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.rt == nil {
			return nil, ErrNotRunning
		}
		return a.rt.stateClient, nil
	}}
	return a, nil
}

// Name is the agent's name.
func (a *Agent) Name() string { return a.name }

// InstanceID is the agent's instance id (stable for the process lifetime).
func (a *Agent) InstanceID() string { return a.cfg.instanceID }

// Handle registers the handler of a capability. It panics on an invalid or duplicate
// capability name, or once Run has been called (like http.ServeMux.Handle).
func (a *Agent) Handle(capability string, fn HandlerFunc, opts ...HandleOption) {
	if !capabilityRE.MatchString(capability) {
		panic(fmt.Sprintf("meshplane: invalid capability name %q: 1-200 characters of [A-Za-z0-9._-]", capability))
	}
	if fn == nil {
		panic("meshplane: nil handler for " + capability)
	}
	h := &taskHandler{capability: capability, fn: fn}
	for _, opt := range opts {
		opt(h)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		panic("meshplane: Handle called after Run")
	}
	if _, dup := a.handlers[capability]; dup {
		panic("meshplane: duplicate handler for capability " + capability)
	}
	a.handlers[capability] = h
	a.order = append(a.order, capability)
}

// OnChannel subscribes the agent to a channel and handles its messages with fn. It panics on
// an invalid or duplicate channel name, or once Run has been called.
func (a *Agent) OnChannel(channel string, fn ChannelHandler) {
	if err := validChannel(channel); err != nil {
		panic(err.Error())
	}
	if fn == nil {
		panic("meshplane: nil channel handler for " + channel)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		panic("meshplane: OnChannel called after Run")
	}
	if _, dup := a.channels[channel]; dup {
		panic("meshplane: duplicate handler for channel " + channel)
	}
	a.channels[channel] = fn
	a.chOrder = append(a.chOrder, channel)
}

// Ready is closed once the agent first registered with the control plane.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// SessionID is the current session's id ("" while not connected).
func (a *Agent) SessionID() string {
	a.mu.Lock()
	rt := a.rt
	a.mu.Unlock()
	if rt == nil {
		return ""
	}
	return rt.sessionID()
}

// State is the agent's key/value state (namespace: the agent's name). Calls fail with
// ErrNotRunning unless the agent is running.
func (a *Agent) State() *State { return a.state }

// Publish broadcasts v (JSON, or a [Blob]) on a channel, through the agent's stream. It fails
// with ErrNotRunning unless the agent is running, and at once with what the control plane would
// refuse, as [Task.Publish] does. Delivery is at-most-once.
func (a *Agent) Publish(channel string, v any) error {
	return a.PublishWithHeaders(channel, v, nil)
}

// PublishWithHeaders is Publish with message headers (headers the plane does not take fail with an
// error matching [ErrInvalidArgument]).
func (a *Agent) PublishWithHeaders(channel string, v any, headers map[string]string) error {
	a.mu.Lock()
	rt := a.rt
	a.mu.Unlock()
	if rt == nil {
		return ErrNotRunning
	}
	return rt.publish(channel, v, headers)
}

// Run connects to the control plane at target and serves until ctx is done; then
// it drains gracefully: it tells the plane it is draining, lets in-flight tasks finish, delivers
// their results and waits for their acknowledgements (at most the drain timeout), and returns
// nil. Tasks still running at the drain timeout are given up: their handlers' contexts are
// cancelled and each attempt is reported as failed with the retryable [CodeAgentStopped], so
// that the plane re-queues it at once. Lost connections are re-established with jittered exponential backoff, forever. Run
// returns an error only when no reconnect can help (a rejected registration, a refused token) or
// one would do harm: another agent registered this agent's instance ID ([ErrInstanceIDTaken]).
// An agent runs once.
//
// The target is host:port (a DNS name or an IP address), any target grpc-go resolves, or a list
// of addresses as gRPC's naming doc writes it: "ipv4:10.0.0.1:50051,10.0.0.2:50051",
// "ipv6:[::1]:50051,[::2]:50051". Of several addresses (a list, or a DNS name with several), each
// new stream goes to the next ready one (round_robin). After a session failed before the plane
// registered the agent (say a replica that lost its database answers UNAVAILABLE), the next attempt
// goes over a new connection, so that a load balancer can send it to another replica; when that
// new connection failed too, the attempt after it stays on it, where round_robin takes the next
// address. A session that registered and then ended (a drain, a plane restart) is followed by a
// new session on the same connection.
func (a *Agent) Run(ctx context.Context, target string) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("meshplane: Agent.Run called twice")
	}
	a.started = true
	a.mu.Unlock()

	capabilities, err := a.capabilities()
	if err != nil {
		return err
	}
	target = resolveTarget(target) // "": MESHPLANE_TARGET, else DefaultTarget (as the other SDKs)
	if err := checkTarget(target); err != nil {
		return err
	}
	token, err := resolveToken(a.cfg.token, a.cfg.tokenSet) // no WithToken: MESHPLANE_TOKEN
	if err != nil {
		return err
	}
	options := append(targetDialOptions(), a.cfg.dialOptions...)
	conn, err := newAgentConn(func() (*grpc.ClientConn, error) {
		return dial(target, token, a.cfg.transport.credentials(), a.cfg.backoffMax, true, options)
	})
	if err != nil {
		return err
	}
	rt := newRuntime(a, conn, target, capabilities)
	a.mu.Lock()
	a.rt = rt
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.rt = nil
		a.mu.Unlock()
	}()
	return rt.run(ctx)
}

func (a *Agent) capabilities() ([]*pb.Capability, error) {
	caps := make([]*pb.Capability, 0, len(a.order))
	for _, name := range a.order {
		h := a.handlers[name]
		c := &pb.Capability{Name: name, Description: h.description}
		if h.inputSchema != nil {
			s, err := structpb.NewStruct(h.inputSchema)
			if err != nil {
				return nil, fmt.Errorf("meshplane: input schema of %s: %w", name, err)
			}
			c.InputSchema = s
		}
		if h.outputSchema != nil {
			s, err := structpb.NewStruct(h.outputSchema)
			if err != nil {
				return nil, fmt.Errorf("meshplane: output schema of %s: %w", name, err)
			}
			c.OutputSchema = s
		}
		caps = append(caps, c)
	}
	return caps, nil
}

// Stop makes a running agent leave at once, as a drain whose timeout has passed: handlers
// still running are cancelled and their tasks handed back as failed with the retryable code
// agent_stopped, which the plane re-queues at once; Run returns once the plane has those
// results (or shortly after, if it does not answer). Stop does nothing when the agent is not
// running.
func (a *Agent) Stop() {
	a.mu.Lock()
	rt := a.rt
	a.mu.Unlock()
	if rt != nil {
		rt.stop()
	}
}

// RunWithSignals runs the agent until SIGTERM or SIGINT, then drains it gracefully (see
// [Agent.Run]). A second signal during the drain stops it at once ([Agent.Stop]: running
// tasks are handed back for the plane to re-queue); a third ends the process.
func RunWithSignals(a *Agent, target string) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	ctx, drain := context.WithCancel(context.Background())
	defer drain()
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		for _, next := range []func(){drain, a.Stop} {
			select {
			case <-signals:
				next()
			case <-returned:
				return
			}
		}
		signal.Stop(signals) // the default again: a third signal kills the process
	}()
	return a.Run(ctx, target)
}
