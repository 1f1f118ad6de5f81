//go:build linux

package main

import (
	"context"
	"testing"
	"time"

	"github.com/syncgate/syncgate/bench/internal/study"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestStudyRig runs the study's loadgen rig against real clusters: two
// runs on the same connections (the second must start from clean counts:
// no duplicates, no unexpected ids), every delivery counted once, the
// latency split by node, the CPU of gateways and loadgens measured.
func TestStudyRig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	bin := testGateway(ctx, t)
	specs := backendSpecs()
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			spec := specs[name]
			if spec.Redis != nil {
				redistest.Require(t)
			}
			p := newProgress(&testWriter{t: t})
			c, err := startCluster(ctx, spec, bin, t.TempDir(), false, p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			const channels, subs = 10, 4
			rig, err := newStudyRig(ctx, c, channels, subs, p)
			if err != nil {
				t.Fatal(err)
			}
			defer rig.close()
			for i := range 2 {
				r, err := rig.run(ctx, 100, time.Second, name)
				if err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
				checkRigRun(t, i, r, spec.Nodes, channels, subs)
			}
		})
	}
}

func checkRigRun(t *testing.T, i int, r study.Run, nodes, channels, subs int) {
	t.Helper()
	const msgs = 100 // 100 msg/s for 1 s
	want := msgs * subs
	if r.Scheduled != msgs || r.Unsent != 0 || r.Acked != msgs || r.Refused != 0 {
		t.Errorf("run %d: scheduled %d unsent %d acked %d refused %d; want %d 0 %d 0", i, r.Scheduled, r.Unsent, r.Acked, r.Refused, msgs, msgs)
	}
	if r.Expected != want || r.Delivered != want || r.Lost != 0 || r.LostMsgs != 0 || r.Dup != 0 || r.OutOfOrder != 0 || r.Incomplete {
		t.Errorf("run %d: expected %d delivered %d lost %d (msgs %d) dup %d ooo %d incomplete %v; want %d of %d, nothing else",
			i, r.Expected, r.Delivered, r.Lost, r.LostMsgs, r.Dup, r.OutOfOrder, r.Incomplete, want, want)
	}
	perNode := int64(want / nodes)
	if r.All.Count != int64(want) || r.SameNode.Count != perNode || (nodes > 1 && r.CrossNode.Count != perNode) || (nodes == 1 && r.CrossNode.Count != 0) {
		t.Errorf("run %d: latency samples all %d, node A %d, node B %d; want %d, %d, %d on %d nodes",
			i, r.All.Count, r.SameNode.Count, r.CrossNode.Count, want, perNode, perNode, nodes)
	}
	if r.All.P50 <= 0 || r.All.P50 > r.All.P99 || len(r.All.CDF) == 0 || r.Deliveries != int64(want) || r.DeliveriesPerS <= 0 {
		t.Errorf("run %d: p50 %.2f p99 %.2f, %d CDF points, deliveries %d (%.0f/s)", i, r.All.P50, r.All.P99, len(r.All.CDF), r.Deliveries, r.DeliveriesPerS)
	}
	if r.PublishLagP99Ms < 0 || r.PublishLagP99Ms > r.PublishLagMaxMs {
		t.Errorf("run %d: publisher lag p99 %.2f ms, max %.2f ms", i, r.PublishLagP99Ms, r.PublishLagMaxMs)
	}
	if r.GatewayCPUS <= 0 || r.HarnessCPUS <= 0 || r.BrokerCPUS < 0 {
		t.Errorf("run %d: CPU gateway %.3f s, harness %.3f s, broker %.3f s; want > 0, > 0, >= 0", i, r.GatewayCPUS, r.HarnessCPUS, r.BrokerCPUS)
	}
}
