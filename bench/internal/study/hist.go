package study

import (
	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

var cdfPercentiles = []float64{0, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 97.5, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100}

// StatsOf reads a histogram of microseconds as LatStats in milliseconds,
// with the CDF points the plots draw.
func StatsOf(h *hdrhistogram.Histogram) LatStats {
	if h.TotalCount() == 0 {
		return LatStats{}
	}
	ms := func(v int64) float64 { return float64(v) / 1000 }
	s := LatStats{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)),
		Max: ms(h.Max()),
	}
	for _, q := range cdfPercentiles {
		v := h.ValueAtQuantile(q)
		if q == 100 {
			v = h.Max()
		}
		s.CDF = append(s.CDF, [2]float64{q, ms(v)})
	}
	return s
}
