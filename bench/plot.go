package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is one line of a figure.
type Series struct {
	Name string
	X, Y []float64
	// Dashed draws a fitted or reference line rather than measurements.
	Dashed bool
}

// Figure is one plot of a scenario.
type Figure struct {
	Name         string // file name without extension
	Title        string
	XLabel       string
	YLabel       string
	LogX, LogY   bool
	Series       []Series
	HideMarkers  bool
	LegendBottom bool
}

// Save writes the figure as NAME.png and NAME.svg into dir and returns the
// file names. Points that a log axis cannot show (≤ 0) or that are not
// finite are left out rather than failing the plot.
func (f Figure) Save(dir string) ([]string, error) {
	p := plot.New()
	p.Title.Text = f.Title
	p.X.Label.Text = f.XLabel
	p.Y.Label.Text = f.YLabel
	if f.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if f.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = !f.LegendBottom
	p.Legend.Left = true
	drawn := 0
	for i, s := range f.Series {
		var pts plotter.XYs
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) || (f.LogX && x <= 0) || (f.LogY && y <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
		}
		if len(pts) == 0 {
			continue
		}
		drawn++
		c := plotutil.Color(i)
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("bench: plot %s: %w", f.Name, err)
		}
		l.Color = c
		l.Width = vg.Points(1.5)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			l.Color = color.Gray{Y: 90}
		}
		p.Add(l)
		p.Legend.Add(s.Name, l)
		if !f.HideMarkers && !s.Dashed {
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return nil, err
			}
			sc.Color = c
			sc.Shape = plotutil.Shape(i)
			p.Add(sc)
		}
	}
	if drawn == 0 {
		return nil, nil
	}
	var names []string
	for _, ext := range []string{"png", "svg"} {
		name := f.Name + "." + ext
		if err := p.Save(6*vg.Inch, 4*vg.Inch, filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("bench: plot %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}

// FitLogLog fits log y = a + b·log x by least squares and returns the
// slope b, the intercept a (natural logs) and R². Points that are not
// positive are left out; fewer than two give NaN.
func FitLogLog(x, y []float64) (slope, intercept, r2 float64) {
	var lx, ly []float64
	for i := range x {
		if x[i] > 0 && y[i] > 0 {
			lx = append(lx, math.Log(x[i]))
			ly = append(ly, math.Log(y[i]))
		}
	}
	n := float64(len(lx))
	if n < 2 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	var mx, my float64
	for i := range lx {
		mx += lx[i]
		my += ly[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy, syy float64
	for i := range lx {
		dx, dy := lx[i]-mx, ly[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	slope = sxy / sxx
	intercept = my - slope*mx
	if syy == 0 {
		return slope, intercept, 1
	}
	return slope, intercept, sxy * sxy / (sxx * syy)
}
