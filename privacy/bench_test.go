package privacy

import "testing"

// Benchmarks for the accountants. Reference figures on the same kind of
// machine (2 cores): Opacus's RDP accountant took 0.1–420 ms per case of
// the vectors file, dp_accounting's PLD 0.01–3.2 s.

// BenchmarkRDPEpsilon is ε for one case, from scratch (one-step curve at
// every order, composition, conversion).
func BenchmarkRDPEpsilon(b *testing.B) {
	for _, bc := range []struct {
		name  string
		parts []Part
	}{
		{"q=0.05,sigma=1,T=10000", []Part{{0.05, 1, 10000}}},
		{"q=0.001,sigma=10,T=1000", []Part{{0.001, 10, 1000}}},
		{"q=0.5,sigma=0.8,T=10000", []Part{{0.5, 0.8, 10000}}},
		{"hetero", []Part{{0.05, 1, 50}, {0.05, 2, 50}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			acc := NewRDP()
			for b.Loop() {
				if _, err := acc.Epsilon(bc.parts, 1e-5); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRDPEpsilonAllCases runs every case of the vectors file once per
// iteration (230 cases).
func BenchmarkRDPEpsilonAllCases(b *testing.B) {
	v := loadVectors(b)
	acc := NewRDP()
	for b.Loop() {
		for _, c := range v.Cases {
			if _, err := acc.Epsilon(c.parts(), c.Delta); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPLDEpsilon is ε for T = 10000 rounds at interval 1e-4.
func BenchmarkPLDEpsilon(b *testing.B) {
	for _, bc := range []struct {
		name  string
		parts []Part
	}{
		{"q=0.01,sigma=1,T=10000", []Part{{0.01, 1, 10000}}},
		{"q=0.05,sigma=1,T=10000", []Part{{0.05, 1, 10000}}},
		{"q=0.1,sigma=1,T=10000", []Part{{0.1, 1, 10000}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			acc := NewPLD()
			for b.Loop() {
				if _, err := acc.Epsilon(bc.parts, 1e-5); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCalibrate finds σ for ε = 3, δ = 1e-5, q = 0.01, T = 1000.
func BenchmarkCalibrate(b *testing.B) {
	for _, acc := range []Accountant{NewRDP(), NewPLD()} {
		b.Run(acc.Name(), func(b *testing.B) {
			for b.Loop() {
				if _, err := CalibrateSigma(acc, 0.01, 1000, 3, 1e-5); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
