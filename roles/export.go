package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/safetensors"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// ErrNotExportable reports a task that does not implement the optional
// interface a command needs (task.TensorExporter, task.Generator).
var ErrNotExportable = errors.New("roles: the job's task cannot do this")

// ErrNoVersion reports a model version the ledger did not commit.
var ErrNoVersion = errors.New("roles: no such model version")

// Serving asks ReadVersion for the version the ledger serves.
const Serving = -1

// ReadVersion reads model version θ (Serving: the serving one; 0: the
// pre-trained checkpoint's) of the job a stopped `strata up` left in
// dataDir, checking that t is the topology it ran with and the blob's
// hash against the ledger's. It returns θ and the version read.
func ReadVersion(ctx context.Context, dataDir string, t *topology.Topology, key *seal.Key, version int64) ([]float64, uint64, error) {
	l, err := global.ReadLedgerKey(filepath.Join(dataDir, "global"), key)
	if err != nil {
		return nil, 0, err
	}
	if l.Job == nil {
		return nil, 0, fmt.Errorf("roles: %s holds no job", dataDir)
	}
	hash, err := t.Hash()
	if err != nil {
		return nil, 0, err
	}
	if l.Job.ConfigHash != hash {
		return nil, 0, fmt.Errorf("roles: the topology differs from the one job %s ran with: give the same --topology", l.Job.Name)
	}
	v, want := uint64(0), ""
	switch {
	case version == Serving:
		v = l.ServingVersion()
	case version >= 0:
		v = uint64(version)
	default:
		return nil, 0, fmt.Errorf("%w: version %d: use 0 (pre-trained) .. %d, or omit it for the serving one", ErrNoVersion, version, len(l.Models))
	}
	if v > 0 {
		if v > uint64(len(l.Models)) || l.Models[v-1].Version != v {
			return nil, 0, fmt.Errorf("%w: v%d: the ledger holds v0..v%d (`strata model list`)", ErrNoVersion, v, len(l.Models))
		}
		want = l.Models[v-1].Hash
	}
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: filepath.Join(dataDir, "nats"), Port: -1})
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	nc, err := mesh.Dialer{Server: srv}.Connect("strata-model")
	if err != nil {
		return nil, 0, err
	}
	defer nc.Close()
	store, err := mesh.OpenModelStore(ctx, nc, t.Job, 1)
	if err != nil {
		return nil, 0, err
	}
	store.SetKey(key)
	b, err := store.Get(ctx, "model", v, want)
	if err != nil {
		return nil, 0, err
	}
	f, err := wire.Float32s(b)
	if err != nil {
		return nil, 0, fmt.Errorf("model v%d: %w", v, err)
	}
	theta := make([]float64, len(f))
	for i, x := range f {
		theta[i] = float64(x)
	}
	return theta, v, nil
}

// Export formats.
const (
	// FormatSafetensors is the whole model in one model.safetensors: the
	// backbone with every adapter merged in (W + (lora_alpha/r)·B·A), so
	// that it loads as a plain model with no LoRA code.
	FormatSafetensors = "safetensors"
	// FormatPEFT is the adapter alone as PEFT (Hugging Face) saves it:
	// adapter_model.safetensors with base_model.model.<module>.lora_A.weight
	// [r, in] and .lora_B.weight [out, r], and adapter_config.json.
	FormatPEFT = "peft"
)

// Export files.
const (
	ModelFile         = "model.safetensors"
	AdapterFile       = "adapter_model.safetensors"
	AdapterConfigFile = "adapter_config.json"
)

// Export writes version θ of the task's model into outDir in format and
// returns the files written. The task must implement task.TensorExporter,
// whose contract this relies on: an adapter on module M has tensors
// M.lora_A.weight [r][in] and M.lora_B.weight [out][r] beside the
// backbone's M.weight [out][in], and AdapterConfig holds r and lora_alpha.
func Export(tk task.Task, theta []float64, format, outDir string, metadata map[string]string) ([]string, error) {
	ex, ok := tk.(task.TensorExporter)
	if !ok {
		return nil, fmt.Errorf("%w: task %T exports no tensors (it does not implement task.TensorExporter)", ErrNotExportable, tk)
	}
	if format != FormatSafetensors && format != FormatPEFT {
		return nil, fmt.Errorf("roles: export format %q: use %s or %s", format, FormatSafetensors, FormatPEFT)
	}
	backbone, loraA, loraB, err := ex.ModelTensors(theta)
	if err != nil {
		return nil, err
	}
	cfg := ex.AdapterConfig()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	meta := map[string]string{"format": "pt"}
	for k, v := range metadata {
		meta[k] = v
	}
	if format == FormatPEFT {
		var ts []safetensors.Tensor
		for _, group := range [][]task.Values{loraA, loraB} {
			for _, v := range group {
				ts = append(ts, safetensors.Tensor{Name: "base_model.model." + v.Name, Shape: v.Shape, Data: v.Data})
			}
		}
		path := filepath.Join(outDir, AdapterFile)
		if err := safetensors.WriteFile(path, ts, meta); err != nil {
			return nil, err
		}
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return nil, err
		}
		cpath := filepath.Join(outDir, AdapterConfigFile)
		if err := os.WriteFile(cpath, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
		return []string{path, cpath}, nil
	}
	merged, err := Merge(backbone, loraA, loraB, cfg)
	if err != nil {
		return nil, err
	}
	ts := make([]safetensors.Tensor, len(merged))
	for i, v := range merged {
		ts[i] = safetensors.Tensor{Name: v.Name, Shape: v.Shape, Data: v.Data}
	}
	path := filepath.Join(outDir, ModelFile)
	if err := safetensors.WriteFile(path, ts, meta); err != nil {
		return nil, err
	}
	return []string{path}, nil
}

// Merge returns the backbone with each adapter merged into its module:
// W + (lora_alpha/r)·B·A, in float64 rounded once to float32. The inputs
// are not modified.
func Merge(backbone, loraA, loraB []task.Values, cfg map[string]any) ([]task.Values, error) {
	r, err1 := number(cfg, "r")
	alpha, err2 := number(cfg, "lora_alpha")
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	if r <= 0 {
		return nil, fmt.Errorf("roles: merge: adapter_config r = %v: want a rank ≥ 1", r)
	}
	scale := alpha / r
	as := map[string]task.Values{}
	for _, a := range loraA {
		as[a.Name] = a
	}
	out := make([]task.Values, len(backbone))
	idx := map[string]int{}
	for i, w := range backbone {
		out[i] = task.Values{Tensor: w.Tensor, Data: w.Data}
		idx[w.Name] = i
	}
	for _, b := range loraB {
		mod, ok := strings.CutSuffix(b.Name, ".lora_B.weight")
		if !ok {
			return nil, fmt.Errorf("roles: merge: adapter tensor %q is not named <module>.lora_B.weight", b.Name)
		}
		a, ok := as[mod+".lora_A.weight"]
		i, okW := idx[mod+".weight"]
		if !ok || !okW {
			return nil, fmt.Errorf("roles: merge: %s has no %s.lora_A.weight or no backbone %s.weight", b.Name, mod, mod)
		}
		w := out[i]
		if len(b.Shape) != 2 || len(a.Shape) != 2 || len(w.Shape) != 2 || b.Shape[1] != a.Shape[0] || w.Shape[0] != b.Shape[0] || w.Shape[1] != a.Shape[1] {
			return nil, fmt.Errorf("roles: merge: %s: W %v, B %v, A %v do not compose as W + B·A", mod, w.Shape, b.Shape, a.Shape)
		}
		nOut, rank, nIn := b.Shape[0], b.Shape[1], a.Shape[1]
		data := make([]float32, len(w.Data))
		for o := 0; o < nOut; o++ {
			for j := 0; j < nIn; j++ {
				s := 0.0
				for k := 0; k < rank; k++ {
					s += float64(b.Data[o*rank+k]) * float64(a.Data[k*nIn+j])
				}
				data[o*nIn+j] = float32(float64(w.Data[o*nIn+j]) + scale*s)
			}
		}
		out[i] = task.Values{Tensor: w.Tensor, Data: data}
	}
	return out, nil
}

func number(cfg map[string]any, key string) (float64, error) {
	switch v := cfg[key].(type) {
	case int:
		return float64(v), nil
	case float64:
		return v, nil
	case float32:
		return float64(v), nil
	case string:
		return strconv.ParseFloat(v, 64)
	}
	return 0, fmt.Errorf("roles: adapter_config %s = %v (%T): want a number", key, cfg[key], cfg[key])
}

// Generate samples tokens bytes after prompt from version θ of the task's
// model (task.Generator).
func Generate(ctx context.Context, tk task.Task, theta []float64, prompt []byte, tokens int, temperature float64, seed uint64) ([]byte, error) {
	g, ok := tk.(task.Generator)
	if !ok {
		return nil, fmt.Errorf("%w: task %T generates no text (it does not implement task.Generator)", ErrNotExportable, tk)
	}
	return g.Generate(ctx, theta, prompt, tokens, temperature, seed)
}
