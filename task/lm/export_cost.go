package lm

import "github.com/strata-fl/strata/task"

// TrainCost implements task.Costed: one Train call runs LocalSteps steps
// of LocalBatch windows, predicting Context tokens each. It counts the
// products the pass runs (a multiply-add is two operations), so the
// throughput figure is the rate of the work done, not of a textbook count:
//
//   - forward, per token and block: q, k, v together (6d²) and o (2d²),
//     up and down (4·d·hidden), causal attention's scores and weighted
//     values (2·d·(t+1), the positions a token sees on average — the
//     kernels compute the full t×t square, the masked half is not
//     counted), and each adapter's z = x·Aᵀ (2·r·in); the head (2·256·d);
//   - backward, per token: the head's dx (2·256·d); per block the dx of
//     down, up and o, of q, k, v except in the first block (nothing below
//     it learns), attention's four products (4·d·(t+1)), and each
//     adapter's B gradient (2·r·out);
//   - per step, folding each adapter's scale·B·A into its weight (2·r·in·out).
//
// Norms, GELU, softmax and the optimizer step are left out, which makes
// the figure conservative.
func (t *Task) TrainCost() task.Cost {
	a := t.Weights.Arch
	d, h, c := float64(a.DModel), float64(a.Hidden), float64(a.Context)
	r := float64(t.Adapter.Rank)
	var zIn, bOut, fold float64 // per block
	for _, name := range t.Config.LoraTargets {
		in, out := d, d
		switch name {
		case "up":
			out = h
		case "down":
			in = h
		}
		zIn += 2 * r * in
		bOut += 2 * r * out
		fold += 2 * r * in * out
	}
	layers := float64(a.Layers)
	forward := layers*(8*d*d+4*d*h+2*d*(c+1)+zIn) + 2*Vocab*d
	backward := layers*(2*d*d+4*d*h+4*d*(c+1)+bOut) + (layers-1)*6*d*d + 2*Vocab*d
	tokens := t.Config.LocalSteps * t.Config.LocalBatch * a.Context
	flops := (forward+backward)*float64(tokens) + layers*fold*float64(t.Config.LocalSteps)
	return task.Cost{Tokens: tokens, FLOPs: flops, Matmul: [3]int{t.Config.LocalBatch * a.Context, a.DModel, a.DModel}}
}
