package lm

import "github.com/strata-fl/strata/task"

// TrainCost implements task.Costed: one Train call runs LocalSteps steps of
// LocalBatch windows, predicting Context tokens each. Forward per token:
// the four attention projections (4·2d²), the MLP (2·2·d·hidden), causal
// attention (2·2·d·(t+1)/2 on average over positions t), the head
// (2·256·d) and each adapter (2·r·(in+out)); backward propagates through
// the same products once more (the frozen weights get no gradient, B's is
// counted with its adapter), so the step is counted as 2 × forward. The
// count understates the work (norms, GELU, softmax are left out), which
// makes the throughput figure conservative.
func (t *Task) TrainCost() task.Cost {
	a := t.Weights.Arch
	d, h, c := float64(a.DModel), float64(a.Hidden), float64(a.Context)
	r := float64(t.Adapter.Rank)
	var lora float64
	for _, name := range t.Config.LoraTargets {
		in, out := d, d
		switch name {
		case "up":
			out = h
		case "down":
			in = h
		}
		lora += 2 * r * (in + out)
	}
	perToken := float64(a.Layers)*(8*d*d+4*d*h+2*d*(c+1)+lora) + 2*Vocab*d
	tokens := t.Config.LocalSteps * t.Config.LocalBatch * a.Context
	return task.Cost{Tokens: tokens, FLOPs: 2 * perToken * float64(tokens), Matmul: [3]int{t.Config.LocalBatch * a.Context, a.DModel, a.DModel}}
}
