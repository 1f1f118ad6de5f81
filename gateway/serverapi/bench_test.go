package serverapi_test

import (
	"context"
	"encoding/json"
	"testing"
)

// BenchmarkAPIPublish: server API publish throughput on one node (memory
// broker), over real HTTP on loopback with keep-alive: the whole path of a
// backend's publish (auth, decode, validate, re-encode, broker, answer),
// one caller at a time and from GOMAXPROCS callers.
func BenchmarkAPIPublish(b *testing.B) {
	n := startNode(b, nil)
	data := json.RawMessage(`{"op":"insert","pos":42,"text":"hello world"}`)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := n.api.Publish(ctx, "doc:bench", data, "backend"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := n.api.Publish(ctx, "doc:bench", data, "backend"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
