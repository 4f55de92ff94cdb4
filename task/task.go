// Package task is the interface between Strata and what a job trains.
// The tiers move θ — a flat vector of the trainable parameters — and never
// know which model it is: a task says how θ is laid out, what version 0
// is, how a simulated client trains, and how a version is scored. The
// built-in tasks live in its sub-packages (task/mnist, task/lm) and are
// chosen by name in task/builtin; an external trainer process can stand in
// for training and for evaluation (trainerproto).
package task

import (
	"context"
	"fmt"
	"math"
)

// Tensor names one tensor of θ, in packing order: trainers in other
// languages and exports rely on it.
type Tensor struct {
	Name  string `json:"name" msgpack:"name"`
	Shape []int  `json:"shape" msgpack:"shape"`
}

// Size is the tensor's number of values.
func (t Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Dim is the length of θ a layout packs.
func Dim(layout []Tensor) int {
	n := 0
	for _, t := range layout {
		n += t.Size()
	}
	return n
}

// Metric is one named score of a model version.
type Metric struct {
	Name           string  `json:"name" msgpack:"name"`
	Value          float64 `json:"value" msgpack:"value"`
	HigherIsBetter bool    `json:"higher_is_better" msgpack:"higher_is_better"`
}

// Evaluation is a model version's score on held-out data of the clients'
// domain: its loss and the task's metrics, the first of which (Primary) the
// global tier's evaluation gate compares between versions.
type Evaluation struct {
	Loss    float64  `json:"loss" msgpack:"loss"`
	Metrics []Metric `json:"metrics" msgpack:"metrics"`
}

// Primary returns the gate's metric: the first one, or the loss (lower is
// better) when the task reports none.
func (e Evaluation) Primary() Metric {
	if len(e.Metrics) > 0 {
		return e.Metrics[0]
	}
	return Metric{Name: "loss", Value: e.Loss}
}

// Get returns the named metric.
func (e Evaluation) Get(name string) (float64, bool) {
	for _, m := range e.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// Worse reports by how much e's primary metric is worse than base's (0 or
// less when it is as good or better), in the metric's own units.
func (e Evaluation) Worse(base Evaluation) float64 {
	m, b := e.Primary(), base.Primary()
	if m.HigherIsBetter {
		return b.Value - m.Value
	}
	return m.Value - b.Value
}

// Validate checks that the evaluation is finite and its metrics named.
func (e Evaluation) Validate() error {
	if math.IsNaN(e.Loss) || math.IsInf(e.Loss, 0) {
		return fmt.Errorf("task: evaluation loss %v is not finite", e.Loss)
	}
	seen := map[string]bool{}
	for _, m := range e.Metrics {
		if m.Name == "" || math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			return fmt.Errorf("task: evaluation metric %q = %v: want a name and a finite value", m.Name, m.Value)
		}
		if seen[m.Name] {
			return fmt.Errorf("task: evaluation metric %q is reported twice: name each metric once", m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

// Trainer computes a client's model delta from θ. The edge agent never
// trusts it with privacy: what it returns is clipped and noised after.
type Trainer interface {
	Train(ctx context.Context, client string, round uint64, theta, delta []float64) (examples int, err error)
}

// Evaluator scores θ.
type Evaluator interface {
	Evaluate(ctx context.Context, theta []float64) (Evaluation, error)
}

// Task is a prepared task. Every role of a job prepares the same one from
// the topology (deterministic from its seed), so the checkpoint a region's
// clients train from is the one the global tier released as version 0.
type Task interface {
	// Name is the topology's task name ("mnist", "lm").
	Name() string
	// Layout names θ's tensors in packing order.
	Layout() []Tensor
	// Initial is θ of model version 0 (the pre-trained starting point).
	Initial() []float64
	// Trainer trains the simulated clients of this process.
	Trainer() (Trainer, error)
	// Evaluator scores a version for the per-round gate (a held-out
	// subset); Final scores it on the whole held-out set, for reports.
	Evaluator() Evaluator
	Final() Evaluator
}

// Membership is implemented by tasks whose examples a membership-inference
// attack can score (the empirical audit): the loss of every training
// example of the given clients under θ, and of held-out examples of the
// clients' domain that no client trains on.
type Membership interface {
	ExampleLosses(ctx context.Context, theta []float64, clients []string) ([]float64, error)
	HeldOutLosses(ctx context.Context, theta []float64) ([]float64, error)
}

// External is implemented by tasks that an external trainer process can
// train (trainerproto): they export the clients' data for it and name the
// recipe it follows.
type External interface {
	// Export writes the given clients' data, and what a trainer needs
	// besides (a frozen backbone, a test set), under dir.
	Export(dir string, clients []string) error
	// Recipe is what the trainer is told in the protocol's hello.
	Recipe() Recipe
}

// Recipe names a task for an external trainer and its local training.
type Recipe struct {
	// Task is the protocol's name of the task ("mnist-adapter").
	Task string
	// Personal names tensors each client keeps for itself.
	Personal       []string
	Epochs, Batch  int
	LR             float64
	PersonalEpochs int
}

// Personal is implemented by tasks whose clients keep a private part of
// the model: PersonalReport summarises, for report.json, how each client's
// own model does (nil when the job does not personalise).
type Personal interface {
	PersonalReport(ctx context.Context, theta []float64) (any, error)
}

// Generator is implemented by language-model tasks: text sampled from a
// version θ, for `strata generate`.
type Generator interface {
	// Generate returns tokens bytes that follow prompt, drawn at the
	// given temperature (0: the most likely each step), seeded.
	Generate(ctx context.Context, theta []float64, prompt []byte, tokens int, temperature float64, seed uint64) ([]byte, error)
}

// Values is a tensor with its data, for export.
type Values struct {
	Tensor
	Data []float32
}

// TensorExporter is implemented by tasks whose model can be exported
// (safetensors, PEFT): the frozen backbone, the adapters' fixed A and
// their trained B from θ, and PEFT's adapter_config.json.
type TensorExporter interface {
	ModelTensors(theta []float64) (backbone, loraA, loraB []Values, err error)
	AdapterConfig() map[string]any
}

// NextLogProber scores text one byte ahead: for each context, the
// natural-log probabilities of every byte that may follow it.
type NextLogProber interface {
	NextLogProbs(contexts [][]byte) [][]float32
}

// LanguageModel is implemented by tasks whose model scores text (the
// Secret-Sharer audit ranks secrets with it).
type LanguageModel interface {
	NextLogProber(theta []float64) (NextLogProber, error)
}

// TextHolder is implemented by tasks whose clients hold text, so that an
// audit can plant a secret in a client's data before training: text is
// inserted repeats times into the client's data, at line boundaries the
// task chooses deterministically.
type TextHolder interface {
	InsertText(client string, text []byte, repeats int) error
}

// Cost is the arithmetic of one local training call (Trainer.Train), for
// benchmarks that compare a trainer's throughput with the machine's.
type Cost struct {
	// Tokens is how many tokens (or examples) one Train call processes.
	Tokens int
	// FLOPs is the floating-point operations of forward and backward for
	// them (a multiply-add counts two).
	FLOPs float64
	// Matmul is the shape [m, k, n] of the model's typical matrix product
	// (rows of activations × width), for a same-shape kernel baseline.
	Matmul [3]int
}

// Costed is implemented by tasks that can state their training's Cost.
type Costed interface {
	TrainCost() Cost
}
