package meshplane

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// AuditEntry is one entry of the audit trail: who changed what, when, under which correlation id.
// State writes and deletes, instance drains, task resubmits and channel publishes are audit
// entries (a task's own history is its events: Watch).
type AuditEntry struct {
	// ID is its position in the trail: later entries have higher ids.
	ID int64
	// Time is when it was recorded.
	Time time.Time
	// Actor is who: "client/token:<hash>", "client/anonymous", "agent/<name>/<instance_id>" or
	// "replica/<id>".
	Actor string
	// Action is what: "state.put", "state.delete", "channel.publish", "agent.drain",
	// "task.resubmit", ...
	Action string
	// Resource is on what, e.g. "namespaces/n/states/k", "channels/orders",
	// "agents/a/instances/i", "tasks/<id>".
	Resource string
	// CorrelationID is the call's correlation id, if any.
	CorrelationID string
	// Details is what else the action recorded (e.g. a state entry's new version); empty, not
	// nil, when nothing.
	Details map[string]any
}

func auditEntry(e *pb.AuditEntry) *AuditEntry {
	return &AuditEntry{
		ID:            e.GetId(),
		Time:          asTime(e.GetTime()),
		Actor:         e.GetActor(),
		Action:        e.GetAction(),
		Resource:      e.GetResource(),
		CorrelationID: e.GetCorrelationId(),
		Details:       e.GetDetails().AsMap(),
	}
}

// AuditFilter selects audit entries to list; every field set must match, zero fields match every
// entry.
type AuditFilter struct {
	// Resource: only entries on this resource (exact).
	Resource string
	// Actor: only entries by this actor (exact).
	Actor string
	// Action: only entries of this action (exact).
	Action string
	// CorrelationID: only entries with this correlation id (exact).
	CorrelationID string
	// Since: only entries recorded at or after this time (zero: no lower bound).
	Since time.Time
	// Until: only entries recorded before this time (zero: no upper bound).
	Until time.Time
}

func (f AuditFilter) request(pageSize int, pageToken string) *pb.ListAuditEntriesRequest {
	req := &pb.ListAuditEntriesRequest{
		Resource:      f.Resource,
		Actor:         f.Actor,
		Action:        f.Action,
		CorrelationId: f.CorrelationID,
		PageSize:      int32Field(pageSize),
		PageToken:     pageToken,
	}
	if !f.Since.IsZero() {
		req.StartTime = timestamppb.New(f.Since)
	}
	if !f.Until.IsZero() {
		req.EndTime = timestamppb.New(f.Until)
	}
	return req
}

// AuditPage is one page of an audit listing.
type AuditPage struct {
	// Entries are the page's entries, newest first.
	Entries []*AuditEntry
	// NextPageToken asks ListAuditEntriesPage for the next (older) page; empty on the last page.
	NextPageToken string
}

// ListAuditEntriesPage returns one page of the audit entries matching filter, newest first.
// pageSize is the most entries on the page (0: the control plane's default, 50; at most 1000);
// pageToken is "" for the first page, then the previous page's NextPageToken, with the same filter.
func (c *Client) ListAuditEntriesPage(ctx context.Context, filter AuditFilter, pageSize int, pageToken string) (*AuditPage, error) {
	resp, err := c.audit.ListAuditEntries(ctx, filter.request(pageSize, pageToken))
	if err != nil {
		return nil, rpcError(err)
	}
	return &AuditPage{Entries: convertAll(resp.GetEntries(), auditEntry), NextPageToken: resp.GetNextPageToken()}, nil
}

// ListAuditEntries returns up to limit audit entries matching filter, newest first, following the
// pages with ListAuditEntriesPage as needed (each asking for no more than are still wanted, at most
// 1000). A limit of 0 returns no entry without a call; a negative limit is an error matching
// ErrInvalidArgument.
func (c *Client) ListAuditEntries(ctx context.Context, filter AuditFilter, limit int) ([]*AuditEntry, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: limit must not be negative, got %d", ErrInvalidArgument, limit)
	}
	entries := []*AuditEntry{}
	for token := ""; len(entries) < limit; {
		page, err := c.ListAuditEntriesPage(ctx, filter, min(listPageSize, limit-len(entries)), token)
		if err != nil {
			return nil, err
		}
		entries = append(entries, page.Entries...)
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	return entries[:min(len(entries), limit)], nil
}
