package mnist

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// checkConfigErr is the shared assertion of the config tables.
func checkConfigErr(t *testing.T, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v, want an ErrConfig naming %q", err, wantErr)
	}
}

func TestPretrainConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     PretrainConfig
		wantErr string // "" means valid
	}{
		{"defaults", PretrainConfig{}, ""},
		{"everything", PretrainConfig{Hidden: MaxHidden, Epochs: 1, Batch: 1, LR: 1e-3, Seed: 3}, ""},
		{"negative hidden", PretrainConfig{Hidden: -1}, "PretrainConfig.Hidden -1"},
		{"hidden too wide", PretrainConfig{Hidden: MaxHidden + 1}, "PretrainConfig.Hidden 4097"},
		{"negative epochs", PretrainConfig{Epochs: -2}, "PretrainConfig.Epochs -2"},
		{"negative batch", PretrainConfig{Batch: -1}, "PretrainConfig.Batch -1"},
		{"negative LR", PretrainConfig{LR: -0.1}, "PretrainConfig.LR -0.1"},
		{"NaN LR", PretrainConfig{LR: math.NaN()}, "PretrainConfig.LR NaN"},
		{"infinite LR", PretrainConfig{LR: math.Inf(1)}, "PretrainConfig.LR +Inf"},
	}
	s := randomSet(3, rand.New(rand.NewPCG(1, 1)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr)
			if tt.wantErr != "" {
				_, err := Pretrain(s, tt.cfg)
				checkConfigErr(t, err, tt.wantErr)
			}
		})
	}
	if d := (PretrainConfig{}).withDefaults(); d.Hidden != 128 || d.Epochs != 4 || d.Batch != 32 || d.LR != 0.1 {
		t.Errorf("defaults: got %+v, want 128 hidden, 4 epochs, batch 32, LR 0.1", d)
	}
}

func TestLocalConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     LocalConfig
		wantErr string // "" means valid
	}{
		{"defaults", LocalConfig{}, ""},
		{"everything", LocalConfig{Epochs: 1, Batch: 1, LR: 2}, ""},
		{"negative epochs", LocalConfig{Epochs: -1}, "LocalConfig.Epochs -1"},
		{"negative batch", LocalConfig{Batch: -3}, "LocalConfig.Batch -3"},
		{"negative LR", LocalConfig{LR: -1}, "LocalConfig.LR -1"},
		{"NaN LR", LocalConfig{LR: math.NaN()}, "LocalConfig.LR NaN"},
	}
	ck := &Checkpoint{Hidden: 2, W1: make([]float64, 2*Pixels), B1: make([]float64, 2), W2: make([]float64, Classes*2), B2: make([]float64, Classes)}
	m, _ := ck.Model(false)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr)
			tr, err := NewTrainer(m, tt.cfg)
			checkConfigErr(t, err, tt.wantErr)
			if err == nil && tr.cfg != tt.cfg.WithDefaults() {
				t.Fatalf("trainer recipe %+v, want %+v", tr.cfg, tt.cfg.WithDefaults())
			}
		})
	}
	if d := (LocalConfig{}).WithDefaults(); d != (LocalConfig{Epochs: 2, Batch: 10, LR: 0.1}) {
		t.Errorf("defaults: got %+v, want 2 epochs, batch 10, LR 0.1", d)
	}
}

func TestTaskConfigValidate(t *testing.T) {
	ok := func(f func(*TaskConfig)) TaskConfig {
		c := TaskConfig{Clients: 100}
		if f != nil {
			f(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     TaskConfig
		wantErr string // "" means valid
	}{
		{"defaults", ok(nil), ""},
		{"shards", ok(func(c *TaskConfig) { c.Shards, c.ExamplesPerClient = 5, 20 }), ""},
		{"every example", ok(func(c *TaskConfig) { c.Clients, c.ExamplesPerClient, c.PublicExamples = 5000, 10, 10000 }), ""},
		{"personal", ok(func(c *TaskConfig) { c.Personal = true }), ""},
		{"no clients", ok(func(c *TaskConfig) { c.Clients = 0 }), "TaskConfig.Clients 0"},
		{"hidden too wide", ok(func(c *TaskConfig) { c.Hidden = 5000 }), "TaskConfig.Hidden 5000"},
		{"negative pretrain epochs", ok(func(c *TaskConfig) { c.PretrainEpochs = -1 }), "TaskConfig.PretrainEpochs -1"},
		{"every example public", ok(func(c *TaskConfig) { c.PublicExamples = TrainSize }), "TaskConfig.PublicExamples 60000"},
		{"negative examples", ok(func(c *TaskConfig) { c.ExamplesPerClient = -1 }), "TaskConfig.ExamplesPerClient -1"},
		{"too many examples", ok(func(c *TaskConfig) { c.Clients = 5001 }), "TaskConfig.ExamplesPerClient 10 × Clients 5001"},
		{"negative alpha", ok(func(c *TaskConfig) { c.DirichletAlpha = -1 }), "TaskConfig.DirichletAlpha -1"},
		{"infinite alpha", ok(func(c *TaskConfig) { c.DirichletAlpha = math.Inf(1) }), "TaskConfig.DirichletAlpha +Inf"},
		{"negative shards", ok(func(c *TaskConfig) { c.Shards = -1 }), "TaskConfig.Shards -1"},
		{"shards not dividing", ok(func(c *TaskConfig) { c.Shards = 3 }), "TaskConfig.Shards 3: want a divisor of ExamplesPerClient 10"},
		{"eval beyond the test set", ok(func(c *TaskConfig) { c.EvalExamples = TestSize + 1 }), "TaskConfig.EvalExamples 10001"},
		{"negative personal epochs", ok(func(c *TaskConfig) { c.PersonalEpochs = -1 }), "TaskConfig.PersonalEpochs -1"},
		{"bad local recipe", ok(func(c *TaskConfig) { c.Local.Batch = -1 }), "TaskConfig.Local.Batch -1"},
	}
	mn := &MNIST{Train: randomSet(10, rand.New(rand.NewPCG(1, 1))), Test: randomSet(10, rand.New(rand.NewPCG(1, 2)))}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr)
			if tt.wantErr != "" {
				_, err := PrepareTask(mn, tt.cfg, "", nil)
				checkConfigErr(t, err, tt.wantErr)
			}
		})
	}
	// A valid configuration for more data than the set holds is refused
	// by name, not with a panic.
	_, err := PrepareTask(mn, ok(nil), "", nil)
	checkConfigErr(t, err, "TaskConfig.PublicExamples 10000 and EvalExamples 2000")
	d := ok(nil).withDefaults()
	want := TaskConfig{Hidden: 128, PretrainEpochs: 4, PublicExamples: 10000, Clients: 100, ExamplesPerClient: 10, DirichletAlpha: 0.5, EvalExamples: 2000,
		Local: LocalConfig{}.WithDefaults()}
	if d != want {
		t.Errorf("defaults: got %+v, want %+v", d, want)
	}
	if p := ok(func(c *TaskConfig) { c.Personal = true }).withDefaults(); p.PersonalEpochs != 10 {
		t.Errorf("personal default: got %d epochs, want 10", p.PersonalEpochs)
	}
}

func TestNewClientTrainerRefusesABadRecipe(t *testing.T) {
	task := syntheticTask(t, false)
	task.Config.Local.LR = math.NaN()
	if _, err := NewClientTrainer(task, []string{"a", "b", "c"}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "TaskConfig.Local.LR NaN") {
		t.Fatalf("got %v, want an ErrConfig naming TaskConfig.Local.LR", err)
	}
}
