package gateway_test

import (
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// BenchmarkProxyPublish measures a client's pub -> ack round trip on one
// node over loopback, without the event proxy and through a publish hook
// (a real HTTP backend on loopback answering {} or replacing the data).
// One op is one publish; p50/p99 are the round trip in microseconds.
//
//	go test -run '^$' -bench BenchmarkProxyPublish -benchtime 3000x ./gateway/
func BenchmarkProxyPublish(b *testing.B) {
	for _, tc := range []struct {
		name   string
		answer string // "" = no proxy
	}{{"direct", ""}, {"proxy_allow", `{}`}, {"proxy_replace", `{"data":{"text":"normalised","pos":1}}`}} {
		b.Run(tc.name, func(b *testing.B) {
			ts := startServer(b, "epoll", func(c *config.Config) {
				if tc.answer != "" {
					be := newBackend(b, func(w http.ResponseWriter, _ proxyCall) { io.WriteString(w, tc.answer) })
					c.Proxy.Publish.URL = be.URL
				}
			})
			cl := dial(b, ts)
			cl.Connect("bench")
			data := map[string]any{"text": "hello, world", "pos": 12345}
			for range 50 { // warm up connections (client, node, backend)
				cl.Pub("doc:bench", data)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				cl.Pub("doc:bench", data)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
		})
	}
}
