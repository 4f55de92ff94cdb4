package lm

import "math"

// kvNode is one byte of a context as the model saw it: its position and,
// per layer l, the key and value its attention wrote (kv[2l] and kv[2l+1]
// in DModel-wide slots of one slice). A
// context is the chain from its last byte back to its first, so contexts
// that share a prefix share the prefix's nodes: the Secret-Sharer audit
// scores a trie of candidates, and each node of it then costs one byte's
// pass instead of a pass over its whole context.
type kvNode struct {
	parent *kvNode
	pos    int
	kv     []float32
}

// keyValue returns layer l's key and value slots, each d wide.
func (c *kvNode) keyValue(l, d int) (k, v []float32) {
	o := 2 * l * d
	return c.kv[o : o+d], c.kv[o+d : o+2*d]
}

// Begin implements empirical.PrefixExtender: it runs the model over
// prefix once and returns the state after it with the next-byte
// log-probabilities there. ok is false when prefix is empty (a whole
// context would read it as a newline) or when prefix and depth more bytes
// do not fit the context (a whole context would slide its window): the
// caller then scores whole contexts, with identical results.
func (m *Model) Begin(prefix []byte, depth int) (state any, logProbs []float32, ok bool) {
	if len(prefix) == 0 || depth < 0 || len(prefix)+depth > m.Context() {
		return nil, nil, false
	}
	n := m.Net
	a := n.W.Arch
	d, t := a.DModel, len(prefix)
	ar := getArena()
	defer ar.release()
	f := n.forward(ar, [][]byte{prefix}, t, false)
	var last *kvNode
	slab := make([]float32, t*a.Layers*2*d)
	for i := 0; i < t; i++ {
		node := &kvNode{parent: last, pos: i, kv: slab[i*a.Layers*2*d : (i+1)*a.Layers*2*d]}
		for l := range f.tapes {
			k, v := node.keyValue(l, d)
			copy(k, f.tapes[l].qkv[i*3*d+d:])
			copy(v, f.tapes[l].qkv[i*3*d+2*d:])
		}
		last = node
	}
	return last, logSoftmax(f.logits[(t-1)*Vocab : t*Vocab]), true
}

// Extend implements empirical.PrefixExtender: for each parent state (from
// Begin or an earlier Extend) and the byte that follows it, the
// next-byte log-probabilities after that byte, and with keep the state
// for extending it further (nil otherwise, which frees the keys and
// values of the deepest level). Every parent must have room for one more
// byte within the depth given to Begin. It is safe for concurrent use.
func (m *Model) Extend(parents []any, next []byte, keep bool) (states []any, logProbs [][]float32) {
	n := m.Net
	a := n.W.Arch
	B := len(parents)
	d, H, hidden := a.DModel, a.Heads, a.Hidden
	dh, ld := d/H, 3*d
	scale := float32(1 / math.Sqrt(float64(dh)))
	ar := getArena()
	defer ar.release()
	// The new nodes' keys and values live in one slab: the caller's
	// memory when kept, the pass's arena otherwise (they are read only
	// within this call then).
	per := a.Layers * 2 * d
	var slab []float32
	if keep {
		slab = make([]float32, B*per)
	} else {
		slab = ar.get(B * per)
	}
	nodes := make([]*kvNode, B)
	x := ar.get(B * d)
	for b, p := range parents {
		parent := p.(*kvNode)
		if parent.pos+1 >= a.Context {
			panic("lm: Extend past the model's context: Begin was given too small a depth")
		}
		nodes[b] = &kvNode{parent: parent, pos: parent.pos + 1, kv: slab[b*per : (b+1)*per]}
		e, pe := n.W.Embed[int(next[b])*d:], n.W.Pos[nodes[b].pos*d:]
		row := x[b*d : (b+1)*d]
		for j := range row {
			row[j] = e[j] + pe[j]
		}
	}
	r := ar.get(B)
	h := ar.get(B * d)
	qkv := ar.get(B * ld)
	att := ar.get(B * d)
	o := ar.get(B * d)
	u := ar.get(B * hidden)
	y := ar.get(B * d)
	scores := make([]float32, a.Context)
	for l := 0; l < a.Layers; l++ {
		L := &n.W.Layers[l]
		e := n.effectiveWeights(ar, l)
		rmsnorm(h, x, L.Norm1, B, d, r)
		gemm(false, true, B, ld, d, 1, h, d, e.qkv, d, 0, qkv, ld)
		for b, node := range nodes {
			row := qkv[b*ld : (b+1)*ld]
			k, v := node.keyValue(l, d)
			copy(k, row[d:2*d])
			copy(v, row[2*d:])
			attendCached(att[b*d:(b+1)*d], row[:d], node, l, d, H, scale, scores)
		}
		gemm(false, true, B, d, d, 1, att, d, e.w[ProjO], d, 0, o, d)
		for i := range o {
			o[i] += x[i]
		}
		rmsnorm(h, o, L.Norm2, B, d, r)
		gemm(false, true, B, hidden, d, 1, h, d, e.w[ProjUp], d, 0, u, hidden)
		for i, v := range u {
			u[i] = 0.5 * v * (1 + geluT(v))
		}
		gemm(false, true, B, d, hidden, 1, u, hidden, e.w[ProjDown], hidden, 0, y, d)
		for i := range y {
			x[i] = y[i] + o[i]
		}
	}
	rmsnorm(h, x, n.W.Norm, B, d, r)
	logits := ar.get(B * Vocab)
	gemm(false, true, B, Vocab, d, 1, h, d, n.W.Head, d, 0, logits, Vocab)
	states = make([]any, B)
	logProbs = make([][]float32, B)
	for b, node := range nodes {
		logProbs[b] = logSoftmax(logits[b*Vocab : (b+1)*Vocab])
		if keep {
			states[b] = node
		}
	}
	return states, logProbs
}

// attendCached writes into out ([DModel]) the causal attention of query q
// (the newest byte's, [DModel]) over the keys and values layer l kept
// along node's chain, head by head; scores is scratch of Context values.
func attendCached(out, q []float32, node *kvNode, l, d, H int, scale float32, scores []float32) {
	t, dh := node.pos+1, d/H
	clear(out)
	for hd := 0; hd < H; hd++ {
		lo, hi := hd*dh, (hd+1)*dh
		qh := q[lo:hi]
		mx := float32(math.Inf(-1))
		for c := node; c != nil; c = c.parent {
			k, _ := c.keyValue(l, d)
			var s float32
			for j, kv := range k[lo:hi] {
				s += qh[j] * kv
			}
			s *= scale
			scores[c.pos] = s
			mx = max(mx, s)
		}
		var sum float32
		for i := 0; i < t; i++ {
			scores[i] = expf(scores[i] - mx)
			sum += scores[i]
		}
		inv := 1 / sum
		oh := out[lo:hi]
		for c := node; c != nil; c = c.parent {
			_, v := c.keyValue(l, d)
			p := scores[c.pos] * inv
			for j, vv := range v[lo:hi] {
				oh[j] += p * vv
			}
		}
	}
}
