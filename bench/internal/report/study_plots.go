//go:build linux

// study_plots.go: the study's SVG plots (gonum/plot).

package report

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/syncgate/syncgate/bench/internal/study"
)

func plotLatencyCDF(rs *study.Results, path string) error {
	p := plot.New()
	rate := 0.0
	if rates := rs.Rates(); len(rates) > 0 {
		rate = rates[0]
	}
	p.Title.Text = fmt.Sprintf("Delivery latency CDF at %g msg/s (cross-node where 2 nodes)", rate)
	p.X.Label.Text = "latency from send (ms, log scale)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	i := 0
	for _, b := range rs.Backends {
		for _, r := range b.LatencySummary() {
			if r.Rate != rate {
				continue
			}
			s := r.CrossNode
			if s.Count == 0 {
				s = r.SameNode
			}
			if len(s.CDF) == 0 {
				continue
			}
			var xys plotter.XYs
			for _, pt := range s.CDF {
				xys = append(xys, plotter.XY{X: max(pt[1], 0.001), Y: pt[0]})
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(b.Name, l)
			i++
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

func plotCrashLost(rs *study.Results, path string) error {
	p := plot.New()
	p.Title.Text = "Broker crash: acked messages lost, publishes refused"
	p.Y.Label.Text = "messages"
	var names []string
	var lost, stayed, refused plotter.Values
	for _, b := range rs.Backends {
		if b.Crash == nil || b.Crash.Scheduled == 0 {
			continue
		}
		names = append(names, b.Name)
		lost = append(lost, float64(b.Crash.LostMsgs))
		stayed = append(stayed, float64(b.Crash.LostStayed))
		refused = append(refused, float64(b.Crash.Refused))
	}
	if len(names) == 0 {
		names, lost, stayed, refused = []string{"none"}, plotter.Values{0}, plotter.Values{0}, plotter.Values{0}
	}
	w := vg.Points(14)
	bl, err := plotter.NewBarChart(lost, w)
	if err != nil {
		return err
	}
	bl.Color = color.RGBA{R: 200, G: 40, B: 40, A: 255}
	bl.Offset = -w
	bs, err := plotter.NewBarChart(stayed, w)
	if err != nil {
		return err
	}
	bs.Color = color.RGBA{R: 240, G: 160, B: 40, A: 255}
	br, err := plotter.NewBarChart(refused, w)
	if err != nil {
		return err
	}
	br.Color = color.RGBA{R: 120, G: 120, B: 120, A: 255}
	br.Offset = w
	p.Add(bl, bs, br)
	p.Legend.Add("acked messages lost (any subscriber)", bl)
	p.Legend.Add("missing deliveries at subscribers that stayed", bs)
	p.Legend.Add("refused", br)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

// plotThroughput draws deliveries/s against the offered rate, one panel
// per backend, with the deliveries the offered rate asks for as a dashed
// line.
func plotThroughput(rs *study.Results, path string) error {
	subs := 10.0
	if v, ok := rs.Params["latency_subs_per_channel"].(float64); ok && v > 0 {
		subs = v
	} else if v, ok := rs.Params["latency_subs_per_channel"].(int); ok && v > 0 {
		subs = float64(v)
	}
	return stepPanels(rs, path, func(i int, b study.Backend, p *plot.Plot) error {
		p.Y.Label.Text = "deliveries/s"
		p.Add(plotter.NewGrid())
		var pts, ok, bad plotter.XYs
		hi := 0.0
		for _, s := range b.Throughput.Steps {
			xy := plotter.XY{X: s.Rate, Y: s.Result.DeliveriesPerS}
			pts = append(pts, xy)
			if s.Pass {
				ok = append(ok, xy)
			} else {
				bad = append(bad, xy)
			}
			hi = max(hi, s.Rate)
		}
		ideal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: hi, Y: hi * subs}})
		if err != nil {
			return err
		}
		ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		ideal.Color = color.Gray{Y: 140}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Width = vg.Points(1.5)
		line.Color = plotutil.Color(0)
		p.Add(ideal, line)
		if i == 0 {
			p.Legend.Add("offered x subscribers per channel", ideal)
			p.Legend.Top, p.Legend.Left = false, false
		}
		for _, set := range []struct {
			xys plotter.XYs
			c   color.Color
			n   string
		}{{ok, color.RGBA{G: 150, A: 255}, "sustained"}, {bad, color.RGBA{R: 200, G: 30, B: 30, A: 255}, "not sustained"}} {
			if len(set.xys) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(set.xys)
			if err != nil {
				return err
			}
			sc.Color = set.c
			sc.Radius = vg.Points(3.5)
			p.Add(sc)
			if i == 0 {
				p.Legend.Add(set.n, sc)
			}
		}
		p.X.Min, p.Y.Min = 0, 0
		return nil
	})
}

// plotLatencyRate draws, per backend, p50, p99 and p99.9 (cross-node; the
// only node's for memory) against the offered rate of its throughput
// steps, on a log scale: where the curve turns up is the backend's knee.
func plotLatencyRate(rs *study.Results, path string) error {
	return stepPanels(rs, path, func(i int, b study.Backend, p *plot.Plot) error {
		p.Y.Label.Text = "ms (log)"
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
		p.Add(plotter.NewGrid())
		sets := []struct {
			name string
			f    func(study.LatStats) float64
		}{{"p50", func(s study.LatStats) float64 { return s.P50 }}, {"p99", func(s study.LatStats) float64 { return s.P99 }}, {"p99.9", func(s study.LatStats) float64 { return s.P999 }}}
		for k, set := range sets {
			var pts plotter.XYs
			for _, st := range b.Throughput.Steps {
				if v := set.f(study.StepLatency(st.Result, b.Nodes)); v > 0 {
					pts = append(pts, plotter.XY{X: st.Rate, Y: v})
				}
			}
			if len(pts) == 0 {
				continue
			}
			line, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			line.Color, sc.Color = plotutil.Color(k), plotutil.Color(k)
			p.Add(line, sc)
			if i == 0 {
				p.Legend.Add(set.name, line)
				p.Legend.Top, p.Legend.Left = true, true
			}
		}
		// The probe's own search on its rows: its p99, dashed.
		if a := b.Agreement; a != nil && a.ProbeTput != nil {
			var pts plotter.XYs
			for _, st := range a.ProbeTput.Steps {
				if v := study.StepLatency(st.Result, b.Nodes).P99; v > 0 {
					pts = append(pts, plotter.XY{X: st.Rate, Y: v})
				}
			}
			if len(pts) > 0 {
				line, sc, err := plotter.NewLinePoints(pts)
				if err != nil {
					return err
				}
				line.Color, sc.Color = plotutil.Color(1), plotutil.Color(1)
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				p.Add(line, sc)
				p.Legend.Add("probe p99", line)
				p.Legend.Top, p.Legend.Left = true, true
			}
		}
		p.X.Min = 0
		return nil
	})
}

// stepPanels draws one panel per backend with throughput steps (panel
// fills p, titled and labelled on X), three to a row, into an SVG file.
func stepPanels(rs *study.Results, path string, panel func(i int, b study.Backend, p *plot.Plot) error) error {
	var bs []study.Backend
	for _, b := range rs.Backends {
		if b.Skipped == "" && b.Throughput != nil && len(b.Throughput.Steps) > 0 {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		return nil
	}
	cols := min(3, len(bs))
	rowsN := (len(bs) + cols - 1) / cols
	grid := make([][]*plot.Plot, rowsN)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, b := range bs {
		p := plot.New()
		p.Title.Text = b.Name
		p.X.Label.Text = "offered msg/s"
		if err := panel(i, b, p); err != nil {
			return err
		}
		grid[i/cols][i%cols] = p
	}
	return WriteGrid(grid, cols, rowsN, path)
}
