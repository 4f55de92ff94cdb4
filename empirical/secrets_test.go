package empirical

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"sync/atomic"
	"testing"
)

// hashScorer is a synthetic language model: the next-byte distribution
// is a pseudo-random softmax of a hash of the context, boosted towards
// the digits of a memorised secret when the context is on its path.
type hashScorer struct {
	prefix   string
	memo     string
	boost    float64
	contexts atomic.Int64
}

func (h *hashScorer) NextLogProbs(ctxs [][]byte) [][]float32 {
	h.contexts.Add(int64(len(ctxs)))
	out := make([][]float32, len(ctxs))
	for i, c := range ctxs {
		f := fnv.New64a()
		f.Write(c)
		x := f.Sum64()
		logits := make([]float64, 256)
		for j := range logits {
			x = x*6364136223846793005 + 1442695040888963407
			logits[j] = float64(x>>40) / float64(1<<24) * 3
		}
		done := string(c[len(h.prefix):])
		if h.memo != "" && len(done) < len(h.memo) && h.memo[:len(done)] == done {
			logits[h.memo[len(done)]] += h.boost
		}
		var s float64
		for _, v := range logits {
			s += math.Exp(v)
		}
		out[i] = make([]float32, 256)
		for j, v := range logits {
			out[i][j] = float32(v - math.Log(s))
		}
	}
	return out
}

// TestExposuresMatchBruteForce: the trie enumeration ranks every secret as
// scoring each of the 10^4 candidates separately does, scoring only the
// trie's 1111 internal nodes.
func TestExposuresMatchBruteForce(t *testing.T) {
	const prefix = `api_key = "`
	m := &hashScorer{prefix: prefix, memo: "4711", boost: 6}
	secrets := []string{"4711", "0000", "9999", "1234", "4712"}
	got, err := Exposures(context.Background(), m, []byte(prefix), 4, secrets)
	if err != nil {
		t.Fatal(err)
	}
	if n := m.contexts.Load(); n != 1111 {
		t.Errorf("scored %d contexts, want 1 + 10 + 100 + 1000 = 1111", n)
	}
	brute := make([]float64, 10000)
	for v := range brute {
		d := []byte{byte('0' + v/1000), byte('0' + v/100%10), byte('0' + v/10%10), byte('0' + v%10)}
		for k := 0; k < 4; k++ {
			lp := m.NextLogProbs([][]byte{append([]byte(prefix), d[:k]...)})[0]
			brute[v] += float64(lp[d[k]])
		}
	}
	for _, e := range got {
		v := 0
		for _, c := range e.Secret {
			v = v*10 + int(c-'0')
		}
		rank := 1
		for _, s := range brute {
			if s > brute[v] {
				rank++
			}
		}
		if e.Rank != rank || math.Abs(e.LogProb-brute[v]) > 1e-9 {
			t.Errorf("%s: rank %d, log p %v; brute force: rank %d, log p %v", e.Secret, e.Rank, e.LogProb, rank, brute[v])
		}
		if want := math.Log2(10000) - math.Log2(float64(rank)); math.Abs(e.Exposure-want) > 1e-12 {
			t.Errorf("%s: exposure %v, want %v", e.Secret, e.Exposure, want)
		}
	}
	if got[0].Rank != 1 || got[0].Exposure != math.Log2(10000) {
		t.Errorf("the memorised secret: rank %d, exposure %v; want rank 1, exposure log2 10^4", got[0].Rank, got[0].Exposure)
	}
	if _, err := Exposures(context.Background(), m, []byte(prefix), 4, []string{"12a4"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a secret with a letter: %v", err)
	}
}

// TestSecretBoundSeparates: memorised secrets give a positive lower bound,
// secrets the model never saw (exposures of random ranks) none.
func TestSecretBoundSeparates(t *testing.T) {
	var ins, never []Exposure
	for i := 0; i < 40; i++ {
		ins = append(ins, Exposure{Exposure: 12 + float64(i%3)})
		// Uniform ranks 1..10^4 spread evenly: the null's exposure.
		r := 1 + i*250
		never = append(never, Exposure{Rank: r, Exposure: math.Log2(1e4) - math.Log2(float64(r))})
	}
	lb, err := SecretBound(ins, never, 1e-5, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if !(lb.Epsilon > 1) {
		t.Errorf("memorised vs unseen: lower bound %v, want > 1", lb.Epsilon)
	}
	var even, odd []Exposure
	for i, e := range never {
		if i%2 == 0 {
			even = append(even, e)
		} else {
			odd = append(odd, e)
		}
	}
	lb, err = SecretBound(even, odd, 1e-5, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Epsilon != 0 {
		t.Errorf("two halves of the null: lower bound %v, want 0", lb.Epsilon)
	}
}
