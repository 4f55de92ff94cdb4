package mnist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/strata-fl/strata/task"
)

// Name is the task's name in a topology (`task: {name: mnist}`).
const Name = "mnist"

// ErrConfig is wrapped by every error about the task's settings.
var ErrConfig = errors.New("mnist: invalid task settings")

// Partitions of the clients' data (Config.Partition).
const (
	ByDirichlet = "dirichlet"
	ByShards    = "shards"
)

// Sizes of the MNIST sets, which bound the data plan.
const (
	TrainSize = 60000
	TestSize  = 10000
)

// Config is the task's section of a topology: the data plan, the model
// and the clients' local training. Zero fields take the defaults.
type Config struct {
	// Hidden is the width of the pre-trained backbone; default 128.
	Hidden int `yaml:"hidden"`
	// Full fine-tunes the backbone too; default false (adapter and head).
	Full bool `yaml:"full"`
	// PretrainEpochs is the checkpoint's central pre-training; default 6.
	PretrainEpochs int `yaml:"pretrain_epochs"`
	// LocalEpochs, LocalBatch and LocalLR are a client's SGD each round it
	// is sampled; defaults 3, 10 and 0.3.
	LocalEpochs int     `yaml:"local_epochs"`
	LocalBatch  int     `yaml:"local_batch"`
	LocalLR     float64 `yaml:"local_lr"`
	// PersonalHead gives each client a private residual head, trained on
	// its data and never sent (personal.go); PersonalEpochs passes over its
	// examples each time it is sampled, default 10.
	PersonalHead   bool `yaml:"personal_head,omitempty"`
	PersonalEpochs int  `yaml:"personal_epochs,omitempty"`
	// PublicExamples is how many examples of the MNIST training set (the
	// first ones, ordinary digits) pre-train the checkpoint; no client
	// holds them. Default 10000.
	PublicExamples    int     `yaml:"public_examples"`
	ExamplesPerClient int     `yaml:"examples_per_client"` // default 10
	DirichletAlpha    float64 `yaml:"dirichlet_alpha"`     // label skew; default 0.5
	// Shift is the clients' domain: "invert" (default) or "none".
	Shift string `yaml:"shift"`
	// EvalExamples is the per-round evaluation subset of the shifted test
	// set; the final score uses all 10000. Default 2000.
	EvalExamples int `yaml:"eval_examples"`
	// Partition deals the clients' examples: "dirichlet" (default: label
	// mix from Dirichlet(dirichlet_alpha)) or "shards" (sorted by label and
	// cut into equal shards, shards_per_client dealt to each client at
	// random, as McMahan et al. 2017 do for non-IID MNIST).
	Partition       string `yaml:"partition,omitempty"`
	ShardsPerClient int    `yaml:"shards_per_client,omitempty"` // default 2 with shards
}

// withDefaults returns c with zero fields set.
func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Hidden, 128)
	def(&c.PretrainEpochs, 6)
	def(&c.LocalEpochs, 3)
	def(&c.LocalBatch, 10)
	if c.LocalLR == 0 {
		c.LocalLR = 0.3
	}
	def(&c.PersonalEpochs, 10)
	def(&c.PublicExamples, 10000)
	def(&c.ExamplesPerClient, 10)
	if c.DirichletAlpha == 0 {
		c.DirichletAlpha = 0.5
	}
	if c.Shift == "" {
		c.Shift = "invert"
	}
	def(&c.EvalExamples, 2000)
	if c.Partition == ByShards {
		def(&c.ShardsPerClient, 2)
	}
	return c
}

// Validate names the field that is wrong and how to fix it, for a job of
// the given number of clients.
func (c Config) Validate(clients int) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: task.%s: %s", ErrConfig, field, fmt.Sprintf(format, args...)))
	}
	if c.Hidden <= 0 || c.Hidden > MaxHidden {
		bad("hidden", "%d: must be in 1..%d", c.Hidden, MaxHidden)
	}
	if c.PretrainEpochs <= 0 {
		bad("pretrain_epochs", "%d: must be at least 1", c.PretrainEpochs)
	}
	if c.PersonalEpochs <= 0 {
		bad("personal_epochs", "%d: must be at least 1", c.PersonalEpochs)
	}
	if c.LocalEpochs <= 0 || c.LocalBatch <= 0 {
		bad("local_epochs/local_batch", "%d/%d: both must be at least 1", c.LocalEpochs, c.LocalBatch)
	}
	if !(c.LocalLR > 0) {
		bad("local_lr", "%v: must be positive", c.LocalLR)
	}
	if c.PublicExamples <= 0 || c.PublicExamples >= TrainSize {
		bad("public_examples", "%d: must be in 1..%d", c.PublicExamples, TrainSize-1)
	}
	if need := clients * c.ExamplesPerClient; c.ExamplesPerClient <= 0 || need > TrainSize-c.PublicExamples {
		bad("examples_per_client", "%d × %d clients = %d examples, but only %d are left after the public split: lower clients or examples_per_client", c.ExamplesPerClient, clients, need, TrainSize-c.PublicExamples)
	}
	if !(c.DirichletAlpha > 0) {
		bad("dirichlet_alpha", "%v: must be positive (0.5 is skewed, 100 is nearly IID)", c.DirichletAlpha)
	}
	if c.Shift != "invert" && c.Shift != "none" {
		bad("shift", "%q: use invert or none", c.Shift)
	}
	switch c.Partition {
	case "", ByDirichlet:
		if c.ShardsPerClient != 0 {
			bad("shards_per_client", "%d: only used with partition: shards; remove it or set partition: shards", c.ShardsPerClient)
		}
	case ByShards:
		if c.ShardsPerClient < 1 || c.ShardsPerClient > 100 {
			bad("shards_per_client", "%d: must be in 1..100 (2 is the usual non-IID setting)", c.ShardsPerClient)
		} else if c.ExamplesPerClient%c.ShardsPerClient != 0 {
			bad("shards_per_client", "examples_per_client %d is not a multiple of shards_per_client %d: make it one", c.ExamplesPerClient, c.ShardsPerClient)
		}
	default:
		bad("partition", "%q: use dirichlet or shards", c.Partition)
	}
	if c.EvalExamples <= 0 || c.EvalExamples > TestSize {
		bad("eval_examples", "%d: must be in 1..%d", c.EvalExamples, TestSize)
	}
	return errors.Join(errs...)
}

// ParseConfig reads the task's settings from a topology's task section
// (every key but name), applies the defaults and validates them for a job
// of the given number of clients. Unknown keys are errors naming them.
func ParseConfig(options map[string]any, clients int) (Config, error) {
	var c Config
	if len(options) > 0 {
		b, err := yaml.Marshal(options)
		if err != nil {
			return c, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("%w: %s", ErrConfig, strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	c = c.withDefaults()
	return c, c.Validate(clients)
}

// Options returns c as a topology's task section would write it (the
// defaults spelled out), for `strata topology default`.
func (c Config) Options() map[string]any {
	c = c.withDefaults()
	b, _ := yaml.Marshal(c)
	var m map[string]any
	_ = yaml.Unmarshal(b, &m)
	return m
}

// Spec is what Prepare needs besides the settings.
type Spec struct {
	Config Config
	// Clients are the ids of the clients that hold data, in the topology's
	// order: client i gets the i-th partition.
	Clients []string
	Seed    uint64
	// CacheDir keeps the pre-trained checkpoint (empty: none).
	CacheDir string
	// MNIST is the loaded data set; nil loads it from the module that
	// ships it.
	MNIST *MNIST
	Logf  func(string, ...any)
}

// Prepare loads MNIST, pre-trains (or loads the cached) checkpoint and
// partitions the clients' data: the prepared task.
func Prepare(_ context.Context, s Spec) (*Task, error) {
	c := s.Config.withDefaults()
	if err := c.Validate(len(s.Clients)); err != nil {
		return nil, err
	}
	mn := s.MNIST
	if mn == nil {
		var err error
		if mn, err = LoadMNIST(""); err != nil {
			return nil, err
		}
	}
	tc := TaskConfig{
		Hidden: c.Hidden, PretrainEpochs: c.PretrainEpochs, PublicExamples: c.PublicExamples,
		Clients: len(s.Clients), ExamplesPerClient: c.ExamplesPerClient, DirichletAlpha: c.DirichletAlpha,
		Invert: c.Shift == "invert", EvalExamples: c.EvalExamples, Full: c.Full, Seed: s.Seed,
		Local:    LocalConfig{Epochs: c.LocalEpochs, Batch: c.LocalBatch, LR: c.LocalLR},
		Personal: c.PersonalHead, PersonalEpochs: c.PersonalEpochs,
	}
	if c.Partition == ByShards {
		tc.Shards = c.ShardsPerClient
	}
	t, err := PrepareTask(mn, tc, s.CacheDir, s.Logf)
	if err != nil {
		return nil, err
	}
	t.ids = append([]string(nil), s.Clients...)
	return t, nil
}

// Name implements task.Task.
func (t *Task) Name() string { return Name }

// Layout implements task.Task.
func (t *Task) Layout() []task.Tensor { return t.Model.Layout() }

// Initial implements task.Task.
func (t *Task) Initial() []float64 { return append([]float64(nil), t.Theta0...) }

// Trainer implements task.Task: the simulated clients' local training,
// with their personal heads when the task has them. One trainer is made
// per prepared task, so the heads persist across rounds.
func (t *Task) Trainer() (task.Trainer, error) {
	t.trainerOnce.Do(func() { t.trainer, t.trainerErr = NewClientTrainer(t, t.ids) })
	return t.trainer, t.trainerErr
}

// ClientTrainer returns the trainer Trainer made, for what only MNIST's
// clients have (personal heads, data export).
func (t *Task) ClientTrainer() (*ClientTrainer, error) {
	if _, err := t.Trainer(); err != nil {
		return nil, err
	}
	return t.trainer, nil
}

// Evaluator implements task.Task: accuracy and loss on the per-round
// evaluation subset of the shifted test set.
func (t *Task) Evaluator() task.Evaluator { return setEvaluator{t.Model, t.Eval} }

// Final implements task.Task: the whole shifted test set.
func (t *Task) Final() task.Evaluator { return setEvaluator{t.Model, t.Test} }

type setEvaluator struct {
	m *Model
	s *Set
}

func (e setEvaluator) Evaluate(ctx context.Context, theta []float64) (task.Evaluation, error) {
	if err := ctx.Err(); err != nil {
		return task.Evaluation{}, err
	}
	acc, loss, err := e.m.Evaluate(theta, e.s)
	if err != nil {
		return task.Evaluation{}, err
	}
	return task.Evaluation{Loss: loss, Metrics: []task.Metric{{Name: "accuracy", Value: acc, HigherIsBetter: true}}}, nil
}

// ExampleLosses implements task.Membership: the loss of every example of
// the given clients' partitions.
func (t *Task) ExampleLosses(ctx context.Context, theta []float64, clients []string) ([]float64, error) {
	idx := map[string]int{}
	for i, id := range t.ids {
		idx[id] = i
	}
	var ex []int
	for _, c := range clients {
		i, ok := idx[c]
		if !ok {
			return nil, fmt.Errorf("mnist: unknown client %q", c)
		}
		ex = append(ex, t.Parts[i]...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return t.Model.Losses(theta, t.ClientData.Subset(ex))
}

// HeldOutLosses implements task.Membership: the shifted test images
// outside the per-round evaluation subset.
func (t *Task) HeldOutLosses(ctx context.Context, theta []float64) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := t.Test
	if n := t.Eval.Len(); n < s.Len() {
		s = s.Slice(n, s.Len())
	}
	return t.Model.Losses(theta, s)
}

// Export implements task.External: the backbone, the test set and one
// shard per client (ClientTrainer.Export).
func (t *Task) Export(dir string, clients []string) error {
	ct, err := t.ClientTrainer()
	if err != nil {
		return err
	}
	return ct.Export(dir, clients)
}

// Recipe implements task.External.
func (t *Task) Recipe() task.Recipe {
	lc := t.Config.Local.WithDefaults()
	r := task.Recipe{Task: "mnist-adapter", Epochs: lc.Epochs, Batch: lc.Batch, LR: lc.LR, PersonalEpochs: t.Config.PersonalEpochs}
	if t.Config.Personal {
		r.Personal = t.Model.PersonalTensors()
	}
	return r
}

// PersonalReport implements task.Personal: each personalised client's
// accuracy on its own evaluation data with the global and with its
// personal model.
func (t *Task) PersonalReport(_ context.Context, theta []float64) (any, error) {
	if !t.Config.Personal {
		return nil, nil
	}
	ct, err := t.ClientTrainer()
	if err != nil {
		return nil, err
	}
	per, err := ct.PersonalReport(theta)
	if err != nil {
		return nil, err
	}
	return SummarisePersonal(per), nil
}
