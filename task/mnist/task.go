package mnist

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// TaskConfig describes the built-in fine-tuning task.
type TaskConfig struct {
	Hidden            int
	PretrainEpochs    int
	PublicExamples    int
	Clients           int
	ExamplesPerClient int
	DirichletAlpha    float64
	// Shards, when positive, deals label shards (PartitionShards) instead
	// of Dirichlet label mixes.
	Shards       int
	Invert       bool // the clients' domain shift
	EvalExamples int
	Full         bool
	Seed         uint64
	Local        LocalConfig
	// Personal gives each client a private residual head it trains
	// locally and never sends (task/mnist/personal.go), for PersonalEpochs
	// passes over its examples each time it is sampled.
	Personal       bool
	PersonalEpochs int
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
// that a restart resumes with the same backbone.
func PrepareTask(mn *MNIST, cfg TaskConfig, cacheDir string, logf func(string, ...any)) (*Task, error) {
	if logf == nil {
		logf = func(string, ...any) {}
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
	ct.pool.New = func() any { return NewTrainer(t.Model, t.Config.Local) }
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
