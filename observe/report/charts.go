package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/strata-fl/strata/global/ledger"
)

// Chart is one rendered chart. Points counts the points drawn per series,
// so that a test (or a reader) can check a chart against the ledger; in an
// SVG it is also written on the root element as data-points="name:n ...".
type Chart struct {
	Name   string
	Format string // "svg" or "png"
	Points map[string]int
	Bytes  []byte
}

// Chart sizes: wide enough for 40+ rounds, small enough for a 2×2 grid.
const (
	chartW = 16 * vg.Centimeter
	chartH = 9 * vg.Centimeter
)

// palette is colour-blind safe (Okabe–Ito).
var palette = []color.Color{
	color.RGBA{0, 114, 178, 255}, color.RGBA{213, 94, 0, 255}, color.RGBA{0, 158, 115, 255},
	color.RGBA{204, 121, 167, 255}, color.RGBA{230, 159, 0, 255}, color.RGBA{86, 180, 233, 255},
	color.RGBA{240, 228, 66, 255}, color.RGBA{0, 0, 0, 255},
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	for _, s := range []*plot.Plot{p} {
		s.Title.TextStyle.Font.Variant = "Sans"
		s.X.Label.TextStyle.Font.Variant = "Sans"
		s.Y.Label.TextStyle.Font.Variant = "Sans"
		s.X.Tick.Label.Font.Variant = "Sans"
		s.Y.Tick.Label.Font.Variant = "Sans"
		s.Legend.TextStyle.Font.Variant = "Sans"
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.Padding = vg.Points(2)
	p.Legend.XOffs = vg.Points(4)
	if x == "round" {
		p.X.Tick.Marker = roundTicks{}
	}
	return p
}

// roundTicks labels a round axis with whole rounds only, at most ~10.
type roundTicks struct{}

// Ticks implements plot.Ticker.
func (roundTicks) Ticks(min, max float64) []plot.Tick {
	lo, hi := math.Ceil(min), math.Floor(max)
	if hi < lo {
		return nil
	}
	step := math.Max(1, math.Ceil((hi-lo)/10))
	var ts []plot.Tick
	for v := lo; v <= hi; v += step {
		ts = append(ts, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f", v)})
	}
	return ts
}

// emptyRange gives a chart without data sensible axes instead of [-1, 1].
func emptyRange(p *plot.Plot, rounds []Round) {
	p.X.Min, p.X.Max = 0, float64(max(1, len(rounds)))
	p.Y.Min, p.Y.Max = 0, 1
}

// render draws p in format and records the series' point counts.
func render(name string, p *plot.Plot, format string, points map[string]int) (Chart, error) {
	if format != "svg" && format != "png" {
		return Chart{}, fmt.Errorf("report: chart format %q: use svg or png", format)
	}
	wt, err := p.WriterTo(chartW, chartH, format)
	if err != nil {
		return Chart{}, fmt.Errorf("report: chart %s: %w", name, err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return Chart{}, fmt.Errorf("report: chart %s: %w", name, err)
	}
	b := buf.Bytes()
	if format == "svg" {
		b = tagSVG(b, name, points)
	}
	return Chart{Name: name, Format: format, Points: points, Bytes: b}, nil
}

// tagSVG writes the chart's name and point counts on the root <svg>
// element (and drops the XML prologue, so the SVG can be inlined in HTML).
func tagSVG(b []byte, name string, points map[string]int) []byte {
	i := bytes.Index(b, []byte("<svg"))
	if i < 0 {
		return b
	}
	keys := make([]string, 0, len(points))
	for k := range points {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var attr strings.Builder
	fmt.Fprintf(&attr, "<svg data-chart=%q data-points=\"", name)
	for j, k := range keys {
		if j > 0 {
			attr.WriteByte(' ')
		}
		fmt.Fprintf(&attr, "%s:%d", k, points[k])
	}
	attr.WriteString("\"")
	return append([]byte(attr.String()), b[i+len("<svg"):]...)
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, i int, dashed bool) error {
	if len(xys) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	c := palette[i%len(palette)]
	l.Color, s.Color = c, c
	l.Width = vg.Points(1.5)
	s.Shape = draw.CircleGlyph{}
	s.Radius = vg.Points(2.2)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// EpsilonChart draws the cumulative ε against each observer after every
// closed round (committed or aborted: an aborted round keeps its cost),
// the budget line, and the open round's already-charged ε as a hollow
// point. An observer with no protecting noise (ε = ∞) has no points and
// says so in the legend.
func EpsilonChart(rounds []Round, budget float64, format string) (Chart, error) {
	p := newPlot("ε per observer (cumulative, after each round)", "round", "ε")
	points := map[string]int{}
	maxX := 1.0
	for i, o := range ledger.Observers {
		var xys plotter.XYs
		inf := false
		for _, r := range rounds {
			maxX = math.Max(maxX, float64(r.Round))
			e := float64(r.Epsilon.Get(o))
			if math.IsInf(e, 1) {
				inf = true
				continue
			}
			if r.Closed() {
				xys = append(xys, plotter.XY{X: float64(r.Round), Y: e})
			}
		}
		points[string(o)] = len(xys)
		name := string(o)
		if inf && len(xys) == 0 {
			name += ": ε = ∞ (unprotected)"
			p.Legend.Add(name)
			continue
		}
		if err := addLine(p, name, xys, i, false); err != nil {
			return Chart{}, err
		}
	}
	if n := len(rounds); n > 0 && !rounds[n-1].Closed() {
		r := rounds[n-1]
		if e := float64(r.Epsilon.Public); !math.IsInf(e, 1) {
			s, err := plotter.NewScatter(plotter.XYs{{X: float64(r.Round), Y: e}})
			if err != nil {
				return Chart{}, err
			}
			s.Shape, s.Color, s.Radius = draw.RingGlyph{}, palette[0], vg.Points(4)
			p.Add(s)
			p.Legend.Add(fmt.Sprintf("round %d open (already charged)", r.Round), s)
			points["open"] = 1
		}
	}
	if budget > 0 && !math.IsInf(budget, 1) {
		b, err := plotter.NewLine(plotter.XYs{{X: 0, Y: budget}, {X: maxX, Y: budget}})
		if err != nil {
			return Chart{}, err
		}
		b.Color = color.RGBA{200, 0, 0, 255}
		b.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		p.Add(b)
		p.Legend.Add(fmt.Sprintf("budget ε = %g", budget), b)
	}
	p.Y.Min, p.X.Min = 0, 0
	// Headroom above the budget line for the legend.
	top := 0.0
	if budget > 0 && !math.IsInf(budget, 1) {
		top = budget
	}
	for _, r := range rounds {
		for _, o := range ledger.Observers {
			if e := float64(r.Epsilon.Get(o)); !math.IsInf(e, 1) {
				top = math.Max(top, e)
			}
		}
	}
	if top > 0 {
		p.Y.Max = 1.6 * top
	}
	return render("epsilon", p, format, points)
}

// MetricChart draws the primary evaluation metric of the model each
// committed round produced (one point per committed round), named as the
// task names it; an accuracy on [0, 1].
func MetricChart(rounds []Round, format string) (Chart, error) {
	name := PrimaryMetric(rounds)
	return modelChart(rounds, "metric", name, name+" after each committed round", 2, primaryValue, format)
}

// PrimaryMetric names the primary metric of the rounds' models (the last
// one's: a job's task does not change), "accuracy" when none names one.
func PrimaryMetric(rounds []Round) string {
	for i := len(rounds) - 1; i >= 0; i-- {
		if m := rounds[i].Model; m != nil {
			name, _ := m.Primary()
			return name
		}
	}
	return "accuracy"
}

func primaryValue(m *ledger.Model) float64 {
	_, v := m.Primary()
	return v
}

// LossChart draws the evaluation loss of the model each committed round
// produced (one point per committed round).
func LossChart(rounds []Round, format string) (Chart, error) {
	return modelChart(rounds, "loss", "loss", "evaluation loss after each committed round", 1, func(m *ledger.Model) float64 { return m.Loss }, format)
}

// modelChart plots one value of each committed model; id names the chart,
// name its value.
func modelChart(rounds []Round, id, name, title string, colour int, value func(*ledger.Model) float64, format string) (Chart, error) {
	p := newPlot(title, "round", name)
	var xys plotter.XYs
	for _, r := range rounds {
		if r.Model != nil {
			xys = append(xys, plotter.XY{X: float64(r.Round), Y: value(r.Model)})
		}
	}
	if err := addLine(p, name, xys, colour, false); err != nil {
		return Chart{}, err
	}
	// An accuracy is drawn on [0, 1]; other metrics (bits per byte,
	// perplexity, a loss) on their data's range, where a fall of a tenth
	// would vanish against an axis from 0.
	p.X.Min = 0
	if name == "accuracy" {
		p.Y.Min, p.Y.Max = 0, 1
	}
	p.Legend.Left = false
	if len(xys) == 0 {
		emptyRange(p, rounds)
	}
	return render(id, p, format, map[string]int{name: len(xys)})
}

// PrivacyUtilityChart draws the primary metric against the public ε spent
// when each model was released: the privacy–utility curve of the job.
func PrivacyUtilityChart(rounds []Round, format string) (Chart, error) {
	name := PrimaryMetric(rounds)
	p := newPlot("privacy–utility: "+name+" vs ε (public)", "ε public (cumulative)", name)
	var xys plotter.XYs
	for _, r := range rounds {
		if r.Model == nil || math.IsInf(float64(r.Epsilon.Public), 1) {
			continue
		}
		xys = append(xys, plotter.XY{X: float64(r.Epsilon.Public), Y: primaryValue(r.Model)})
	}
	if err := addLine(p, "released model", xys, 2, false); err != nil {
		return Chart{}, err
	}
	p.X.Min = 0
	if name == "accuracy" {
		p.Y.Min = 0
	}
	p.Legend.Left = false
	p.Legend.Top = false
	return render("privacy_utility", p, format, map[string]int{name: len(xys)})
}

// ClientSpendChart draws the distribution of per-client ε against each
// observer as histograms (clients with ε = ∞ are counted in the legend).
func ClientSpendChart(spend ledger.PerObserver[[]float64], format string) (Chart, error) {
	p := newPlot("per-client ε distribution", "ε (client's own rounds)", "clients")
	points := map[string]int{}
	for i, o := range ledger.Observers {
		var vals plotter.Values
		inf := 0
		for _, v := range spend.Get(o) {
			if math.IsInf(v, 1) || math.IsNaN(v) {
				inf++
				continue
			}
			vals = append(vals, v)
		}
		points[string(o)] = len(vals)
		name := string(o)
		if inf > 0 {
			name = fmt.Sprintf("%s (%d clients at ε = ∞)", o, inf)
		}
		if len(vals) == 0 {
			if inf > 0 {
				p.Legend.Add(name)
			}
			continue
		}
		bins := 30
		if lo, hi := vals[0], vals[len(vals)-1]; lo == hi {
			bins = 1
		}
		h, err := plotter.NewHist(vals, bins)
		if err != nil {
			return Chart{}, err
		}
		c := palette[i%len(palette)]
		h.FillColor = withAlpha(c, 150)
		h.LineStyle.Color = c
		p.Add(h)
		p.Legend.Add(name, h)
	}
	p.Legend.Left = false
	return render("client_spend", p, format, points)
}

func withAlpha(c color.Color, a uint8) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), a}
}

// ParticipationChart draws, per round, the updates each region accepted
// and the ledger's total of participants.
func ParticipationChart(rounds []Round, perRegion map[uint64]map[string]int, format string) (Chart, error) {
	p := newPlot("participation per region per round", "round", "accepted updates")
	regions := map[string]bool{}
	for _, m := range perRegion {
		for r := range m {
			regions[r] = true
		}
	}
	names := make([]string, 0, len(regions))
	for r := range regions {
		names = append(names, r)
	}
	sort.Strings(names)
	points := map[string]int{}
	var total plotter.XYs
	for _, r := range rounds {
		if r.Status == "committed" {
			total = append(total, plotter.XY{X: float64(r.Round), Y: float64(r.Participants)})
		}
	}
	points["total"] = len(total)
	if err := addLine(p, "total (ledger)", total, 7, false); err != nil {
		return Chart{}, err
	}
	if len(total) == 0 && len(names) == 0 {
		emptyRange(p, rounds)
	}
	for i, name := range names {
		var xys plotter.XYs
		for _, r := range rounds {
			if n, ok := perRegion[r.Round][name]; ok {
				xys = append(xys, plotter.XY{X: float64(r.Round), Y: float64(n)})
			}
		}
		points["region_"+name] = len(xys)
		if err := addLine(p, "region "+name, xys, i, true); err != nil {
			return Chart{}, err
		}
	}
	p.Y.Min, p.X.Min = 0, 0
	p.Legend.Top = false
	return render("participation", p, format, points)
}

// RejectionsChart draws the updates rejected in each round, one line per
// named reason.
func RejectionsChart(rounds []Round, perRound map[uint64]map[string]int, format string) (Chart, error) {
	p := newPlot("rejected updates by reason", "round", "rejected updates")
	reasons := map[string]bool{}
	for _, m := range perRound {
		for r := range m {
			reasons[r] = true
		}
	}
	names := make([]string, 0, len(reasons))
	for r := range reasons {
		names = append(names, r)
	}
	sort.Strings(names)
	points := map[string]int{}
	for i, name := range names {
		var xys plotter.XYs
		for _, r := range rounds {
			if m, ok := perRound[r.Round]; ok {
				xys = append(xys, plotter.XY{X: float64(r.Round), Y: float64(m[name])})
			}
		}
		points[name] = len(xys)
		if err := addLine(p, name, xys, i, false); err != nil {
			return Chart{}, err
		}
	}
	p.Y.Min, p.X.Min = 0, 0
	if len(names) == 0 {
		p.Legend.Add("no update rejected")
		emptyRange(p, rounds)
	}
	return render("rejections", p, format, points)
}
