package mnist

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/strata-fl/strata/task"
)

// Model is a one-hidden-layer network split, as parameter-efficient
// fine-tuning splits a language model, into a frozen pre-trained backbone
// and a small trainable part:
//
//	x' = scale ⊙ x + shift          input adapter (per pixel), identity at start
//	h  = relu(W1 x' + b1)            backbone, frozen unless Full
//	y  = softmax(W2 h + b2)          head, trainable
//
// The trainable parameters travel as one flat vector θ laid out as
// [scale | shift | W2 | b2] and, when Full, [... | W1 | b1]. Only θ moves
// over the wire; the backbone ships with the checkpoint.
type Model struct {
	Hidden int
	Full   bool
	// W1 (Hidden×Pixels, row-major) and B1 are the pre-trained backbone.
	W1, B1 []float64
}

// Tensor names one tensor of θ, for trainers in other languages.
type Tensor = task.Tensor

// Layout returns the named tensors of θ in the order they are packed.
func (m *Model) Layout() []Tensor {
	l := []Tensor{
		{Name: "adapter.scale", Shape: []int{Pixels}},
		{Name: "adapter.shift", Shape: []int{Pixels}},
		{Name: "head.weight", Shape: []int{Classes, m.Hidden}},
		{Name: "head.bias", Shape: []int{Classes}},
	}
	if m.Full {
		l = append(l, Tensor{Name: "backbone.weight", Shape: []int{m.Hidden, Pixels}}, Tensor{Name: "backbone.bias", Shape: []int{m.Hidden}})
	}
	return l
}

// Dim returns the length of θ.
func (m *Model) Dim() int {
	d := 2*Pixels + Classes*m.Hidden + Classes
	if m.Full {
		d += m.Hidden*Pixels + m.Hidden
	}
	return d
}

// view splits θ into its tensors without copying.
type view struct {
	scale, shift, w2, b2, w1, b1 []float64
}

func (m *Model) view(theta []float64) view {
	h := m.Hidden
	v := view{
		scale: theta[0:Pixels],
		shift: theta[Pixels : 2*Pixels],
		w2:    theta[2*Pixels : 2*Pixels+Classes*h],
		b2:    theta[2*Pixels+Classes*h : 2*Pixels+Classes*h+Classes],
		w1:    m.W1,
		b1:    m.B1,
	}
	if m.Full {
		o := 2*Pixels + Classes*h + Classes
		v.w1 = theta[o : o+h*Pixels]
		v.b1 = theta[o+h*Pixels : o+h*Pixels+h]
	}
	return v
}

// Checkpoint is a pre-trained network: backbone and head.
type Checkpoint struct {
	Hidden int
	W1, B1 []float64
	W2, B2 []float64
}

// Model returns the fine-tuning model built on the checkpoint and its θ at
// the start of fine-tuning (identity adapter, pre-trained head).
func (c *Checkpoint) Model(full bool) (*Model, []float64) {
	m := &Model{Hidden: c.Hidden, Full: full, W1: c.W1, B1: c.B1}
	theta := make([]float64, m.Dim())
	v := m.view(theta)
	for i := range v.scale {
		v.scale[i] = 1
	}
	copy(v.w2, c.W2)
	copy(v.b2, c.B2)
	if full {
		copy(v.w1, c.W1)
		copy(v.b1, c.B1)
	}
	return m, theta
}

// ErrShape reports a θ or data of the wrong size.
var ErrShape = errors.New("mnist: wrong shape")

// Workspace holds the buffers of one forward/backward pass, so that a
// trainer reuses them across steps instead of allocating per batch.
type Workspace struct {
	x, z1, a1, z2, dz1, dx []float64
}

func (w *Workspace) ensure(n, h int) {
	grow := func(b *[]float64, size int) {
		if cap(*b) < size {
			*b = make([]float64, size)
		}
		*b = (*b)[:size]
	}
	grow(&w.x, n*Pixels)
	grow(&w.z1, n*h)
	grow(&w.a1, n*h)
	grow(&w.z2, n*Classes)
	grow(&w.dz1, n*h)
	grow(&w.dx, n*Pixels)
}

// loadBatch writes the adapted inputs x' = scale ⊙ x + shift of examples
// idx into ws.x, and the raw inputs into raw when it is not nil.
func loadBatch(s *Set, idx []int, v view, x, raw []float64) {
	for r, i := range idx {
		img := s.Images[i*Pixels : (i+1)*Pixels]
		row := x[r*Pixels : (r+1)*Pixels]
		for j, p := range img {
			f := float64(p) / 255
			if raw != nil {
				raw[r*Pixels+j] = f
			}
			row[j] = v.scale[j]*f + v.shift[j]
		}
	}
}

func gemm(tA, tB blas.Transpose, alpha float64, a, b blas64.General, beta float64, c blas64.General) {
	blas64.Gemm(tA, tB, alpha, a, b, beta, c)
}

func general(rows, cols int, data []float64) blas64.General {
	return blas64.General{Rows: rows, Cols: cols, Stride: cols, Data: data}
}

// forward computes logits for the batch already in ws.x; it returns them in
// ws.z2 (n×Classes).
func (m *Model) forward(v view, n int, ws *Workspace) {
	h := m.Hidden
	for r := 0; r < n; r++ {
		copy(ws.z1[r*h:(r+1)*h], v.b1)
		copy(ws.z2[r*Classes:(r+1)*Classes], v.b2)
	}
	gemm(blas.NoTrans, blas.Trans, 1, general(n, Pixels, ws.x), general(h, Pixels, v.w1), 1, general(n, h, ws.z1))
	for i, z := range ws.z1 {
		ws.a1[i] = math.Max(z, 0)
	}
	gemm(blas.NoTrans, blas.Trans, 1, general(n, h, ws.a1), general(Classes, h, v.w2), 1, general(n, Classes, ws.z2))
}

// LossGrad returns the mean cross-entropy of θ on the examples idx of s and
// writes its gradient into grad (len Dim()). If adapterFrozen, the adapter's
// gradient is left zero (used for pre-training the backbone).
func (m *Model) LossGrad(theta []float64, s *Set, idx []int, grad []float64, ws *Workspace, adapterFrozen bool) (float64, error) {
	if len(theta) != m.Dim() || len(grad) != m.Dim() {
		return 0, fmt.Errorf("%w: θ has %d values, grad %d, model needs %d", ErrShape, len(theta), len(grad), m.Dim())
	}
	n, h := len(idx), m.Hidden
	ws.ensure(n, h)
	v := m.view(theta)
	g := m.view(grad)
	for i := range grad {
		grad[i] = 0
	}
	raw := ws.dx // raw inputs, needed for d/dscale; dx is reused below after
	loadBatch(s, idx, v, ws.x, raw)
	m.forward(v, n, ws)
	loss := 0.0
	for r := 0; r < n; r++ {
		row := ws.z2[r*Classes : (r+1)*Classes]
		loss += softmaxGrad(row, int(s.Labels[idx[r]]), 1/float64(n))
	}
	// row of z2 now holds dL/dz2.
	gemm(blas.Trans, blas.NoTrans, 1, general(n, Classes, ws.z2), general(n, h, ws.a1), 0, general(Classes, h, g.w2))
	for r := 0; r < n; r++ {
		for k := 0; k < Classes; k++ {
			g.b2[k] += ws.z2[r*Classes+k]
		}
	}
	gemm(blas.NoTrans, blas.NoTrans, 1, general(n, Classes, ws.z2), general(Classes, h, v.w2), 0, general(n, h, ws.dz1))
	for i, z := range ws.z1 {
		if z <= 0 {
			ws.dz1[i] = 0
		}
	}
	if m.Full {
		gemm(blas.Trans, blas.NoTrans, 1, general(n, h, ws.dz1), general(n, Pixels, ws.x), 0, general(h, Pixels, g.w1))
		for r := 0; r < n; r++ {
			for j := 0; j < h; j++ {
				g.b1[j] += ws.dz1[r*h+j]
			}
		}
	}
	if !adapterFrozen {
		// dx' = dz1 · W1; d scale = Σ dx'⊙x, d shift = Σ dx'. raw x is in ws.dx,
		// so compute dx' into ws.x (x' is no longer needed).
		gemm(blas.NoTrans, blas.NoTrans, 1, general(n, h, ws.dz1), general(h, Pixels, v.w1), 0, general(n, Pixels, ws.x))
		for r := 0; r < n; r++ {
			dxr := ws.x[r*Pixels : (r+1)*Pixels]
			xr := raw[r*Pixels : (r+1)*Pixels]
			for j, d := range dxr {
				g.scale[j] += d * xr[j]
				g.shift[j] += d
			}
		}
	}
	return loss / float64(n), nil
}

// softmaxGrad turns logits into weight·(softmax − onehot) in place and
// returns the cross-entropy.
func softmaxGrad(z []float64, label int, weight float64) float64 {
	mx := z[0]
	for _, v := range z[1:] {
		mx = math.Max(mx, v)
	}
	sum := 0.0
	for i, v := range z {
		z[i] = math.Exp(v - mx)
		sum += z[i]
	}
	loss := -math.Log(z[label]/sum + 1e-300)
	for i := range z {
		z[i] = weight * z[i] / sum
	}
	z[label] -= weight
	return loss
}

// Evaluate returns accuracy and mean loss of θ on s, in batches.
func (m *Model) Evaluate(theta []float64, s *Set) (acc, loss float64, err error) {
	if len(theta) != m.Dim() {
		return 0, 0, fmt.Errorf("%w: θ has %d values, model needs %d", ErrShape, len(theta), m.Dim())
	}
	if s.Len() == 0 {
		return 0, 0, fmt.Errorf("mnist: evaluate on an empty set")
	}
	const batch = 500
	var ws Workspace
	v := m.view(theta)
	idx := make([]int, 0, batch)
	correct := 0
	for lo := 0; lo < s.Len(); lo += batch {
		hi := min(lo+batch, s.Len())
		idx = idx[:0]
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		n := len(idx)
		ws.ensure(n, m.Hidden)
		loadBatch(s, idx, v, ws.x, nil)
		m.forward(v, n, &ws)
		for r := 0; r < n; r++ {
			row := ws.z2[r*Classes : (r+1)*Classes]
			best := 0
			for k := range row {
				if row[k] > row[best] {
					best = k
				}
			}
			label := int(s.Labels[idx[r]])
			if best == label {
				correct++
			}
			loss += softmaxGrad(row, label, 1)
		}
	}
	return float64(correct) / float64(s.Len()), loss / float64(s.Len()), nil
}

// PretrainConfig sets up central pre-training of the checkpoint. Zero
// fields take the defaults given with each.
type PretrainConfig struct {
	// Hidden is the backbone's hidden units, 1..MaxHidden; default 128.
	Hidden int
	// Epochs is the passes over the data; default 4, ≥ 0.
	Epochs int
	// Batch is the minibatch size, in examples; default 32, ≥ 0.
	Batch int
	// LR is the SGD learning rate, finite; default 0.1, ≥ 0.
	LR float64
	// Seed seeds the initialisation and the shuffling; default 0.
	Seed uint64
	// OnEpoch, when set, is told of each epoch's mean training loss.
	OnEpoch func(epoch int, loss float64)
}

// MaxHidden bounds the backbone's hidden units.
const MaxHidden = 4096

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c PretrainConfig) withDefaults() PretrainConfig {
	if c.Hidden == 0 {
		c.Hidden = 128
	}
	if c.Epochs == 0 {
		c.Epochs = 4
	}
	if c.Batch == 0 {
		c.Batch = 32
	}
	if c.LR == 0 {
		c.LR = 0.1
	}
	return c
}

// Validate names the field that is wrong (ErrConfig). Zero fields are
// valid: they take their defaults.
func (c PretrainConfig) Validate() error {
	switch c = c.withDefaults(); {
	case c.Hidden < 1 || c.Hidden > MaxHidden:
		return fmt.Errorf("%w: PretrainConfig.Hidden %d: want 1..%d units (0 means 128)", ErrConfig, c.Hidden, MaxHidden)
	case c.Epochs < 1:
		return fmt.Errorf("%w: PretrainConfig.Epochs %d: want ≥ 1 (0 means 4)", ErrConfig, c.Epochs)
	case c.Batch < 1:
		return fmt.Errorf("%w: PretrainConfig.Batch %d: want ≥ 1 examples (0 means 32)", ErrConfig, c.Batch)
	case !(c.LR > 0) || math.IsInf(c.LR, 1):
		return fmt.Errorf("%w: PretrainConfig.LR %v: want finite > 0 (0 means 0.1)", ErrConfig, c.LR)
	}
	return nil
}

// Pretrain trains a checkpoint centrally on public data with minibatch SGD.
// It is deterministic for a seed. A configuration that fails Validate is
// returned as that error.
func Pretrain(s *Set, cfg PretrainConfig) (*Checkpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if s.Len() == 0 {
		return nil, fmt.Errorf("mnist: pre-train on an empty set")
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	h := cfg.Hidden
	ck := &Checkpoint{Hidden: h, W1: make([]float64, h*Pixels), B1: make([]float64, h), W2: make([]float64, Classes*h), B2: make([]float64, Classes)}
	he := math.Sqrt(2.0 / Pixels)
	for i := range ck.W1 {
		ck.W1[i] = rng.NormFloat64() * he
	}
	for i := range ck.W2 {
		ck.W2[i] = rng.NormFloat64() * math.Sqrt(1.0/float64(h))
	}
	m, theta := ck.Model(true)
	grad := make([]float64, m.Dim())
	var ws Workspace
	order := rng.Perm(s.Len())
	for e := 0; e < cfg.Epochs; e++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		total, batches := 0.0, 0
		for lo := 0; lo < len(order); lo += cfg.Batch {
			idx := order[lo:min(lo+cfg.Batch, len(order))]
			loss, err := m.LossGrad(theta, s, idx, grad, &ws, true)
			if err != nil {
				return nil, err
			}
			for i, g := range grad {
				theta[i] -= cfg.LR * g
			}
			total += loss
			batches++
		}
		if cfg.OnEpoch != nil {
			cfg.OnEpoch(e+1, total/float64(batches))
		}
	}
	v := m.view(theta)
	copy(ck.W1, v.w1)
	copy(ck.B1, v.b1)
	copy(ck.W2, v.w2)
	copy(ck.B2, v.b2)
	return ck, nil
}

// Losses returns the cross-entropy loss of θ on each example of s, in
// order: the score of a loss-threshold membership inference attack.
func (m *Model) Losses(theta []float64, s *Set) ([]float64, error) {
	if len(theta) != m.Dim() {
		return nil, fmt.Errorf("%w: θ has %d values, model needs %d", ErrShape, len(theta), m.Dim())
	}
	const batch = 500
	var ws Workspace
	v := m.view(theta)
	out := make([]float64, 0, s.Len())
	idx := make([]int, 0, batch)
	for lo := 0; lo < s.Len(); lo += batch {
		idx = idx[:0]
		for i := lo; i < min(lo+batch, s.Len()); i++ {
			idx = append(idx, i)
		}
		ws.ensure(len(idx), m.Hidden)
		loadBatch(s, idx, v, ws.x, nil)
		m.forward(v, len(idx), &ws)
		for r := range idx {
			out = append(out, softmaxGrad(ws.z2[r*Classes:(r+1)*Classes], int(s.Labels[idx[r]]), 1))
		}
	}
	return out, nil
}
