package mnist

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// TaskConfig describes the built-in fine-tuning task. Zero fields take the
// defaults of what they feed: PretrainConfig's for Hidden and
// PretrainEpochs, LocalConfig's for Local, and Config's (a topology's task
// section) for the data plan.
type TaskConfig struct {
	// Hidden is the backbone's hidden units, 1..MaxHidden; default 128.
	Hidden int
	// PretrainEpochs is the checkpoint's passes over the public examples;
	// default 4, ≥ 0.
	PretrainEpochs int
	// PublicExamples is how many examples of the training set (the first
	// ones) pre-train the checkpoint; no client holds them. Default
	// 10000, below TrainSize.
	PublicExamples int
	// Clients is how many clients the rest is dealt to; required, ≥ 1.
	Clients int
	// ExamplesPerClient is each client's examples; default 10, ≥ 0.
	// Clients × ExamplesPerClient must fit in what PublicExamples leaves.
	ExamplesPerClient int
	// DirichletAlpha is the clients' label skew (Dirichlet(α) label
	// mixes), finite; default 0.5, ≥ 0. Unused with Shards.
	DirichletAlpha float64
	// Shards, when positive (at most 100, dividing ExamplesPerClient),
	// deals that many label shards to each client (PartitionShards)
	// instead of Dirichlet label mixes; default 0.
	Shards int
	// Invert is the clients' domain shift (inverted images); default false.
	Invert bool
	// EvalExamples is the per-round evaluation subset of the test set,
	// at most TestSize; default 2000, ≥ 0.
	EvalExamples int
	// Full fine-tunes the backbone too; default false (adapter and head).
	Full bool
	// Seed seeds pre-training, partitioning and local training; default 0.
	Seed uint64
	// Local is the clients' training recipe (LocalConfig's defaults).
	Local LocalConfig
	// Personal gives each client a private residual head it trains
	// locally and never sends (task/mnist/personal.go), for PersonalEpochs
	// passes over its examples each time it is sampled (default 10, ≥ 0).
	Personal       bool
	PersonalEpochs int
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c TaskConfig) withDefaults() TaskConfig {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	p := PretrainConfig{Hidden: c.Hidden, Epochs: c.PretrainEpochs}.withDefaults()
	c.Hidden, c.PretrainEpochs = p.Hidden, p.Epochs
	def(&c.PublicExamples, 10000)
	def(&c.ExamplesPerClient, 10)
	if c.DirichletAlpha == 0 {
		c.DirichletAlpha = 0.5
	}
	def(&c.EvalExamples, 2000)
	if c.Personal {
		def(&c.PersonalEpochs, 10)
	}
	c.Local = c.Local.WithDefaults()
	return c
}

// Validate names the field that is wrong (ErrConfig). Zero fields are
// valid where they have a default.
func (c TaskConfig) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: TaskConfig.%s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Hidden < 1 || c.Hidden > MaxHidden:
		return bad("Hidden %d: want 1..%d units", c.Hidden, MaxHidden)
	case c.PretrainEpochs < 1:
		return bad("PretrainEpochs %d: want ≥ 1 (0 means 4)", c.PretrainEpochs)
	case c.PublicExamples < 1 || c.PublicExamples >= TrainSize:
		return bad("PublicExamples %d: want 1..%d", c.PublicExamples, TrainSize-1)
	case c.Clients < 1:
		return bad("Clients %d: want ≥ 1", c.Clients)
	case c.ExamplesPerClient < 1:
		return bad("ExamplesPerClient %d: want ≥ 1 (0 means 10)", c.ExamplesPerClient)
	case c.Clients > (TrainSize-c.PublicExamples)/c.ExamplesPerClient:
		return bad("ExamplesPerClient %d × Clients %d: want at most the %d examples PublicExamples %d leaves", c.ExamplesPerClient, c.Clients, TrainSize-c.PublicExamples, c.PublicExamples)
	case !(c.DirichletAlpha > 0) || math.IsInf(c.DirichletAlpha, 1):
		return bad("DirichletAlpha %v: want finite > 0 (0 means 0.5)", c.DirichletAlpha)
	case c.Shards < 0 || c.Shards > 100:
		return bad("Shards %d: want 0 (Dirichlet) or 1..100", c.Shards)
	case c.Shards > 0 && c.ExamplesPerClient%c.Shards != 0:
		return bad("Shards %d: want a divisor of ExamplesPerClient %d", c.Shards, c.ExamplesPerClient)
	case c.EvalExamples < 1 || c.EvalExamples > TestSize:
		return bad("EvalExamples %d: want 1..%d", c.EvalExamples, TestSize)
	case c.PersonalEpochs < 0:
		return bad("PersonalEpochs %d: want ≥ 0", c.PersonalEpochs)
	}
	return c.Local.validate("TaskConfig.Local.")
}

// Task is the prepared task: a pre-trained checkpoint, the clients'
// partitioned data, and held-out evaluation data of the clients' domain.
type Task struct {
	Config     TaskConfig
	Checkpoint *Checkpoint
	Model      *Model
	Theta0     []float64
	ClientData *Set
	Parts      [][]int
	Test       *Set // all 10 000 test images, shifted
	Eval       *Set // the per-round evaluation subset of Test

	poolsOnce sync.Once
	testPools [][]int // Test indices by label, for ClientEvalSet

	ids         []string // the clients holding data, in partition order
	trainerOnce sync.Once
	trainer     *ClientTrainer
	trainerErr  error
}

// PrepareTask loads MNIST, pre-trains (or loads the cached) checkpoint, and
// partitions the clients' data. cacheDir, when set, keeps the checkpoint so
// that a restart resumes with the same backbone. A configuration that
// fails Validate, or that needs more examples than mn holds, is an error.
func PrepareTask(mn *MNIST, cfg TaskConfig, cacheDir string, logf func(string, ...any)) (*Task, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.PublicExamples >= mn.Train.Len() || cfg.EvalExamples > mn.Test.Len() {
		return nil, fmt.Errorf("%w: TaskConfig.PublicExamples %d and EvalExamples %d: the data set has %d training and %d test examples", ErrConfig, cfg.PublicExamples, cfg.EvalExamples, mn.Train.Len(), mn.Test.Len())
	}
	public := mn.Train.Slice(0, cfg.PublicExamples)
	clients := mn.Train.Slice(cfg.PublicExamples, mn.Train.Len())
	test := mn.Test
	if cfg.Invert {
		clients, test = clients.Invert(), test.Invert()
	}
	ck, err := loadOrPretrain(public, cfg, cacheDir, logf)
	if err != nil {
		return nil, err
	}
	var parts [][]int
	if cfg.Shards > 0 {
		parts, err = PartitionShards(clients, cfg.Clients, cfg.ExamplesPerClient, cfg.Shards, cfg.Seed)
	} else {
		parts, err = PartitionDirichlet(clients, cfg.Clients, cfg.ExamplesPerClient, cfg.DirichletAlpha, cfg.Seed)
	}
	if err != nil {
		return nil, err
	}
	m, theta := ck.Model(cfg.Full)
	return &Task{Config: cfg, Checkpoint: ck, Model: m, Theta0: theta, ClientData: clients, Parts: parts, Test: test, Eval: test.Slice(0, cfg.EvalExamples)}, nil
}

type checkpointFile struct {
	Key        string      `msgpack:"key"`
	Checkpoint *Checkpoint `msgpack:"checkpoint"`
}

func loadOrPretrain(public *Set, cfg TaskConfig, dir string, logf func(string, ...any)) (*Checkpoint, error) {
	key := fmt.Sprintf("hidden=%d epochs=%d public=%d seed=%d", cfg.Hidden, cfg.PretrainEpochs, cfg.PublicExamples, cfg.Seed)
	path := filepath.Join(dir, "checkpoint.msgpack")
	if dir != "" {
		if b, err := os.ReadFile(path); err == nil {
			var f checkpointFile
			if err := msgpack.Unmarshal(b, &f); err == nil && f.Key == key && f.Checkpoint != nil {
				return f.Checkpoint, nil
			}
			logf("checkpoint %s is for another configuration or unreadable: pre-training again", path)
		}
	}
	logf("pre-training the checkpoint on %d public examples (%d epochs)", public.Len(), cfg.PretrainEpochs)
	ck, err := Pretrain(public, PretrainConfig{Hidden: cfg.Hidden, Epochs: cfg.PretrainEpochs, Seed: cfg.Seed,
		OnEpoch: func(e int, loss float64) { logf("  pre-train epoch %d/%d: loss %.4f", e, cfg.PretrainEpochs, loss) }})
	if err != nil {
		return nil, err
	}
	if dir != "" {
		b, err := msgpack.Marshal(checkpointFile{Key: key, Checkpoint: ck})
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, fmt.Errorf("mnist: save checkpoint: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("mnist: save checkpoint: %w", err)
		}
	}
	return ck, nil
}

// ClientTrainer trains simulated clients on their partitions. It keeps one
// Trainer per concurrent caller in a pool.
type ClientTrainer struct {
	task  *Task
	index map[string]int
	pool  sync.Pool
	heads *personalHeads // nil unless the task is personalised
}

// NewClientTrainer maps client ids (in order) to partitions.
func NewClientTrainer(t *Task, ids []string) (*ClientTrainer, error) {
	if len(ids) != len(t.Parts) {
		return nil, fmt.Errorf("mnist: %d client ids for %d partitions", len(ids), len(t.Parts))
	}
	ct := &ClientTrainer{task: t, index: make(map[string]int, len(ids))}
	for i, id := range ids {
		ct.index[id] = i
	}
	if err := t.Config.Local.validate("TaskConfig.Local."); err != nil {
		return nil, err
	}
	ct.pool.New = func() any { return newTrainer(t.Model, t.Config.Local) }
	if t.Config.Personal {
		ct.heads = &personalHeads{heads: map[string][]float32{}}
	}
	return ct, nil
}

// Train runs local training for one client. Its randomness (minibatch
// order) is seeded by the task seed, the client and the round, so runs are
// reproducible; it never affects the DP guarantee.
func (c *ClientTrainer) Train(ctx context.Context, client string, round uint64, theta, delta []float64) (int, error) {
	i, ok := c.index[client]
	if !ok {
		return 0, fmt.Errorf("mnist: unknown client %q", client)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	h := fnv.New64a()
	h.Write([]byte(client))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], round)
	h.Write(b[:])
	rng := rand.New(rand.NewPCG(c.task.Config.Seed, h.Sum64()))
	tr := c.pool.Get().(*Trainer)
	defer c.pool.Put(tr)
	if _, err := tr.Delta(theta, c.task.ClientData, c.task.Parts[i], rng, delta); err != nil {
		return 0, err
	}
	if c.heads != nil {
		if err := c.trainResidual(client, theta, c.task.Parts[i], rng); err != nil {
			return 0, err
		}
	}
	return len(c.task.Parts[i]), nil
}
