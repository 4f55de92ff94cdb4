package lm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestParseConfigNamesTheField(t *testing.T) {
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Arch() != (Arch{Layers: 2, DModel: 64, Heads: 4, Context: 64, Hidden: 256}) || c.Dim() != 2*4*64*4 {
		t.Fatalf("defaults %+v, θ of %d", c.Arch(), c.Dim())
	}
	for _, tc := range []struct {
		opts  map[string]any
		field string
	}{
		{map[string]any{"d_model": 30, "heads": 4}, "d_model"},
		{map[string]any{"lora_rank": 100}, "lora_rank"},
		{map[string]any{"lora_targets": []string{"q", "gate"}}, "lora_targets"},
		{map[string]any{"local_lr": -1}, "local_lr"},
		{map[string]any{"shard_bytes": 10}, "shard_bytes"},
		{map[string]any{"pretrain_lr": -3}, "pretrain_lr"},
		{map[string]any{"no_such_key": 1}, "no_such_key"},
	} {
		_, err := ParseConfig(tc.opts)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%v: error %v, want ErrConfig naming %s", tc.opts, err, tc.field)
		}
	}
	// Options round-trips.
	back, err := ParseConfig(c.Options())
	if err != nil || back.Arch() != c.Arch() || back.LocalLR != c.LocalLR {
		t.Fatalf("Options round trip: %+v, %v", back, err)
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	n, _ := gradNet(t)
	path := filepath.Join(t.TempDir(), CheckpointName)
	if err := SaveWeights(path, "k1", n.W); err != nil {
		t.Fatal(err)
	}
	w, key, err := LoadWeights(path)
	if err != nil || key != "k1" || w.Arch != n.W.Arch {
		t.Fatalf("load: %v key %q arch %+v", err, key, w)
	}
	a, b := n.W.Tensors(), w.Tensors()
	for i := range a {
		for j := range a[i].Data {
			if a[i].Data[j] != b[i].Data[j] {
				t.Fatalf("%s[%d] = %v, saved %v", a[i].Name, j, b[i].Data[j], a[i].Data[j])
			}
		}
	}
}

// FuzzDecodeWeights: no input panics the checkpoint decoder; what it
// accepts has every tensor of its shape.
func FuzzDecodeWeights(f *testing.F) {
	w, _ := InitWeights(Arch{Layers: 1, DModel: 4, Heads: 1, Context: 2, Hidden: 4}, 1)
	ts := map[string][]float32{}
	for _, t := range w.Tensors() {
		ts[t.Name] = t.Data
	}
	good, _ := msgpack.Marshal(checkpointFile{Key: "k", Arch: w.Arch, Tensors: ts})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, _, err := DecodeWeights(b)
		if err != nil {
			return
		}
		for _, x := range w.Tensors() {
			if len(x.Data) != size(x.Shape) {
				t.Fatalf("%s: %d values for shape %v", x.Name, len(x.Data), x.Shape)
			}
		}
	})
}

func TestParamsCountsTheTensors(t *testing.T) {
	a := Arch{Layers: 3, DModel: 8, Heads: 2, Context: 5, Hidden: 12}
	w, _ := NewWeights(a)
	n := 0
	for _, x := range w.Tensors() {
		n += len(x.Data)
	}
	if n != a.params() {
		t.Fatalf("params %d, tensors hold %d", a.params(), n)
	}
}
