package meshplane

import (
	"context"
	"strings"
	"time"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// listPageSize is the page size the listings that follow every page ask for (the plane's most).
const listPageSize = 1000

// AgentStatus says whether any instance of an agent is connected.
type AgentStatus string

// Agent statuses.
const (
	// AgentOnline: at least one instance is connected and not draining.
	AgentOnline AgentStatus = "ONLINE"
	// AgentDraining: every connected instance is draining.
	AgentDraining AgentStatus = "DRAINING"
	// AgentOffline: no instance is connected.
	AgentOffline AgentStatus = "OFFLINE"
)

// InstanceStatus is the connection state of an agent instance.
type InstanceStatus string

// Instance statuses.
const (
	// InstanceConnected: connected and taking work.
	InstanceConnected InstanceStatus = "CONNECTED"
	// InstanceDraining: connected, finishing its in-flight work, taking no new work.
	InstanceDraining InstanceStatus = "DRAINING"
	// InstanceDisconnected: not connected.
	InstanceDisconnected InstanceStatus = "DISCONNECTED"
)

// CapabilityInfo is a capability an agent registered.
type CapabilityInfo struct {
	Name        string
	Description string
	// InputSchema and OutputSchema are the JSON Schemas the agent declared, nil if none.
	InputSchema  map[string]any
	OutputSchema map[string]any
}

// AgentInfo is a registered agent: all its instances together.
type AgentInfo struct {
	Name string
	// Version, Description, Capabilities and Labels are what the agent last registered.
	Version      string
	Description  string
	Capabilities []CapabilityInfo
	Labels       map[string]string
	// Status is derived from its instances.
	Status AgentStatus
	// ConnectedInstances is the number of its instances connected now.
	ConnectedInstances int
	// CreateTime is the first registration, UpdateTime the last.
	CreateTime time.Time
	UpdateTime time.Time
}

func agentInfo(a *pb.Agent) *AgentInfo {
	info := &AgentInfo{
		Name:               a.GetName(),
		Version:            a.GetVersion(),
		Description:        a.GetDescription(),
		Capabilities:       make([]CapabilityInfo, 0, len(a.GetCapabilities())),
		Labels:             a.GetLabels(),
		Status:             AgentStatus(strings.TrimPrefix(a.GetStatus().String(), "AGENT_STATUS_")),
		ConnectedInstances: int(a.GetConnectedInstances()),
		CreateTime:         asTime(a.GetCreateTime()),
		UpdateTime:         asTime(a.GetUpdateTime()),
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	for _, c := range a.GetCapabilities() {
		capability := CapabilityInfo{Name: c.GetName(), Description: c.GetDescription()}
		if c.GetInputSchema() != nil {
			capability.InputSchema = c.GetInputSchema().AsMap()
		}
		if c.GetOutputSchema() != nil {
			capability.OutputSchema = c.GetOutputSchema().AsMap()
		}
		info.Capabilities = append(info.Capabilities, capability)
	}
	return info
}

// InstanceInfo is one running copy of an agent and its current (or last) session.
type InstanceInfo struct {
	// InstanceID is the id the instance chose; it survives reconnects.
	InstanceID string
	AgentName  string
	// Version is the agent version the instance runs.
	Version   string
	Status    InstanceStatus
	SessionID string
	// Capabilities are the names of the capabilities it serves.
	Capabilities []string
	// MaxConcurrency is the most tasks it runs at once; InFlight the tasks it runs now.
	MaxConcurrency int
	InFlight       int
	// Load is what the agent last reported (0..1, agent-defined).
	Load float64
	// Weight is its share for the weighted scheduling strategy.
	Weight int
	Labels map[string]string
	// SDKLanguage ("python", "go", "typescript", ...) and SDKVersion: the SDK it is built with.
	SDKLanguage string
	SDKVersion  string
	// Node is the host it runs on, PID its process id there.
	Node string
	PID  int
	// ReplicaID is the control plane replica holding its stream.
	ReplicaID string
	// ConnectTime is when the current session connected; LastSeenTime its last sign of life as
	// last recorded; DisconnectTime when the last session ended (zero if it did not).
	ConnectTime    time.Time
	LastSeenTime   time.Time
	DisconnectTime time.Time
}

func instanceInfo(i *pb.AgentInstance) *InstanceInfo {
	info := &InstanceInfo{
		InstanceID:     i.GetInstanceId(),
		AgentName:      i.GetAgentName(),
		Version:        i.GetVersion(),
		Status:         InstanceStatus(strings.TrimPrefix(i.GetStatus().String(), "AGENT_INSTANCE_STATUS_")),
		SessionID:      i.GetSessionId(),
		Capabilities:   i.GetCapabilities(),
		MaxConcurrency: int(i.GetMaxConcurrency()),
		InFlight:       int(i.GetInFlight()),
		Load:           i.GetLoad(),
		Weight:         int(i.GetWeight()),
		Labels:         i.GetLabels(),
		SDKLanguage:    i.GetSdk().GetLanguage(),
		SDKVersion:     i.GetSdk().GetVersion(),
		Node:           i.GetNode(),
		PID:            int(i.GetPid()),
		ReplicaID:      i.GetReplicaId(),
		ConnectTime:    asTime(i.GetConnectTime()),
		LastSeenTime:   asTime(i.GetLastSeenTime()),
		DisconnectTime: asTime(i.GetDisconnectTime()),
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	if info.Capabilities == nil {
		info.Capabilities = []string{}
	}
	return info
}

// AgentPage is one page of an agent listing.
type AgentPage struct {
	// Agents are the page's agents, by name.
	Agents []*AgentInfo
	// NextPageToken asks ListAgentsPage for the next page; empty on the last page.
	NextPageToken string
}

// ListAgentsPage returns one page of the registered agents, by name: all of them ("" capability)
// or those that registered capability. pageSize is the most agents on the page (0: the control plane's
// default, 50; at most 1000); pageToken is "" for the first page, then the previous page's
// NextPageToken, with the same capability.
func (c *Client) ListAgentsPage(ctx context.Context, capability string, pageSize int, pageToken string) (*AgentPage, error) {
	resp, err := c.agents.ListAgents(ctx, &pb.ListAgentsRequest{Capability: capability, PageSize: int32Field(pageSize), PageToken: pageToken})
	if err != nil {
		return nil, rpcError(err)
	}
	return &AgentPage{Agents: convertAll(resp.GetAgents(), agentInfo), NextPageToken: resp.GetNextPageToken()}, nil
}

// ListAgents returns every registered agent, by name ("" capability), or only those that
// registered capability; it follows the pages to the end with ListAgentsPage.
func (c *Client) ListAgents(ctx context.Context, capability string) ([]*AgentInfo, error) {
	return allPages(func(token string) ([]*AgentInfo, string, error) {
		page, err := c.ListAgentsPage(ctx, capability, listPageSize, token)
		if err != nil {
			return nil, "", err
		}
		return page.Agents, page.NextPageToken, nil
	})
}

// GetAgent returns one agent (an error matching ErrNotFound if there is none).
func (c *Client) GetAgent(ctx context.Context, name string) (*AgentInfo, error) {
	resp, err := c.agents.GetAgent(ctx, &pb.GetAgentRequest{AgentName: name})
	if err != nil {
		return nil, rpcError(err)
	}
	return agentInfo(resp.GetAgent()), nil
}

// InstancePage is one page of an instance listing.
type InstancePage struct {
	// Instances are the page's instances.
	Instances []*InstanceInfo
	// NextPageToken asks ListInstancesPage for the next page; empty on the last page.
	NextPageToken string
}

// ListInstancesPage returns one page of the instances of agent agentName ("" or "-": of every
// agent), connected ones only unless includeDisconnected. pageSize is the most instances on the
// page (0: the control plane's default, 50; at most 1000); pageToken is "" for the first page,
// then the previous page's NextPageToken, with the same agentName and includeDisconnected.
func (c *Client) ListInstancesPage(ctx context.Context, agentName string, includeDisconnected bool, pageSize int, pageToken string) (*InstancePage, error) {
	if agentName == "" {
		agentName = "-"
	}
	resp, err := c.agents.ListAgentInstances(ctx, &pb.ListAgentInstancesRequest{
		AgentName: agentName, IncludeDisconnected: includeDisconnected, PageSize: int32Field(pageSize), PageToken: pageToken,
	})
	if err != nil {
		return nil, rpcError(err)
	}
	return &InstancePage{Instances: convertAll(resp.GetInstances(), instanceInfo), NextPageToken: resp.GetNextPageToken()}, nil
}

// ListInstances returns the instances of agent agentName ("" or "-": of every agent), connected
// ones only unless includeDisconnected; it follows the pages to the end with ListInstancesPage.
func (c *Client) ListInstances(ctx context.Context, agentName string, includeDisconnected bool) ([]*InstanceInfo, error) {
	return allPages(func(token string) ([]*InstanceInfo, string, error) {
		page, err := c.ListInstancesPage(ctx, agentName, includeDisconnected, listPageSize, token)
		if err != nil {
			return nil, "", err
		}
		return page.Instances, page.NextPageToken, nil
	})
}

// allPages calls fetch with "" and then each next-page token it returns, until one is empty, and
// returns every page's items in order (an empty slice, not nil, when there are none).
func allPages[T any](fetch func(token string) (items []T, next string, err error)) ([]T, error) {
	all := []T{}
	for token := ""; ; {
		items, next, err := fetch(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if token = next; token == "" {
			return all, nil
		}
	}
}

// convertAll converts each message with convert.
func convertAll[M any, T any](messages []M, convert func(M) T) []T {
	out := make([]T, len(messages))
	for i, m := range messages {
		out[i] = convert(m)
	}
	return out
}
