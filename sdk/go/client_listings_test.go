package meshplane

// The client's channel and audit listings against in-process fakes of the control plane's
// ChannelService and AuditService that record every request (helpers: client_api_test.go).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

type fakeChannels struct {
	pb.UnimplementedChannelServiceServer
	lists recorder[*pb.ListChannelsRequest]
	pages map[string]page[*pb.Channel]
	err   error
}

func (f *fakeChannels) ListChannels(_ context.Context, req *pb.ListChannelsRequest) (*pb.ListChannelsResponse, error) {
	f.lists.add(req)
	p, err := serve(f.pages, req.GetPageToken(), f.err)
	if err != nil {
		return nil, err
	}
	return &pb.ListChannelsResponse{Channels: p.items, NextPageToken: p.next}, nil
}

// fakeAudit serves a trail as the plane does: pages of the size asked (default 50, at most 1000),
// each next-page token "at-<offset>".
type fakeAudit struct {
	pb.UnimplementedAuditServiceServer
	lists   recorder[*pb.ListAuditEntriesRequest]
	entries []*pb.AuditEntry // the trail, newest first
	extra   int              // each page carries this many entries more than asked for
	errFrom string           // ListAuditEntries fails with err for the page tokens starting with this ("": every page)
	err     error
}

func (f *fakeAudit) ListAuditEntries(_ context.Context, req *pb.ListAuditEntriesRequest) (*pb.ListAuditEntriesResponse, error) {
	f.lists.add(req)
	if f.err != nil && strings.HasPrefix(req.GetPageToken(), f.errFrom) {
		return nil, f.err
	}
	start := 0
	if token := req.GetPageToken(); token != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(token, "at-"))
		if err != nil || !strings.HasPrefix(token, "at-") || n > len(f.entries) {
			return nil, status.Errorf(codes.InvalidArgument, "unknown page token %q", token)
		}
		start = n
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 50
	}
	end := min(start+min(size, 1000)+f.extra, len(f.entries))
	resp := &pb.ListAuditEntriesResponse{Entries: f.entries[start:end]}
	if end < len(f.entries) {
		resp.NextPageToken = fmt.Sprintf("at-%d", end)
	}
	return resp, nil
}

// auditTrail is n entries, newest (highest id) first.
func auditTrail(n int) []*pb.AuditEntry {
	entries := make([]*pb.AuditEntry, n)
	for i := range entries {
		entries[i] = &pb.AuditEntry{Id: int64(n - i), Action: "state.put", Resource: fmt.Sprintf("namespaces/n/states/k%d", n-i)}
	}
	return entries
}

func startFakeListings(t *testing.T, channels *fakeChannels, audit *fakeAudit) *Client {
	t.Helper()
	return startFakeServices(t, func(srv *grpc.Server) {
		pb.RegisterChannelServiceServer(srv, channels)
		pb.RegisterAuditServiceServer(srv, audit)
	})
}

func channelNames(channels []*ChannelInfo) []string {
	out := make([]string, len(channels))
	for i, ch := range channels {
		out[i] = ch.Name
	}
	return out
}

func auditIDs(entries []*AuditEntry) []int64 {
	out := make([]int64, len(entries))
	for i, e := range entries {
		out[i] = e.ID
	}
	return out
}

func TestListChannelsFollowsPagesAndConverts(t *testing.T) {
	created := time.Date(2026, 10, 1, 9, 30, 0, 123456789, time.UTC)
	used := created.Add(36 * time.Hour)
	channels := &fakeChannels{pages: map[string]page[*pb.Channel]{
		"":   {items: []*pb.Channel{{Name: "alerts", CreateTime: timestamppb.New(created), LastUseTime: timestamppb.New(used)}}, next: "c2"},
		"c2": {items: []*pb.Channel{{Name: "news"}, {Name: "orders"}}, next: "c3"},
		"c3": {items: []*pb.Channel{{Name: "zeta"}}},
	}}
	client := startFakeListings(t, channels, &fakeAudit{})

	got, err := client.ListChannels(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alerts", "news", "orders", "zeta"}; !slices.Equal(channelNames(got), want) {
		t.Errorf("channels %v, want %v", channelNames(got), want)
	}
	if want := (&ChannelInfo{Name: "alerts", CreateTime: created, LastUseTime: used}); !reflect.DeepEqual(got[0], want) {
		t.Errorf("channel\n%+v\nwant\n%+v", got[0], want)
	}
	if !got[1].CreateTime.IsZero() || !got[1].LastUseTime.IsZero() {
		t.Errorf("unset times should be zero: %+v", got[1])
	}
	reqs := channels.lists.all()
	if got, want := tokens(reqs), []string{"", "c2", "c3"}; !slices.Equal(got, want) {
		t.Errorf("page tokens sent %q, want %q", got, want)
	}
	for _, r := range reqs {
		if r.GetPageSize() != 1000 {
			t.Errorf("request %v: want page size 1000 on every page", r)
		}
	}

	none := startFakeListings(t, &fakeChannels{pages: map[string]page[*pb.Channel]{"": {}}}, &fakeAudit{})
	if got, err := none.ListChannels(testContext(t)); err != nil || got == nil || len(got) != 0 {
		t.Errorf("ListChannels with none in use = %#v, %v; want an empty slice, not nil", got, err)
	}
}

func TestListChannelsPageSendsSizeAndTokenAndReturnsTheNextToken(t *testing.T) {
	used := time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC)
	channels := &fakeChannels{pages: map[string]page[*pb.Channel]{
		"":   {items: []*pb.Channel{{Name: "alerts"}, {Name: "news"}}, next: "c2"},
		"c2": {items: []*pb.Channel{{Name: "orders", LastUseTime: timestamppb.New(used)}}},
	}}
	client := startFakeListings(t, channels, &fakeAudit{})

	first, err := client.ListChannelsPage(testContext(t), 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(channelNames(first.Channels), []string{"alerts", "news"}) || first.NextPageToken != "c2" {
		t.Errorf("first page %v, next %q; want [alerts news], next c2", channelNames(first.Channels), first.NextPageToken)
	}
	last, err := client.ListChannelsPage(testContext(t), 0, first.NextPageToken)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(channelNames(last.Channels), []string{"orders"}) || !last.Channels[0].LastUseTime.Equal(used) || last.NextPageToken != "" {
		t.Errorf("last page %+v, next %q; want orders last used %v, no next", last.Channels[0], last.NextPageToken, used)
	}
	if _, err := client.ListChannelsPage(testContext(t), 1<<32+5, ""); err != nil {
		t.Fatal(err)
	}

	reqs := channels.lists.all()
	if got, want := tokens(reqs), []string{"", "c2", ""}; !slices.Equal(got, want) {
		t.Fatalf("page tokens sent %q, want %q", got, want)
	}
	for i, size := range []int32{2, 0, math.MaxInt32} {
		if r := reqs[i]; r.GetPageSize() != size {
			t.Errorf("request %d = %v; want page size %d (saturated, not wrapped)", i, r, size)
		}
	}
}

func TestListAuditEntriesPageSendsTheFilterAndConverts(t *testing.T) {
	recorded := time.Date(2026, 11, 5, 14, 0, 0, 250000000, time.UTC)
	details := schema(t, map[string]any{"version": 3, "previous": nil, "tags": []any{"a", "b"}, "ttl": map[string]any{"seconds": 60}})
	audit := &fakeAudit{entries: []*pb.AuditEntry{
		{
			Id: 1<<53 + 1, Time: timestamppb.New(recorded), Actor: "client/token:ab12", Action: "state.put",
			Resource: "namespaces/n/states/k", CorrelationId: "corr-9", Details: details,
		},
		{Id: 7, Actor: "agent/greeter/go-1", Action: "channel.publish", Resource: "channels/news"},
		{Id: 6},
	}}
	client := startFakeListings(t, &fakeChannels{}, audit)
	cet := time.FixedZone("CET", 3600)
	since := time.Date(2026, 11, 1, 8, 15, 30, 123456789, cet)
	until := time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC)
	filter := AuditFilter{
		Resource: "namespaces/n/states/k", Actor: "client/token:ab12", Action: "state.put", CorrelationID: "corr-9",
		Since: since, Until: until,
	}

	first, err := client.ListAuditEntriesPage(testContext(t), filter, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	want := &AuditEntry{
		ID: 1<<53 + 1, Time: recorded, Actor: "client/token:ab12", Action: "state.put",
		Resource: "namespaces/n/states/k", CorrelationID: "corr-9",
		Details: map[string]any{"version": float64(3), "previous": nil, "tags": []any{"a", "b"}, "ttl": map[string]any{"seconds": float64(60)}},
	}
	if len(first.Entries) != 2 || !reflect.DeepEqual(first.Entries[0], want) {
		t.Fatalf("first page %+v\nwant first entry\n%+v", first.Entries, want)
	}
	if e := first.Entries[1]; e.ID != 7 || e.Actor != "agent/greeter/go-1" || e.Action != "channel.publish" ||
		e.Resource != "channels/news" || !e.Time.IsZero() || e.Details == nil || len(e.Details) != 0 {
		t.Errorf("second entry %+v; want converted, zero time, empty (not nil) details", e)
	}
	if first.NextPageToken != "at-2" {
		t.Errorf("next page token %q, want at-2", first.NextPageToken)
	}
	last, err := client.ListAuditEntriesPage(testContext(t), AuditFilter{Until: until}, 0, first.NextPageToken)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(auditIDs(last.Entries), []int64{6}) || last.NextPageToken != "" {
		t.Errorf("last page %v, next %q; want [6], no next", auditIDs(last.Entries), last.NextPageToken)
	}
	if _, err := client.ListAuditEntriesPage(testContext(t), AuditFilter{Since: since}, 1<<32+5, ""); err != nil {
		t.Fatal(err)
	}

	reqs := audit.lists.all()
	if got, want := tokens(reqs), []string{"", "at-2", ""}; !slices.Equal(got, want) {
		t.Fatalf("page tokens sent %q, want %q", got, want)
	}
	r := reqs[0]
	if r.GetResource() != filter.Resource || r.GetActor() != filter.Actor || r.GetAction() != filter.Action ||
		r.GetCorrelationId() != filter.CorrelationID || r.GetPageSize() != 2 {
		t.Errorf("request %v does not carry the filter and page size", r)
	}
	// The instant, to the nanosecond, whatever the location it was given in.
	if st, et := r.GetStartTime(), r.GetEndTime(); st.GetSeconds() != since.Unix() || st.GetNanos() != 123456789 ||
		!st.AsTime().Equal(since) || !et.AsTime().Equal(until) || et.GetNanos() != 0 {
		t.Errorf("start %v, end %v; want %v and %v", st, et, since, until)
	}
	if r := reqs[1]; r.GetStartTime() != nil || !r.GetEndTime().AsTime().Equal(until) || r.GetResource() != "" || r.GetPageSize() != 0 {
		t.Errorf("request %v; want no start time (zero Since), the end time, no other filter, page size 0", r)
	}
	if r := reqs[2]; !r.GetStartTime().AsTime().Equal(since) || r.GetEndTime() != nil || r.GetPageSize() != math.MaxInt32 {
		t.Errorf("request %v; want the start time, no end time (zero Until), page size saturated at int32's most", r)
	}
}

func TestListAuditEntriesFollowsPagesUpToTheLimit(t *testing.T) {
	filter := AuditFilter{Action: "state.put", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		name    string
		trail   int
		extra   int
		limit   int
		sizes   []int32  // the page sizes asked for
		tokens  []string // the page tokens sent
		entries int      // how many come back
	}{
		{name: "within one page", trail: 10, limit: 3, sizes: []int32{3}, tokens: []string{""}, entries: 3},
		{name: "over pages", trail: 2500, limit: 2200, sizes: []int32{1000, 1000, 200}, tokens: []string{"", "at-1000", "at-2000"}, entries: 2200},
		{name: "fewer than the limit", trail: 1200, limit: 5000, sizes: []int32{1000, 1000}, tokens: []string{"", "at-1000"}, entries: 1200},
		{name: "nothing", trail: 0, limit: 50, sizes: []int32{50}, tokens: []string{""}, entries: 0},
		{name: "a plane answering more than asked", trail: 10, extra: 4, limit: 3, sizes: []int32{3}, tokens: []string{""}, entries: 3},
		{name: "limit 0", trail: 10, limit: 0, entries: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			audit := &fakeAudit{entries: auditTrail(tc.trail), extra: tc.extra}
			client := startFakeListings(t, &fakeChannels{}, audit)
			got, err := client.ListAuditEntries(testContext(t), filter, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || len(got) != tc.entries {
				t.Fatalf("%d entries (nil: %v), want %d", len(got), got == nil, tc.entries)
			}
			for i, e := range got {
				if want := int64(tc.trail - i); e.ID != want || e.Action != "state.put" {
					t.Fatalf("entry %d: %+v, want id %d (newest first, in the plane's order)", i, e, want)
				}
			}
			reqs := audit.lists.all()
			sizes := make([]int32, len(reqs))
			for i, r := range reqs {
				sizes[i] = r.GetPageSize()
				if r.GetAction() != "state.put" || !r.GetStartTime().AsTime().Equal(filter.Since) || r.GetEndTime() != nil {
					t.Errorf("request %d = %v; want the filter on every page", i, r)
				}
			}
			if !slices.Equal(sizes, tc.sizes) || !slices.Equal(tokens(reqs), tc.tokens) {
				t.Errorf("pages asked: sizes %v tokens %q; want sizes %v tokens %q", sizes, tokens(reqs), tc.sizes, tc.tokens)
			}
		})
	}
}

func TestListAuditEntriesRefusesANegativeLimit(t *testing.T) {
	audit := &fakeAudit{entries: auditTrail(3)}
	client := startFakeListings(t, &fakeChannels{}, audit)
	if got, err := client.ListAuditEntries(testContext(t), AuditFilter{}, -1); got != nil || !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("ListAuditEntries(limit -1) = %v, %v; want ErrInvalidArgument", got, err)
	}
	if n := len(audit.lists.all()); n != 0 {
		t.Errorf("%d calls made with a negative limit, want none", n)
	}
}

func TestChannelAndAuditListingsMapErrors(t *testing.T) {
	denied := status.Error(codes.PermissionDenied, "no")
	client := startFakeListings(t, &fakeChannels{err: denied}, &fakeAudit{entries: auditTrail(3), err: denied})
	if got, err := client.ListChannels(testContext(t)); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListChannels = %v, %v; want ErrPermissionDenied", got, err)
	}
	if p, err := client.ListChannelsPage(testContext(t), 0, ""); p != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListChannelsPage = %v, %v; want ErrPermissionDenied", p, err)
	}
	if p, err := client.ListAuditEntriesPage(testContext(t), AuditFilter{}, 0, ""); p != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListAuditEntriesPage = %v, %v; want ErrPermissionDenied", p, err)
	}
	if got, err := client.ListAuditEntries(testContext(t), AuditFilter{}, 10); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListAuditEntries = %v, %v; want ErrPermissionDenied", got, err)
	}

	// The plane refuses a bad range; the client sends it as it is.
	refused := status.Error(codes.InvalidArgument, "end_time: must be after start_time")
	client = startFakeListings(t, &fakeChannels{}, &fakeAudit{err: refused})
	now := time.Now()
	_, err := client.ListAuditEntriesPage(testContext(t), AuditFilter{Since: now, Until: now.Add(-time.Hour)}, 0, "")
	var rpc *RPCError
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &rpc) || rpc.Message != "end_time: must be after start_time" {
		t.Errorf("ListAuditEntriesPage with a bad range = %v; want the plane's INVALID_ARGUMENT", err)
	}

	// A failure on a later page fails the whole listing.
	audit := &fakeAudit{entries: auditTrail(1500), errFrom: "at-", err: status.Error(codes.Unavailable, "plane down")}
	client = startFakeListings(t, &fakeChannels{}, audit)
	if got, err := client.ListAuditEntries(testContext(t), AuditFilter{}, 1500); got != nil || !errors.Is(err, ErrUnavailable) {
		t.Errorf("ListAuditEntries = %d entries, %v; want nil and ErrUnavailable", len(got), err)
	}
	if got := tokens(audit.lists.all()); !slices.Equal(got, []string{"", "at-1000"}) {
		t.Errorf("page tokens sent %q, want the first page, then the failing one", got)
	}
}
