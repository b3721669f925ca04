package meshplane

import "sync"

// A channel's messages on their way to its handler: a bounded number of handler calls run at
// once, a bounded number of messages wait. The control plane keeps at most 1,000 messages
// (32 MiB) waiting for an agent that reads slowly; an agent reads its stream eagerly, so without
// a bound of its own a slow handler under a busy channel would grow it instead. Past the bound
// the oldest waiting message is dropped (channel messages are at most once); the newest always
// waits. The same bounds as the Python (agent_runtime/_inbox.py) and TypeScript SDKs.
const (
	handlersPerChannel = 64 // handler calls running at once for one channel
	maxWaitingMessages = 1000
	maxWaitingBytes    = 32 * 1024 * 1024 // of message bodies (Message.Data)
)

// channelInbox is one channel's handler slots and waiting messages. Whoever gets start=true
// from add owns a slot: it handles that message, then asks next for more until next returns
// nil, which frees the slot.
type channelInbox struct {
	mu      sync.Mutex
	running int        // handler slots in use
	waiting []*Message // a ring of maxWaitingMessages, allocated when a message first waits
	head    int        // index of the oldest waiting message
	count   int        // messages waiting
	bytes   int        // their bodies' size
	dropped uint64     // waiting messages pushed out by newer ones, ever
}

// add takes a message that just arrived. If a handler slot is free it is taken and start is
// true: the caller runs a handler for m (and then for what next returns). Otherwise m waits,
// pushing out the oldest waiting messages if the bounds require; pushedOut says how many.
func (in *channelInbox) add(m *Message) (start bool, pushedOut int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.running < handlersPerChannel {
		in.running++
		return true, 0
	}
	size := len(m.Data)
	for in.count > 0 && (in.count >= maxWaitingMessages || in.bytes+size > maxWaitingBytes) {
		in.popLocked()
		in.dropped++
		pushedOut++
	}
	if in.waiting == nil {
		in.waiting = make([]*Message, maxWaitingMessages)
	}
	in.waiting[(in.head+in.count)%maxWaitingMessages] = m
	in.count++
	in.bytes += size
	return false, pushedOut
}

// next hands a slot's owner the oldest waiting message, or frees its slot and returns nil when
// none waits (both under the lock: a message that arrives meanwhile gets a slot of its own).
func (in *channelInbox) next() *Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.count == 0 {
		in.running--
		return nil
	}
	return in.popLocked()
}

func (in *channelInbox) popLocked() *Message {
	m := in.waiting[in.head]
	in.waiting[in.head] = nil
	in.head = (in.head + 1) % maxWaitingMessages
	in.count--
	in.bytes -= len(m.Data)
	return m
}

// droppedCount is how many waiting messages newer ones pushed out.
func (in *channelInbox) droppedCount() uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dropped
}

// load is what the inbox holds now: handler slots in use, messages and bytes waiting.
func (in *channelInbox) load() (running, waiting, bytes int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.running, in.count, in.bytes
}
