package trainerproto

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as an external trainer process: with
// STRATA_FAKE_TRAINER set it serves the protocol on stdin/stdout in the
// named mode instead of running tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("STRATA_FAKE_TRAINER"); mode != "" {
		os.Exit(fakeTrainer(mode))
	}
	os.Exit(m.Run())
}

// fakeTrainer answers Train with delta = −θ/10 (or a broken answer, by
// mode), and Evaluate with θ's sum as its metric "sum" (or, in the
// "v1-"… modes, as a trainer of protocol 1 does: no protocol in Ready,
// only an accuracy).
func fakeTrainer(mode string) int {
	c := NewConn(os.Stdin, os.Stdout)
	var h Hello
	if err := c.Recv(TypeHello, &h); err != nil {
		fmt.Fprintln(os.Stderr, "fake trainer:", err)
		return 2
	}
	ready := Ready{Trainer: "fake-" + mode, Personal: true, Protocol: Protocol}
	if strings.HasPrefix(mode, "v1-") {
		ready.Protocol = 0
	}
	c.Send(TypeReady, &ready)
	c.Flush()
	for {
		typ, body, buf, err := ReadFrame(c.r, c.buf)
		c.buf = buf
		if err != nil || typ == TypeShutdown {
			return 0 // shutdown or EOF
		}
		if typ == TypeEvaluate {
			if code := fakeEvaluate(c, mode, body); code != 0 {
				return code
			}
			continue
		}
		var req Train
		if err := DecodeBody(typ, TypeTrain, body, &req); err != nil {
			fmt.Fprintln(os.Stderr, "fake trainer:", err)
			return 2
		}
		theta := make([]float64, req.Dim)
		if err := c.RecvVector(theta, req.Chunks); err != nil {
			fmt.Fprintln(os.Stderr, "fake trainer:", err)
			return 2
		}
		out := make([]float64, len(theta))
		for i := range theta {
			out[i] = -theta[i] / 10
		}
		res := Result{Client: req.Client, Round: req.Round, Kind: KindDelta, Examples: 5, Dim: len(out), Chunks: Chunks(len(out))}
		switch mode {
		case "crash":
			fmt.Fprintln(os.Stderr, "fake trainer: out of memory, giving up")
			return 3
		case "hang":
			time.Sleep(time.Hour) // the stimulus: a trainer that never answers (the agent kills it)
		case "error":
			c.Send(TypeError, &Error{Client: req.Client, Round: req.Round, Code: "no_data", Message: "no shard for " + req.Client})
			c.Flush()
			continue
		case "nan":
			out[1] = math.NaN()
		case "shape":
			out = out[:len(out)-1]
			res.Dim, res.Chunks = len(out), Chunks(len(out))
		case "params":
			res.Kind = KindParams
			for i := range out {
				out[i] += theta[i]
			}
		}
		c.Send(TypeResult, &res)
		c.SendVector(out)
		c.Flush()
	}
}

// fakeEvaluate answers one Evaluate: "sum" = Σθ on any set, the set's
// name as the client would be ("" for held-out sets); broken by mode.
func fakeEvaluate(c *Conn, mode string, body []byte) int {
	var req Evaluate
	if err := DecodeBody(TypeEvaluate, TypeEvaluate, body, &req); err != nil {
		fmt.Fprintln(os.Stderr, "fake trainer:", err)
		return 2
	}
	theta := make([]float64, req.Dim)
	if err := c.RecvVector(theta, req.Chunks); err != nil {
		fmt.Fprintln(os.Stderr, "fake trainer:", err)
		return 2
	}
	sum := 0.0
	for _, x := range theta {
		sum += x
	}
	ev := Evaluation{Client: req.Client, Examples: 7, Accuracy: 0.5, Loss: 1.5,
		Metrics: []Metric{{Name: "sum", Value: sum}, {Name: "set_" + req.Set, Value: 1, HigherIsBetter: true}}}
	switch mode {
	case "v1-eval":
		ev.Loss, ev.Metrics = 0, nil
	case "eval-hang":
		fmt.Fprintln(os.Stderr, "fake evaluator: thinking hard")
		time.Sleep(time.Hour) // the stimulus: an evaluator that never answers
	case "eval-crash":
		fmt.Fprintln(os.Stderr, "fake evaluator: segmentation fault")
		return 3
	case "eval-nan":
		ev.Metrics[0].Value = math.NaN()
	case "eval-twice":
		ev.Metrics[1].Name = "sum"
	}
	c.Send(TypeEvaluation, &ev)
	c.Flush()
	return 0
}

func fakeRemote(t *testing.T, mode string, timeout time.Duration) *Remote {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STRATA_FAKE_TRAINER", mode)
	r, err := NewRemote(Config{Spec: "exec:" + exe, Layout: []Tensor{{"a", []int{3}}, {"head", []int{2}}}, Personal: []string{"head"}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestRemoteTrains checks the happy path both ways the trainer may answer.
func TestRemoteTrains(t *testing.T) {
	for _, mode := range []string{"delta", "params"} {
		t.Run(mode, func(t *testing.T) {
			r := fakeRemote(t, mode, time.Minute)
			theta := []float64{1, 2, 3, 4, 5}
			delta := make([]float64, 5)
			for round := uint64(1); round <= 2; round++ {
				n, err := r.Train(context.Background(), "c1", round, theta, delta)
				if err != nil {
					t.Fatal(err)
				}
				want := []float64{-0.1, -0.2, -0.3, -0.4, -0.5}
				for i := range want {
					if math.Abs(delta[i]-want[i]) > 1e-6 || n != 5 {
						t.Fatalf("round %d: delta %v examples %d, want %v and 5", round, delta, n, want)
					}
				}
			}
			if len(r.Pids()) != 1 {
				t.Fatalf("%d trainer processes for two sequential rounds, want 1", len(r.Pids()))
			}
		})
	}
}

// TestRemoteFailuresFailOnlyTheCall checks that a crash, a hang, a wrong
// shape, a NaN or a trainer error fails the call with an error saying so,
// and that the next call works again (with a fresh process where needed).
func TestRemoteFailuresFailOnlyTheCall(t *testing.T) {
	tests := []struct {
		mode     string
		want     error
		contains string
	}{
		{"crash", nil, "out of memory"},
		{"hang", context.DeadlineExceeded, "timed out"},
		{"shape", ErrShape, "4 values"},
		{"nan", ErrNonFinite, "value 1"},
		{"error", ErrTrainer, "no shard for c1"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			r := fakeRemote(t, tt.mode, 2*time.Second)
			theta := []float64{1, 2, 3, 4, 5}
			delta := make([]float64, 5)
			_, err := r.Train(context.Background(), "c1", 1, theta, delta)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("got %v, want an error wrapping %v that mentions %q", err, tt.want, tt.contains)
			}
			if !strings.Contains(err.Error(), "client c1 round 1") {
				t.Fatalf("error %q does not name the client and round", err)
			}
			t.Logf("%s: %v", tt.mode, err)
			if tt.mode == "error" {
				// A trainer that reports an error keeps its process.
				pids := r.Pids()
				if _, err := r.Train(context.Background(), "c2", 2, theta, delta); !errors.Is(err, ErrTrainer) || len(pids) != 1 || r.Pids()[0] != pids[0] {
					t.Fatalf("second call: %v, pids %v then %v; want ErrTrainer from the same process", err, pids, r.Pids())
				}
				return
			}
			// The agent carries on: the next call gets a working trainer.
			t.Setenv("STRATA_FAKE_TRAINER", "delta")
			if _, err := r.Train(context.Background(), "c2", 2, theta, delta); err != nil {
				t.Fatalf("call after a %s failed: %v", tt.mode, err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	layout := []Tensor{{"a", []int{3}}}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
		is      error
	}{
		{"minimal", Config{Spec: "exec:x", Layout: layout}, "", nil},
		{"command", Config{Command: []string{"python3", "a b.py"}, Layout: layout}, "", nil},
		{"everything", Config{Spec: "tcp:127.0.0.1:9", Layout: []Tensor{{"a", []int{3}}, {"head", []int{2, 5}}, {"s", nil}}, Personal: []string{"head"},
			Local: Local{Epochs: 1, Batch: 10, LR: 0.1, PersonalEpochs: 2}, Timeout: time.Second, Procs: 4}, "", nil},
		{"largest layout", Config{Spec: "unix:/s", Layout: []Tensor{{"a", []int{MaxDim / 2}}, {"b", []int{MaxDim / 2}}}}, "", nil},
		{"no spec", Config{Layout: layout}, "Config.Spec", ErrSpec},
		{"spec and command", Config{Spec: "exec:x", Command: []string{"x"}, Layout: layout}, "both set", ErrSpec},
		{"command without program", Config{Command: []string{" ", "a"}, Layout: layout}, "Config.Command", ErrSpec},
		{"bad kind", Config{Spec: "http://x", Layout: layout}, "unknown kind", ErrSpec},
		{"no target", Config{Spec: "exec: ", Layout: layout}, "Config.Spec", ErrSpec},
		{"no layout", Config{Spec: "exec:x"}, "Config.Layout is empty", ErrConfig},
		{"zero dimension", Config{Spec: "exec:x", Layout: []Tensor{{"a", []int{0}}}}, "every dimension positive", ErrConfig},
		{"negative dimension", Config{Spec: "exec:x", Layout: []Tensor{{"a", []int{4, -1}}}}, "every dimension positive", ErrConfig},
		{"too many values", Config{Spec: "exec:x", Layout: []Tensor{{"a", []int{MaxDim / 2}}, {"b", []int{MaxDim/2 + 1}}}}, "MaxDim", ErrConfig},
		{"overflowing shape", Config{Spec: "exec:x", Layout: []Tensor{{"a", []int{1 << 40, 1 << 40, 1 << 40}}}}, "MaxDim", ErrConfig},
		{"unknown personal", Config{Spec: "exec:x", Layout: layout, Personal: []string{"b"}}, "Config.Personal", ErrConfig},
		{"negative epochs", Config{Spec: "exec:x", Layout: layout, Local: Local{Epochs: -1}}, "Config.Local.Epochs", ErrConfig},
		{"negative batch", Config{Spec: "exec:x", Layout: layout, Local: Local{Batch: -1}}, "Config.Local.Batch", ErrConfig},
		{"NaN LR", Config{Spec: "exec:x", Layout: layout, Local: Local{LR: math.NaN()}}, "Config.Local.LR", ErrConfig},
		{"infinite LR", Config{Spec: "exec:x", Layout: layout, Local: Local{LR: math.Inf(1)}}, "Config.Local.LR", ErrConfig},
		{"negative personal epochs", Config{Spec: "exec:x", Layout: layout, Local: Local{PersonalEpochs: -1}}, "Config.Local.PersonalEpochs", ErrConfig},
		{"negative timeout", Config{Spec: "exec:x", Layout: layout, Timeout: -time.Second}, "Config.Timeout", ErrConfig},
		{"negative procs", Config{Spec: "exec:x", Layout: layout, Procs: -1}, "Config.Procs", ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tt.is) {
				t.Fatalf("got %v, want an error wrapping %v naming %q", err, tt.is, tt.wantErr)
			}
			// NewRemote refuses it with the same error.
			if _, nerr := NewRemote(tt.cfg); !errors.Is(nerr, tt.is) || !strings.Contains(nerr.Error(), tt.wantErr) {
				t.Fatalf("NewRemote: got %v, want %v", nerr, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	r, err := NewRemote(Config{Spec: "exec:x", Layout: []Tensor{{"a", []int{3}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Timeout != 2*time.Minute || r.cfg.Procs != 1 || r.cfg.Logger == nil || cap(r.slots) != 1 || r.Dim() != 3 {
		t.Errorf("defaults: got timeout %v, procs %d, logger %v, %d slots, dim %d; want 2m, 1, set, 1, 3", r.cfg.Timeout, r.cfg.Procs, r.cfg.Logger, cap(r.slots), r.Dim())
	}
}

// TestRemoteEvaluates checks both kinds of evaluation against trainers of
// both revisions: a protocol-2 trainer's named metrics and loss come back
// as sent for a client's data and for the held-out sets; a protocol-1
// trainer's accuracy comes back as the metric "accuracy", and a held-out
// evaluation it cannot do is refused with ErrProtocol without ending its
// session.
func TestRemoteEvaluates(t *testing.T) {
	theta := []float64{1, 2, 3, 4, 5}
	r := fakeRemote(t, "eval", time.Minute)
	for _, set := range []string{SetHeldOut, SetFinal} {
		ev, err := r.EvaluateSet(context.Background(), set, theta)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ev.Scores()
		if err != nil || ev.Client != "" || ev.Loss != 1.5 || len(m) != 2 || m[0] != (Metric{"sum", 15, false}) || m[1].Name != "set_"+set {
			t.Fatalf("%s set: %+v (%v): want sum 15 and set_%s, loss 1.5", set, ev, err, set)
		}
	}
	ev, err := r.Evaluate(context.Background(), "c1", theta)
	if err != nil || ev.Client != "c1" || ev.Metrics[1].Name != "set_" {
		t.Fatalf("client evaluation: %+v, %v", ev, err)
	}
	if _, err := r.EvaluateSet(context.Background(), "train", theta); err == nil || !strings.Contains(err.Error(), `"train"`) {
		t.Fatalf("unknown set: got %v, want an error naming it", err)
	}
	if _, err := r.Evaluate(context.Background(), "", theta); err == nil {
		t.Fatal("a client evaluation without a client was sent")
	}

	old := fakeRemote(t, "v1-eval", time.Minute)
	ev, err = old.Evaluate(context.Background(), "c1", theta)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ev.Scores(); err != nil || !reflect.DeepEqual(m, []Metric{{"accuracy", 0.5, true}}) {
		t.Fatalf("protocol-1 evaluation scores %+v, %v: want accuracy 0.5", m, err)
	}
	pids := old.Pids()
	if _, err := old.EvaluateSet(context.Background(), SetHeldOut, theta); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "speaks protocol 1") {
		t.Fatalf("held-out evaluation by a protocol-1 trainer: got %v, want ErrProtocol", err)
	}
	if !reflect.DeepEqual(old.Pids(), pids) || len(pids) != 1 {
		t.Fatalf("pids %v then %v: the refusal must keep the session", pids, old.Pids())
	}
}

// TestRemoteEvaluationFailures checks that an evaluator that hangs,
// crashes or sends malformed metrics fails the evaluation with an error
// naming the trainer and what it did, and that the next call gets a fresh
// process.
func TestRemoteEvaluationFailures(t *testing.T) {
	tests := []struct {
		mode     string
		want     error
		contains string
	}{
		{"eval-hang", context.DeadlineExceeded, "thinking hard"},
		{"eval-crash", nil, "segmentation fault"},
		{"eval-nan", ErrMetrics, `"sum" = NaN`},
		{"eval-twice", ErrMetrics, "reported twice"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			r := fakeRemote(t, tt.mode, 2*time.Second)
			_, err := r.EvaluateSet(context.Background(), SetHeldOut, []float64{1, 2, 3, 4, 5})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("got %v, want an error wrapping %v that mentions %q", err, tt.want, tt.contains)
			}
			if !strings.Contains(err.Error(), "trainer "+r.Name()+": evaluate heldout set") {
				t.Fatalf("error %q does not name the trainer and the set", err)
			}
			t.Logf("%s: %v", tt.mode, err)
			if len(r.Pids()) != 0 {
				t.Fatalf("the failed session's process %v is still listed", r.Pids())
			}
			t.Setenv("STRATA_FAKE_TRAINER", "eval")
			if _, err := r.EvaluateSet(context.Background(), SetHeldOut, []float64{1, 2, 3, 4, 5}); err != nil {
				t.Fatalf("evaluation after a %s failed: %v", tt.mode, err)
			}
		})
	}
}

// TestRemoteCommand starts the trainer from an argument list taken as it
// is, and Close ends its process.
func TestRemoteCommand(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STRATA_FAKE_TRAINER", "eval")
	r, err := NewRemote(Config{Command: []string{exe, "-test.run=^$", "an argument with spaces"}, Layout: []Tensor{{"a", []int{2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.EvaluateSet(context.Background(), SetFinal, []float64{1, 2}); err != nil {
		t.Fatal(err)
	}
	pids := r.Pids()
	if len(pids) != 1 || r.Name() != "exec:"+exe+" -test.run=^$ an argument with spaces" {
		t.Fatalf("pids %v, name %q", pids, r.Name())
	}
	r.Close()
	if err := syscall.Kill(pids[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("trainer process %d after Close: kill(0) = %v, want ESRCH (gone)", pids[0], err)
	}
}
