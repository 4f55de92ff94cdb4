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
	x1     []float32 // block input
	r1     []float32 // 1/rms per row
	h1     []float32 // normed input
	q, k   []float32
	v      []float32
	z      [numProj][]float32 // h·Aᵀ per adapted projection
	att    []float32          // softmax probabilities [nb][Heads][T][T]
	a      []float32          // attention output before o_proj
	x2     []float32          // after attention residual
	r2, h2 []float32
	u      []float32 // up_proj output
	g      []float32 // gelu(u)
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

const geluC = 0.7978845608028654 // √(2/π)

func gelu(u float32) float32 {
	x := float64(u)
	return float32(0.5 * x * (1 + math.Tanh(geluC*(x+0.044715*x*x*x))))
}

func geluGrad(u float32) float32 {
	x := float64(u)
	t := math.Tanh(geluC * (x + 0.044715*x*x*x))
	return float32(0.5*(1+t) + 0.5*x*(1-t*t)*geluC*(1+3*0.044715*x*x))
}

// project computes y = x·Wᵀ (+ scale·(x·Aᵀ)·Bᵀ) for projection p of layer
// l, keeping x·Aᵀ in z.
func (n *Net) project(l, p int, y, x []float32, rows int, z *[]float32) {
	in, out := n.W.Arch.projDims(p)
	gemm(false, true, rows, out, in, 1, x, in, n.W.Layers[l].W[p], in, 0, y, out)
	if n.Ad.Has(l, p) {
		r := n.Ad.Rank
		zz := make([]float32, rows*r)
		gemm(false, true, rows, r, in, 1, x, in, n.Ad.A[l][p], in, 0, zz, r)
		gemm(false, true, rows, out, r, n.Ad.Scale(), zz, r, n.B[l][p], r, 1, y, out)
		*z = zz
	}
}

// projectBack adds to dx the gradient through project, and the weight
// gradients g asks for.
func (n *Net) projectBack(l, p int, dx, dy, x []float32, z []float32, rows int, g *Grads) {
	in, out := n.W.Arch.projDims(p)
	W := n.W.Layers[l].W[p]
	gemm(false, false, rows, in, out, 1, dy, out, W, in, 1, dx, in)
	if g != nil && g.W != nil {
		gemm(true, false, out, in, rows, 1, dy, out, x, in, 1, g.W.Layers[l].W[p], in)
	}
	if n.Ad.Has(l, p) {
		r, s := n.Ad.Rank, n.Ad.Scale()
		if g != nil && g.B != nil {
			gemm(true, false, out, r, rows, s, dy, out, z, r, 1, g.B[l][p], r)
		}
		dz := make([]float32, rows*r)
		gemm(false, false, rows, r, out, s, dy, out, n.B[l][p], r, 0, dz, r)
		if g != nil && g.A != nil {
			gemm(true, false, r, in, rows, 1, dz, r, x, in, 1, g.A[l][p], in)
		}
		gemm(false, false, rows, in, r, 1, dz, r, n.Ad.A[l][p], in, 1, dx, in)
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
	f := n.forward(windows, t)
	d, N, H, dh, scale := a.DModel, f.N, a.Heads, a.DModel/a.Heads, f.scale
	x, tapes, rf, hf, logits := f.x, f.tapes, f.rf, f.hf, f.logits
	var res Result
	res.Tokens = N
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
				e := math.Exp(float64(v - m))
				sum += e
				if g != nil {
					row[j] = float32(e)
				}
			}
			res.LossSum += math.Log(sum) - float64(lt-m)
			if g != nil {
				inv := float32(1/sum) * gradScale
				for j := range row {
					row[j] *= inv
				}
				row[target] -= gradScale
			}
		}
	}
	if g == nil {
		return res, nil
	}
	// Backward: logits now hold dlogits.
	dhf := make([]float32, N*d)
	gemm(false, false, N, d, Vocab, 1, logits, Vocab, n.W.Head, d, 0, dhf, d)
	var gw *Weights
	if g.W != nil {
		gw = g.W
		gemm(true, false, Vocab, d, N, 1, logits, Vocab, hf, d, 1, gw.Head, d)
	}
	dx := make([]float32, N*d)
	var dgf []float32
	if gw != nil {
		dgf = gw.Norm
	}
	rmsnormBack(dx, dhf, x, n.W.Norm, rf, N, d, dgf)
	for l := a.Layers - 1; l >= 0; l-- {
		L := &n.W.Layers[l]
		tp := &tapes[l]
		var gl *Layer
		if gw != nil {
			gl = &gw.Layers[l]
		}
		// MLP: x = x2 + down(gelu(up(h2))).
		dg := make([]float32, len(tp.g))
		n.projectBack(l, ProjDown, dg, dx, tp.g, tp.z[ProjDown], N, g)
		for i, u := range tp.u {
			dg[i] *= geluGrad(u)
		}
		dh2 := make([]float32, N*d)
		n.projectBack(l, ProjUp, dh2, dg, tp.h2, tp.z[ProjUp], N, g)
		dx2 := dx // the residual passes dx through
		var dn2 []float32
		if gl != nil {
			dn2 = gl.Norm2
		}
		rmsnormBack(dx2, dh2, tp.x2, L.Norm2, tp.r2, N, d, dn2)
		// Attention: x2 = x1 + o(attn(h1)).
		da := make([]float32, N*d)
		n.projectBack(l, ProjO, da, dx2, tp.a, tp.z[ProjO], N, g)
		dq, dk, dv := make([]float32, N*d), make([]float32, N*d), make([]float32, N*d)
		dP := make([]float32, t*t)
		for b := 0; b < nb; b++ {
			for h := 0; h < H; h++ {
				off := b*t*d + h*dh
				P := tp.att[(b*H+h)*t*t : (b*H+h+1)*t*t]
				gemm(false, true, t, t, dh, 1, da[off:], d, tp.v[off:], d, 0, dP, t)
				gemm(true, false, t, dh, t, 1, P, t, da[off:], d, 0, dv[off:], d)
				for i := 0; i < t; i++ {
					pr, dr := P[i*t:i*t+t], dP[i*t:i*t+t]
					var dot float32
					for j := 0; j <= i; j++ {
						dot += pr[j] * dr[j]
					}
					for j := 0; j <= i; j++ {
						dr[j] = pr[j] * (dr[j] - dot) * scale
					}
					for j := i + 1; j < t; j++ {
						dr[j] = 0
					}
				}
				gemm(false, false, t, dh, t, 1, dP, t, tp.k[off:], d, 0, dq[off:], d)
				gemm(true, false, t, dh, t, 1, dP, t, tp.q[off:], d, 0, dk[off:], d)
			}
		}
		dh1 := make([]float32, N*d)
		n.projectBack(l, ProjQ, dh1, dq, tp.h1, tp.z[ProjQ], N, g)
		n.projectBack(l, ProjK, dh1, dk, tp.h1, tp.z[ProjK], N, g)
		n.projectBack(l, ProjV, dh1, dv, tp.h1, tp.z[ProjV], N, g)
		var dn1 []float32
		if gl != nil {
			dn1 = gl.Norm1
		}
		rmsnormBack(dx2, dh1, tp.x1, L.Norm1, tp.r1, N, d, dn1)
		dx = dx2
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
	return res, nil
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// fwdState is a forward pass's activations.
type fwdState struct {
	N      int
	scale  float32
	x      []float32 // the last block's output
	tapes  []tape
	rf, hf []float32
	logits []float32 // [N][Vocab]
}

// forward runs the model over the first t bytes of each window (t ≤
// Context, checked by the caller).
func (n *Net) forward(windows [][]byte, t int) *fwdState {
	a := n.W.Arch
	nb := len(windows)
	d, N, H := a.DModel, nb*t, a.Heads
	dh := d / H
	x := make([]float32, N*d)
	for b, w := range windows {
		for i := 0; i < t; i++ {
			row := x[(b*t+i)*d : (b*t+i+1)*d]
			e, pe := n.W.Embed[int(w[i])*d:], n.W.Pos[i*d:]
			for j := range row {
				row[j] = e[j] + pe[j]
			}
		}
	}
	tapes := make([]tape, a.Layers)
	scale := float32(1 / math.Sqrt(float64(dh)))
	for l := range tapes {
		L := &n.W.Layers[l]
		tp := &tapes[l]
		tp.x1 = x
		tp.r1, tp.h1 = make([]float32, N), make([]float32, N*d)
		rmsnorm(tp.h1, x, L.Norm1, N, d, tp.r1)
		tp.q, tp.k, tp.v = make([]float32, N*d), make([]float32, N*d), make([]float32, N*d)
		n.project(l, ProjQ, tp.q, tp.h1, N, &tp.z[ProjQ])
		n.project(l, ProjK, tp.k, tp.h1, N, &tp.z[ProjK])
		n.project(l, ProjV, tp.v, tp.h1, N, &tp.z[ProjV])
		tp.att = make([]float32, nb*H*t*t)
		tp.a = make([]float32, N*d)
		for b := 0; b < nb; b++ {
			for h := 0; h < H; h++ {
				off := b*t*d + h*dh
				S := tp.att[(b*H+h)*t*t : (b*H+h+1)*t*t]
				gemm(false, true, t, t, dh, scale, tp.q[off:], d, tp.k[off:], d, 0, S, t)
				for i := 0; i < t; i++ {
					row := S[i*t : i*t+t]
					m := row[0]
					for j := 1; j <= i; j++ {
						if row[j] > m {
							m = row[j]
						}
					}
					var sum float32
					for j := 0; j <= i; j++ {
						e := float32(math.Exp(float64(row[j] - m)))
						row[j] = e
						sum += e
					}
					inv := 1 / sum
					for j := 0; j <= i; j++ {
						row[j] *= inv
					}
					for j := i + 1; j < t; j++ {
						row[j] = 0
					}
				}
				gemm(false, false, t, dh, t, 1, S, t, tp.v[off:], d, 0, tp.a[off:], d)
			}
		}
		o := make([]float32, N*d)
		n.project(l, ProjO, o, tp.a, N, &tp.z[ProjO])
		for i := range o {
			o[i] += x[i]
		}
		tp.x2 = o
		tp.r2, tp.h2 = make([]float32, N), make([]float32, N*d)
		rmsnorm(tp.h2, o, L.Norm2, N, d, tp.r2)
		tp.u = make([]float32, N*a.Hidden)
		n.project(l, ProjUp, tp.u, tp.h2, N, &tp.z[ProjUp])
		tp.g = make([]float32, len(tp.u))
		for i, u := range tp.u {
			tp.g[i] = gelu(u)
		}
		y := make([]float32, N*d)
		n.project(l, ProjDown, y, tp.g, N, &tp.z[ProjDown])
		for i := range y {
			y[i] += o[i]
		}
		x = y
	}
	rf, hf := make([]float32, N), make([]float32, N*d)
	rmsnorm(hf, x, n.W.Norm, N, d, rf)
	logits := make([]float32, N*Vocab)
	gemm(false, true, N, Vocab, d, 1, hf, d, n.W.Head, d, 0, logits, Vocab)
	return &fwdState{N: N, scale: scale, x: x, tapes: tapes, rf: rf, hf: hf, logits: logits}
}
