package lm

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// torchPython returns a Python that imports torch, numpy and msgpack
// ($STRATA_PYTHON, else the system's), or skips — and fails when
// STRATA_REQUIRE_TORCH=1, as .ci/run sets.
func torchPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{os.Getenv("STRATA_PYTHON"), "/usr/bin/python3", "python3"} {
		if py == "" {
			continue
		}
		if exec.Command(py, "-c", "import torch, numpy, msgpack").Run() == nil {
			return py
		}
	}
	msg := "no Python with torch, numpy and msgpack (install python3-torch python3-numpy python3-msgpack or set STRATA_PYTHON)"
	if os.Getenv("STRATA_REQUIRE_TORCH") == "1" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPED: " + msg)
	return ""
}

// TestTorchTrainerMatchesTheGoModel runs the PyTorch example trainer's
// LM ("lm-lora") on an export of a random backbone with adapters on all
// six projections and non-zero B: its summed loss on given windows and
// the B after one SGD step must be the Go model's — the same tensors,
// layout and arithmetic, up to float32 rounding.
func TestTorchTrainerMatchesTheGoModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PyTorch process")
	}
	py := torchPython(t)
	c := Config{Layers: 2, DModel: 16, Heads: 2, Context: 16, Hidden: 40, LoraRank: 3, LoraAlpha: 5,
		LoraTargets: []string{"q", "k", "v", "o", "up", "down"}}.withDefaults()
	a := c.Arch()
	w, _ := InitWeights(a, 7)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, x := range w.Tensors() {
		for i := range x.Data {
			x.Data[i] += float32(rng.NormFloat64() * 0.05) // norms away from 1, weights larger
		}
	}
	ad, err := NewAdapter(a, c.LoraRank, c.LoraAlpha, c.LoraTargets, 7)
	if err != nil {
		t.Fatal(err)
	}
	layout := ad.BLayout(a)
	theta := make([]float64, dimOf(layout))
	for i := range theta {
		theta[i] = float64(float32(rng.NormFloat64() * 0.1))
	}
	windows := make([][]byte, 3)
	for i := range windows {
		windows[i] = make([]byte, a.Context+1)
		for j := range windows[i] {
			windows[i][j] = byte(rng.IntN(Vocab))
		}
	}
	const lr = 0.5
	dir := t.TempDir()
	tk := &Task{Config: c, Weights: w, Adapter: ad}
	if err := tk.Export(dir, nil); err != nil {
		t.Fatal(err)
	}
	th32 := make([]float32, len(theta))
	for i, v := range theta {
		th32[i] = float32(v)
	}
	type tensor struct {
		Name  string `msgpack:"name"`
		Shape []int  `msgpack:"shape"`
	}
	var lay []tensor
	for _, x := range layout {
		lay = append(lay, tensor{x.Name, x.Shape})
	}
	if err := writeMsgpack(filepath.Join(dir, "check.msgpack"), map[string]any{"layout": lay, "theta": float32Bytes(th32), "windows": windows, "lr": lr}); err != nil {
		t.Fatal(err)
	}

	net, err := NewNet(w, ad, theta)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := net.Pass(windows, nil, 0)
	g := &Grads{B: net.NewBGrads()}
	if _, err := net.Pass(windows, g, 1/float32(len(windows)*a.Context)); err != nil {
		t.Fatal(err)
	}
	var step []float64
	for l := range g.B {
		for _, gb := range g.B[l] {
			for _, v := range gb {
				step = append(step, -lr*float64(v))
			}
		}
	}

	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "clients", "python", "torch_trainer.py")
	out, err := exec.Command(py, script, "--lm-check", dir).Output()
	if err != nil {
		t.Fatalf("torch_trainer.py --lm-check: %v\n%s", err, out)
	}
	var got struct {
		Loss  float64   `json:"loss"`
		Theta []float64 `json:"theta"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rel := math.Abs(got.Loss-res.LossSum) / res.LossSum; rel > 1e-5 {
		t.Errorf("summed loss: torch %.7g, Go %.7g (relative difference %.2g)", got.Loss, res.LossSum, rel)
	}
	if len(got.Theta) != len(theta) {
		t.Fatalf("torch returned %d values of θ, want %d", len(got.Theta), len(theta))
	}
	var worst, scale float64
	for i := range theta {
		scale = max(scale, math.Abs(step[i]))
		worst = max(worst, math.Abs((got.Theta[i]-theta[i])-step[i]))
	}
	t.Logf("loss torch %.7g vs Go %.7g; B step: largest %.3g, worst difference %.3g", got.Loss, res.LossSum, scale, worst)
	if !(scale > 0) || worst > 1e-3*scale {
		t.Errorf("B after one SGD step differs by up to %.3g (step size up to %.3g): want within 0.1 %%", worst, scale)
	}
}
