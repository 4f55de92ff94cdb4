package mnist

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// LocalConfig is a client's local training recipe. Zero fields take the
// defaults given with each.
type LocalConfig struct {
	// Epochs is the passes over the client's examples; default 2, ≥ 0.
	Epochs int
	// Batch is the minibatch size, in examples; default 10, ≥ 0.
	Batch int
	// LR is the SGD learning rate, finite; default 0.1, ≥ 0.
	LR float64
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c LocalConfig) WithDefaults() LocalConfig {
	if c.Epochs == 0 {
		c.Epochs = 2
	}
	if c.Batch == 0 {
		c.Batch = 10
	}
	if c.LR == 0 {
		c.LR = 0.1
	}
	return c
}

// Validate names the field that is wrong (ErrConfig). Zero fields are
// valid: they take their defaults.
func (c LocalConfig) Validate() error { return c.validate("LocalConfig.") }

// validate is Validate with the fields' names prefixed by where they sit
// (e.g. "TaskConfig.Local.").
func (c LocalConfig) validate(in string) error {
	switch c = c.WithDefaults(); {
	case c.Epochs < 1:
		return fmt.Errorf("%w: %sEpochs %d: want ≥ 1 (0 means 2)", ErrConfig, in, c.Epochs)
	case c.Batch < 1:
		return fmt.Errorf("%w: %sBatch %d: want ≥ 1 examples (0 means 10)", ErrConfig, in, c.Batch)
	case !(c.LR > 0) || math.IsInf(c.LR, 1):
		return fmt.Errorf("%w: %sLR %v: want finite > 0 (0 means 0.1)", ErrConfig, in, c.LR)
	}
	return nil
}

// Trainer runs local training for one client; it owns its buffers, so a
// Trainer must not be shared between goroutines.
type Trainer struct {
	Model *Model
	cfg   LocalConfig
	ws    Workspace
	grad  []float64
	theta []float64
}

// NewTrainer returns a trainer for m with the given recipe, or the error
// of cfg.Validate.
func NewTrainer(m *Model, cfg LocalConfig) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newTrainer(m, cfg), nil
}

// newTrainer is NewTrainer for a recipe already validated.
func newTrainer(m *Model, cfg LocalConfig) *Trainer {
	return &Trainer{Model: m, cfg: cfg.WithDefaults(), grad: make([]float64, m.Dim()), theta: make([]float64, m.Dim())}
}

// Delta trains from start on the examples idx of s and writes the model
// difference (trained − start) into delta. It returns the mean training loss
// of the last epoch.
func (t *Trainer) Delta(start []float64, s *Set, idx []int, rng *rand.Rand, delta []float64) (float64, error) {
	d := t.Model.Dim()
	if len(start) != d || len(delta) != d {
		return 0, fmt.Errorf("%w: start has %d values, delta %d, model needs %d", ErrShape, len(start), len(delta), d)
	}
	if len(idx) == 0 {
		return 0, fmt.Errorf("mnist: local training on no examples")
	}
	copy(t.theta, start)
	order := append([]int(nil), idx...)
	var last float64
	for e := 0; e < t.cfg.Epochs; e++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		total, batches := 0.0, 0
		for lo := 0; lo < len(order); lo += t.cfg.Batch {
			b := order[lo:min(lo+t.cfg.Batch, len(order))]
			loss, err := t.Model.LossGrad(t.theta, s, b, t.grad, &t.ws, false)
			if err != nil {
				return 0, err
			}
			for i, g := range t.grad {
				t.theta[i] -= t.cfg.LR * g
			}
			total += loss
			batches++
		}
		last = total / float64(batches)
	}
	for i := range delta {
		delta[i] = t.theta[i] - start[i]
	}
	return last, nil
}
