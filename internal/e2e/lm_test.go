package e2e

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/roles/rolestest"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
	"github.com/strata-fl/strata/trainerproto"
)

// lmTopology is a small LM job for `go test ./...`: a tiny transformer
// pre-trained for a few seconds, 40 clients with 1 KB of Go source each,
// no noise, so that a few rounds must improve the held-out code's bits
// per byte.
func lmTopology() *topology.Topology {
	top := topology.Default()
	top.Job = "lm-small"
	top.Regions = []topology.Region{{ID: "eu", Clients: 20}, {ID: "us", Clients: 20}}
	top.Privacy.SamplingRate = 0.5
	top.Privacy.Noise = topology.Noise{}
	top.Privacy.Budget = math.Inf(1)
	top.Train.Rounds = 6
	top.Train.ServerMomentum = 0
	top.Train.GateMaxDrop = 1
	top.Task = topology.Task{Name: "lm", Options: map[string]any{
		"layers": 2, "d_model": 32, "heads": 2, "context": 32, "pretrain_steps": 300, "pretrain_batch": 8,
		"lora_rank": 2, "shard_bytes": 1024, "heldout_dirs": 5, "local_steps": 8, "local_batch": 4, "local_lr": 0.1,
		"eval_windows": 64, "final_windows": 128,
	}}
	return top
}

// TestLMJob runs the LM task end to end on a mesh: every tier moves the
// adapters' B, the global tier evaluates through the task, and the
// served model's bits per byte on held-out code falls below the
// pre-trained checkpoint's, with every metric finite and named.
func TestLMJob(t *testing.T) {
	top := lmTopology()
	m, l := rolestest.Run(t, roles.UpConfig{Topology: top})
	if got := l.CommittedRounds(); got != top.Train.Rounds {
		t.Fatalf("%d rounds committed, want %d", got, top.Train.Rounds)
	}
	pre, post := finalEvaluations(t, m)
	for _, e := range []task.Evaluation{pre, post} {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		if p := e.Primary(); p.Name != "bits_per_byte" || p.HigherIsBetter {
			t.Fatalf("primary metric %+v, want bits_per_byte, lower is better", p)
		}
	}
	b0, _ := pre.Get("bits_per_byte")
	b1, _ := post.Get("bits_per_byte")
	t.Logf("held-out code: %.4f → %.4f bits per byte; pre-trained %v, served %v", b0, b1, pre.Metrics, post.Metrics)
	if !(b1 < b0-0.03) {
		t.Errorf("bits per byte %.4f after %d rounds, pre-trained %.4f: want at least 0.03 lower", b1, top.Train.Rounds, b0)
	}
}

// TestPyTorchTrainerLM runs the LM job with every client of region us
// trained by the PyTorch example trainer ("lm-lora", through the trainer
// protocol) and region eu's by the built-in one: region us accepts every
// PyTorch update, and the served model's held-out bits per byte falls as
// in TestLMJob. .ci/run sets STRATA_REQUIRE_TORCH=1 so that a missing
// torch fails CI rather than skipping.
func TestPyTorchTrainerLM(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-mesh test with a PyTorch trainer")
	}
	py := torchPython(t)
	top := lmTopology()
	top.Round.Timeout.Duration = 90 * time.Second
	var rt *router
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, WrapTrainer: func(b task.Trainer) task.Trainer {
		rt = &router{builtin: b, calls: map[string]int{}, ext: func(c string) bool { return strings.HasPrefix(c, "us-") }}
		return rt
	}})
	defer m.Close()
	ext, ok := m.Task.(task.External)
	if !ok {
		t.Fatal("the lm task cannot be trained by an external trainer")
	}
	dir := t.TempDir()
	ids := clientIDs(top, "us")
	if err := ext.Export(dir, ids); err != nil {
		t.Fatal(err)
	}
	var layout []trainerproto.Tensor
	for _, l := range m.Task.Layout() {
		layout = append(layout, trainerproto.Tensor{Name: l.Name, Shape: l.Shape})
	}
	rc := ext.Recipe()
	r, err := trainerproto.NewRemote(trainerproto.Config{Spec: "exec:" + py + " " + trainerScript(t, "torch_trainer.py"), Agent: "e2e", Task: rc.Task,
		Layout: layout, DataDir: dir, StateDir: filepath.Join(dir, "state"), Seed: top.Seed,
		Local: trainerproto.Local{Epochs: rc.Epochs, Batch: rc.Batch, LR: rc.LR}, Timeout: time.Minute, Stderr: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rt.external = r
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Regions["us"].Runner().Stats()
	fs := m.Edge.Fleet().Stats()
	t.Logf("region us: %+v; PyTorch calls %v; fleet %+v", st, rt.calls, fs)
	if rt.calls["ok"] == 0 || st.Accepted != rt.calls["ok"] || len(st.Rejected) != 0 || fs.Failed != 0 {
		t.Fatalf("region us accepted %d updates (rejected %v) from %d PyTorch trainings, %d failed: want all accepted",
			st.Accepted, st.Rejected, rt.calls["ok"], fs.Failed)
	}
	pre, post := finalEvaluations(t, m)
	b0, _ := pre.Get("bits_per_byte")
	b1, _ := post.Get("bits_per_byte")
	t.Logf("held-out code: %.4f → %.4f bits per byte", b0, b1)
	if !(b1 < b0-0.03) {
		t.Errorf("bits per byte %.4f after %d rounds, pre-trained %.4f: want at least 0.03 lower", b1, top.Train.Rounds, b0)
	}
}

// finalEvaluations scores version 0 and the serving version of a
// finished job with the task's final evaluation.
func finalEvaluations(t *testing.T, m *roles.Up) (pre, post task.Evaluation) {
	t.Helper()
	var err error
	if pre, err = m.Final().Evaluate(t.Context(), m.Task.Initial()); err != nil {
		t.Fatal(err)
	}
	if post, err = m.Final().Evaluate(t.Context(), serving(t, m)); err != nil {
		t.Fatal(err)
	}
	return pre, post
}
