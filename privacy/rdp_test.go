package privacy

import (
	"math"
	"slices"
	"testing"
)

func TestOrdersCoverReferenceLists(t *testing.T) {
	v := loadVectors(t)
	ord := Orders()
	if !slices.IsSorted(ord) {
		t.Fatalf("Orders() is not sorted")
	}
	for _, name := range []string{"opacus_default", "dp_accounting_default"} {
		for _, a := range v.Definitions.Orders[name] {
			if !slices.ContainsFunc(ord, func(o float64) bool { return math.Abs(o-a) < 1e-12 }) {
				t.Errorf("order %v of %s missing from Orders()", a, name)
			}
		}
	}
	ord[0] = -1
	if Orders()[0] == -1 {
		t.Errorf("Orders() returned the package's own slice, want a copy")
	}
}

func orderIndex(t *testing.T, a float64) int {
	t.Helper()
	i := slices.IndexFunc(Orders(), func(o float64) bool { return math.Abs(o-a) < 1e-12 })
	if i < 0 {
		t.Fatalf("order %v not in Orders()", a)
	}
	return i
}

func TestRDPStepMatchesExact(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.RDPSingle {
		want := c.RDP["exact_mpmath"]
		if want == nil {
			t.Fatalf("%s: no exact_mpmath value", c.ID)
		}
		got := RDPStep(c.Q, c.Sigma)[orderIndex(t, c.Alpha)]
		if rel := math.Abs(got-*want) / *want; !(rel <= 1e-9) {
			t.Errorf("%s: got %.17g, want %.17g (rel err %.3g)", c.ID, got, *want, rel)
		}
	}
}

func TestRDPEpsilonAgainstReferences(t *testing.T) {
	v := loadVectors(t)
	acc := NewRDP()
	for _, c := range v.Cases {
		got, err := acc.Epsilon(c.parts(), c.Delta)
		if err != nil {
			t.Errorf("%s: %v", c.ID, err)
			continue
		}
		op, dpa := c.Results["opacus_rdp"].Epsilon, c.Results["dp_accounting_rdp"].Epsilon
		upper := math.Inf(1)
		if op != nil {
			upper = min(upper, *op)
		}
		if dpa != nil {
			upper = min(upper, *dpa)
		}
		if !(got <= upper*(1+1e-9)) {
			t.Errorf("%s: got ε %.12g, want ≤ min(opacus, dp_accounting) = %.12g", c.ID, got, upper)
		}
		if pld, ok := c.Results["dp_accounting_pld"]; ok && pld.Lower != nil && got < *pld.Lower {
			t.Errorf("%s: got ε %.12g, below the PLD lower estimate %.12g", c.ID, got, *pld.Lower)
		}
		if ex, ok := c.Results["exact_analytic_gaussian"]; ok && got < *ex.Epsilon {
			t.Errorf("%s: got ε %.12g, below the exact Gaussian ε %.12g", c.ID, got, *ex.Epsilon)
		}
	}
}
