package web_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// yjsNode serves a gateway on loopback with cfg over br until stop.
func yjsNode(b testing.TB, cfg config.Config, br brokers.Broker) (url string, stop func()) {
	b.Helper()
	srv, err := gateway.New(cfg.Gateway(), br, nil)
	if err != nil {
		b.Fatal(err)
	}
	addr, done := wstest.Serve(b, srv, "127.0.0.1:0")
	return "ws://" + addr + "/ws", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}

// yjsFigures runs web/e2e/yjsfigures.mjs (real Yjs in Node.js, client.js
// and yjs.js as the browser gets them) and decodes its JSON line into v.
func yjsFigures(b *testing.B, url string, v any, env ...string) {
	b.Helper()
	out := nodeYjs(b, "yjsfigures.mjs", 5*time.Minute, append([]string{"WS_URL=" + url}, env...)...)
	if err := json.Unmarshal(out, v); err != nil {
		b.Fatalf("yjsfigures.mjs printed %q: %v", out, err)
	}
}

// nodeYjs runs web/e2e/<script> in Node.js with real Yjs, CLIENT_JS and
// YJS_JS naming client.js and yjs.js copied as ES modules, and returns its
// standard output; the test fails if it exits non-zero.
func nodeYjs(t testing.TB, script string, limit time.Duration, env ...string) []byte {
	t.Helper()
	node := testdeps.Node(t)
	if _, err := os.Stat("e2e/node_modules/yjs/package.json"); err != nil {
		testdeps.Missing(t, "web/e2e/node_modules (npm ci in web/e2e)")
	}
	dir := t.TempDir()
	for _, f := range []string{"client.js", "yjs.js"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f[:len(f)-3]+".mjs"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", script)...)
	cmd.Dir = "e2e"
	cmd.Env = append(append(os.Environ(), "CLIENT_JS="+filepath.Join(dir, "client.mjs"), "YJS_JS="+filepath.Join(dir, "yjs.mjs")), env...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s: %v\n%s%s", script, err, out, msg)
	}
	return out
}

// BenchmarkYjsKeystroke: one client types b.N keystrokes into a Y.Text
// through web/yjs.js (one Yjs update each, paced by their arrival at a
// second client), on a memory-broker node. Reports the payload bytes per
// keystroke of each frame (WebSocket frame headers, 2 to 8 bytes, not
// counted) against y-websocket's binary frame for the same update.
// docs/benchmarks.md: go test -run '^$' -bench BenchmarkYjsKeystroke -benchtime 500x ./web/
func BenchmarkYjsKeystroke(b *testing.B) {
	cfg := config.Default()
	cfg.Client.PublishRate = 0
	url, stop := yjsNode(b, cfg, memory.New(memory.Config{HistorySize: 1000}))
	defer stop()
	var r struct {
		Update, YwsFrame, Data, DataJSON, PubSent, PubRecv, MsgRecv float64
	}
	b.ResetTimer()
	yjsFigures(b, url, &r, "MODE=wire", "N="+strconv.Itoa(b.N))
	b.ReportMetric(r.Update, "B-update/key")
	b.ReportMetric(r.YwsFrame, "B-y-websocket-frame/key")
	b.ReportMetric(r.Data, "B-data/key")
	b.ReportMetric(r.DataJSON, "B-data-base64-json/key")
	b.ReportMetric(r.PubSent, "B-pub-frame/key")
	b.ReportMetric(r.PubRecv, "B-to-publisher/key")
	b.ReportMetric(r.MsgRecv, "B-msg-frame/key")
}

// BenchmarkYjsOpen1MB: a document of 1 MiB of text (its Yjs state as the
// channel's snapshot, stored through a node, then 100 keystrokes of tail)
// on redis; each iteration starts a cold node (a new gateway and broker
// client, nothing cached) and times a new client from connecting to
// having loaded snapshot + tail into its Y.Doc. Limits raised for a
// document this size: client.max_message_size, client.max_queue_bytes
// and history.snapshot_max_bytes (docs/yjs.md).
// docs/benchmarks.md: go test -run '^$' -bench BenchmarkYjsOpen1MB -benchtime 5x ./web/
func BenchmarkYjsOpen1MB(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	cfg := config.Default()
	cfg.Client.PublishRate = 0
	cfg.Client.MaxMessageSize = 4 << 20
	cfg.Client.MaxQueueBytes = 8 << 20
	cfg.Server.MaxPartialBytes = 16 << 20
	cfg.History.SnapshotMaxBytes = 4 << 20
	newBroker := func() brokers.Broker {
		return redis.New(redis.Config{Addrs: []string{srv.Addr()}, HistorySize: 1000, HistoryTTL: time.Hour, Logger: redistest.Logger()})
	}
	const size, tail = "1048576", "100"
	url, stop := yjsNode(b, cfg, newBroker())
	var fill struct {
		Chars, State, SnapshotData, SnapSeq float64
	}
	yjsFigures(b, url, &fill, "MODE=fill", "BYTES="+size, "TAIL="+tail)
	stop()
	var total, snap, recv float64
	b.ResetTimer()
	for range b.N {
		url, stop := yjsNode(b, cfg, newBroker())
		var open struct{ Ms, SnapshotFrameMs, Chars, RecvBytes float64 }
		yjsFigures(b, url, &open, "MODE=open", "BYTES="+size, "TAIL="+tail)
		stop()
		total += open.Ms
		snap += open.SnapshotFrameMs
		recv += open.RecvBytes
	}
	b.ReportMetric(fill.State, "B-yjs-state")
	b.ReportMetric(fill.SnapshotData, "B-snapshot-data")
	b.ReportMetric(recv/float64(b.N), "B-received")
	b.ReportMetric(total/float64(b.N), "ms-open")
	b.ReportMetric(snap/float64(b.N), "ms-to-snapshot-frame")
}
