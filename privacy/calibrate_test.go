package privacy

import (
	"errors"
	"math"
	"testing"
)

func TestCalibrateAgainstReferences(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Calibration {
		for _, tc := range []struct {
			name string
			ref  string
			acc  func() Accountant
		}{
			{"rdp", "opacus_rdp", NewRDP},
			{"pld", "dp_accounting_pld", func() Accountant {
				a, err := NewPLDWithConfig(PLDConfig{Interval: c.Results["dp_accounting_pld"].VDI})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}},
		} {
			acc := tc.acc()
			sigma, err := CalibrateSigma(acc, c.Q, c.Steps, c.Target, c.Delta)
			if err != nil {
				t.Errorf("%s/%s: %v", c.ID, tc.name, err)
				continue
			}
			eps := func(s float64) float64 {
				e, err := acc.Epsilon([]Part{{Q: c.Q, Sigma: s, Steps: c.Steps}}, c.Delta)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			if e := eps(sigma); e > c.Target {
				t.Errorf("%s/%s: ε(σ = %.6f) = %.9g > target %g", c.ID, tc.name, sigma, e, c.Target)
			}
			if e := eps(sigma - 0.001); !(e > c.Target) {
				t.Errorf("%s/%s: ε(σ − 0.001 = %.6f) = %.9g, want > target %g", c.ID, tc.name, sigma-0.001, e, c.Target)
			}
			ref := c.Results[tc.ref].Sigma
			if math.Abs(sigma-ref) > 0.001 {
				t.Errorf("%s/%s: σ = %.6f, reference %.3f", c.ID, tc.name, sigma, ref)
			}
		}
	}
}

func TestMaxSteps(t *testing.T) {
	for _, acc := range []Accountant{NewRDP(), NewPLD()} {
		const q, sigma, target, delta = 0.05, 1.2, 3.0, 1e-5
		T, err := MaxSteps(acc, q, sigma, target, delta)
		if err != nil {
			t.Fatal(err)
		}
		at := func(T int) float64 {
			e, err := acc.Epsilon([]Part{{Q: q, Sigma: sigma, Steps: T}}, delta)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
		if T < 1 || at(T) > target || at(T+1) <= target {
			t.Errorf("%s: MaxSteps = %d with ε(T) = %g, ε(T+1) = %g, target %g", acc.Name(), T, at(T), at(T+1), target)
		}
	}
	if T, err := MaxSteps(NewRDP(), 0.1, 0.1, 0.5, 1e-5); err != nil || T != 0 {
		t.Errorf("budget below one step: got %d, %v; want 0", T, err)
	}
	if _, err := MaxSteps(NewRDP(), 0.1, 1, math.NaN(), 1e-5); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("NaN epsilon: got %v, want ErrInvalidParameter", err)
	}
	if _, err := CalibrateSigma(NewRDP(), 0.1, 10, 1, 2); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("delta 2: got %v, want ErrInvalidParameter", err)
	}
}
