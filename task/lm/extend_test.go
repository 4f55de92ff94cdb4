package lm

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/empirical"
)

var _ empirical.PrefixExtender = (*Model)(nil)

// extendModel is a model with every weight perturbed and B non-zero on
// every projection, whose context fits a secret's prefix and digits.
func extendModel(t *testing.T) *Model {
	t.Helper()
	a := Arch{Layers: 2, DModel: 16, Heads: 4, Context: 24, Hidden: 20}
	return &Model{Net: perturbedNet(t, a, 11, 14, rand.New(rand.NewPCG(12, 13)))}
}

func maxDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

// TestExtendMatchesWholeContexts: the key/value chain gives, level after
// level of a tree of contexts, the distributions a whole pass over each
// context gives.
func TestExtendMatchesWholeContexts(t *testing.T) {
	m := extendModel(t)
	prefix := []byte(`api_key = "`)
	const depth = 5
	root, lp, ok := m.Begin(prefix, depth)
	if !ok {
		t.Fatal("Begin refused a prefix that fits")
	}
	if d := maxDiff(lp, m.LogProbs(prefix)); d > 1e-4 {
		t.Fatalf("after the prefix: %g from the whole pass", d)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	states, texts := []any{root}, [][]byte{prefix}
	for level := 1; level <= depth; level++ {
		// Each state gets three children (a random byte each), so that
		// siblings share their ancestors' keys and values.
		var parents []any
		var next []byte
		var want [][]byte
		for i, s := range states {
			for range 3 {
				c := byte(rng.IntN(Vocab))
				parents, next = append(parents, s), append(next, c)
				want = append(want, append(append([]byte(nil), texts[i]...), c))
			}
		}
		kept, lps := m.Extend(parents, next, level < depth)
		whole := m.NextLogProbs(append([][]byte(nil), want...))
		for i := range lps {
			if d := maxDiff(lps[i], whole[i]); d > 1e-4 {
				t.Fatalf("level %d, context %q: %g from the whole pass", level, want[i], d)
			}
		}
		if level == depth {
			for _, s := range kept {
				if s != nil {
					t.Fatal("Extend without keep returned a state")
				}
			}
		}
		states, texts = kept, want
	}
	if _, _, ok := m.Begin(nil, 1); ok {
		t.Error("Begin accepted an empty prefix (a whole pass reads it as a newline)")
	}
	if _, _, ok := m.Begin(prefix, m.Context()-len(prefix)+1); ok {
		t.Error("Begin accepted a depth past the context (a whole pass slides its window there)")
	}
}

// wholeContexts hides Model's PrefixExtender: CandidateLogProbs then
// scores whole contexts.
type wholeContexts struct{ empirical.NextLogProber }

// TestCandidateLogProbsByExtension: the audit's exact ranking scores every
// candidate as the whole-context enumeration does.
func TestCandidateLogProbsByExtension(t *testing.T) {
	m := extendModel(t)
	prefix := []byte(`api_key = "`)
	got, err := empirical.CandidateLogProbs(context.Background(), m, prefix, 3)
	if err != nil {
		t.Fatal(err)
	}
	want, err := empirical.CandidateLogProbs(context.Background(), wholeContexts{m}, prefix, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000 || len(want) != 1000 {
		t.Fatalf("%d and %d candidates, want 1000", len(got), len(want))
	}
	var worst float64
	for i := range got {
		worst = max(worst, math.Abs(got[i]-want[i]))
	}
	if worst > 1e-3 {
		t.Errorf("log p of a candidate differs by %g between the two enumerations", worst)
	}
	// The same scores whatever the batch: 10^4 candidates spread over
	// every worker.
	if _, err := empirical.CandidateLogProbs(context.Background(), m, prefix, 4); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCandidateLogProbs ranks the 10^4 candidates of a four-digit
// secret with the default model's shape both ways: the whole-context
// enumeration (one pass over prefix + digits per trie node, batched) is
// the reference for the key/value chain's; the ratio of their ns/op is
// the speed-up.
func BenchmarkCandidateLogProbs(b *testing.B) {
	a := Arch{Layers: 2, DModel: 64, Heads: 4, Context: 64, Hidden: 256}
	w, _ := InitWeights(a, 1)
	ad, _ := NewAdapter(a, 4, 8, []string{"q", "k", "v", "o"}, 1)
	n, _ := NewNet(w, ad, make([]float64, dimOf(ad.BLayout(a))))
	m := &Model{Net: n}
	prefix := []byte(`api_key = "`)
	for _, c := range []struct {
		name string
		m    empirical.NextLogProber
	}{{"whole", wholeContexts{m}}, {"extend", m}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := empirical.CandidateLogProbs(context.Background(), c.m, prefix, 4); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
