package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task/mnist"
	"github.com/strata-fl/strata/topology"
	"github.com/strata-fl/strata/trainerproto"
)

// TestMain lets the test binary stand in for an external evaluator
// process: `e2e.test fake-evaluator MODEFILE` serves the trainer protocol
// on stdin/stdout (fakeEvaluator) instead of running tests.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "fake-evaluator" {
		os.Exit(fakeEvaluator(os.Args[2]))
	}
	os.Exit(m.Run())
}

// fakeEvaluator is an external evaluator in Go, so that the global tier's
// path through one is tested without Python. It records its pid in the
// hello's state dir and answers the k-th held-out evaluation (k = 0 is
// the checkpoint, k = v is model version v in a job without failures)
// with the metrics
//
//	score            0.5 + 0.01·k, higher is better (the gate's)
//	theta_norm       ‖θ‖₂ of the θ it was sent
//	heldout_examples the size of the held-out set the global exported
//
// and loss 1 − score; the final set scores 0.25. MODEFILE holds the mode,
// read at start-up: "ok", or "collapse=K" (score 0 at k = K), "hang=K"
// (never answers k = K) or "crash=K" (exits at k = K).
func fakeEvaluator(modeFile string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "fake evaluator:", err)
		return 2
	}
	b, err := os.ReadFile(modeFile)
	if err != nil {
		return fail(err)
	}
	mode, arg, _ := strings.Cut(strings.TrimSpace(string(b)), "=")
	at, _ := strconv.Atoi(arg)
	c := trainerproto.NewConn(os.Stdin, os.Stdout)
	var h trainerproto.Hello
	if err := c.Recv(trainerproto.TypeHello, &h); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(h.StateDir, fmt.Sprintf("pid-%d", os.Getpid())), nil, 0o600); err != nil {
		return fail(err)
	}
	hb, err := os.ReadFile(filepath.Join(h.DataDir, mnist.HeldOutFile))
	if err != nil {
		return fail(err)
	}
	var held mnist.HeldOutExport
	if err := msgpack.Unmarshal(hb, &held); err != nil {
		return fail(err)
	}
	c.Send(trainerproto.TypeReady, &trainerproto.Ready{Trainer: "go-fake-evaluator", Protocol: trainerproto.Protocol})
	c.Flush()
	for k := 0; ; {
		var req trainerproto.Evaluate
		if err := c.Recv(trainerproto.TypeEvaluate, &req); err != nil {
			return 0 // shutdown or EOF
		}
		theta := make([]float64, req.Dim)
		if err := c.RecvVector(theta, req.Chunks); err != nil {
			return fail(err)
		}
		norm := 0.0
		for _, x := range theta {
			norm += x * x
		}
		score := 0.25
		if req.Set == trainerproto.SetHeldOut {
			switch {
			case k == at && mode == "hang":
				fmt.Fprintf(os.Stderr, "fake evaluator: stuck on evaluation %d\n", k)
				time.Sleep(time.Hour) // the stimulus: an evaluator that never answers
			case k == at && mode == "crash":
				fmt.Fprintf(os.Stderr, "fake evaluator: crashed on evaluation %d\n", k)
				return 3
			case k == at && mode == "collapse":
				score = 0
			default:
				score = 0.5 + 0.01*float64(k)
			}
			k++
		}
		c.Send(trainerproto.TypeEvaluation, &trainerproto.Evaluation{Examples: len(held.EvalIndex) / 4, Loss: 1 - score,
			Metrics: []trainerproto.Metric{{Name: "score", Value: score, HigherIsBetter: true}, {Name: "theta_norm", Value: math.Sqrt(norm)},
				{Name: "heldout_examples", Value: float64(len(held.EvalIndex) / 4), HigherIsBetter: true}}})
		c.Flush()
	}
}

// fakeEvaluatorTopology is smallTopology whose global evaluation comes
// from the fake evaluator in the given mode.
func fakeEvaluatorTopology(t *testing.T, mode string, timeout time.Duration) *topology.Topology {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	modeFile := filepath.Join(t.TempDir(), "mode")
	if err := os.WriteFile(modeFile, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
	top := smallTopology(t)
	top.Task.Evaluator = &topology.Evaluator{Command: []string{exe, "fake-evaluator", modeFile}, Timeout: topology.Duration{Duration: timeout}}
	top.ApplyDefaults()
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	return top
}

// evaluatorPids lists the pids the evaluator processes of a global node
// with data dir dir recorded.
func evaluatorPids(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "evaluator", "state"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		if p, ok := strings.CutPrefix(e.Name(), "pid-"); ok {
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, n)
		}
	}
	return pids
}

// assertGone fails unless every pid is gone (killed and reaped).
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	for _, p := range pids {
		if err := syscall.Kill(p, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("evaluator process %d is still there after Close (kill 0: %v)", p, err)
		}
	}
}

// modelTheta reads a committed version's θ from the model store.
func modelTheta(t *testing.T, ctx context.Context, m *roles.Up, v ledger.Model) []float64 {
	t.Helper()
	blob, err := m.Global.Models().Get(ctx, "model", v.Version, v.Hash)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Float32s(blob)
	if err != nil {
		t.Fatal(err)
	}
	theta := make([]float64, len(f))
	for i, x := range f {
		theta[i] = float64(x)
	}
	return theta
}

func l2(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// TestExternalEvaluatorGatesAndReports runs a job whose global evaluation
// comes from an external evaluator process (the Go fake): the ledger
// records the evaluator's metrics by its names for every version, each
// computed on the θ the model store holds for that version and on the
// held-out set the global exported; the gate compares the evaluator's
// first metric, so the version it reports collapsed fails the gate while
// the others are promoted; the report's final scores are the evaluator's
// final set; one process served the whole job, and Close leaves none.
func TestExternalEvaluatorGatesAndReports(t *testing.T) {
	top := fakeEvaluatorTopology(t, "collapse=2", 0)
	top.Train.GateMaxDrop = 0.1
	dir := t.TempDir()
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, DataDir: dir, EvaluatorStderr: testWriter{t}})
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Models) != top.Train.Rounds {
		t.Fatalf("%d model versions, want %d", len(l.Models), top.Train.Rounds)
	}
	names := []string{"score", "theta_norm", "heldout_examples"}
	for _, v := range l.Models {
		var got []string
		for _, x := range v.Metrics {
			got = append(got, x.Name)
		}
		name, score := v.Primary()
		t.Logf("v%d: %s %.4f, metrics %+v, loss %.4f, promoted %v %s", v.Version, name, score, v.Metrics, v.Loss, v.Promoted, v.GateReason)
		if !reflect.DeepEqual(got, names) || v.Metric != "score" || name != "score" {
			t.Fatalf("v%d records metrics %v with primary %q, want %v with primary score", v.Version, got, v.Metric, names)
		}
		want := 0.5 + 0.01*float64(v.Version)
		if v.Version == 2 {
			want = 0
		}
		if v.Score != want || v.Metrics[0].Value != want || math.Abs(v.Loss-(1-want)) > 1e-12 {
			t.Errorf("v%d: score %v (metric %v), loss %v; want the evaluator's %v and %v", v.Version, v.Score, v.Metrics[0].Value, v.Loss, want, 1-want)
		}
		if norm := l2(modelTheta(t, ctx, m, v)); math.Abs(v.Metrics[1].Value-norm) > 1e-9*norm {
			t.Errorf("v%d: the evaluator's theta_norm %v, the stored version's ‖θ‖ %v: it scored another θ", v.Version, v.Metrics[1].Value, norm)
		}
		if v.Metrics[2].Value != float64(mnistOf(t, m).Eval.Len()) {
			t.Errorf("v%d: held-out set of %v examples, the task's has %d", v.Version, v.Metrics[2].Value, mnistOf(t, m).Eval.Len())
		}
		if collapsed := v.Version == 2; v.Promoted == collapsed || collapsed != strings.Contains(v.GateReason, "evaluation score 0.0000") {
			t.Errorf("v%d: promoted %v (%q); want only v2, whose score collapsed, to fail the gate", v.Version, v.Promoted, v.GateReason)
		}
	}
	if l.ServingVersion() != uint64(top.Train.Rounds) {
		t.Errorf("serving v%d, want v%d", l.ServingVersion(), top.Train.Rounds)
	}
	theta := serving(t, m)
	final, err := m.Final().Evaluate(ctx, theta)
	if err != nil {
		t.Fatal(err)
	}
	if p := final.Primary(); p.Name != "score" || p.Value != 0.25 || math.Abs(final.Metrics[1].Value-l2(theta)) > 1e-9*l2(theta) {
		t.Errorf("final evaluation %+v: want the evaluator's final set (score 0.25) of the serving θ", final)
	}
	rep, err := m.Global.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	pids := evaluatorPids(t, filepath.Join(dir, "global"))
	if len(pids) != 1 {
		t.Errorf("evaluator processes %v: want one, kept for the whole job", pids)
	}
	m.Close()
	assertGone(t, pids)
}

// TestExternalEvaluatorFailureStopsTheJob: an external evaluator that hangs
// (killed at its timeout) or crashes while scoring v1 fails that round's
// evaluation with an error naming the evaluator and what it did; the job
// stops with that error — nothing is promoted or committed as a model
// version — and the round's spend, committed before anything was
// released, stays in the ledger. No evaluator process outlives Close, and
// once the evaluator is repaired the job resumes to its end.
func TestExternalEvaluatorFailureStopsTheJob(t *testing.T) {
	tests := []struct {
		name, mode string
		timeout    time.Duration
		contains   []string
	}{
		// The timeout must cover the checkpoint's evaluation, process
		// start-up included, on a loaded machine; v1's never comes.
		{"hang", "hang=1", 20 * time.Second, []string{"timed out", "stuck on evaluation 1"}},
		{"crash", "crash=1", 0, []string{"trainer process exited", "crashed on evaluation 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := fakeEvaluatorTopology(t, tt.mode, tt.timeout)
			top.Train.Rounds = 2
			dir := t.TempDir()
			m, ctx := startMesh(t, roles.UpConfig{Topology: top, DataDir: dir, EvaluatorStderr: testWriter{t}})
			err := m.Run(ctx)
			t.Logf("job stopped: %v", err)
			if err == nil {
				t.Fatal("the job finished with a failed evaluator")
			}
			for _, want := range append([]string{"global: evaluate v1", "external evaluator (task.evaluator)", top.Task.Evaluator.Command[0], "evaluate heldout set"}, tt.contains...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			l, lerr := m.Ledger()
			if lerr != nil {
				t.Fatal(lerr)
			}
			if len(l.Models) != 0 || l.ServingVersion() != 0 || l.Finished {
				t.Errorf("after the failed evaluation: %d model versions, serving v%d, finished %v; want none, v0, not finished", len(l.Models), l.ServingVersion(), l.Finished)
			}
			if len(l.Rounds) != 1 || !(l.Spent(ledger.Public) > 0) {
				t.Errorf("%d rounds, public ε spent %v: want round 1's spend recorded", len(l.Rounds), l.Spent(ledger.Public))
			}
			pids := evaluatorPids(t, filepath.Join(dir, "global"))
			m.Close()
			assertGone(t, pids)

			// Repaired, and with another timeout (which is not part of the
			// job's plan), the evaluator lets the job resume to its end.
			spent := l.Spent(ledger.Public)
			if err := os.WriteFile(top.Task.Evaluator.Command[2], []byte("ok"), 0o600); err != nil {
				t.Fatal(err)
			}
			again := top.Clone()
			again.Task.Evaluator.Timeout.Duration = time.Minute
			m2, ctx2 := startMesh(t, roles.UpConfig{Topology: again, DataDir: dir, EvaluatorStderr: testWriter{t}})
			if err := m2.Run(ctx2); err != nil {
				t.Fatalf("resuming with the repaired evaluator: %v", err)
			}
			l2, err := m2.Ledger()
			if err != nil {
				t.Fatal(err)
			}
			if l2.CommittedRounds() != top.Train.Rounds || l2.Spent(ledger.Public) < spent {
				t.Errorf("resumed job: %d rounds committed, public ε %v (was %v); want %d and no less", l2.CommittedRounds(), l2.Spent(ledger.Public), spent, top.Train.Rounds)
			}
		})
	}
}

// TestPythonExternalEvaluator runs a job whose global evaluation comes
// from a Python example trainer acting as the external evaluator (numpy,
// and PyTorch where it is installed; .ci/run requires it). The ledger
// records the Python metrics by name (accuracy, the gate's, and
// balanced_accuracy) and they are the built-in evaluation's of the same
// version on the same held-out set: the same accuracy up to a tie or two
// of float32 arithmetic, the same loss to 1e-4.
func TestPythonExternalEvaluator(t *testing.T) {
	// Not under -short: it starts Python processes.
	if testing.Short() {
		t.Skip("whole-mesh test with a Python evaluator")
	}
	for _, c := range []struct{ script, modules string }{{"numpy_trainer.py", "numpy, msgpack"}, {"torch_trainer.py", "numpy, msgpack, torch"}} {
		t.Run(c.script, func(t *testing.T) {
			py := pythonWith(c.modules)
			if py == "" {
				msg := "no Python with " + c.modules + " (install python3-numpy python3-msgpack python3-torch or set STRATA_PYTHON)"
				if strings.Contains(c.modules, "torch") && os.Getenv("STRATA_REQUIRE_TORCH") == "1" {
					t.Fatal(msg)
				}
				t.Skip("SKIPPED: " + msg)
			}
			top := smallTopology(t)
			top.Train.Rounds = 2
			top.Train.GateMaxDrop = 0.9
			top.Task.Evaluator = &topology.Evaluator{Command: []string{py, trainerScript(t, c.script)}}
			top.ApplyDefaults()
			m, ctx := startMesh(t, roles.UpConfig{Topology: top, EvaluatorStderr: testWriter{t}})
			if err := m.Run(ctx); err != nil {
				t.Fatal(err)
			}
			l, err := m.Ledger()
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Models) != top.Train.Rounds {
				t.Fatalf("%d model versions, want %d", len(l.Models), top.Train.Rounds)
			}
			n := float64(mnistOf(t, m).Eval.Len())
			for _, v := range l.Models {
				own, err := mnistOf(t, m).Evaluator().Evaluate(ctx, modelTheta(t, ctx, m, v))
				if err != nil {
					t.Fatal(err)
				}
				acc, _ := own.Get("accuracy")
				t.Logf("v%d: python %+v loss %.6f; built-in accuracy %.4f loss %.6f", v.Version, v.Metrics, v.Loss, acc, own.Loss)
				if len(v.Metrics) != 2 || v.Metrics[0].Name != "accuracy" || v.Metrics[1].Name != "balanced_accuracy" || v.Metric != "accuracy" || v.Score != v.Metrics[0].Value {
					t.Fatalf("v%d records %+v with primary %q (score %v): want accuracy (the gate's) and balanced_accuracy", v.Version, v.Metrics, v.Metric, v.Score)
				}
				if math.Abs(v.Metrics[0].Value-acc) > 2/n || math.Abs(v.Loss-own.Loss) > 1e-4*own.Loss {
					t.Errorf("v%d: python accuracy %v, loss %v; built-in %v, %v on the same held-out set", v.Version, v.Metrics[0].Value, v.Loss, acc, own.Loss)
				}
			}
			theta := serving(t, m)
			pf, err := m.Final().Evaluate(ctx, theta)
			if err != nil {
				t.Fatal(err)
			}
			gf, err := mnistOf(t, m).Final().Evaluate(ctx, theta)
			if err != nil {
				t.Fatal(err)
			}
			pa, _ := pf.Get("accuracy")
			ga, _ := gf.Get("accuracy")
			t.Logf("final: python %+v loss %.6f; built-in accuracy %.4f loss %.6f", pf.Metrics, pf.Loss, ga, gf.Loss)
			if math.Abs(pa-ga) > 3.0/float64(mnistOf(t, m).Test.Len()) || math.Abs(pf.Loss-gf.Loss) > 1e-4*gf.Loss {
				t.Errorf("final set: python accuracy %v loss %v, built-in %v %v", pa, pf.Loss, ga, gf.Loss)
			}
		})
	}
}
