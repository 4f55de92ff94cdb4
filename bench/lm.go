package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

// LMConfig sizes the language-model scenario. Zero fields take the
// defaults given with each (quick: a tiny model and short jobs).
type LMConfig struct {
	// Options are the lm task's settings (topology task section); default:
	// the task's defaults (quick: 1 layer, d_model 16, context 16, 30
	// pre-training steps).
	Options map[string]any
	// Clients per region (2 regions; default 1800, quick 20) and rounds of
	// each privacy–utility job (default 12, quick 3) at sampling rate Q
	// (default 0.05, quick 0.25): by default the cohort of
	// examples/lm.yaml, about 180 clients a round, which is what DP
	// fine-tuning needs (with 20 a round the noise swamps the average).
	Clients int
	Rounds  int
	Q       float64
	// Calls is how many Train calls the throughput measurement times
	// (default 20, quick 4).
	Calls int
	// Sigmas are the public observer's noise multipliers of the
	// privacy–utility curve, one job each; 0 is the non-private job.
	// Default 0, 0.5, 0.7, 1, 2 (at least 4 noisy levels).
	Sigmas []float64
}

func (c LMConfig) withDefaults(quick bool) LMConfig {
	if c.Options == nil {
		c.Options = map[string]any{"name": "lm"}
		if quick {
			c.Options = map[string]any{"layers": 1, "d_model": 16, "heads": 2, "context": 16, "pretrain_steps": 30, "shard_bytes": 1024, "eval_windows": 32, "final_windows": 64}
		}
	}
	def := func(p *int, full, q int) {
		if *p == 0 {
			*p = full
			if quick {
				*p = q
			}
		}
	}
	def(&c.Clients, 1800, 20)
	def(&c.Rounds, 12, 3)
	def(&c.Calls, 20, 4)
	if c.Q == 0 {
		c.Q = 0.05
		if quick {
			c.Q = 0.25
		}
	}
	if c.Sigmas == nil {
		c.Sigmas = []float64{0, 0.5, 0.7, 1, 2}
	}
	return c
}

// Validate names the field that is wrong.
func (c LMConfig) Validate() error {
	switch {
	case c.Clients < 0 || c.Rounds < 0 || c.Calls < 0:
		return fmt.Errorf("%w: LMConfig: Clients %d, Rounds %d, Calls %d: want ≥ 0 (0: default)", ErrConfig, c.Clients, c.Rounds, c.Calls)
	case !(c.Q >= 0 && c.Q <= 1):
		return fmt.Errorf("%w: LMConfig.Q %v: want a sampling rate in (0, 1], or 0 for the default", ErrConfig, c.Q)
	}
	for i, s := range c.Sigmas {
		if !(s >= 0) || math.IsInf(s, 0) {
			return fmt.Errorf("%w: LMConfig.Sigmas[%d] %v: want a finite multiplier ≥ 0", ErrConfig, i, s)
		}
	}
	return nil
}

func (c LMConfig) topology(sigma float64) *topology.Topology {
	t := &topology.Topology{Job: fmt.Sprintf("bench-lm-z%s", strings.ReplaceAll(fmt.Sprint(sigma), ".", "p")), Seed: 1}
	t.Regions = []topology.Region{{ID: "a", Clients: c.Clients}, {ID: "b", Clients: c.Clients}}
	t.Privacy = topology.Privacy{SamplingRate: c.Q, Delta: 1e-5, Budget: math.Inf(1), Noise: topology.Noise{Global: sigma}}
	// The training plan of examples/lm.yaml (server learning rate 2,
	// momentum 0.5); the gate never holds a version back, so that every
	// point has its planned rounds.
	t.Train = topology.Training{Rounds: c.Rounds, ServerLR: 2, ServerMomentum: 0.5, GateMaxDrop: 10}
	opts := map[string]any{}
	for k, v := range c.Options {
		if k != "name" {
			opts[k] = v
		}
	}
	t.Task = topology.Task{Name: "lm", Options: opts}
	t.Round.Timeout.Duration = 10 * time.Minute
	t.ApplyDefaults()
	return t
}

// LMThroughput is the trainer's speed beside the same run's matmul.
type LMThroughput struct {
	Calls           int     `json:"train_calls"`
	TokensPerCall   int     `json:"tokens_per_call"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	TrainGFLOPS     float64 `json:"train_gflops"`
	// MatmulGFLOPS is float32 GEMM (gonum blas32, the kernel the trainer
	// calls) at the model's own shape, Matmul = [m, k, n]; SquareGFLOPS
	// at 256³.
	Matmul       [3]int  `json:"matmul_shape"`
	MatmulGFLOPS float64 `json:"matmul_gflops"`
	SquareGFLOPS float64 `json:"square_gflops"`
	Ratio        float64 `json:"ratio_to_matmul"`
	RatioSquare  float64 `json:"ratio_to_square"`
	// AllocPerCall is the bytes a Train call allocates (its working set:
	// activations, gradients, the copy of θ); ThetaBytes θ itself.
	AllocPerCall float64 `json:"alloc_bytes_per_call"`
	ThetaBytes   int     `json:"theta_bytes"`
	Dim          int     `json:"dim"`
}

// LMPoint is one privacy–utility job.
type LMPoint struct {
	Sigma         float64 `json:"sigma"`
	Epsilon       float64 `json:"epsilon"` // public, δ = 1e-5; 0 for σ = 0 (non-private)
	Rounds        int     `json:"rounds_committed"`
	BitsPretrain  float64 `json:"bits_per_byte_pretrained"`
	BitsFinal     float64 `json:"bits_per_byte_final"`
	Perplexity    float64 `json:"perplexity_final"`
	NextTokenAcc  float64 `json:"next_token_accuracy_final"`
	KeptReduction float64 `json:"kept_reduction"` // of the non-private job's bits-per-byte reduction; 0 when it had none
	Seconds       float64 `json:"seconds"`
}

// LMRow is the scenario's one row.
type LMRow struct {
	Throughput LMThroughput `json:"throughput"`
	Curve      []LMPoint    `json:"privacy_utility"`
}

// LM measures the language-model task: its trainer's tokens per second
// (forward + backward, one goroutine per Train call as an edge runs it)
// beside float32 GEMM on the same machine in the same run, the memory a
// client's training takes, and bits per byte against public ε over the
// noise levels of Sigmas, each a whole job over the real mesh.
func LM(ctx context.Context, env Env, cfg LMConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("lm", env, cfg)
	bar := NewProgress(env.Progress, "lm", 1+len(cfg.Sigmas))
	ckDir := filepath.Join(env.TempDir, "lm-checkpoint")
	t0 := cfg.topology(0)
	if err := t0.Validate(); err != nil {
		return out, fmt.Errorf("bench lm: %w", err)
	}
	bar.Label("preparing the task (pre-training, cached in the temp dir)")
	tk, err := builtin.Prepare(ctx, t0, builtin.Spec{CacheDir: ckDir})
	if err != nil {
		return out, fmt.Errorf("bench lm: %w", err)
	}
	bar.Label("trainer throughput and GEMM")
	tp, err := lmThroughput(ctx, tk, builtin.Clients(t0), cfg.Calls)
	if err != nil {
		return out, fmt.Errorf("bench lm: %w", err)
	}
	bar.Step()
	row := LMRow{Throughput: tp}
	var npReduction float64
	for i, s := range cfg.Sigmas {
		t := cfg.topology(s)
		bar.Label("privacy–utility: σ = %g", s)
		start := time.Now()
		res, bits, err := runLMJob(ctx, t, filepath.Join(env.TempDir, fmt.Sprintf("lm-%d", i)), ckDir)
		if err != nil {
			return out, fmt.Errorf("bench lm σ=%g: %w", s, err)
		}
		p := LMPoint{Sigma: s, Epsilon: res.eps, Rounds: res.rounds, BitsPretrain: bits[0]["bits_per_byte"], BitsFinal: bits[1]["bits_per_byte"],
			Perplexity: bits[1]["perplexity"], NextTokenAcc: bits[1]["next_token_accuracy"], Seconds: time.Since(start).Seconds()}
		if s == 0 {
			npReduction = p.BitsPretrain - p.BitsFinal
		}
		row.Curve = append(row.Curve, p)
		bar.Step()
	}
	for i := range row.Curve {
		// A share of a reduction only means something when the
		// non-private job reduced bits per byte at all.
		if npReduction > 0 {
			row.Curve[i].KeptReduction = (row.Curve[i].BitsPretrain - row.Curve[i].BitsFinal) / npReduction
		}
	}
	bar.Done()
	out.Report.Rows = []LMRow{row}
	out.Report.Summary = map[string]float64{
		"tokens_per_second": tp.TokensPerSecond, "train_gflops": tp.TrainGFLOPS, "matmul_gflops": tp.MatmulGFLOPS,
		"ratio_to_matmul": tp.Ratio, "ratio_to_square": tp.RatioSquare, "alloc_bytes_per_client_call": tp.AllocPerCall,
	}
	tt := Table{Title: "lm: trainer throughput (forward + backward) beside float32 GEMM, same run",
		Header: []string{"tokens/call", "tokens/s", "train GFLOP/s", "GEMM shape", "GEMM GFLOP/s", "ratio", "256³ GFLOP/s", "ratio", "alloc/call", "θ bytes"}}
	tt.Add(tp.TokensPerCall, tp.TokensPerSecond, tp.TrainGFLOPS, fmt.Sprintf("%d×%d×%d", tp.Matmul[0], tp.Matmul[1], tp.Matmul[2]), tp.MatmulGFLOPS, tp.Ratio, tp.SquareGFLOPS, tp.RatioSquare,
		fmt.Sprintf("%.0f KiB", tp.AllocPerCall/1024), tp.ThetaBytes)
	ct := Table{Title: "lm: privacy–utility (held-out code of the clients' domain; ε public at δ = 1e-5; σ = 0 is non-private)",
		Header: []string{"σ", "ε", "rounds", "bpb pre", "bpb final", "perplexity", "next-byte acc", "kept reduction", "s"}}
	fig := Figure{Name: "lm_privacy_utility", Title: "Bits per byte vs ε (public observer)", XLabel: "ε (δ = 1e-5)", YLabel: "bits per byte (held-out code)", LogX: true}
	s := Series{Name: "DP jobs"}
	for _, p := range row.Curve {
		eps := fmtEpsilon(p.Epsilon, p.Sigma)
		ct.Add(p.Sigma, eps, p.Rounds, p.BitsPretrain, p.BitsFinal, p.Perplexity, p.NextTokenAcc, p.KeptReduction, p.Seconds)
		if p.Sigma > 0 {
			s.X, s.Y = append(s.X, p.Epsilon), append(s.Y, p.BitsFinal)
			out.Report.Summary[fmt.Sprintf("bits_per_byte_z%g", p.Sigma)] = p.BitsFinal
			out.Report.Summary[fmt.Sprintf("epsilon_z%g", p.Sigma)] = p.Epsilon
		} else {
			out.Report.Summary["bits_per_byte_nonprivate"] = p.BitsFinal
			out.Report.Summary["bits_per_byte_pretrained"] = p.BitsPretrain
		}
	}
	fig.Series = []Series{s}
	out.Tables = []Table{tt, ct}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}

func fmtEpsilon(eps, sigma float64) string {
	if sigma == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.3g", eps)
}

// lmThroughput times Train calls of distinct clients and GEMM at the
// model's shape and at 256³, alternating so that both see the same load.
func lmThroughput(ctx context.Context, tk task.Task, clients []string, calls int) (LMThroughput, error) {
	c, ok := tk.(task.Costed)
	if !ok {
		return LMThroughput{}, fmt.Errorf("task %s does not state its training cost (task.Costed)", tk.Name())
	}
	cost := c.TrainCost()
	tr, err := tk.Trainer()
	if err != nil {
		return LMThroughput{}, err
	}
	theta := tk.Initial()
	delta := make([]float64, len(theta))
	res := LMThroughput{Calls: calls, TokensPerCall: cost.Tokens, Matmul: cost.Matmul, Dim: len(theta), ThetaBytes: 4 * len(theta)}
	// One warm-up call, untimed.
	if _, err := tr.Train(ctx, clients[0], 1, theta, delta); err != nil {
		return res, err
	}
	var trainSec, mmSec, sqSec, mmFlops, sqFlops float64
	var allocs uint64
	var ms runtime.MemStats
	for i := 0; i < calls; i++ {
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		start := time.Now()
		if _, err := tr.Train(ctx, clients[(i+1)%len(clients)], uint64(i+2), theta, delta); err != nil {
			return res, err
		}
		trainSec += time.Since(start).Seconds()
		runtime.ReadMemStats(&ms)
		allocs += ms.TotalAlloc - before
		sec, fl := timeGemm(cost.Matmul, 0.05)
		mmSec, mmFlops = mmSec+sec, mmFlops+fl
		sec, fl = timeGemm([3]int{256, 256, 256}, 0.05)
		sqSec, sqFlops = sqSec+sec, sqFlops+fl
	}
	res.TokensPerSecond = float64(calls*cost.Tokens) / trainSec
	res.TrainGFLOPS = float64(calls) * cost.FLOPs / trainSec / 1e9
	res.MatmulGFLOPS = mmFlops / mmSec / 1e9
	res.SquareGFLOPS = sqFlops / sqSec / 1e9
	res.Ratio = res.TrainGFLOPS / res.MatmulGFLOPS
	res.RatioSquare = res.TrainGFLOPS / res.SquareGFLOPS
	res.AllocPerCall = float64(allocs) / float64(calls)
	return res, nil
}

// timeGemm runs C = A·B of shape [m, k, n] repeatedly for about minSec
// and returns the time taken and the operations done.
func timeGemm(shape [3]int, minSec float64) (float64, float64) {
	m, k, n := max(shape[0], 1), max(shape[1], 1), max(shape[2], 1)
	a := blas32.General{Rows: m, Cols: k, Stride: k, Data: make([]float32, m*k)}
	b := blas32.General{Rows: k, Cols: n, Stride: n, Data: make([]float32, k*n)}
	c := blas32.General{Rows: m, Cols: n, Stride: n, Data: make([]float32, m*n)}
	for i := range a.Data {
		a.Data[i] = float32(i%7) * 0.1
	}
	for i := range b.Data {
		b.Data[i] = float32(i%5) * 0.1
	}
	start := time.Now()
	reps := 0
	for time.Since(start).Seconds() < minSec {
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, a, b, 0, c)
		reps++
	}
	return time.Since(start).Seconds(), float64(reps) * 2 * float64(m*k*n)
}

// runLMJob runs one job and evaluates version 0 and the serving version
// with the task's final evaluator.
func runLMJob(ctx context.Context, t *topology.Topology, dir, ckDir string) (utilityResult, [2]map[string]float64, error) {
	var evs [2]map[string]float64
	res, err := runUtilityJobWith(ctx, t, dir, ckDir, nil, func(tk task.Task, initial, final []float64) error {
		for i, th := range [][]float64{initial, final} {
			ev, err := tk.Final().Evaluate(ctx, th)
			if err != nil {
				return err
			}
			evs[i] = map[string]float64{"loss": ev.Loss}
			for _, m := range ev.Metrics {
				evs[i][m.Name] = m.Value
			}
		}
		return nil
	})
	return res, evs, err
}
