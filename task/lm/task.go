package lm

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/strata-fl/strata/task"
)

// Spec is what Prepare needs besides the settings.
type Spec struct {
	Config Config
	// Clients are the ids of the clients that hold data, in the
	// topology's order: client i gets Split.Shards[i].
	Clients []string
	Seed    uint64
	// CacheDir keeps the pre-trained backbone (CheckpointName); empty
	// keeps nothing.
	CacheDir string
	// Corpus is the loaded corpus; nil loads it from the located Go tree.
	Corpus *Corpus
	Logf   func(string, ...any)
}

// Task is the prepared LM task: the pre-trained backbone, the fixed
// adapters' A, the clients' shards and the evaluation windows.
type Task struct {
	Config  Config
	Seed    uint64
	Corpus  *Corpus
	Weights *Weights
	Adapter *Adapter
	Split   *Split

	ids   []string
	index map[string]int
	// The fixed evaluation windows: held-out code (the clients' domain)
	// and held-out prose (the pre-training domain).
	evalCode, finalCode   [][]byte
	evalProse, finalProse [][]byte
}

// Prepare loads the corpus, pre-trains (or loads the cached) backbone,
// draws the adapters' A and deals the clients' shards: the prepared task,
// the same in every process given the same settings and seed.
func Prepare(ctx context.Context, s Spec) (*Task, error) {
	c := s.Config.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	logf := s.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	corpus := s.Corpus
	if corpus == nil {
		root, err := LocateGoroot(c.Goroot)
		if err != nil {
			return nil, err
		}
		if corpus, err = LoadCorpus(root); err != nil {
			return nil, err
		}
	}
	split, err := corpus.SplitCode(len(s.Clients), c.HeldoutDirs, c.ShardBytes, s.Seed)
	if err != nil {
		return nil, err
	}
	win := c.Context + 1
	if len(split.Held) < 4*win || len(corpus.ProseHeld) < 4*win {
		return nil, fmt.Errorf("%w: the held-out text (%d bytes of code, %d of prose) is shorter than 4 windows: raise task.heldout_dirs", ErrConfig, len(split.Held), len(corpus.ProseHeld))
	}
	w, err := loadOrPretrain(ctx, c, s.Seed, corpus, s.CacheDir, logf)
	if err != nil {
		return nil, err
	}
	ad, err := NewAdapter(c.Arch(), c.LoraRank, c.LoraAlpha, c.LoraTargets, s.Seed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	t := &Task{Config: c, Seed: s.Seed, Corpus: corpus, Weights: w, Adapter: ad, Split: split,
		ids: append([]string(nil), s.Clients...), index: map[string]int{}}
	for i, id := range t.ids {
		t.index[id] = i
	}
	t.finalCode = spread(split.Held, c.FinalWindows, win)
	t.evalCode = spread(split.Held, c.EvalWindows, win)
	t.finalProse = spread(corpus.ProseHeld, max(c.FinalWindows/4, 4), win)
	t.evalProse = spread(corpus.ProseHeld, max(c.EvalWindows/4, 4), win)
	return t, nil
}

// Name implements task.Task.
func (t *Task) Name() string { return Name }

// Layout implements task.Task: the B matrices, ProjModule(l, p) +
// ".lora_B.weight", [out][rank] each.
func (t *Task) Layout() []task.Tensor {
	var l []task.Tensor
	for _, b := range t.Adapter.BLayout(t.Weights.Arch) {
		l = append(l, task.Tensor{Name: b.Name, Shape: b.Shape})
	}
	return l
}

// Initial implements task.Task: every B is zero, so version 0 is the
// pre-trained backbone exactly.
func (t *Task) Initial() []float64 { return make([]float64, task.Dim(t.Layout())) }

// Net binds θ to the backbone and adapters.
func (t *Task) Net(theta []float64) (*Net, error) { return NewNet(t.Weights, t.Adapter, theta) }

// Trainer implements task.Task.
func (t *Task) Trainer() (task.Trainer, error) { return clientTrainer{t}, nil }

type clientTrainer struct{ t *Task }

// Train runs a client's local SGD on its B (the backbone and A frozen):
// LocalSteps steps on LocalBatch windows drawn from its shard, seeded by
// the task seed, the client and the round. delta receives B_new − B.
func (c clientTrainer) Train(ctx context.Context, client string, round uint64, theta, delta []float64) (int, error) {
	t := c.t
	i, ok := t.index[client]
	if !ok {
		return 0, fmt.Errorf("lm: unknown client %q", client)
	}
	if len(delta) != len(theta) {
		return 0, fmt.Errorf("%w: delta of %d values for θ of %d", ErrShape, len(delta), len(theta))
	}
	net, err := t.Net(theta)
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	h.Write([]byte(client))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], round)
	h.Write(b[:])
	rng := rand.New(rand.NewPCG(t.Seed, h.Sum64()))
	shard := t.Split.Shards[i].Text
	win := t.Config.Context + 1
	lr := float32(t.Config.LocalLR)
	for s := 0; s < t.Config.LocalSteps; s++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		g := &Grads{B: net.NewBGrads()}
		batch := Windows(shard, t.Config.LocalBatch, win, rng)
		if _, err := net.Pass(batch, g, 1/float32(len(batch)*(win-1))); err != nil {
			return 0, err
		}
		for l := range net.B {
			for p, bm := range net.B[l] {
				for j := range bm {
					bm[j] -= lr * g.B[l][p][j]
				}
			}
		}
	}
	flat := net.flatB()
	for j := range delta {
		delta[j] = flat[j] - theta[j]
	}
	return len(shard) / win, nil
}

// flatB packs B back into θ's layout.
func (n *Net) flatB() []float64 {
	var out []float64
	for l := range n.B {
		for _, bm := range n.B[l] {
			for _, v := range bm {
				out = append(out, float64(v))
			}
		}
	}
	return out
}

// Score runs the model over windows (batched, in parallel) and sums the
// result.
func (n *Net) Score(ctx context.Context, windows [][]byte) (Result, error) {
	const batch = 16
	var (
		mu   sync.Mutex
		res  Result
		ferr error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for lo := 0; lo < len(windows); lo += batch {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		part := windows[lo:min(lo+batch, len(windows))]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, err := n.Pass(part, nil, 0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && ferr == nil {
				ferr = err
			}
			res.Add(r)
		}()
	}
	wg.Wait()
	return res, ferr
}

// Metric names of an LM evaluation; BitsPerByte is the gate's (primary).
const (
	MetricBitsPerByte      = "bits_per_byte"
	MetricPerplexity       = "perplexity"
	MetricAccuracy         = "next_token_accuracy"
	MetricProseBitsPerByte = "prose_bits_per_byte"
)

type evaluator struct {
	t           *Task
	code, prose [][]byte
}

// Evaluator implements task.Task: the held-out code's bits per byte
// (primary, lower is better), perplexity (per byte) and next-byte
// accuracy on EvalWindows fixed windows, and the held-out prose's bits
// per byte.
func (t *Task) Evaluator() task.Evaluator { return evaluator{t, t.evalCode, t.evalProse} }

// Final implements task.Task: the same on FinalWindows windows.
func (t *Task) Final() task.Evaluator { return evaluator{t, t.finalCode, t.finalProse} }

func (e evaluator) Evaluate(ctx context.Context, theta []float64) (task.Evaluation, error) {
	net, err := e.t.Net(theta)
	if err != nil {
		return task.Evaluation{}, err
	}
	code, err := net.Score(ctx, e.code)
	if err != nil {
		return task.Evaluation{}, err
	}
	prose, err := net.Score(ctx, e.prose)
	if err != nil {
		return task.Evaluation{}, err
	}
	return task.Evaluation{Loss: code.Loss(), Metrics: []task.Metric{
		{Name: MetricBitsPerByte, Value: code.BitsPerByte()},
		{Name: MetricPerplexity, Value: math.Exp(code.Loss())},
		{Name: MetricAccuracy, Value: code.Accuracy(), HigherIsBetter: true},
		{Name: MetricProseBitsPerByte, Value: prose.BitsPerByte()},
	}}, nil
}

// windowLosses is the mean loss of each window.
func (n *Net) windowLosses(ctx context.Context, windows [][]byte) ([]float64, error) {
	out := make([]float64, len(windows))
	for i, w := range windows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := n.Pass([][]byte{w}, nil, 0)
		if err != nil {
			return nil, err
		}
		out[i] = r.Loss()
	}
	return out, nil
}

// ExampleLosses implements task.Membership: the mean loss of each
// consecutive window of the given clients' shards.
func (t *Task) ExampleLosses(ctx context.Context, theta []float64, clients []string) ([]float64, error) {
	net, err := t.Net(theta)
	if err != nil {
		return nil, err
	}
	var ws [][]byte
	for _, c := range clients {
		i, ok := t.index[c]
		if !ok {
			return nil, fmt.Errorf("lm: unknown client %q", c)
		}
		ws = append(ws, Tiles(t.Split.Shards[i].Text, t.Config.Context+1)...)
	}
	return net.windowLosses(ctx, ws)
}

// HeldOutLosses implements task.Membership: the final held-out code
// windows.
func (t *Task) HeldOutLosses(ctx context.Context, theta []float64) ([]float64, error) {
	net, err := t.Net(theta)
	if err != nil {
		return nil, err
	}
	return net.windowLosses(ctx, t.finalCode)
}
