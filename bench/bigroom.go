//go:build linux

// bigroom.go is the big-room scenario: the fan-out scenario (fanout.go)
// with 10,000 subscribers on one channel split evenly over two gateway
// nodes that share a real broker (a redis-server started here, or the NATS
// server embedded in node A with node B connected to it), and one
// publisher on node A at a low fixed rate. The memory broker does not
// cross processes, so on it the room is one node: the baseline. Each
// broker runs -runs times; the table shows the median of the runs for each
// figure, and the sum of losses and duplicates over all of them.
package main

import (
	"fmt"
	"slices"
	"strings"
)

// medianColumns groups bigroom runs by io mode and broker, one column per
// group holding a synthetic run whose figures are the medians of the
// group's.
func medianColumns(runs []runResult) []column {
	type key struct{ io, broker string }
	var order []key
	groups := map[key][]*fanoutResult{}
	errs := map[key]int{}
	for i := range runs {
		r := &runs[i]
		k := key{r.IO, r.Broker}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
			groups[k] = nil
		}
		if r.Error != "" {
			errs[k]++
		}
		if r.Fanout != nil {
			groups[k] = append(groups[k], r.Fanout)
		}
	}
	var cols []column
	for _, k := range order {
		label := k.broker
		if label == "" {
			label = "default"
		}
		m := medianFanout(groups[k])
		cols = append(cols, column{label, &runResult{Scenario: "bigroom", IO: k.io, Broker: k.broker, Fanout: m, Run: len(groups[k]), problems: errs[k]}})
	}
	return cols
}

// medianFanout is a fanoutResult whose figures are the medians of rs
// (losses, duplicates and lost connections: the sums). nil for no runs.
func medianFanout(rs []*fanoutResult) *fanoutResult {
	if len(rs) == 0 {
		return nil
	}
	m := *rs[0]
	f := func(get func(r *fanoutResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		return median(v)
	}
	i64 := func(get func(r *fanoutResult) int64) int64 {
		return int64(f(func(r *fanoutResult) float64 { return float64(get(r)) }))
	}
	m.Expected = i64(func(r *fanoutResult) int64 { return r.Expected })
	m.Received = i64(func(r *fanoutResult) int64 { return r.Received })
	m.Published = int(i64(func(r *fanoutResult) int64 { return int64(r.Published) }))
	m.DeliveriesPerSec = f(func(r *fanoutResult) float64 { return r.DeliveriesPerSec })
	m.CPUMicrosPerDlv = f(func(r *fanoutResult) float64 { return r.CPUMicrosPerDlv })
	m.GatewayCPUS = f(func(r *fanoutResult) float64 { return r.GatewayCPUS })
	m.CPUWindowS = f(func(r *fanoutResult) float64 { return r.CPUWindowS })
	m.LoadgenCPUS = f(func(r *fanoutResult) float64 { return r.LoadgenCPUS })
	m.BrokerCPUS = f(func(r *fanoutResult) float64 { return r.BrokerCPUS })
	m.MaxPubLagMs = f(func(r *fanoutResult) float64 { return r.MaxPubLagMs })
	m.RSSLoadedKiB = i64(func(r *fanoutResult) int64 { return r.RSSLoadedKiB })
	lat := func(get func(r *fanoutResult) latencyStats) latencyStats {
		return latencyStats{
			Count: int64(f(func(r *fanoutResult) float64 { return float64(get(r).Count) })),
			P50:   f(func(r *fanoutResult) float64 { return get(r).P50 }),
			P90:   f(func(r *fanoutResult) float64 { return get(r).P90 }),
			P99:   f(func(r *fanoutResult) float64 { return get(r).P99 }),
			P999:  f(func(r *fanoutResult) float64 { return get(r).P999 }),
			Max:   f(func(r *fanoutResult) float64 { return get(r).Max }),
			Mean:  f(func(r *fanoutResult) float64 { return get(r).Mean }),
		}
	}
	m.Latency = lat(func(r *fanoutResult) latencyStats { return r.Latency })
	m.ToLast = lat(func(r *fanoutResult) latencyStats { return r.ToLast })
	m.Lost, m.Duplicates, m.OutOfOrder, m.ConnsLost, m.ToLastMissing = 0, 0, 0, 0, 0
	for _, r := range rs {
		m.Lost += r.Lost
		m.Duplicates += r.Duplicates
		m.OutOfOrder += r.OutOfOrder
		m.ConnsLost += r.ConnsLost
		m.ToLastMissing += r.ToLastMissing
	}
	m.Nodes = slices.Clone(m.Nodes)
	for k := range m.Nodes {
		node := func(get func(n nodeStats) float64) float64 {
			return f(func(r *fanoutResult) float64 {
				if k < len(r.Nodes) {
					return get(r.Nodes[k])
				}
				return 0
			})
		}
		m.Nodes[k].CPUMicrosPerDlv = node(func(n nodeStats) float64 { return n.CPUMicrosPerDlv })
		m.Nodes[k].CPUS = node(func(n nodeStats) float64 { return n.CPUS })
		m.Nodes[k].Deliveries = int64(node(func(n nodeStats) float64 { return float64(n.Deliveries) }))
		m.Nodes[k].RSSLoadedKiB = int64(node(func(n nodeStats) float64 { return float64(n.RSSLoadedKiB) }))
	}
	return &m
}

// median of v (the mean of the middle two for an even count); v is sorted.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// bigroomRows are the rows of the bigroom table; each column is the
// median of one broker's runs (see medianColumns).
func bigroomRows() []row {
	f := func(fn func(f *fanoutResult) string) func(*runResult) string {
		return func(r *runResult) string {
			if r.Fanout == nil {
				return "-"
			}
			return fn(r.Fanout)
		}
	}
	perNode := func(fr *fanoutResult, show func(n nodeStats) string) string {
		if len(fr.Nodes) == 0 {
			return "-"
		}
		var parts []string
		for _, n := range fr.Nodes {
			parts = append(parts, n.Node+" "+show(n))
		}
		return strings.Join(parts, ", ")
	}
	return []row{
		{"nodes, runs (median of)", func(r *runResult) string {
			n := 1
			if r.Fanout != nil && len(r.Fanout.Nodes) > 0 {
				n = len(r.Fanout.Nodes)
			}
			s := fmt.Sprintf("%d, %d", n, r.Run)
			if r.problems > 0 {
				s += fmt.Sprintf(" (%d with problems)", r.problems)
			}
			return s
		}},
		{"subscribers (per node)", f(func(fr *fanoutResult) string {
			return fmt.Sprintf("%d (%s)", fr.Subs, perNode(fr, func(n nodeStats) string { return fmt.Sprint(n.Subs) }))
		})},
		{"messages published (node A)", f(func(fr *fanoutResult) string {
			return fmt.Sprintf("%d at %g/s", fr.Published, fr.Rate*float64(fr.Channels))
		})},
		{"deliveries expected / received", f(func(fr *fanoutResult) string { return fmt.Sprintf("%d / %d", fr.Expected, fr.Received) })},
		{"lost / duplicates (all runs)", f(func(fr *fanoutResult) string { return fmt.Sprintf("%d / %d", fr.Lost, fr.Duplicates) })},
		{"**deliveries/s**", f(func(fr *fanoutResult) string { return fmt.Sprintf("%.0f", fr.DeliveriesPerSec) })},
		{"**to last subscriber p50 / p99 / max**", f(func(fr *fanoutResult) string {
			return fmt.Sprintf("%.0f / %.0f / %.0f ms", fr.ToLast.P50, fr.ToLast.P99, fr.ToLast.Max)
		})},
		{"latency p50 / p99 (each delivery)", f(func(fr *fanoutResult) string {
			return fmt.Sprintf("%.0f / %.0f ms", fr.Latency.P50, fr.Latency.P99)
		})},
		{"gateway CPU per delivery, all nodes", f(func(fr *fanoutResult) string { return fmt.Sprintf("%.1f µs", fr.CPUMicrosPerDlv) })},
		{"**CPU per delivery per node**", f(func(fr *fanoutResult) string {
			if len(fr.Nodes) == 0 {
				return fmt.Sprintf("A %.1f µs", fr.CPUMicrosPerDlv)
			}
			return perNode(fr, func(n nodeStats) string { return fmt.Sprintf("%.1f µs", n.CPUMicrosPerDlv) })
		})},
		{"gateway CPU (% of a core) per node", f(func(fr *fanoutResult) string {
			if len(fr.Nodes) == 0 {
				return fmt.Sprintf("A %.0f%%", 100*fr.GatewayCPUS/max(fr.CPUWindowS, 1e-9))
			}
			return perNode(fr, func(n nodeStats) string { return fmt.Sprintf("%.0f%%", 100*n.CPUS/max(fr.CPUWindowS, 1e-9)) })
		})},
		{"redis-server CPU (same window)", f(func(fr *fanoutResult) string {
			if fr.Broker != "redis" && fr.Broker != "redis-streams" {
				return "-"
			}
			return fmt.Sprintf("%.0f%%", 100*fr.BrokerCPUS/max(fr.CPUWindowS, 1e-9))
		})},
		{"loadgen CPU (same window)", f(func(fr *fanoutResult) string { return fmt.Sprintf("%.1fs / %.1fs", fr.LoadgenCPUS, fr.CPUWindowS) })},
		{"RSS loaded, node A", f(func(fr *fanoutResult) string { return mib(fr.RSSLoadedKiB) })},
		{"subscriber connections lost (all runs)", f(func(fr *fanoutResult) string { return fmt.Sprint(fr.ConnsLost) })},
	}
}
