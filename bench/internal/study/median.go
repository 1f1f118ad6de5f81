package study

import (
	"slices"
	"sort"
	"strings"
)

// MedianRun summarises the repetitions of a latency run: latency
// percentiles, deliveries/s and CPU are the medians over the runs, the
// counts (published, acked, lost, duplicates...) their sums; the CDF is
// the one of the run with the median cross-node (else same-node) p99.
func MedianRun(runs []Run) Run {
	if len(runs) == 0 {
		return Run{}
	}
	if len(runs) == 1 {
		return runs[0]
	}
	med := func(f func(Run) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return Median(v)
	}
	medStats := func(g func(Run) LatStats) LatStats {
		return LatStats{
			Count: int64(med(func(r Run) float64 { return float64(g(r).Count) })),
			P50:   med(func(r Run) float64 { return g(r).P50 }),
			P90:   med(func(r Run) float64 { return g(r).P90 }),
			P99:   med(func(r Run) float64 { return g(r).P99 }),
			P999:  med(func(r Run) float64 { return g(r).P999 }),
			Max:   med(func(r Run) float64 { return g(r).Max }),
		}
	}
	// The base: the run with the median p99.
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	key := func(r Run) float64 {
		if r.CrossNode.Count > 0 {
			return r.CrossNode.P99
		}
		return r.SameNode.P99
	}
	sort.SliceStable(order, func(a, b int) bool { return key(runs[order[a]]) < key(runs[order[b]]) })
	out := runs[order[len(order)/2]]
	out.Events, out.Reasons = nil, map[string]int{}
	sameCDF, crossCDF, allCDF := out.SameNode.CDF, out.CrossNode.CDF, out.All.CDF
	out.SameNode, out.CrossNode, out.All = medStats(func(r Run) LatStats { return r.SameNode }),
		medStats(func(r Run) LatStats { return r.CrossNode }), medStats(func(r Run) LatStats { return r.All })
	out.SameNode.CDF, out.CrossNode.CDF, out.All.CDF = sameCDF, crossCDF, allCDF
	out.DeliveriesPerS = med(func(r Run) float64 { return r.DeliveriesPerS })
	out.WindowS = med(func(r Run) float64 { return r.WindowS })
	out.Deliveries = int64(med(func(r Run) float64 { return float64(r.Deliveries) }))
	cpu := func(f func(Run) float64) float64 {
		for _, r := range runs {
			if f(r) < 0 {
				return -1
			}
		}
		return med(f)
	}
	out.GatewayCPUS = cpu(func(r Run) float64 { return r.GatewayCPUS })
	out.BrokerCPUS = cpu(func(r Run) float64 { return r.BrokerCPUS })
	out.Scheduled, out.Acked, out.Refused, out.Unsent = 0, 0, 0, 0
	out.Expected, out.Delivered, out.Lost, out.LostStayed, out.LostDropped, out.LostMsgs = 0, 0, 0, 0, 0, 0
	out.Dup, out.OutOfOrder, out.RefusedDelivered = 0, 0, 0
	out.PublishLagMaxMs, out.Incomplete, out.Error = 0, false, ""
	out.LoadStart, out.LoadEnd = runs[0].LoadStart, runs[len(runs)-1].LoadEnd
	var errs []string
	for _, r := range runs {
		out.Scheduled += r.Scheduled
		out.Acked += r.Acked
		out.Refused += r.Refused
		out.Unsent += r.Unsent
		out.Expected += r.Expected
		out.Delivered += r.Delivered
		out.Lost += r.Lost
		out.LostStayed += r.LostStayed
		out.LostDropped += r.LostDropped
		out.LostMsgs += r.LostMsgs
		out.Dup += r.Dup
		out.OutOfOrder += r.OutOfOrder
		out.RefusedDelivered += r.RefusedDelivered
		out.PublishLagMaxMs = max(out.PublishLagMaxMs, r.PublishLagMaxMs)
		out.Incomplete = out.Incomplete || r.Incomplete
		for k, v := range r.Reasons {
			out.Reasons[k] += v
		}
		if r.Error != "" {
			errs = append(errs, r.Error)
		}
	}
	out.Error = strings.Join(errs, "; ")
	return out
}

// Median is the median of v (the mean of the middle two for an even
// count; 0 for none). It sorts a copy.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
