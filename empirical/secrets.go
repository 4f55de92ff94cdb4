package empirical

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// NextLogProber scores text one byte ahead: for each context, the
// natural-log probabilities of the 256 bytes that may follow it.
type NextLogProber interface {
	NextLogProbs(contexts [][]byte) [][]float32
}

// PrefixExtender is a NextLogProber that extends contexts a byte at a
// time, keeping what it computed for a context (a transformer's keys and
// values) for the contexts that extend it: a trie of candidates then
// costs one byte's work per node instead of a pass over its whole
// context. Its log-probabilities must be those NextLogProbs gives for the
// same contexts (up to float rounding).
type PrefixExtender interface {
	NextLogProber
	// Begin scores prefix and returns the state after it; ok is false
	// when it cannot extend prefix by depth bytes (the caller then scores
	// whole contexts).
	Begin(prefix []byte, depth int) (state any, logProbs []float32, ok bool)
	// Extend scores each parent state followed by its byte of next and,
	// with keep, returns the states after them. It must be safe for
	// concurrent use.
	Extend(parents []any, next []byte, keep bool) (states []any, logProbs [][]float32)
}

// Exposure is one secret's exposure (Carlini et al. 2019, "The Secret
// Sharer"): among all N = 10^digits candidates of the format, ranked by
// the model's log-probability of their digits after the format's prefix
// (most likely first), the secret's Rank (1 = most likely; 1 + the number
// of candidates strictly more likely) gives Exposure = log2 N − log2 Rank,
// between 0 and log2 N. A secret the model never saw has expected exposure
// ≈ 1/ln 2 ≈ 1.44 bits whatever N.
type Exposure struct {
	Secret   string  `json:"secret"`
	Rank     int     `json:"rank"`
	Exposure float64 `json:"exposure"`
	// LogProb is log p(digits | prefix), in nats.
	LogProb float64 `json:"log_prob"`
}

// Exposures computes every secret's exposure exactly, by scoring all
// 10^digits candidates: the digit strings are a trie, enumerated level by
// level, one next-byte distribution per internal node (so 1 + 10 + … +
// 10^(digits−1) contexts, each prefix's computation shared by its ten
// children) rather than one pass per candidate. Contexts of a level have
// one length and are scored in batches across GOMAXPROCS workers (a
// PrefixExtender instead extends each node's parent by one byte); m must
// be safe for concurrent use.
func Exposures(ctx context.Context, m NextLogProber, prefix []byte, digits int, secrets []string) ([]Exposure, error) {
	if digits < 1 || digits > 7 {
		return nil, fmt.Errorf("%w: %d digits: want 1..7", ErrInvalid, digits)
	}
	for _, s := range secrets {
		if len(s) != digits || !allDigits(s) {
			return nil, fmt.Errorf("%w: secret %q is not %d decimal digits", ErrInvalid, s, digits)
		}
	}
	scores, err := CandidateLogProbs(ctx, m, prefix, digits)
	if err != nil {
		return nil, err
	}
	n := len(scores)
	out := make([]Exposure, len(secrets))
	for i, s := range secrets {
		idx := 0
		for _, c := range s {
			idx = idx*10 + int(c-'0')
		}
		lp := scores[idx]
		rank := 1
		for _, v := range scores {
			if v > lp {
				rank++
			}
		}
		out[i] = Exposure{Secret: s, Rank: rank, LogProb: lp, Exposure: math.Log2(float64(n)) - math.Log2(float64(rank))}
	}
	return out, nil
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// CandidateLogProbs returns log p(d | prefix) for every digit string d of
// the given length, indexed by d's value (so "000042" is index 42).
func CandidateLogProbs(ctx context.Context, m NextLogProber, prefix []byte, digits int) ([]float64, error) {
	if x, ok := m.(PrefixExtender); ok {
		if st, lp, ok := x.Begin(prefix, digits-1); ok {
			return extendLogProbs(ctx, x, st, lp, digits)
		}
	}
	scores := []float64{0}
	for level := 0; level < digits; level++ {
		var err error
		scores, err = scoreLevel(ctx, scores, 256, func(lo, hi int) ([][]float32, error) {
			ctxs := make([][]byte, 0, hi-lo)
			for i := lo; i < hi; i++ {
				c := append(make([]byte, 0, len(prefix)+level), prefix...)
				if level > 0 {
					c = fmt.Appendf(c, "%0*d", level, i)
				}
				ctxs = append(ctxs, c)
			}
			return m.NextLogProbs(ctxs), nil
		})
		if err != nil {
			return nil, err
		}
	}
	return scores, nil
}

// extendLogProbs is CandidateLogProbs on a PrefixExtender: level by
// level, each internal node of the trie extends its parent's state by
// its digit (node i of a level is parent i/10 and digit i%10); the
// deepest level keeps no state.
func extendLogProbs(ctx context.Context, x PrefixExtender, root any, rootLP []float32, digits int) ([]float64, error) {
	scores, err := scoreLevel(ctx, []float64{0}, 1, func(int, int) ([][]float32, error) { return [][]float32{rootLP}, nil })
	if err != nil {
		return nil, err
	}
	states := []any{root}
	for level := 1; level < digits; level++ {
		keep := level < digits-1
		var kept []any
		if keep {
			kept = make([]any, len(scores))
		}
		scores, err = scoreLevel(ctx, scores, 512, func(lo, hi int) ([][]float32, error) {
			parents, next := make([]any, hi-lo), make([]byte, hi-lo)
			for i := lo; i < hi; i++ {
				parents[i-lo], next[i-lo] = states[i/10], byte('0'+i%10)
			}
			st, lps := x.Extend(parents, next, keep)
			if keep {
				if len(st) != hi-lo {
					return nil, fmt.Errorf("%w: the scorer extended %d contexts into %d states", ErrInvalid, hi-lo, len(st))
				}
				copy(kept[lo:hi], st)
			}
			return lps, nil
		})
		if err != nil {
			return nil, err
		}
		states = kept
	}
	return scores, nil
}

// scoreLevel scores one level of the candidate trie: node i of the level
// (log p of its digits so far in scores[i]) gets the next-byte
// distribution score returns for it, in batches of nodes [lo, hi) across
// GOMAXPROCS workers, and its ten children's log p come back, child
// 10·i + d for digit d.
func scoreLevel(ctx context.Context, scores []float64, batch int, score func(lo, hi int) ([][]float32, error)) ([]float64, error) {
	next := make([]float64, 10*len(scores))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	fail := func(err error) {
		mu.Lock()
		ferr = cmp.Or(ferr, err)
		mu.Unlock()
	}
	jobs := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := range jobs {
				hi := min(lo+batch, len(scores))
				lps, err := score(lo, hi)
				if err == nil && len(lps) != hi-lo {
					err = fmt.Errorf("%w: the scorer returned %d distributions for %d contexts", ErrInvalid, len(lps), hi-lo)
				}
				if err != nil {
					fail(err)
					continue
				}
				for k, lp := range lps {
					if len(lp) < 256 {
						fail(fmt.Errorf("%w: a next-byte distribution of %d values, want 256", ErrInvalid, len(lp)))
						break
					}
					i := lo + k
					for d := 0; d < 10; d++ {
						next[10*i+d] = scores[i] + float64(lp['0'+d])
					}
				}
			}
		}()
	}
	for lo := 0; lo < len(scores); lo += batch {
		if ctx.Err() != nil {
			break
		}
		jobs <- lo
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, ferr
	}
	return next, nil
}

// SecretBound is the lower bound on ε that the threshold test gives from
// the exposures of inserted and never-inserted secrets (the same test,
// ThresholdLowerBound, as the gradient canaries'): a secret is a trial,
// inserted ones flagged when their exposure passes a threshold.
func SecretBound(inserted, never []Exposure, delta, confidence float64) (LowerBound, error) {
	x := func(es []Exposure) []float64 {
		v := make([]float64, len(es))
		for i, e := range es {
			v[i] = e.Exposure
		}
		return v
	}
	return ThresholdLowerBound(x(inserted), x(never), delta, confidence)
}
