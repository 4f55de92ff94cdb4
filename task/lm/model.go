package lm

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Vocab is the byte-level vocabulary: token i is byte i.
const Vocab = 256

// ErrShape reports tensors or token windows that do not fit the model.
var ErrShape = errors.New("lm: shape mismatch")

// Arch is the transformer's shape.
type Arch struct {
	// Layers is the number of transformer blocks, ≥ 1.
	Layers int `msgpack:"layers"`
	// DModel is the residual width, a multiple of Heads.
	DModel int `msgpack:"d_model"`
	// Heads is the number of attention heads.
	Heads int `msgpack:"heads"`
	// Context is the longest window the model reads (learned positions).
	Context int `msgpack:"context"`
	// Hidden is the MLP's inner width.
	Hidden int `msgpack:"hidden"`
}

// Validate names the field that is wrong.
func (a Arch) Validate() error {
	switch {
	case a.Layers < 1 || a.Layers > 64:
		return fmt.Errorf("%w: layers %d: want 1..64", ErrShape, a.Layers)
	case a.Heads < 1 || a.DModel < a.Heads || a.DModel%a.Heads != 0 || a.DModel > 4096:
		return fmt.Errorf("%w: d_model %d, heads %d: want d_model ≤ 4096 a positive multiple of heads", ErrShape, a.DModel, a.Heads)
	case a.Context < 2 || a.Context > 4096:
		return fmt.Errorf("%w: context %d: want 2..4096", ErrShape, a.Context)
	case a.Hidden < 1 || a.Hidden > 16384:
		return fmt.Errorf("%w: hidden %d: want 1..16384", ErrShape, a.Hidden)
	}
	return nil
}

// params is the backbone's number of values.
func (a Arch) params() int {
	d := a.DModel
	return 2*Vocab*d + a.Context*d + d + a.Layers*(2*d+4*d*d+2*d*a.Hidden)
}

// The projections of a block, in the order Layer.W holds them. Their
// names are the Hugging Face (Llama) module names, which PEFT's
// target_modules use.
const (
	ProjQ = iota
	ProjK
	ProjV
	ProjO
	ProjUp
	ProjDown
	numProj
)

// ProjNames are the projections' short names (LoRA targets) and module
// paths within a block.
var (
	ProjNames   = [numProj]string{"q", "k", "v", "o", "up", "down"}
	projModules = [numProj]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"}
)

// ProjModule is the module path of projection p of layer l
// ("layers.0.self_attn.q_proj"): the backbone's weight is that plus
// ".weight", and PEFT's adapter tensors are "base_model.model." + that +
// ".lora_A.weight" / ".lora_B.weight".
func ProjModule(l, p int) string { return fmt.Sprintf("layers.%d.%s", l, projModules[p]) }

// projDims returns projection p's input and output widths.
func (a Arch) projDims(p int) (in, out int) {
	switch p {
	case ProjUp:
		return a.DModel, a.Hidden
	case ProjDown:
		return a.Hidden, a.DModel
	}
	return a.DModel, a.DModel
}

// Layer is one pre-norm block:
//
//	x += o_proj(attn(q_proj(h), k_proj(h), v_proj(h))),  h = rmsnorm(x)·norm1
//	x += down_proj(gelu(up_proj(h))),                    h = rmsnorm(x)·norm2
type Layer struct {
	Norm1, Norm2 []float32 // [DModel]
	// W are the projections' weights, [out][in] row-major (PyTorch's
	// nn.Linear layout), indexed by ProjQ…ProjDown; no biases.
	W [numProj][]float32
}

// Weights is the backbone: every tensor in float32.
type Weights struct {
	Arch   Arch
	Embed  []float32 // [Vocab][DModel]
	Pos    []float32 // [Context][DModel], learned positions
	Layers []Layer
	Norm   []float32 // [DModel], the final norm
	Head   []float32 // [Vocab][DModel], the output projection (untied)
}

// NamedTensor is one tensor of the backbone or of an adapter, named as a
// Hugging Face / safetensors export names it, with its data (shared, not
// copied).
type NamedTensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Tensors lists the backbone's tensors in a fixed order, sharing w's data:
// embed_tokens.weight, embed_positions.weight, then per layer
// input_layernorm, the four attention projections,
// post_attention_layernorm, mlp.up_proj, mlp.down_proj, and last norm.weight
// and lm_head.weight.
func (w *Weights) Tensors() []NamedTensor {
	a := w.Arch
	d := a.DModel
	ts := []NamedTensor{
		{"embed_tokens.weight", []int{Vocab, d}, w.Embed},
		{"embed_positions.weight", []int{a.Context, d}, w.Pos},
	}
	for l := range w.Layers {
		L := &w.Layers[l]
		ts = append(ts, NamedTensor{fmt.Sprintf("layers.%d.input_layernorm.weight", l), []int{d}, L.Norm1})
		for p := ProjQ; p <= ProjO; p++ {
			in, out := a.projDims(p)
			ts = append(ts, NamedTensor{ProjModule(l, p) + ".weight", []int{out, in}, L.W[p]})
		}
		ts = append(ts, NamedTensor{fmt.Sprintf("layers.%d.post_attention_layernorm.weight", l), []int{d}, L.Norm2})
		for p := ProjUp; p <= ProjDown; p++ {
			in, out := a.projDims(p)
			ts = append(ts, NamedTensor{ProjModule(l, p) + ".weight", []int{out, in}, L.W[p]})
		}
	}
	return append(ts, NamedTensor{"norm.weight", []int{d}, w.Norm}, NamedTensor{"lm_head.weight", []int{Vocab, d}, w.Head})
}

// NewWeights returns a backbone of the given shape, all zero.
func NewWeights(a Arch) (*Weights, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	d := a.DModel
	w := &Weights{Arch: a, Embed: make([]float32, Vocab*d), Pos: make([]float32, a.Context*d),
		Layers: make([]Layer, a.Layers), Norm: make([]float32, d), Head: make([]float32, Vocab*d)}
	for l := range w.Layers {
		L := &w.Layers[l]
		L.Norm1, L.Norm2 = make([]float32, d), make([]float32, d)
		for p := range L.W {
			in, out := a.projDims(p)
			L.W[p] = make([]float32, in*out)
		}
	}
	return w, nil
}

// InitWeights returns a freshly initialised backbone (GPT-2's scheme:
// N(0, 0.02²) weights, residual projections scaled by 1/√(2·Layers), unit
// norms), deterministic from the seed.
func InitWeights(a Arch, seed uint64) (*Weights, error) {
	w, err := NewWeights(a)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c6d2d696e6974))
	fill := func(x []float32, std float64) {
		for i := range x {
			x[i] = float32(rng.NormFloat64() * std)
		}
	}
	fill(w.Embed, 0.02)
	fill(w.Pos, 0.01)
	resid := 0.02 / math.Sqrt(2*float64(a.Layers))
	for l := range w.Layers {
		L := &w.Layers[l]
		for i := range L.Norm1 {
			L.Norm1[i], L.Norm2[i] = 1, 1
		}
		for p := range L.W {
			std := 0.02
			if p == ProjO || p == ProjDown {
				std = resid
			}
			fill(L.W[p], std)
		}
	}
	for i := range w.Norm {
		w.Norm[i] = 1
	}
	fill(w.Head, 0.02)
	return w, nil
}

// Adapter is a set of LoRA adapters (Hu et al. 2021) on some projections:
// projection p of layer l computes h·Wᵀ + (Alpha/Rank)·(h·Aᵀ)·Bᵀ, with A
// [Rank][in] and B [out][Rank]. A is fixed (FFA-LoRA, see the package doc)
// and stored here; B is the trainable part and lives in θ.
type Adapter struct {
	Rank  int     `msgpack:"rank"`
	Alpha float64 `msgpack:"alpha"`
	// A[l][p] is nil for projections without an adapter.
	A [][numProj][]float32 `msgpack:"a"`
}

// Scale is the adapters' scaling Alpha/Rank.
func (ad *Adapter) Scale() float32 { return float32(ad.Alpha / float64(ad.Rank)) }

// Has reports whether projection p of layer l has an adapter.
func (ad *Adapter) Has(l, p int) bool { return ad != nil && l < len(ad.A) && ad.A[l][p] != nil }

// NewAdapter draws the fixed A matrices for the targeted projections
// (ProjNames) from the seed: N(0, 1/in), so that h·Aᵀ has the scale of h.
func NewAdapter(a Arch, rank int, alpha float64, targets []string, seed uint64) (*Adapter, error) {
	if rank < 1 || rank > a.DModel {
		return nil, fmt.Errorf("%w: lora rank %d: want 1..d_model %d", ErrShape, rank, a.DModel)
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("%w: lora alpha %v: want a finite positive number", ErrShape, alpha)
	}
	var want [numProj]bool
	for _, t := range targets {
		p := projIndex(t)
		if p < 0 {
			return nil, fmt.Errorf("%w: lora target %q: want some of %v", ErrShape, t, ProjNames)
		}
		if want[p] {
			return nil, fmt.Errorf("%w: lora target %q is named twice", ErrShape, t)
		}
		want[p] = true
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: lora targets: want at least one of %v", ErrShape, ProjNames)
	}
	ad := &Adapter{Rank: rank, Alpha: alpha, A: make([][numProj][]float32, a.Layers)}
	rng := rand.New(rand.NewPCG(seed, 0x6c6f72612d41))
	for l := 0; l < a.Layers; l++ {
		for p := 0; p < numProj; p++ {
			if !want[p] {
				continue
			}
			in, _ := a.projDims(p)
			A := make([]float32, rank*in)
			std := 1 / math.Sqrt(float64(in))
			for i := range A {
				A[i] = float32(rng.NormFloat64() * std)
			}
			ad.A[l][p] = A
		}
	}
	return ad, nil
}

func projIndex(name string) int {
	for i, n := range ProjNames {
		if n == name {
			return i
		}
	}
	return -1
}

// BLayout returns the adapters' B tensors in packing order (layer by
// layer, projections in ProjNames order): θ's layout. The names are the
// modules' plus ".lora_B.weight", shape [out][Rank].
func (ad *Adapter) BLayout(a Arch) []NamedTensor {
	var ts []NamedTensor
	for l := range ad.A {
		for p := 0; p < numProj; p++ {
			if ad.A[l][p] == nil {
				continue
			}
			_, out := a.projDims(p)
			ts = append(ts, NamedTensor{Name: ProjModule(l, p) + ".lora_B.weight", Shape: []int{out, ad.Rank}})
		}
	}
	return ts
}

// ATensors lists the fixed A tensors, in BLayout's order, named
// module + ".lora_A.weight", shape [Rank][in], sharing ad's data.
func (ad *Adapter) ATensors(a Arch) []NamedTensor {
	var ts []NamedTensor
	for l := range ad.A {
		for p := 0; p < numProj; p++ {
			if ad.A[l][p] == nil {
				continue
			}
			in, _ := a.projDims(p)
			ts = append(ts, NamedTensor{Name: ProjModule(l, p) + ".lora_A.weight", Shape: []int{ad.Rank, in}, Data: ad.A[l][p]})
		}
	}
	return ts
}

// Net is a backbone with (optionally) adapters and their B matrices: what
// the forward pass reads. B[l][p] is [out][Rank], nil without an adapter.
type Net struct {
	W  *Weights
	Ad *Adapter
	B  [][numProj][]float32
}

// NewNet binds the backbone, the adapter and B given as θ (float64, the
// layout of Ad.BLayout); a nil adapter has no θ.
func NewNet(w *Weights, ad *Adapter, theta []float64) (*Net, error) {
	n := &Net{W: w, Ad: ad}
	if ad == nil {
		if len(theta) != 0 {
			return nil, fmt.Errorf("%w: θ of %d values for a model without adapters", ErrShape, len(theta))
		}
		return n, nil
	}
	if len(ad.A) != w.Arch.Layers {
		return nil, fmt.Errorf("%w: adapter for %d layers, backbone has %d", ErrShape, len(ad.A), w.Arch.Layers)
	}
	n.B = make([][numProj][]float32, len(ad.A))
	off := 0
	for l := range ad.A {
		for p := 0; p < numProj; p++ {
			if ad.A[l][p] == nil {
				continue
			}
			_, out := w.Arch.projDims(p)
			k := out * ad.Rank
			if off+k > len(theta) {
				return nil, fmt.Errorf("%w: θ has %d values, the adapters need more", ErrShape, len(theta))
			}
			b := make([]float32, k)
			for i := range b {
				b[i] = float32(theta[off+i])
			}
			n.B[l][p] = b
			off += k
		}
	}
	if off != len(theta) {
		return nil, fmt.Errorf("%w: θ has %d values, the adapters %d", ErrShape, len(theta), off)
	}
	return n, nil
}

// Grads receives gradients. W, when non-nil, receives the backbone's (a
// Weights of the same shape); B, when non-nil, the adapters' B (the
// shape of Net.B); A, when non-nil, the adapters' A (only the gradient test
// and the product-averaging comparison use it: FFA-LoRA never trains A).
type Grads struct {
	W *Weights
	B [][numProj][]float32
	A [][numProj][]float32
}

// NewBGrads returns zero gradients for n's B matrices.
func (n *Net) NewBGrads() [][numProj][]float32 {
	g := make([][numProj][]float32, len(n.B))
	for l := range n.B {
		for p := range n.B[l] {
			if n.B[l][p] != nil {
				g[l][p] = make([]float32, len(n.B[l][p]))
			}
		}
	}
	return g
}

// Result sums a pass over windows: the cross-entropy (nats) of every
// predicted byte, how many bytes were predicted and how many of them were
// the most likely byte.
type Result struct {
	LossSum float64
	Tokens  int
	Correct int
}

// Add accumulates o.
func (r *Result) Add(o Result) {
	r.LossSum += o.LossSum
	r.Tokens += o.Tokens
	r.Correct += o.Correct
}

// Loss is the mean cross-entropy per byte in nats.
func (r Result) Loss() float64 { return r.LossSum / float64(r.Tokens) }

// BitsPerByte is the mean cross-entropy per byte in bits.
func (r Result) BitsPerByte() float64 { return r.Loss() / math.Ln2 }

// Accuracy is the fraction of bytes predicted exactly (argmax).
func (r Result) Accuracy() float64 { return float64(r.Correct) / float64(r.Tokens) }

// gemm computes c = alpha·op(a)·op(b) + beta·c on row-major matrices
// given as (data, rows, cols, stride) views.
func gemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	tA, tB := blas.NoTrans, blas.NoTrans
	ar, ac := m, k
	if ta {
		tA, ar, ac = blas.Trans, k, m
	}
	br, bc := k, n
	if tb {
		tB, br, bc = blas.Trans, n, k
	}
	blas32.Gemm(tA, tB, alpha,
		blas32.General{Rows: ar, Cols: ac, Stride: lda, Data: a},
		blas32.General{Rows: br, Cols: bc, Stride: ldb, Data: b},
		beta, blas32.General{Rows: m, Cols: n, Stride: ldc, Data: c})
}

// tape holds one block's forward activations for the backward pass.
type tape struct {
	x1, r1, h1 []float32 // block input, 1/rms per row, normed input
	qkv        []float32 // [N][3·DModel]: q, k and v of a row side by side
	qkvT       []float32 // per window and head, qᵀ, kᵀ and vᵀ ([dh][t] each)
	// z is x·Aᵀ per adapted projection, kept only when the pass computes
	// adapter gradients.
	z          [numProj][]float32
	att        []float32 // softmax probabilities [nb][Heads][T][T], lower triangle
	a          []float32 // attention output before o_proj
	x2, r2, h2 []float32
	u, th, g   []float32 // up_proj output, GELU's inner tanh, gelu(u)
}

// headT returns window b's head h's transposed q, k and v (H heads).
func (tp *tape) headT(b, h, H, t, dh int) (qT, kT, vT []float32) {
	n := dh * t
	o := (b*H + h) * 3 * n
	return tp.qkvT[o : o+n], tp.qkvT[o+n : o+2*n], tp.qkvT[o+2*n : o+3*n]
}

const normEps = 1e-5

// rmsnorm writes y = x/rms(x)·g row by row and returns the 1/rms.
func rmsnorm(y, x, g []float32, rows, d int, r []float32) {
	for i := 0; i < rows; i++ {
		xi, yi := x[i*d:i*d+d], y[i*d:i*d+d]
		var s float64
		for _, v := range xi {
			s += float64(v) * float64(v)
		}
		ri := float32(1 / math.Sqrt(s/float64(d)+normEps))
		r[i] = ri
		for j, v := range xi {
			yi[j] = v * ri * g[j]
		}
	}
}

// rmsnormBack adds to dx the gradient through y = x·r·g, and to dg (when
// non-nil) g's.
func rmsnormBack(dx, dy, x, g, r []float32, rows, d int, dg []float32) {
	for i := 0; i < rows; i++ {
		xi, dyi, dxi := x[i*d:i*d+d], dy[i*d:i*d+d], dx[i*d:i*d+d]
		ri := r[i]
		var dot float64
		for j := range xi {
			dot += float64(dyi[j]) * float64(g[j]) * float64(xi[j])
		}
		c := float32(dot/float64(d)) * ri * ri * ri
		for j := range xi {
			dxi[j] += ri*g[j]*dyi[j] - c*xi[j]
		}
		if dg != nil {
			for j := range xi {
				dg[j] += dyi[j] * xi[j] * ri
			}
		}
	}
}

// effective is a block's projection weights for one pass with the
// adapters folded in: W + scale·B·A is one [out][in] matrix, so an
// adapted projection costs one GEMM forward and one for dx backward, as
// an unadapted one does (B's gradient still comes from z = x·Aᵀ). q, k
// and v are stacked so that the three are one GEMM each way.
type effective struct {
	qkv []float32          // [3·DModel][DModel]
	w   [numProj][]float32 // per projection; q, k and v are rows of qkv
}

func (n *Net) effectiveWeights(ar *arena, l int) effective {
	a := n.W.Arch
	d := a.DModel
	L := &n.W.Layers[l]
	e := effective{qkv: ar.get(3 * d * d)}
	for p := ProjQ; p <= ProjV; p++ {
		w := e.qkv[p*d*d : (p+1)*d*d]
		copy(w, L.W[p])
		n.foldAdapter(l, p, w)
		e.w[p] = w
	}
	for p := ProjO; p < numProj; p++ {
		e.w[p] = L.W[p]
		if n.Ad.Has(l, p) {
			w := ar.get(len(L.W[p]))
			copy(w, L.W[p])
			n.foldAdapter(l, p, w)
			e.w[p] = w
		}
	}
	return e
}

// foldAdapter adds scale·B·A to w, projection p of layer l's weight.
func (n *Net) foldAdapter(l, p int, w []float32) {
	if !n.Ad.Has(l, p) {
		return
	}
	in, out := n.W.Arch.projDims(p)
	r := n.Ad.Rank
	gemm(false, false, out, in, r, n.Ad.Scale(), n.B[l][p], r, n.Ad.A[l][p], in, 1, w, in)
}

// adapterInput returns z = x·Aᵀ ([rows][Rank]) for projection p of layer
// l, nil without an adapter.
func (n *Net) adapterInput(ar *arena, l, p int, x []float32, rows int) []float32 {
	if !n.Ad.Has(l, p) {
		return nil
	}
	in, _ := n.W.Arch.projDims(p)
	r := n.Ad.Rank
	z := ar.get(rows * r)
	gemm(false, true, rows, r, in, 1, x, in, n.Ad.A[l][p], in, 0, z, r)
	return z
}

// weightGrads adds projection p of layer l's weight gradients that g asks
// for, given its input x ([rows][in]) and output gradient dy ([rows][out],
// row stride ldy).
func (n *Net) weightGrads(l, p int, dy []float32, ldy int, x, z []float32, rows int, g *Grads, tmp []float32) {
	in, out := n.W.Arch.projDims(p)
	if g.W != nil {
		gemm(true, false, out, in, rows, 1, dy, ldy, x, in, 1, g.W.Layers[l].W[p], in)
	}
	if !n.Ad.Has(l, p) {
		return
	}
	r, s := n.Ad.Rank, n.Ad.Scale()
	if g.B != nil {
		accBGrad(g.B[l][p], dy, ldy, z, rows, out, r, s, tmp)
	}
	if g.A != nil {
		dz := make([]float32, rows*r)
		gemm(false, false, rows, r, out, s, dy, ldy, n.B[l][p], r, 0, dz, r)
		gemm(true, false, r, in, rows, 1, dz, r, x, in, 1, g.A[l][p], in)
	}
}

// causalSoftmax turns the t×t scores S into attention probabilities row
// by row over the positions each may see (j ≤ i), zeroing the rest.
func causalSoftmax(S []float32, t int) {
	for i := 0; i < t; i++ {
		row := S[i*t : i*t+t]
		m := row[0]
		for _, v := range row[1 : i+1] {
			m = max(m, v)
		}
		var sum float32
		for j, v := range row[:i+1] {
			e := expf(v - m)
			row[j] = e
			sum += e
		}
		inv := 1 / sum
		for j := range row[:i+1] {
			row[j] *= inv
		}
		clear(row[i+1:])
	}
}

// Pass runs the model over windows (each of the same length t+1 ≤
// Context+1: the first t bytes are read, the last t predicted) and
// returns the summed loss. With g non-nil it adds to g the gradient of the
// summed loss times gradScale (pass 1/tokens for the mean).
func (n *Net) Pass(windows [][]byte, g *Grads, gradScale float32) (Result, error) {
	a := n.W.Arch
	nb := len(windows)
	if nb == 0 {
		return Result{}, nil
	}
	t := len(windows[0]) - 1
	if t < 1 || t > a.Context {
		return Result{}, fmt.Errorf("%w: window of %d bytes: want 2..%d", ErrShape, t+1, a.Context+1)
	}
	for _, w := range windows {
		if len(w) != t+1 {
			return Result{}, fmt.Errorf("%w: windows of %d and %d bytes: want one length", ErrShape, t+1, len(w))
		}
	}
	ar := getArena()
	defer ar.release()
	f := n.forward(ar, windows, t, g != nil && (g.B != nil || g.A != nil))
	res := lossAndGrad(f.logits, windows, t, g != nil, gradScale)
	if g != nil {
		n.backward(ar, f, windows, t, g)
	}
	return res, nil
}

// lossAndGrad sums the cross-entropy of the logits; with grad it replaces
// them by the gradient of the summed loss times gradScale.
func lossAndGrad(logits []float32, windows [][]byte, t int, grad bool, gradScale float32) Result {
	res := Result{Tokens: len(windows) * t}
	for b, w := range windows {
		for i := 0; i < t; i++ {
			row := logits[(b*t+i)*Vocab : (b*t+i+1)*Vocab]
			target := int(w[i+1])
			m, arg := row[0], 0
			for j, v := range row {
				if v > m {
					m, arg = v, j
				}
			}
			if arg == target {
				res.Correct++
			}
			lt := row[target]
			var sum float64
			for j, v := range row {
				e := expf(v - m)
				sum += float64(e)
				if grad {
					row[j] = e
				}
			}
			res.LossSum += math.Log(sum) - float64(lt-m)
			if grad {
				inv := float32(1/sum) * gradScale
				for j := range row {
					row[j] *= inv
				}
				row[target] -= gradScale
			}
		}
	}
	return res
}

// backward adds to g the gradients of the loss whose logits' gradient f
// now holds.
func (n *Net) backward(ar *arena, f *fwdState, windows [][]byte, t int, g *Grads) {
	a := n.W.Arch
	d, N, H, dh, hidden := a.DModel, f.N, a.Heads, a.DModel/a.Heads, a.Hidden
	nb, ld := len(windows), 3*a.DModel
	gw := g.W
	dhf := ar.get(N * d)
	gemm(false, false, N, d, Vocab, 1, f.logits, Vocab, n.W.Head, d, 0, dhf, d)
	if gw != nil {
		gemm(true, false, Vocab, d, N, 1, f.logits, Vocab, f.hf, d, 1, gw.Head, d)
	}
	dx := ar.get(N * d)
	var dgf []float32
	if gw != nil {
		dgf = gw.Norm
	}
	rmsnormBack(dx, dhf, f.x, n.W.Norm, f.rf, N, d, dgf)
	var tmp []float32
	if n.Ad != nil {
		tmp = ar.get(n.Ad.Rank * max(d, hidden))
	}
	// Per head, the products run on transposed [dh][t] copies: GEMM's
	// inner loops then span t values instead of dh (16 by default). Each
	// worker has its own dP, daᵀ and a result's transpose.
	workers := headWorkers(nb * H)
	per := t*t + 2*dh*t
	scratch := ar.get(workers * per)
	for l := a.Layers - 1; l >= 0; l-- {
		L, tp, e := &n.W.Layers[l], &f.tapes[l], &f.eff[l]
		var dn1, dn2 []float32
		if gw != nil {
			dn1, dn2 = gw.Layers[l].Norm1, gw.Layers[l].Norm2
		}
		// MLP: x = x2 + down(gelu(up(h2))); dx passes through the residual.
		dg := ar.get(N * hidden)
		gemm(false, false, N, hidden, d, 1, dx, d, e.w[ProjDown], hidden, 0, dg, hidden)
		n.weightGrads(l, ProjDown, dx, d, tp.g, tp.z[ProjDown], N, g, tmp)
		for i, u := range tp.u {
			dg[i] *= geluGradT(u, tp.th[i])
		}
		dh2 := ar.get(N * d)
		gemm(false, false, N, d, hidden, 1, dg, hidden, e.w[ProjUp], d, 0, dh2, d)
		n.weightGrads(l, ProjUp, dg, hidden, tp.h2, tp.z[ProjUp], N, g, tmp)
		rmsnormBack(dx, dh2, tp.x2, L.Norm2, tp.r2, N, d, dn2)
		// Attention: x2 = x1 + o(attn(q, k, v)).
		da := ar.get(N * d)
		gemm(false, false, N, d, d, 1, dx, d, e.w[ProjO], d, 0, da, d)
		n.weightGrads(l, ProjO, dx, d, tp.a, tp.z[ProjO], N, g, tmp)
		dqkv := ar.get(N * ld)
		eachHead(nb, H, workers, func(w, b, h int) {
			qo, ao := b*t*ld+h*dh, b*t*d+h*dh
			P := tp.att[(b*H+h)*t*t : (b*H+h+1)*t*t]
			QT, KT, VT := tp.headT(b, h, H, t, dh)
			sc := scratch[w*per : (w+1)*per]
			dP, daT, gT := sc[:t*t], sc[t*t:t*t+dh*t], sc[t*t+dh*t:]
			transposeIn(daT, da[ao:], t, dh, d)
			gemm(false, false, t, t, dh, 1, da[ao:], d, VT, t, 0, dP, t)
			gemm(false, false, dh, t, t, 1, daT, t, P, t, 0, gT, t) // dVᵀ = daᵀ·P
			transposeOut(dqkv[qo+2*d:], ld, gT, dh, t)
			for i := 0; i < t; i++ {
				pr, dr := P[i*t:i*t+i+1], dP[i*t:i*t+t]
				var dot float32
				for j, p := range pr {
					dot += p * dr[j]
				}
				for j, p := range pr {
					dr[j] = p * (dr[j] - dot) * f.scale
				}
				clear(dr[i+1:])
			}
			gemm(false, true, dh, t, t, 1, KT, t, dP, t, 0, gT, t) // dQᵀ = Kᵀ·dSᵀ
			transposeOut(dqkv[qo:], ld, gT, dh, t)
			gemm(false, false, dh, t, t, 1, QT, t, dP, t, 0, gT, t) // dKᵀ = Qᵀ·dS
			transposeOut(dqkv[qo+d:], ld, gT, dh, t)
		})
		for p := ProjQ; p <= ProjV; p++ {
			n.weightGrads(l, p, dqkv[p*d:], ld, tp.h1, tp.z[p], N, g, tmp)
		}
		// Below the first block only the embeddings learn from dx.
		if l > 0 || gw != nil {
			dh1 := ar.get(N * d)
			gemm(false, false, N, d, ld, 1, dqkv, ld, e.qkv, d, 0, dh1, d)
			rmsnormBack(dx, dh1, tp.x1, L.Norm1, tp.r1, N, d, dn1)
		}
	}
	if gw != nil {
		for b, w := range windows {
			for i := 0; i < t; i++ {
				row := dx[(b*t+i)*d : (b*t+i+1)*d]
				e, pe := gw.Embed[int(w[i])*d:], gw.Pos[i*d:]
				for j, v := range row {
					e[j] += v
					pe[j] += v
				}
			}
		}
	}
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// fwdState is a forward pass's activations, in the pass's arena.
type fwdState struct {
	N      int
	scale  float32
	x      []float32 // the last block's output
	tapes  []tape
	eff    []effective
	rf, hf []float32
	logits []float32 // [N][Vocab]
}

// forward runs the model over the first t bytes of each window (t ≤
// Context, checked by the caller), keeping each adapter's z when keepZ.
func (n *Net) forward(ar *arena, windows [][]byte, t int, keepZ bool) *fwdState {
	a := n.W.Arch
	nb := len(windows)
	d, N, H, hidden := a.DModel, nb*t, a.Heads, a.Hidden
	dh, ld := d/H, 3*d
	x := ar.get(N * d)
	for b, w := range windows {
		for i := 0; i < t; i++ {
			row := x[(b*t+i)*d : (b*t+i+1)*d]
			e, pe := n.W.Embed[int(w[i])*d:], n.W.Pos[i*d:]
			for j := range row {
				row[j] = e[j] + pe[j]
			}
		}
	}
	f := &fwdState{N: N, scale: float32(1 / math.Sqrt(float64(dh))), tapes: make([]tape, a.Layers), eff: make([]effective, a.Layers)}
	keep := func(l, p int, in []float32) {
		if keepZ {
			f.tapes[l].z[p] = n.adapterInput(ar, l, p, in, N)
		}
	}
	for l := range f.tapes {
		L, tp := &n.W.Layers[l], &f.tapes[l]
		e := n.effectiveWeights(ar, l)
		f.eff[l] = e
		tp.x1 = x
		tp.r1, tp.h1 = ar.get(N), ar.get(N*d)
		rmsnorm(tp.h1, x, L.Norm1, N, d, tp.r1)
		tp.qkv = ar.get(N * ld)
		gemm(false, true, N, ld, d, 1, tp.h1, d, e.qkv, d, 0, tp.qkv, ld)
		for p := ProjQ; p <= ProjV; p++ {
			keep(l, p, tp.h1)
		}
		tp.att, tp.a, tp.qkvT = ar.get(nb*H*t*t), ar.get(N*d), ar.get(3*N*d)
		workers := headWorkers(nb * H)
		aTs := ar.get(workers * dh * t)
		eachHead(nb, H, workers, func(w, b, h int) {
			qo := b*t*ld + h*dh
			S := tp.att[(b*H+h)*t*t : (b*H+h+1)*t*t]
			QT, KT, VT := tp.headT(b, h, H, t, dh)
			aT := aTs[w*dh*t : (w+1)*dh*t]
			transposeIn(QT, tp.qkv[qo:], t, dh, ld)
			transposeIn(KT, tp.qkv[qo+d:], t, dh, ld)
			transposeIn(VT, tp.qkv[qo+2*d:], t, dh, ld)
			gemm(false, false, t, t, dh, f.scale, tp.qkv[qo:], ld, KT, t, 0, S, t)
			causalSoftmax(S, t)
			gemm(false, true, dh, t, t, 1, VT, t, S, t, 0, aT, t) // (P·V)ᵀ = Vᵀ·Pᵀ
			transposeOut(tp.a[b*t*d+h*dh:], d, aT, dh, t)
		})
		o := ar.get(N * d)
		gemm(false, true, N, d, d, 1, tp.a, d, e.w[ProjO], d, 0, o, d)
		keep(l, ProjO, tp.a)
		for i := range o {
			o[i] += x[i]
		}
		tp.x2 = o
		tp.r2, tp.h2 = ar.get(N), ar.get(N*d)
		rmsnorm(tp.h2, o, L.Norm2, N, d, tp.r2)
		tp.u = ar.get(N * hidden)
		gemm(false, true, N, hidden, d, 1, tp.h2, d, e.w[ProjUp], d, 0, tp.u, hidden)
		keep(l, ProjUp, tp.h2)
		tp.th, tp.g = ar.get(len(tp.u)), ar.get(len(tp.u))
		for i, u := range tp.u {
			th := geluT(u)
			tp.th[i], tp.g[i] = th, 0.5*u*(1+th)
		}
		y := ar.get(N * d)
		gemm(false, true, N, d, hidden, 1, tp.g, hidden, e.w[ProjDown], hidden, 0, y, d)
		keep(l, ProjDown, tp.g)
		for i := range y {
			y[i] += o[i]
		}
		x = y
	}
	f.rf, f.hf = ar.get(N), ar.get(N*d)
	rmsnorm(f.hf, x, n.W.Norm, N, d, f.rf)
	f.x = x
	f.logits = ar.get(N * Vocab)
	gemm(false, true, N, Vocab, d, 1, f.hf, d, n.W.Head, d, 0, f.logits, Vocab)
	return f
}
