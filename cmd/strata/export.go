package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// jobTopology is the topology a stopped job ran: --topology if given,
// else the copy strata up saved in the data dir, else the default one.
// ReadVersion checks it against the ledger's hash.
func jobTopology(data, path string) (*topology.Topology, error) {
	if path == "" {
		saved := filepath.Join(data, topologyFile)
		if _, err := os.Stat(saved); err == nil {
			path = saved
		}
	}
	return loadTopology(path)
}

// versionFlag is a model version; unset means the serving one.
type versionFlag struct{ v int64 }

func (f *versionFlag) String() string {
	if f.v == roles.Serving {
		return "serving"
	}
	return strconv.FormatInt(f.v, 10)
}

func (f *versionFlag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("version %q: want 0 (the pre-trained checkpoint) or a version N ≥ 1 of `strata model list`", s)
	}
	f.v = v
	return nil
}

// versionOf reads the model version a command names, with the job's task
// prepared (from the data dir's cache) to interpret it.
func versionOf(ctx context.Context, data, topo string, version int64) (*loadedVersion, error) {
	t, err := jobTopology(data, topo)
	if err != nil {
		return nil, err
	}
	key, err := dataKey()
	if err != nil {
		return nil, err
	}
	theta, v, err := roles.ReadVersion(ctx, data, t, key, version)
	if err != nil {
		if errors.Is(err, roles.ErrNoVersion) {
			return nil, fmt.Errorf("%w: --version: %v", errUsage, err)
		}
		return nil, err
	}
	tk, err := prepareTask(ctx, t, data, io.Discard)
	if err != nil {
		return nil, err
	}
	return &loadedVersion{topology: t, theta: theta, version: v, task: tk}, nil
}

type loadedVersion struct {
	topology *topology.Topology
	theta    []float64
	version  uint64
	task     task.Task
}

// runModelExport writes a model version as safetensors or as a PEFT
// adapter (docs/export.md names the tensors).
func runModelExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("model export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up")
	topo := fs.String("topology", "", "the topology the job ran with (default: the one strata up saved in the data dir)")
	format := fs.String("format", roles.FormatPEFT, "safetensors (the whole model, adapters merged) or peft (adapter_model.safetensors + adapter_config.json)")
	out := fs.String("out", "", "directory to write into (required)")
	version := versionFlag{v: roles.Serving}
	fs.Var(&version, "version", "model version (default: the serving one; 0: the pre-trained checkpoint)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata model export --data DIR [--version N] --format safetensors|peft --out DIR\n\nWrites a model version in the safetensors format: the whole model with the\nLoRA adapters merged into their projections (model.safetensors), or the\nadapter alone as PEFT saves it (adapter_model.safetensors, adapter_config.json).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if *out == "" {
		return fmt.Errorf("%w: model export needs --out DIR", errUsage)
	}
	if *format != roles.FormatSafetensors && *format != roles.FormatPEFT {
		return fmt.Errorf("%w: --format %q: use %s or %s", errUsage, *format, roles.FormatSafetensors, roles.FormatPEFT)
	}
	lv, err := versionOf(ctx, *data, *topo, version.v)
	if err != nil {
		return err
	}
	tk := lv.task
	files, err := roles.Export(tk, lv.theta, *format, *out, map[string]string{
		"strata.job": lv.topology.Job, "strata.version": strconv.FormatUint(lv.version, 10), "strata.task": lv.topology.Task.Name})
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s (model v%d of job %s)\n", f, lv.version, lv.topology.Job)
	}
	return nil
}

// runGenerate samples text from a model version.
func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up")
	topo := fs.String("topology", "", "the topology the job ran with (default: the one strata up saved in the data dir)")
	prompt := fs.String("prompt", "", "text the sample continues")
	tokens := fs.Int("tokens", 200, "bytes to generate")
	temperature := fs.Float64("temperature", 0.8, "sampling temperature (0: the most likely byte each step)")
	seed := fs.Uint64("seed", 1, "seed of the sampler")
	version := versionFlag{v: roles.Serving}
	fs.Var(&version, "version", "model version (default: the serving one; 0: the pre-trained checkpoint)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata generate --data DIR [--version N] --prompt TEXT [--tokens K] [--temperature T] [--seed S]\n\nPrints the prompt and a continuation sampled from a model version, to see\nwhat fine-tuning changed (compare --version 0).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if *tokens < 0 || *tokens > 1<<20 {
		return fmt.Errorf("%w: --tokens %d: want 0..%d", errUsage, *tokens, 1<<20)
	}
	if !(*temperature >= 0) || *temperature > 100 {
		return fmt.Errorf("%w: --temperature %v: want 0 (greedy) .. 100", errUsage, *temperature)
	}
	lv, err := versionOf(ctx, *data, *topo, version.v)
	if err != nil {
		return err
	}
	tk := lv.task
	text, err := roles.Generate(ctx, tk, lv.theta, []byte(*prompt), *tokens, *temperature, *seed)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s%s\n", *prompt, text)
	return nil
}
