package jetstream_test

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/internal/natstest"
)

// BenchmarkDupWindowMemory: what the history stream's duplicate window
// (dupWindow, a minute) costs a server: the ids it keeps in memory. Each
// op stores one message with a Nats-Msg-Id shaped like a publication id
// (a node id and a counter) in a stream with a one-minute window, and one
// the same size without an id in a stream beside it; dup-B/msg is the
// difference of the two streams' heap growth per message (docs/brokers.md,
// JetStream "Publishing during an outage"). Run it with a fixed count,
// e.g. -benchtime=100000x: the window keeps every id of the run.
func BenchmarkDupWindowMemory(b *testing.B) {
	srv := natstest.RunServer(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	for _, name := range []string{"IDS", "PLAIN"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: time.Minute,
		}); err != nil {
			b.Fatal(err)
		}
	}
	const node = "k3v9q0a7zx" // a node id: 10 characters
	data := []byte(`{"op":"insert","pos":12,"text":"hello"}`)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	publish := func(stream, hdr string, n int) uint64 {
		before := heap()
		for i := range n {
			id := node + "-" + strconv.FormatUint(uint64(i+1), 36)
			m := &nats.Msg{Subject: stream + ".c" + strconv.Itoa(i%100), Data: data, Header: nats.Header{hdr: []string{id}}}
			if _, err := js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("acks did not come")
		}
		return heap() - before
	}
	b.ReportAllocs()
	// Not b.Loop: the messages of both streams are counted apart. PLAIN's
	// header is the same size as the id.
	n := b.N
	plain := publish("PLAIN", "Sg-Pad-Msg-", n)
	ids := publish("IDS", nats.MsgIdHdr, n)
	b.ReportMetric(float64(int64(ids)-int64(plain))/float64(n), "dup-B/msg")
}
