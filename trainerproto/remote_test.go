package trainerproto

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
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

// fakeTrainer answers Train with delta = −θ/10 (or a broken answer, by mode).
func fakeTrainer(mode string) int {
	c := NewConn(os.Stdin, os.Stdout)
	var h Hello
	if err := c.Recv(TypeHello, &h); err != nil {
		fmt.Fprintln(os.Stderr, "fake trainer:", err)
		return 2
	}
	c.Send(TypeReady, &Ready{Trainer: "fake-" + mode, Personal: true})
	c.Flush()
	for {
		var req Train
		if err := c.Recv(TypeTrain, &req); err != nil {
			return 0 // shutdown or EOF
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
		{"everything", Config{Spec: "tcp:127.0.0.1:9", Layout: []Tensor{{"a", []int{3}}, {"head", []int{2, 5}}, {"s", nil}}, Personal: []string{"head"},
			Local: Local{Epochs: 1, Batch: 10, LR: 0.1, PersonalEpochs: 2}, Timeout: time.Second, Procs: 4}, "", nil},
		{"largest layout", Config{Spec: "unix:/s", Layout: []Tensor{{"a", []int{MaxDim / 2}}, {"b", []int{MaxDim / 2}}}}, "", nil},
		{"no spec", Config{Layout: layout}, "Config.Spec", ErrSpec},
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
