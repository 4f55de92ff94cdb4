package secagg

import (
	"fmt"
	"math"
	"testing"
)

// chiSquareSF returns P[X >= x] for X chi-square with df degrees of
// freedom: the regularized upper incomplete gamma Q(df/2, x/2), by its
// series below a+1 and its continued fraction above (Numerical Recipes
// §6.2).
func chiSquareSF(x float64, df int) float64 {
	a, z := float64(df)/2, x/2
	lg, _ := math.Lgamma(a)
	if z < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 1000; n++ {
			term *= z / (a + float64(n))
			sum += term
			if term < sum*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-z+a*math.Log(z)-lg)
	}
	const tiny = 1e-300
	b := z + 1 - a
	c, d := 1/tiny, 1/b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		if math.Abs(d*c-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-z+a*math.Log(z)-lg) * h
}

func TestChiSquareSF(t *testing.T) {
	// Reference values: the median of chi-square(2) is 2 ln 2 and its
	// survival function is exp(-x/2); chi-square(255) at its mean.
	for _, tc := range []struct {
		x    float64
		df   int
		want float64
	}{
		{2 * math.Ln2, 2, 0.5},
		{10, 2, math.Exp(-5)},
		{40, 2, math.Exp(-20)},
		{255, 255, 0.4882}, // mean of chi-square(255); SF slightly below 1/2
	} {
		if got := chiSquareSF(tc.x, tc.df); math.Abs(got-tc.want) > 1e-3*math.Max(tc.want, 1e-3) && math.Abs(got-tc.want) > 1e-4 {
			t.Errorf("chiSquareSF(%g, %d) = %g, want %g", tc.x, tc.df, got, tc.want)
		}
	}
}

// chiSquare returns the statistic and its p-value for counts against the
// uniform distribution.
func chiSquare(counts []int) (stat, p float64) {
	total := 0
	for _, c := range counts {
		total += c
	}
	e := float64(total) / float64(len(counts))
	for _, c := range counts {
		d := float64(c) - e
		stat += d * d / e
	}
	return stat, chiSquareSF(stat, len(counts)-1)
}

// alpha is the per-test false-reject rate of the uniformity tests: a
// chi-square test rejects when its p-value is below alpha. A truly uniform
// masked input fails one test with probability 1e-6, and
// TestMaskedInputUniform's four tests together with at most 4e-6 (union
// bound), for a random seed; the seeds below are fixed, so the test is
// deterministic.
const alpha = 1e-6

// TestMaskedInputUniform is the indistinguishability item: a
// single masked input looks uniform on Z_{2^b} whatever the input, here
// the most structured ones (all zeros; a ramp). Three views of one masked
// vector of 2^16 coordinates in Z_{2^32} — its top byte, its low byte, and
// pairs of neighbouring coordinates (top nibbles, 256 cells) for
// independence — and one view across sessions: the first 8 coordinates of
// one client's masked input in Z_{2^8} over 640 independent sessions, all
// 256 values as cells. The control shows the test has power: the same views
// of the unmasked quantized input reject with p far below alpha.
func TestMaskedInputUniform(t *testing.T) {
	const d = 1 << 16
	p := Params{Clients: 12, Degree: 6, Threshold: 4, MinSurvivors: 8, Bits: 32, Dim: d}
	inputs := make([][]uint32, p.Clients)
	for i := range inputs {
		inputs[i] = make([]uint32, d)
		for j := range inputs[i] {
			inputs[i][j] = uint32(j) * uint32(i) // client 1 (i = 0) sends all zeros
		}
	}
	y := maskedInputOf(t, p, inputs, 1, seeded(21))

	views := map[string]func(y []uint32) []int{
		"top byte": func(y []uint32) []int {
			c := make([]int, 256)
			for _, v := range y {
				c[v>>24]++
			}
			return c
		},
		"low byte": func(y []uint32) []int {
			c := make([]int, 256)
			for _, v := range y {
				c[v&0xff]++
			}
			return c
		},
		"neighbour pairs": func(y []uint32) []int {
			c := make([]int, 256)
			for i := 0; i+1 < len(y); i += 2 {
				c[(y[i]>>28)<<4|y[i+1]>>28]++
			}
			return c
		},
	}
	for name, view := range views {
		stat, pv := chiSquare(view(y))
		t.Logf("masked, %s: χ² = %.1f (255 df), p = %.3g", name, stat, pv)
		if pv < alpha {
			t.Errorf("masked input, %s: χ² = %.1f, p = %.3g < %g: not uniform", name, stat, pv, alpha)
		}
	}
	// Control: client 2's plain input is a ramp; every view must reject.
	for name, view := range views {
		if name == "low byte" {
			continue // a ramp's low byte is exactly uniform
		}
		if stat, pv := chiSquare(view(inputs[2])); pv >= alpha {
			t.Errorf("control: plain input, %s: χ² = %.1f, p = %.3g; the test has no power", name, stat, pv)
		}
	}

	t.Run("across sessions", func(t *testing.T) {
		const sessions, coords = 640, 8
		p := Params{Clients: 4, Degree: 3, Threshold: 2, MinSurvivors: 3, Bits: 8, Dim: coords}
		in := make([][]uint32, p.Clients) // all zeros
		for i := range in {
			in[i] = make([]uint32, coords)
		}
		counts := make([]int, 256)
		r := seeded(22)
		for s := range sessions {
			for _, v := range maskedInputOf(t, p, in, 1, r, SessionID{byte(s), byte(s >> 8)}) {
				counts[v]++
			}
		}
		stat, pv := chiSquare(counts)
		t.Logf("across %d sessions: χ² = %.1f (255 df), p = %.3g", sessions, stat, pv)
		if pv < alpha {
			t.Errorf("χ² = %.1f, p = %.3g < %g: not uniform", stat, pv, alpha)
		}
	})
}

// maskedInputOf runs rounds 0-2 with everyone present and returns client
// id's masked input.
func maskedInputOf(t *testing.T, p Params, inputs [][]uint32, id ID, r interface{ Read([]byte) (int, error) }, session ...SessionID) []uint32 {
	t.Helper()
	var sess SessionID
	if len(session) > 0 {
		sess = session[0]
	}
	srv, err := NewServer(ServerConfig{Session: sess, Params: p, Rand: r})
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]*Client, p.Clients+1)
	for i := 1; i <= p.Clients; i++ {
		cs[i], _ = NewClient(ClientConfig{ID: ID(i), Session: sess, Params: p, Rand: r})
		m, err := cs[i].AdvertiseKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, nk := range nks {
		m, err := cs[nk.To].ShareKeys(nk)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.HandleShareKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	bundles, err := srv.FinishShareKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		if b.To == id {
			m, err := cs[id].MaskInput(b, inputs[id-1])
			if err != nil {
				t.Fatal(err)
			}
			return m.Vector
		}
	}
	t.Fatal(fmt.Sprintf("client %d got no bundle", id))
	return nil
}
