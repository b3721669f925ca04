package meshplane

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Default agent settings.
const (
	DefaultMaxConcurrency = 16
	DefaultDrainTimeout   = 30 * time.Second
	maxMaxConcurrency     = 10000
	maxLabelLength        = 256
)

var (
	nameRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	capabilityRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)
)

type agentConfig struct {
	version        string
	instanceID     string
	description    string
	labels         map[string]string
	maxConcurrency int
	weight         int
	token          string
	tokenSet       bool // WithToken was given (even ""): for resolveToken, MESHPLANE_TOKEN is not read
	logger         *slog.Logger
	backoffInitial time.Duration
	backoffMax     time.Duration
	drainTimeout   time.Duration
	tls            *TLSConfig
	transport      *tlsSetup // from tls or the environment; nil: plaintext
	dialOptions    []grpc.DialOption
}

type clientConfig struct {
	token       string
	tokenSet    bool // WithToken was given (even ""): MESHPLANE_TOKEN is not read
	tls         *TLSConfig
	dialOptions []grpc.DialOption
	connections int
}

// Option configures an [Agent] (NewAgent).
type Option interface{ applyAgent(*agentConfig) }

// ClientOption configures a [Client] (NewClient).
type ClientOption interface{ applyClient(*clientConfig) }

// SharedOption configures an [Agent] or a [Client].
type SharedOption interface {
	Option
	ClientOption
}

type agentOption func(*agentConfig)

func (f agentOption) applyAgent(c *agentConfig) { f(c) }

type clientOption func(*clientConfig)

func (f clientOption) applyClient(c *clientConfig) { f(c) }

type sharedOption struct {
	agent  func(*agentConfig)
	client func(*clientConfig)
}

func (o sharedOption) applyAgent(c *agentConfig)   { o.agent(c) }
func (o sharedOption) applyClient(c *clientConfig) { o.client(c) }

// WithVersion sets the agent's version (default "0.0.0").
func WithVersion(version string) Option {
	return agentOption(func(c *agentConfig) { c.version = version })
}

// WithInstanceID sets the instance id. It must stay the same for the process's lifetime; the
// default is [DefaultInstanceID] of the agent's name, generated once per agent.
func WithInstanceID(id string) Option {
	return agentOption(func(c *agentConfig) { c.instanceID = id })
}

// WithDescription sets the agent's human-readable description.
func WithDescription(description string) Option {
	return agentOption(func(c *agentConfig) { c.description = description })
}

// WithLabels adds labels (matched by task label selectors).
func WithLabels(labels map[string]string) Option {
	return agentOption(func(c *agentConfig) {
		for k, v := range labels {
			c.labels[k] = v
		}
	})
}

// WithMaxConcurrency sets how many tasks the agent runs at once (1..10000, default 16).
func WithMaxConcurrency(n int) Option {
	return agentOption(func(c *agentConfig) { c.maxConcurrency = n })
}

// WithWeight sets the agent's share for the weighted scheduling strategy (default 1).
func WithWeight(weight int) Option {
	return agentOption(func(c *agentConfig) { c.weight = weight })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(logger *slog.Logger) Option {
	return agentOption(func(c *agentConfig) { c.logger = logger })
}

// WithReconnectBackoff sets the reconnect backoff: delays double from initial to max, each
// jittered by ±50 % (default 100ms to 5s).
func WithReconnectBackoff(initial, max time.Duration) Option {
	return agentOption(func(c *agentConfig) { c.backoffInitial, c.backoffMax = initial, max })
}

// WithDrainTimeout bounds a graceful shutdown: how long in-flight tasks may take to finish and
// their results to be acknowledged before the agent leaves anyway (default 30s).
func WithDrainTimeout(d time.Duration) Option {
	return agentOption(func(c *agentConfig) { c.drainTimeout = d })
}

// WithToken sends `authorization: Bearer <token>` on every call. A [Client] removes surrounding
// whitespace (a token file's final newline, say) and, without WithToken, sends the
// MESHPLANE_TOKEN environment variable when that is set; WithToken("") sends no token at all.
func WithToken(token string) SharedOption {
	return sharedOption{
		agent:  func(c *agentConfig) { c.token, c.tokenSet = token, true },
		client: func(c *clientConfig) { c.token, c.tokenSet = token, true },
	}
}

// WithConnections spreads a [Client]'s calls over n connections (1 to 64; default 1), in turn.
// The control plane accepts one connection's calls one at a time, so a client making many
// calls at once goes faster over several.
func WithConnections(n int) ClientOption {
	return clientOption(func(c *clientConfig) { c.connections = n })
}

// WithDialOptions adds gRPC dial options. They come after the SDK's own, so transport
// credentials given here override [WithTLS] and the MESHPLANE_TLS* environment variables.
func WithDialOptions(opts ...grpc.DialOption) SharedOption {
	return sharedOption{
		agent:  func(c *agentConfig) { c.dialOptions = append(c.dialOptions, opts...) },
		client: func(c *clientConfig) { c.dialOptions = append(c.dialOptions, opts...) },
	}
}

// DefaultTarget is where a [Client] connects when NewClient is given no target and the
// MESHPLANE_TARGET environment variable is not set (as in the Python and TypeScript SDKs).
const DefaultTarget = "127.0.0.1:50051"

// Environment variables read when no target or token is given.
const (
	envTarget = "MESHPLANE_TARGET"
	envToken  = "MESHPLANE_TOKEN"
)

// resolveTarget is the target to connect to: target itself, or when it is empty (or only
// whitespace) the MESHPLANE_TARGET environment variable, or else DefaultTarget.
func resolveTarget(target string) string {
	if t := strings.TrimSpace(target); t != "" {
		return t
	}
	if t := strings.TrimSpace(os.Getenv(envTarget)); t != "" {
		return t
	}
	return DefaultTarget
}

// resolveToken is the bearer token to send: token when one was given (given: WithToken was used,
// even with ""), else the MESHPLANE_TOKEN environment variable; surrounding whitespace removed
// ("": none). A token with a character a request header cannot carry (not printable ASCII, e.g.
// an inner line break) is an error matching ErrInvalidArgument, as in the Python SDK.
func resolveToken(token string, given bool) (string, error) {
	source := "the token"
	if !given {
		token, source = os.Getenv(envToken), envToken
	}
	token = strings.TrimSpace(token)
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < ' ' || c > '~' {
			what := "a line break or control character"
			if c > 0x7f {
				what = "a non-ASCII character"
			}
			return "", fmt.Errorf("%w: %s holds %s (byte %d), which a request header cannot carry: tokens must be printable ASCII",
				ErrInvalidArgument, source, what, i)
		}
	}
	return token, nil
}

// DefaultInstanceID is an agent's default instance id: "<name>-<host>-<pid>-<random>" cut to the
// 128 characters an instance id may have, the scheme of the Python and TypeScript SDKs. Each call
// returns a new one, so each agent of a process has its own (the plane keeps one session per
// instance id: agents sharing one would replace each other's sessions); an agent keeps its id
// for its lifetime, across reconnects.
func DefaultInstanceID(name string) string {
	host, _ := os.Hostname()
	host = strings.Trim(instanceIDUnsafe.ReplaceAllString(host, "-"), ".-")
	if host == "" {
		host = "host"
	}
	b := make([]byte, 4)
	_, _ = io.ReadFull(rand.Reader, b)
	id := fmt.Sprintf("%s-%s-%d-%s", name, host, os.Getpid(), hex.EncodeToString(b))
	return id[:min(len(id), 128)]
}

var instanceIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

var (
	processIDOnce sync.Once
	processID     string
)

// ProcessInstanceID is an instance id generated once per process from the host name and random
// bytes: the same for every call in a process.
//
// Deprecated: agents default to [DefaultInstanceID] of their name instead. One id shared by
// several agents of a process makes them replace each other's sessions on the control plane.
func ProcessInstanceID() string {
	processIDOnce.Do(func() {
		host, _ := os.Hostname()
		host = strings.Map(func(r rune) rune {
			if r < 128 && (r == '.' || r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')) {
				return r
			}
			return '-'
		}, host)
		host = strings.Trim(host, ".-_")
		if len(host) > 64 {
			host = host[:64]
		}
		b := make([]byte, 6)
		_, _ = io.ReadFull(rand.Reader, b)
		if host == "" {
			host = "go"
		}
		processID = host + "-" + hex.EncodeToString(b)
	})
	return processID
}

func (c *agentConfig) validate(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("meshplane: invalid agent name %q: 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit", name)
	}
	if !nameRE.MatchString(c.instanceID) {
		return fmt.Errorf("meshplane: invalid instance id %q: 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit", c.instanceID)
	}
	if c.maxConcurrency < 1 || c.maxConcurrency > maxMaxConcurrency {
		return fmt.Errorf("meshplane: max concurrency %d is outside 1..%d", c.maxConcurrency, maxMaxConcurrency)
	}
	if c.weight < 0 {
		return fmt.Errorf("meshplane: weight %d is negative", c.weight)
	}
	for k, v := range c.labels {
		if k == "" || len(k) > maxLabelLength || len(v) > maxLabelLength {
			return fmt.Errorf("meshplane: label %q=%q: keys must be 1-%d characters, values at most %d", k, v, maxLabelLength, maxLabelLength)
		}
	}
	if c.drainTimeout <= 0 {
		return fmt.Errorf("meshplane: drain timeout must be positive")
	}
	return nil
}
