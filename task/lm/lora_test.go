package lm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// product returns s·B·A ([out][in]) for B [out][r], A [r][in].
func product(b, a []float32, out, r, in int, s float32) []float64 {
	p := make([]float64, out*in)
	for i := 0; i < out; i++ {
		for k := 0; k < r; k++ {
			bik := float64(s * b[i*r+k])
			for j := 0; j < in; j++ {
				p[i*in+j] += bik * float64(a[k*in+j])
			}
		}
	}
	return p
}

// TestFedAvgOfBIsExact: with A fixed (FFA-LoRA), averaging the clients' θ
// (their B) applies exactly the average of their updates B_i·A — checked
// on the matrices and on the model's loss against a backbone with the
// averaged updates merged in. Had the clients trained A too, averaging
// both factors would not give the average product: the reason A is fixed.
func TestFedAvgOfBIsExact(t *testing.T) {
	n, windows := gradNet(t)
	a := n.W.Arch
	rng := rand.New(rand.NewPCG(11, 12))
	const clients = 5
	dim := len(n.flatB())
	thetas := make([][]float64, clients)
	mean := make([]float64, dim)
	for c := range thetas {
		thetas[c] = make([]float64, dim)
		for j := range thetas[c] {
			thetas[c][j] = rng.NormFloat64() * 0.2
			mean[j] += thetas[c][j] / clients
		}
	}
	avg, err := NewNet(n.W, n.Ad, mean)
	if err != nil {
		t.Fatal(err)
	}
	merged, _ := NewWeights(a)
	for i, x := range n.W.Tensors() {
		copy(merged.Tensors()[i].Data, x.Data)
	}
	s, r := n.Ad.Scale(), n.Ad.Rank
	for l := 0; l < a.Layers; l++ {
		for p := 0; p < numProj; p++ {
			in, out := a.projDims(p)
			want := make([]float64, out*in)
			for c := range thetas {
				nc, _ := NewNet(n.W, n.Ad, thetas[c])
				for j, v := range product(nc.B[l][p], n.Ad.A[l][p], out, r, in, s) {
					want[j] += v / clients
				}
			}
			got := product(avg.B[l][p], n.Ad.A[l][p], out, r, in, s)
			for j := range want {
				if math.Abs(got[j]-want[j]) > 1e-5 {
					t.Fatalf("layer %d %s: (mean B)·A = %v, mean(B·A) = %v at %d", l, ProjNames[p], got[j], want[j], j)
				}
				merged.Layers[l].W[p][j] += float32(want[j])
			}
		}
	}
	ra, err := avg.Pass(windows, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := (&Net{W: merged}).Pass(windows, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(ra.LossSum-rm.LossSum) > 1e-4*rm.LossSum {
		t.Errorf("loss with the averaged θ %v, with the averaged updates merged %v", ra.LossSum, rm.LossSum)
	}

	// Trained A: each client's own A_i. The average of the factors is not
	// the average of the products.
	in, out := a.projDims(ProjQ)
	meanB, meanA := make([]float32, out*r), make([]float32, r*in)
	wantP := make([]float64, out*in)
	for c := 0; c < clients; c++ {
		b, ai := make([]float32, out*r), make([]float32, r*in)
		for j := range b {
			b[j] = float32(rng.NormFloat64())
			meanB[j] += b[j] / clients
		}
		for j := range ai {
			ai[j] = float32(rng.NormFloat64())
			meanA[j] += ai[j] / clients
		}
		for j, v := range product(b, ai, out, r, in, 1) {
			wantP[j] += v / clients
		}
	}
	var diff, norm float64
	for j, v := range product(meanB, meanA, out, r, in, 1) {
		diff += (v - wantP[j]) * (v - wantP[j])
		norm += wantP[j] * wantP[j]
	}
	if rel := math.Sqrt(diff / norm); rel < 0.5 {
		t.Errorf("with trained A, mean(B)·mean(A) is within %.2g of mean(B·A): the test no longer shows why A is fixed", rel)
	}
}
