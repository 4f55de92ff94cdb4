package lm

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"

	"github.com/strata-fl/strata/task"
)

// Model is a model version ready to score and sample text: the backbone,
// the fixed A and θ's B. It is safe for concurrent use (it only reads).
type Model struct {
	Net *Net
}

// Model binds θ (a version's B matrices) to the task's backbone.
func (t *Task) Model(theta []float64) (*Model, error) {
	n, err := t.Net(theta)
	if err != nil {
		return nil, err
	}
	return &Model{Net: n}, nil
}

// LoadModel builds a model without preparing the task: the backbone from
// a checkpoint file (CheckpointName in a job's cache directory), the
// adapters' A from the settings and the job's seed, and B from θ.
func LoadModel(checkpoint string, c Config, seed uint64, theta []float64) (*Model, error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w, _, err := LoadWeights(checkpoint)
	if err != nil {
		return nil, fmt.Errorf("lm: load model: %w", err)
	}
	if w.Arch != c.Arch() {
		return nil, fmt.Errorf("%w: checkpoint %s is a %+v model, the settings describe %+v", ErrShape, filepath.Base(checkpoint), w.Arch, c.Arch())
	}
	ad, err := NewAdapter(c.Arch(), c.LoraRank, c.LoraAlpha, c.LoraTargets, seed)
	if err != nil {
		return nil, err
	}
	n, err := NewNet(w, ad, theta)
	if err != nil {
		return nil, err
	}
	return &Model{Net: n}, nil
}

// Context is the longest context the model reads.
func (m *Model) Context() int { return m.Net.W.Arch.Context }

// clampContext keeps the last Context bytes; an empty context reads as a
// single newline (the model has no start token).
func (m *Model) clampContext(ctx []byte) []byte {
	if len(ctx) == 0 {
		return []byte{'\n'}
	}
	if c := m.Context(); len(ctx) > c {
		return ctx[len(ctx)-c:]
	}
	return ctx
}

// LogProbs returns the natural-log probabilities of the byte that follows
// context (its last Context bytes are read).
func (m *Model) LogProbs(context []byte) []float32 {
	return m.NextLogProbs([][]byte{context})[0]
}

// NextLogProbs is LogProbs for several contexts in one batched pass when
// they have the same length (after clamping), one pass each otherwise.
func (m *Model) NextLogProbs(contexts [][]byte) [][]float32 {
	out := make([][]float32, len(contexts))
	byLen := map[int][]int{}
	for i, c := range contexts {
		c = m.clampContext(c)
		contexts[i] = c
		byLen[len(c)] = append(byLen[len(c)], i)
	}
	for t, idx := range byLen {
		ws := make([][]byte, len(idx))
		for k, i := range idx {
			ws[k] = contexts[i]
		}
		ar := getArena()
		f := m.Net.forward(ar, ws, t, false)
		for k, i := range idx {
			out[i] = logSoftmax(f.logits[(k*t+t-1)*Vocab : (k*t+t)*Vocab])
		}
		ar.release()
	}
	return out
}

func logSoftmax(row []float32) []float32 {
	mx := row[0]
	for _, v := range row {
		mx = max(mx, v)
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v - mx))
	}
	lse := float32(math.Log(s)) + mx
	out := make([]float32, len(row))
	for j, v := range row {
		out[j] = v - lse
	}
	return out
}

// SequenceLogProb returns log p(text | prefix) in nats, summed over text's
// bytes; each byte is predicted from at most Context preceding bytes.
func (m *Model) SequenceLogProb(prefix, text []byte) float64 {
	full := append(append([]byte(nil), m.clampContext(prefix)...), text...)
	start := len(full) - len(text) // index of text's first byte
	c := m.Context()
	var total float64
	for pos := start; pos < len(full); {
		// One pass over the window ending at the last byte it can predict.
		lo := max(0, pos-c)
		hi := min(len(full)-1, lo+c) // predicts full[lo+1 .. hi]
		win := full[lo:hi]
		ar := getArena()
		f := m.Net.forward(ar, [][]byte{win}, len(win), false)
		for p := pos; p <= hi; p++ {
			lp := logSoftmax(f.logits[(p-1-lo)*Vocab : (p-lo)*Vocab])
			total += float64(lp[full[p]])
		}
		ar.release()
		pos = hi + 1
	}
	return total
}

// Sample extends prompt by tokens bytes drawn from the model at the given
// temperature (0: the most likely byte each step) and returns them.
func (m *Model) Sample(prompt []byte, tokens int, temperature float64, rng *rand.Rand) []byte {
	text := append([]byte(nil), prompt...)
	out := make([]byte, 0, tokens)
	for k := 0; k < tokens; k++ {
		lp := m.LogProbs(text)
		var next int
		if temperature <= 0 {
			for j, v := range lp {
				if v > lp[next] {
					next = j
				}
			}
		} else {
			u := rng.Float64()
			ps := make([]float64, Vocab)
			var s float64
			for j, v := range lp {
				ps[j] = math.Exp(float64(v) / temperature)
				s += ps[j]
			}
			u *= s
			for next = 0; next < Vocab-1; next++ {
				if u -= ps[next]; u < 0 {
					break
				}
			}
		}
		text = append(text, byte(next))
		out = append(out, byte(next))
	}
	return out
}

// Generate implements task.Generator.
func (t *Task) Generate(ctx context.Context, theta []float64, prompt []byte, tokens int, temperature float64, seed uint64) ([]byte, error) {
	if tokens < 0 || math.IsNaN(temperature) || temperature < 0 {
		return nil, fmt.Errorf("lm: generate %d tokens at temperature %v: want tokens ≥ 0 and temperature ≥ 0", tokens, temperature)
	}
	m, err := t.Model(theta)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return m.Sample(prompt, tokens, temperature, rand.New(rand.NewPCG(seed, 0x67656e))), nil
}

// PEFTName is the name PEFT's adapter_model.safetensors gives an adapter
// tensor named by BLayout or ATensors ("layers.0.self_attn.q_proj.lora_B.weight"
// → "base_model.model.layers.0.self_attn.q_proj.lora_B.weight").
func PEFTName(name string) string { return "base_model.model." + name }

// ModelTensors returns, for export, the backbone (Weights.Tensors) and
// the adapters' A (ATensors) and B (θ, in BLayout's order and names), all
// float32; merged into the backbone, W + (alpha/rank)·B·A is the model.
func (t *Task) ModelTensors(theta []float64) (backbone, loraA, loraB []task.Values, err error) {
	n, err := t.Net(theta)
	if err != nil {
		return nil, nil, nil, err
	}
	conv := func(ts []NamedTensor) []task.Values {
		out := make([]task.Values, len(ts))
		for i, x := range ts {
			out[i] = task.Values{Tensor: task.Tensor{Name: x.Name, Shape: x.Shape}, Data: x.Data}
		}
		return out
	}
	bl := t.Adapter.BLayout(t.Weights.Arch)
	k := 0
	for l := range n.B {
		for p := range n.B[l] {
			if n.B[l][p] != nil {
				bl[k].Data = n.B[l][p]
				k++
			}
		}
	}
	return conv(t.Weights.Tensors()), conv(t.Adapter.ATensors(t.Weights.Arch)), conv(bl), nil
}

// AdapterConfig is PEFT's adapter_config.json for the task's adapters.
func (t *Task) AdapterConfig() map[string]any {
	var mods []string
	for _, name := range t.Config.LoraTargets {
		p := projIndex(name)
		_, mod, _ := cutLast(projModules[p])
		mods = append(mods, mod)
	}
	return map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": t.Adapter.Rank, "lora_alpha": t.Adapter.Alpha,
		"target_modules": mods, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
		"base_model_name_or_path": "strata-lm-byte-" + fmt.Sprint(t.Weights.Arch.DModel),
	}
}

func cutLast(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}
