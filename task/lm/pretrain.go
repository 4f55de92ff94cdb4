package lm

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// PretrainConfig is the central pre-training of the backbone.
type PretrainConfig struct {
	Arch  Arch
	Steps int     // Adam steps
	Batch int     // windows per step
	LR    float64 // peak rate, decayed linearly to LR/10
	Seed  uint64
	// Workers run the batch's parts in parallel; default GOMAXPROCS. The
	// batch is always cut into the same parts, summed in a fixed order,
	// so the result does not depend on Workers.
	Workers int
	// OnStep, when set, is called every 100 steps and at the last with
	// the mean loss (nats per byte) since the previous call.
	OnStep func(step int, loss float64)
}

// pretrainParts is how many parts a pre-training batch is cut into.
const pretrainParts = 4

// Pretrain trains a backbone from scratch on text with Adam, deterministic
// from the seed.
func Pretrain(ctx context.Context, text []byte, c PretrainConfig) (*Weights, error) {
	w, err := InitWeights(c.Arch, c.Seed)
	if err != nil {
		return nil, err
	}
	if len(text) <= c.Arch.Context+1 {
		return nil, fmt.Errorf("%w: %d bytes of pre-training text: want more than a window", ErrConfig, len(text))
	}
	workers := c.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 4)
	}
	parts := min(pretrainParts, c.Batch)
	grads := make([]*Weights, parts)
	for i := range grads {
		grads[i], _ = NewWeights(c.Arch)
	}
	params := w.Tensors()
	m, v := make([][]float32, len(params)), make([][]float32, len(params))
	for i, p := range params {
		m[i], v[i] = make([]float32, len(p.Data)), make([]float32, len(p.Data))
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x6c6d2d707265))
	net := &Net{W: w}
	const b1, b2, eps = 0.9, 0.98, 1e-8
	var since float64
	var sinceN int
	for step := 1; step <= c.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := Windows(text, c.Batch, c.Arch.Context+1, rng)
		results := make([]Result, parts)
		errs := make([]error, parts)
		var wg sync.WaitGroup
		sem := make(chan struct{}, workers)
		scale := 1 / float32(c.Batch*c.Arch.Context)
		for k := 0; k < parts; k++ {
			lo, hi := k*c.Batch/parts, (k+1)*c.Batch/parts
			for _, t := range grads[k].Tensors() {
				clear(t.Data)
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				results[k], errs[k] = net.Pass(batch[lo:hi], &Grads{W: grads[k]}, scale)
			}()
		}
		wg.Wait()
		var res Result
		for k := range results {
			if errs[k] != nil {
				return nil, errs[k]
			}
			res.Add(results[k])
		}
		since += res.Loss()
		sinceN++
		gts := make([][]NamedTensor, parts)
		for k := range grads {
			gts[k] = grads[k].Tensors()
		}
		frac := float64(step-1) / float64(max(c.Steps-1, 1))
		lr := c.LR * (1 - 0.9*frac)
		if step <= 50 { // warm-up
			lr *= float64(step) / 50
		}
		bc1, bc2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
		for i, p := range params {
			mi, vi := m[i], v[i]
			for j := range p.Data {
				var g float32
				for k := range gts {
					g += gts[k][i].Data[j]
				}
				mi[j] = b1*mi[j] + (1-b1)*g
				vi[j] = b2*vi[j] + (1-b2)*g*g
				p.Data[j] -= float32(lr * (float64(mi[j]) / bc1) / (math.Sqrt(float64(vi[j])/bc2) + eps))
			}
		}
		if c.OnStep != nil && (step%100 == 0 || step == c.Steps) {
			c.OnStep(step, since/float64(sinceN))
			since, sinceN = 0, 0
		}
	}
	return w, nil
}

// checkpointFile is the cached backbone and the key it was trained for.
type checkpointFile struct {
	Key     string               `msgpack:"key"`
	Arch    Arch                 `msgpack:"arch"`
	Tensors map[string][]float32 `msgpack:"tensors"`
}

// CheckpointName is the file in the cache directory that keeps the
// pre-trained backbone.
const CheckpointName = "lm-checkpoint.msgpack"

// SaveWeights writes a backbone, with the key it was trained for, to path
// (atomically).
func SaveWeights(path, key string, w *Weights) error {
	f := checkpointFile{Key: key, Arch: w.Arch, Tensors: map[string][]float32{}}
	for _, t := range w.Tensors() {
		f.Tensors[t.Name] = t.Data
	}
	b, err := msgpack.Marshal(f)
	if err != nil {
		return fmt.Errorf("lm: save checkpoint: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("lm: save checkpoint: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("lm: save checkpoint: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("lm: save checkpoint: %w", err)
	}
	return nil
}

// LoadWeights reads a backbone SaveWeights wrote and returns it with its
// key.
func LoadWeights(path string) (*Weights, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	w, key, err := DecodeWeights(b)
	if err != nil {
		return nil, "", fmt.Errorf("lm: checkpoint %s: %w", path, err)
	}
	return w, key, nil
}

// DecodeWeights decodes a checkpoint file's bytes: the backbone and its
// key. Every tensor must be present with its shape's number of values.
func DecodeWeights(b []byte) (*Weights, string, error) {
	var f checkpointFile
	if err := msgpack.Unmarshal(b, &f); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrShape, err)
	}
	if err := f.Arch.Validate(); err != nil {
		return nil, "", err
	}
	// The tensors are in b: a shape that needs more values than b holds is
	// refused before anything is allocated for it.
	if need := f.Arch.params(); need > len(b)/4 {
		return nil, "", fmt.Errorf("%w: a %+v backbone has %d values, the file only %d bytes", ErrShape, f.Arch, need, len(b))
	}
	w, err := NewWeights(f.Arch)
	if err != nil {
		return nil, "", err
	}
	for _, t := range w.Tensors() {
		d, ok := f.Tensors[t.Name]
		if !ok || len(d) != len(t.Data) {
			return nil, "", fmt.Errorf("%w: tensor %s has %d values, want %d", ErrShape, t.Name, len(d), len(t.Data))
		}
		copy(t.Data, d)
	}
	return w, f.Key, nil
}

// pretrainKey names what a cached backbone was trained from: a different
// key pre-trains again. The revision (v2: float32 exp and tanh kernels,
// folded adapters) changes whenever the kernels' arithmetic does, so that
// two processes of a job never pair a cached backbone with a freshly
// trained one that differs from it in the last bits.
func pretrainKey(c Config, seed uint64, corpus *Corpus) string {
	a := c.Arch()
	return fmt.Sprintf("lm v2 arch=%+v steps=%d batch=%d lr=%g seed=%d go=%q prose=%d", a, c.PretrainSteps, c.PretrainBatch, c.PretrainLR, seed, corpus.Version, len(corpus.ProseTrain))
}

// pretrained keeps, per key, the backbones this process has loaded or
// trained: read-only once made, they are shared by every task of the
// process (a job's --baseline twin prepares the same task in another data
// directory).
var pretrained sync.Map // key → *Weights

func loadOrPretrain(ctx context.Context, c Config, seed uint64, corpus *Corpus, dir string, logf func(string, ...any)) (*Weights, error) {
	key := pretrainKey(c, seed, corpus)
	if w, ok := pretrained.Load(key); ok {
		if dir != "" {
			if _, k, err := LoadWeights(filepath.Join(dir, CheckpointName)); err != nil || k != key {
				if err := SaveWeights(filepath.Join(dir, CheckpointName), key, w.(*Weights)); err != nil {
					return nil, err
				}
			}
		}
		return w.(*Weights), nil
	}
	w, err := loadOrPretrainOnce(ctx, c, key, seed, corpus, dir, logf)
	if err != nil {
		return nil, err
	}
	pretrained.Store(key, w)
	return w, nil
}

func loadOrPretrainOnce(ctx context.Context, c Config, key string, seed uint64, corpus *Corpus, dir string, logf func(string, ...any)) (*Weights, error) {
	path := filepath.Join(dir, CheckpointName)
	if dir != "" {
		if w, k, err := LoadWeights(path); err == nil && k == key && w.Arch == c.Arch() {
			return w, nil
		} else if err == nil || !os.IsNotExist(err) {
			logf("lm: checkpoint %s is for another configuration or unreadable: pre-training again", path)
		}
	}
	logf("lm: pre-training the %d-layer d_model %d transformer on %d bytes of prose (%d steps of %d windows)", c.Layers, c.DModel, len(corpus.ProseTrain), c.PretrainSteps, c.PretrainBatch)
	w, err := Pretrain(ctx, corpus.ProseTrain, PretrainConfig{Arch: c.Arch(), Steps: c.PretrainSteps, Batch: c.PretrainBatch, LR: c.PretrainLR, Seed: seed,
		OnStep: func(step int, loss float64) {
			logf("lm:   pre-train step %d/%d: %.3f bits per byte", step, c.PretrainSteps, loss/math.Ln2)
		}})
	if err != nil {
		return nil, err
	}
	if dir != "" {
		if err := SaveWeights(path, key, w); err != nil {
			return nil, err
		}
	}
	return w, nil
}
