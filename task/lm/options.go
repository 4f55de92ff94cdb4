package lm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"

	"gopkg.in/yaml.v3"
)

// Name is the task's name in a topology (`task: {name: lm}`).
const Name = "lm"

// ErrConfig is wrapped by every error about the task's settings.
var ErrConfig = errors.New("lm: invalid task settings")

// Config is the task's section of a topology. Zero fields take the
// defaults, chosen from measurements on a 2-core machine (README, "The
// language-model job") so that the example job finishes in minutes.
type Config struct {
	// Goroot is the Go tree the corpus is read from; default: located
	// (LocateGoroot).
	Goroot string `yaml:"goroot,omitempty"`

	// The transformer: layers (default 2), d_model (64), heads (4),
	// context (64 bytes) and the MLP's hidden width (4·d_model).
	Layers  int `yaml:"layers"`
	DModel  int `yaml:"d_model"`
	Heads   int `yaml:"heads"`
	Context int `yaml:"context"`
	Hidden  int `yaml:"hidden"`

	// Pre-training on the prose split: Adam steps (default 1500) of
	// pretrain_batch windows (16) at pretrain_lr (3e-3, decayed linearly
	// to a tenth).
	PretrainSteps int     `yaml:"pretrain_steps"`
	PretrainBatch int     `yaml:"pretrain_batch"`
	PretrainLR    float64 `yaml:"pretrain_lr"`

	// The adapters: rank (default 4), alpha (default 2·rank: scale 2) and
	// the projections they adapt (default q, k, v, o; also up, down).
	LoraRank    int      `yaml:"lora_rank"`
	LoraAlpha   float64  `yaml:"lora_alpha"`
	LoraTargets []string `yaml:"lora_targets"`

	// The clients' data: each holds shard_bytes (default 8192) of one
	// directory's Go files; heldout_dirs directories (default 40) are
	// held out for evaluation and no client trains on them.
	ShardBytes  int `yaml:"shard_bytes"`
	HeldoutDirs int `yaml:"heldout_dirs"`

	// A client's local training each round it is sampled: local_steps
	// SGD steps (default 4) on local_batch random windows of its shard
	// (4) at local_lr (default 0.2).
	LocalSteps int     `yaml:"local_steps"`
	LocalBatch int     `yaml:"local_batch"`
	LocalLR    float64 `yaml:"local_lr"`

	// Evaluation: the per-round gate reads eval_windows fixed windows of
	// the held-out code (default 256), the final report final_windows
	// (default 1024); each also scores a quarter as many of the held-out
	// prose (prose_bits_per_byte, what fine-tuning costs the pre-training
	// domain).
	EvalWindows  int `yaml:"eval_windows"`
	FinalWindows int `yaml:"final_windows"`
}

func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Layers, 2)
	def(&c.DModel, 64)
	def(&c.Heads, 4)
	def(&c.Context, 64)
	def(&c.Hidden, 4*c.DModel)
	def(&c.PretrainSteps, 1500)
	def(&c.PretrainBatch, 16)
	if c.PretrainLR == 0 {
		c.PretrainLR = 3e-3
	}
	def(&c.LoraRank, 4)
	if c.LoraAlpha == 0 {
		c.LoraAlpha = 2 * float64(c.LoraRank)
	}
	if len(c.LoraTargets) == 0 {
		c.LoraTargets = []string{"q", "k", "v", "o"}
	}
	def(&c.ShardBytes, 8192)
	def(&c.HeldoutDirs, 40)
	def(&c.LocalSteps, 4)
	def(&c.LocalBatch, 4)
	if c.LocalLR == 0 {
		c.LocalLR = 0.2
	}
	def(&c.EvalWindows, 256)
	def(&c.FinalWindows, 1024)
	return c
}

// Arch is the transformer's shape c describes.
func (c Config) Arch() Arch {
	c = c.withDefaults()
	return Arch{Layers: c.Layers, DModel: c.DModel, Heads: c.Heads, Context: c.Context, Hidden: c.Hidden}
}

// Validate names the field that is wrong and how to fix it.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: task.%s: %s", ErrConfig, field, fmt.Sprintf(format, args...)))
	}
	if err := c.Arch().Validate(); err != nil {
		bad("layers/d_model/heads/context/hidden", "%v", err)
	}
	if c.PretrainSteps < 0 || c.PretrainBatch < 1 {
		bad("pretrain_steps/pretrain_batch", "%d/%d: want ≥ 0 steps of ≥ 1 windows", c.PretrainSteps, c.PretrainBatch)
	}
	if !(c.PretrainLR > 0) || math.IsInf(c.PretrainLR, 0) {
		bad("pretrain_lr", "%v: want a finite positive rate", c.PretrainLR)
	}
	if c.LoraRank < 1 || c.LoraRank > c.DModel {
		bad("lora_rank", "%d: want 1..d_model (%d)", c.LoraRank, c.DModel)
	}
	if !(c.LoraAlpha > 0) || math.IsInf(c.LoraAlpha, 0) {
		bad("lora_alpha", "%v: want a finite positive scale", c.LoraAlpha)
	}
	seen := map[string]bool{}
	for _, t := range c.LoraTargets {
		if projIndex(t) < 0 || seen[t] {
			bad("lora_targets", "%q: want distinct names among %v", t, ProjNames)
		}
		seen[t] = true
	}
	if c.ShardBytes < 2*(c.Context+1) {
		bad("shard_bytes", "%d: want at least two windows (%d bytes)", c.ShardBytes, 2*(c.Context+1))
	}
	if c.HeldoutDirs < 1 {
		bad("heldout_dirs", "%d: want ≥ 1", c.HeldoutDirs)
	}
	if c.LocalSteps < 1 || c.LocalBatch < 1 {
		bad("local_steps/local_batch", "%d/%d: both must be at least 1", c.LocalSteps, c.LocalBatch)
	}
	if !(c.LocalLR > 0) || math.IsInf(c.LocalLR, 0) {
		bad("local_lr", "%v: want a finite positive rate", c.LocalLR)
	}
	if c.EvalWindows < 4 || c.FinalWindows < 4 {
		bad("eval_windows/final_windows", "%d/%d: want at least 4 each", c.EvalWindows, c.FinalWindows)
	}
	return errors.Join(errs...)
}

// ParseConfig reads the task's settings from a topology's task section
// (every key but name), applies the defaults and validates them. Unknown
// keys are errors naming them.
func ParseConfig(options map[string]any) (Config, error) {
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
	return c, c.Validate()
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

// Dim is the length of θ: the B matrices of the adapters.
func (c Config) Dim() int {
	c = c.withDefaults()
	a := c.Arch()
	n := 0
	for _, t := range c.LoraTargets {
		if p := projIndex(t); p >= 0 {
			_, out := a.projDims(p)
			n += out * c.LoraRank
		}
	}
	return n * c.Layers
}
