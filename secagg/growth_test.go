package secagg

import (
	"math"
	"testing"
)

// serverExpansions runs the server alone through FinishMaskedInput with
// placeholder keys and ciphertexts (the server does not open them before
// unmasking) and 30% of the clients dropping before masked input, and
// returns the number of d-element mask expansions Finish would do: one self
// mask per survivor plus one per edge from a dropped client to a survivor
// (the sum of the requests' Dropped lists).
func serverExpansions(t *testing.T, p Params) int {
	t.Helper()
	srv, err := NewServer(ServerConfig{Params: p, Rand: seeded(uint64(p.Clients))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= p.Clients; i++ {
		m := &AdvertiseKeys{Version: Version, From: ID(i)}
		m.MaskKey[0] = 1
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, sharePlainSize+16)
	for _, nk := range nks {
		m := &ShareKeys{Version: Version, From: nk.To}
		for _, v := range nk.Neighbours {
			m.Shares = append(m.Shares, Ciphertext{Peer: v.ID, Data: ct})
		}
		if err := srv.HandleShareKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.FinishShareKeys(); err != nil {
		t.Fatal(err)
	}
	drop := dropPlan(p.Clients, 0.3, 1, DropBeforeMaskedInput)
	vec := make([]uint32, p.Dim)
	for i := 1; i <= p.Clients; i++ {
		if drop[ID(i)] == Stay {
			if err := srv.HandleMaskedInput(&MaskedInput{Version: Version, From: ID(i), Bits: uint8(p.Bits), Vector: vec}); err != nil {
				t.Fatal(err)
			}
		}
	}
	reqs, err := srv.FinishMaskedInput()
	if err != nil {
		t.Fatal(err)
	}
	e := len(reqs)
	for _, r := range reqs {
		e += len(r.Dropped)
	}
	return e
}

// TestServerWorkIsNLogN counts, without timing anything, the mask
// expansions the server's unmasking does when 30% of n clients drop before
// masked input: the server's d-proportional work is that count times d. On
// the SecAgg+ graph it stays within a constant of n·log2(n) as n grows a
// hundredfold; on the complete graph it is about 0.7n + 0.21n², quadratic.
// BenchmarkServer times the same work.
func TestServerWorkIsNLogN(t *testing.T) {
	ns := []int{100, 1000, 10000}
	if testing.Short() {
		ns = ns[:2]
	}
	var ratios []float64
	for _, n := range ns {
		p, err := ChooseParams(n, 1, 32, Security{Dropout: 0.3, Corrupt: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		e := serverExpansions(t, p)
		r := float64(e) / (float64(n) * math.Log2(float64(n)))
		ratios = append(ratios, r)
		complete := 0.7*float64(n) + 0.3*0.7*float64(n)*float64(n)
		t.Logf("n = %5d, k = %3d: %7d expansions = %.2f·n·log2(n); the complete graph would need %.0f (%.0f×)", n, p.Degree, e, r, complete, complete/float64(e))
		// Each dropped client has k neighbours, about 70% of them survivors.
		if want := 0.7*float64(n) + 0.3*float64(n)*0.7*float64(p.Degree); math.Abs(float64(e)-want) > 0.1*want {
			t.Errorf("n = %d: %d expansions, want about %.0f", n, e, want)
		}
	}
	for i := 1; i < len(ratios); i++ {
		if ratios[i] > 1.5*ratios[0] {
			t.Errorf("expansions/(n·log2 n) grew from %.2f to %.2f: not O(n log n)", ratios[0], ratios[i])
		}
	}
}
