package empirical

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// gaussianRelease simulates one release of a Gaussian mechanism in R^d:
// the sum of the first k canaries' directions plus N(0, σ²) per coordinate.
// Adding or removing one canary moves it by a unit vector, so the
// mechanism's true ε at δ is that of N(0, σ²) against N(1, σ²).
func gaussianRelease(seed uint64, k, d int, sigma float64) Release {
	rng := rand.New(rand.NewPCG(seed, 99))
	theta := make([]float64, d)
	for i := range theta {
		theta[i] = sigma * rng.NormFloat64()
	}
	for i := range k {
		u := Direction(seed, i, d)
		for j := range theta {
			theta[j] += u[j]
		}
	}
	return Release{Initial: make([]float64, d), Steps: []Step{{Version: 1, Base: 0, Theta: theta}}, Final: 1}
}

// TestEstimateRecoversGaussianMechanism checks the one-shot estimate on a
// mechanism whose ε is known. In high dimension the canary cosines times
// ‖Δ‖ are N(1, σ² + k/d) for inserted and N(0, σ² + k/d) for unseen
// canaries (Andrew et al. 2024), so the final-model estimate is the ε of an
// effective noise √(σ² + k/d), slightly below the true ε. Its sampling
// error is dominated by σ̂: a relative error r of the fitted standard
// deviation moves ε by about z²·r with z = Φ⁻¹(1 − δ) ≈ 4.3, and r has
// standard error 1/√(2k) = 0.022, so one standard error is ≈ 0.41 in ε.
// The band ±1.25 is three of them (false reject ≈ 0.3 % per case; one
// fixed seed, so the test is deterministic).
func TestEstimateRecoversGaussianMechanism(t *testing.T) {
	const d, k, delta = 20000, 1000, 1e-5
	for _, sigma := range []float64{1, 2} {
		truth, err := Epsilon(Gaussian{0, sigma}, Gaussian{1, sigma}, delta)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Audit(gaussianRelease(7, k, d, sigma), 7, k, delta, 0.95)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("σ=%v: true ε %.4f, estimate %.4f (final %.4f), lower bound %.4f (%d/%d vs %d/%d)", sigma, truth, rep.EmpiricalEpsilon, rep.Final.Epsilon,
			rep.LowerBound.Epsilon, rep.LowerBound.Hits, rep.LowerBound.Inserted, rep.LowerBound.False, rep.LowerBound.Unseen)
		if math.Abs(float64(rep.Final.Epsilon)-truth) > 1.25 {
			t.Errorf("σ=%v: final-model estimate %.4f, true ε %.4f", sigma, rep.Final.Epsilon, truth)
		}
		// One release: all iterates are the final model.
		if rep.AllIterates.Observed != rep.Final.Observed {
			t.Errorf("one release: all-iterates fit %+v differs from the final model's %+v", rep.AllIterates.Observed, rep.Final.Observed)
		}
		if err := rep.CheckLedger(truth); err != nil {
			t.Errorf("the true ε is below the lower bound: %v", err)
		}
		if rep.LowerBound.Epsilon <= 0 {
			t.Errorf("σ=%v: lower bound %v: 1000 canaries at ε %.2f should give a positive bound", sigma, rep.LowerBound.Epsilon, truth)
		}
	}
}

// TestNoNoiseIsDetected: without noise the canaries stand out at once.
func TestNoNoiseIsDetected(t *testing.T) {
	rep, err := Audit(gaussianRelease(3, 200, 5000, 1e-3), 3, 200, 1e-5, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if rep.EmpiricalEpsilon < 20 || rep.LowerBound.Epsilon < 2 || rep.LowerBound.Hits != 200 || rep.LowerBound.False != 0 {
		t.Fatalf("estimate %v, lower bound %+v: want a large estimate and a perfect separation", rep.EmpiricalEpsilon, rep.LowerBound)
	}
	if err := rep.CheckLedger(1); !errors.Is(err, ErrBelowLowerBound) {
		t.Fatalf("a ledger claiming ε = 1 for no noise: err = %v, want ErrBelowLowerBound", err)
	}
}

func TestClopperPearson(t *testing.T) {
	const a = 0.05
	lo, hi, err := ClopperPearson(0, 10, a)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 - math.Pow(a, 0.1); lo != 0 || math.Abs(hi-want) > 1e-12 {
		t.Errorf("0/10: (%v, %v), want (0, %v)", lo, hi, want)
	}
	lo, hi, _ = ClopperPearson(10, 10, a)
	if want := math.Pow(a, 0.1); hi != 1 || math.Abs(lo-want) > 1e-12 {
		t.Errorf("10/10: (%v, %v), want (%v, 1)", lo, hi, want)
	}
	// Exactness: at the lower bound, P[Bin(n, lo) ≥ k] = α.
	for _, kn := range [][2]int{{3, 20}, {50, 100}, {999, 1000}} {
		k, n := kn[0], kn[1]
		lo, hi, _ := ClopperPearson(k, n, a)
		if tail := binomTail(k, n, lo); math.Abs(tail-a) > 1e-9 {
			t.Errorf("%d/%d: P[Bin ≥ k | p = %v] = %v, want %v", k, n, lo, tail, a)
		}
		if tail := 1 - binomTail(k+1, n, hi); math.Abs(tail-a) > 1e-9 {
			t.Errorf("%d/%d: P[Bin ≤ k | p = %v] = %v, want %v", k, n, hi, tail, a)
		}
	}
	if _, _, err := ClopperPearson(3, 2, a); !errors.Is(err, ErrInvalid) {
		t.Errorf("3 of 2: err = %v", err)
	}
}

// binomTail is P[Bin(n, p) ≥ k] by direct summation in log space.
func binomTail(k, n int, p float64) float64 {
	s := 0.0
	for j := k; j <= n; j++ {
		lg, _ := math.Lgamma(float64(n + 1))
		l1, _ := math.Lgamma(float64(j + 1))
		l2, _ := math.Lgamma(float64(n - j + 1))
		s += math.Exp(lg - l1 - l2 + float64(j)*math.Log(p) + float64(n-j)*math.Log1p(-p))
	}
	return s
}

func TestThresholdLowerBound(t *testing.T) {
	// Perfect separation: the bound is the closed form of the best test,
	// with the error probability split over 2 directions × 2 proportions ×
	// the distinct inserted values (the candidate thresholds).
	ins, uns := make([]float64, 100), make([]float64, 100)
	for i := range ins {
		ins[i], uns[i] = 1000+float64(i), float64(i)
	}
	lb, err := ThresholdLowerBound(ins, uns, 1e-5, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	alpha := 0.05 / (4 * 100)
	want := math.Log((math.Pow(alpha, 0.01) - 1e-5) / (1 - math.Pow(alpha, 0.01)))
	if math.Abs(float64(lb.Epsilon)-want) > 1e-9 || lb.Hits != 100 || lb.False != 0 || !lb.Above {
		t.Errorf("separated: %+v, want ε %v", lb, want)
	}
	// Same distribution: a valid bound is 0 with probability ≥ 95 %.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range ins {
		ins[i], uns[i] = rng.NormFloat64(), rng.NormFloat64()
	}
	if lb, _ = ThresholdLowerBound(ins, uns, 1e-5, 0.95); lb.Epsilon != 0 {
		t.Errorf("indistinguishable: lower bound %v, want 0", lb.Epsilon)
	}
}

func TestAttack(t *testing.T) {
	m, err := Attack([]float64{1, 2}, []float64{1, 0}, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	if m.AUC != 0.875 {
		t.Errorf("AUC %v, want 0.875 (ties count half)", m.AUC)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	mem, non := make([]float64, 5000), make([]float64, 5000)
	for i := range mem {
		mem[i], non[i] = rng.NormFloat64()+1, rng.NormFloat64()
	}
	m, _ = Attack(mem, non, 0.01)
	// Two unit Gaussians 1 apart: AUC = Φ(1/√2) = 0.760, TPR at 1 % FPR =
	// Φ(1 − 2.326) = 0.0926. Standard errors at n = 5000: 0.007 and about
	// 0.02 (the threshold itself is an order statistic); bands of ~3 s.e.
	if math.Abs(m.AUC-0.7602) > 0.02 || math.Abs(m.TPRAtFPR-0.0926) > 0.06 {
		t.Errorf("AUC %v, TPR %v at 1%% FPR; want ≈ 0.760 and ≈ 0.093", m.AUC, m.TPRAtFPR)
	}
	if _, err := Attack(nil, non, 0.01); !errors.Is(err, ErrInvalid) {
		t.Errorf("no members: err = %v", err)
	}
}

func TestDirectionIsDeterministicUnit(t *testing.T) {
	a, b, c := Direction(1, 5, 300), Direction(1, 5, 300), Direction(1, 6, 300)
	n := 0.0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed and index gave different directions")
		}
		n += a[i] * a[i]
	}
	if math.Abs(n-1) > 1e-12 {
		t.Fatalf("norm² %v", n)
	}
	if cs := Cosine(a, c); math.Abs(cs) > 0.3 {
		t.Fatalf("two canaries have cosine %v in d = 300", cs)
	}
}

func TestReleaseRejectsUnknownBase(t *testing.T) {
	r := Release{Initial: []float64{0, 0}, Steps: []Step{{Version: 2, Base: 1, Theta: []float64{1, 0}}}, Final: 2}
	if _, err := r.Statistics(1, 4); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

// TestNothingReleasedEstimatesZero: when no version moved the model, every
// statistic is 0 and the estimate is 0, not an error.
func TestNothingReleasedEstimatesZero(t *testing.T) {
	r := Release{Initial: []float64{1, 2, 3}, Steps: []Step{{Version: 1, Base: 0, Theta: []float64{1, 2, 3}}}, Final: 0}
	rep, err := Audit(r, 1, 10, 1e-5, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if rep.EmpiricalEpsilon != 0 || rep.Final.Epsilon != 0 || rep.LowerBound.Epsilon != 0 {
		t.Fatalf("got %+v", rep)
	}
}
