package gateway

import (
	"bytes"
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

// TestFramePayload: framePayload finds the payload of every frame we build,
// across the header-size boundaries, from the frame's length alone.
func TestFramePayload(t *testing.T) {
	for _, n := range []int{0, 1, 124, 125, 126, 127, 1000, 0xffff, 0x10000, 0x10001} {
		p := bytes.Repeat([]byte{'x'}, n)
		if got := framePayload(textFrame(p)); !bytes.Equal(got, p) {
			t.Errorf("payload of %d bytes: got %d bytes back", n, len(got))
		}
	}
	if got := framePayload(closeFrame(1000, "bye")); !bytes.Equal(got, []byte("\x03\xe8bye")) {
		t.Errorf("close frame payload %q", got)
	}
}

// TestSSEEvent: a msg frame queued on a stream becomes an event carrying
// the same JSON, with the position the sender gave as its id, and frames
// without an op (control frames) are not shown.
func TestSSEEvent(t *testing.T) {
	st := &sseState{single: true, pos: map[string]ssePos{}}
	body := appendMsg(nil, "doc:1", 7, "ep", brokers.Position{}, []byte(`"data":{"a":1}`))
	got := st.event(event{"msg", "doc:1", 7, "ep"}, textFrame(body))
	want := "id: 7:ep\nevent: msg\ndata: " + string(body) + "\n\n"
	if string(got) != want {
		t.Fatalf("event:\n%q\nwant\n%q", got, want)
	}
	if got := st.event(event{}, emptyPong); got != nil {
		t.Fatalf("a pong became the event %q", got)
	}
	if got := st.event(event{op: "join"}, textFrame(appendPresenceEvent(nil, true, "doc:1", "u", "c"))); !bytes.HasPrefix(got, []byte("event: join\ndata: {")) {
		t.Fatalf("join event %q", got)
	}
}

// BenchmarkSSEEvent is what a fan-out costs per SSE subscriber, under its
// connection lock: one copy of the frame's JSON into an event, no parsing.
func BenchmarkSSEEvent(b *testing.B) {
	st := &sseState{single: true, pos: map[string]ssePos{}}
	frame := textFrame(appendMsg(nil, "doc:bench", 12345, "epoch-1", brokers.Position{}, []byte(`"from":"bench","data":{"text":"hello, world","pos":12345}`)))
	ev := event{"msg", "doc:bench", 12345, "epoch-1"}
	b.ReportAllocs()
	for b.Loop() {
		if st.event(ev, frame) == nil {
			b.Fatal("dropped")
		}
	}
}
