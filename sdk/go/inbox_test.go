package meshplane

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func inboxMessage(id string, body []byte) *Message { return &Message{Channel: "c", ID: id, Data: body} }

// fillSlots takes every handler slot of in, as handlers that have not returned yet.
func fillSlots(t *testing.T, in *channelInbox) {
	t.Helper()
	for i := range handlersPerChannel {
		if start, _ := in.add(inboxMessage(fmt.Sprint("run", i), nil)); !start {
			t.Fatalf("message %d found no free slot", i)
		}
	}
}

func TestInboxBoundsMatchTheOtherSDKs(t *testing.T) {
	// agent_runtime/_inbox.py and sdk/typescript/src/inbox.ts
	if handlersPerChannel != 64 || maxWaitingMessages != 1000 || maxWaitingBytes != 32*1024*1024 {
		t.Fatalf("bounds %d/%d/%d", handlersPerChannel, maxWaitingMessages, maxWaitingBytes)
	}
}

func TestInboxStartsUpTo64HandlersThenQueuesInOrder(t *testing.T) {
	in := &channelInbox{}
	fillSlots(t, in)
	for i := range 3 {
		if start, out := in.add(inboxMessage(fmt.Sprint("w", i), []byte("abc"))); start || out != 0 {
			t.Fatalf("message %d past the slots: start=%v pushedOut=%d", i, start, out)
		}
	}
	if running, waiting, bytes := in.load(); running != 64 || waiting != 3 || bytes != 9 {
		t.Fatalf("load %d/%d/%d, want 64/3/9", running, waiting, bytes)
	}
	for i := range 3 { // a slot's owner takes what waits, oldest first
		if m := in.next(); m == nil || m.ID != fmt.Sprint("w", i) {
			t.Fatalf("next: %v, want w%d", m, i)
		}
	}
	if m := in.next(); m != nil { // nothing waits: the slot is freed
		t.Fatalf("next on an empty inbox: %v", m)
	}
	if running, waiting, bytes := in.load(); running != 63 || waiting != 0 || bytes != 0 {
		t.Fatalf("load %d/%d/%d, want 63/0/0", running, waiting, bytes)
	}
	if start, _ := in.add(inboxMessage("again", nil)); !start { // the freed slot is taken again
		t.Fatal("a freed slot was not reused")
	}
	if in.droppedCount() != 0 {
		t.Fatalf("dropped %d", in.droppedCount())
	}
}

func TestInboxDropsTheOldestPastTheMessageBound(t *testing.T) {
	in := &channelInbox{}
	fillSlots(t, in)
	const extra = 5
	pushed := 0
	for i := range maxWaitingMessages + extra {
		start, out := in.add(inboxMessage(fmt.Sprint("w", i), []byte("x")))
		if start {
			t.Fatal("a slot was free")
		}
		pushed += out
	}
	if pushed != extra || in.droppedCount() != extra {
		t.Fatalf("pushed out %d, dropped %d; want %d", pushed, in.droppedCount(), extra)
	}
	if _, waiting, bytes := in.load(); waiting != maxWaitingMessages || bytes != maxWaitingMessages {
		t.Fatalf("waiting %d (%d bytes), want %d", waiting, bytes, maxWaitingMessages)
	}
	for i := extra; i < maxWaitingMessages+extra; i++ { // w0..w4 are gone; the newest is kept
		if m := in.next(); m == nil || m.ID != fmt.Sprint("w", i) {
			t.Fatalf("next: %v, want w%d", m, i)
		}
	}
	if m := in.next(); m != nil {
		t.Fatalf("left over: %v", m)
	}
}

func TestInboxDropsTheOldestPastTheByteBound(t *testing.T) {
	in := &channelInbox{}
	fillSlots(t, in)
	mib := make([]byte, 1<<20) // shared by every message: only the lengths matter
	const sent = 40
	for i := range sent {
		in.add(inboxMessage(fmt.Sprint("w", i), mib))
		if _, _, bytes := in.load(); bytes > maxWaitingBytes {
			t.Fatalf("after %d messages %d bytes wait, past %d", i+1, bytes, maxWaitingBytes)
		}
	}
	const fit = maxWaitingBytes / (1 << 20) // 32
	if _, waiting, bytes := in.load(); waiting != fit || bytes != maxWaitingBytes {
		t.Fatalf("waiting %d (%d bytes), want %d (%d)", waiting, bytes, fit, maxWaitingBytes)
	}
	if in.droppedCount() != sent-fit {
		t.Fatalf("dropped %d, want %d", in.droppedCount(), sent-fit)
	}
	if m := in.next(); m.ID != fmt.Sprint("w", sent-fit) {
		t.Fatalf("oldest kept: %s, want w%d", m.ID, sent-fit)
	}

	// A message bigger than the whole bound pushes out everything else, but still waits.
	huge := make([]byte, maxWaitingBytes+1)
	if _, out := in.add(inboxMessage("huge", huge)); out != fit-1 {
		t.Fatalf("the huge message pushed out %d, want %d", out, fit-1)
	}
	if _, waiting, bytes := in.load(); waiting != 1 || bytes != len(huge) {
		t.Fatalf("waiting %d (%d bytes), want only the huge one", waiting, bytes)
	}
	if m := in.next(); m.ID != "huge" {
		t.Fatalf("next: %s", m.ID)
	}
}

// One reader adding (as the stream's reader does) and slot owners taking, concurrently: every
// message is handled or dropped, never more than 64 handlers run, and every slot is freed.
func TestInboxUnderConcurrency(t *testing.T) {
	in := &channelInbox{}
	const total = 20000
	var handled, current, peak atomic.Int64
	var slots sync.WaitGroup
	handle := func(m *Message) {
		defer slots.Done()
		for ; m != nil; m = in.next() {
			n := current.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			handled.Add(1)
			current.Add(-1)
		}
	}
	for i := range total {
		m := inboxMessage(fmt.Sprint(i), []byte("body"))
		if start, _ := in.add(m); start {
			slots.Add(1)
			go handle(m)
		}
	}
	slots.Wait()
	if got := handled.Load() + int64(in.droppedCount()); got != total {
		t.Fatalf("handled %d + dropped %d != %d", handled.Load(), in.droppedCount(), total)
	}
	if peak.Load() > handlersPerChannel {
		t.Fatalf("%d handlers at once", peak.Load())
	}
	if running, waiting, bytes := in.load(); running != 0 || waiting != 0 || bytes != 0 {
		t.Fatalf("load %d/%d/%d after every slot returned", running, waiting, bytes)
	}
}
