package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sample() []Tensor {
	return []Tensor{
		{Name: "layers.0.self_attn.q_proj.lora_A.weight", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, 0, float32(math.Pi), -1e-8}},
		{Name: "norm.weight", Shape: []int{4}, Data: []float32{0.25, 0.5, 0.75, 1}},
		{Name: "scalar", Shape: []int{}, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 5}, Data: []float32{}},
	}
}

func TestRoundTrip(t *testing.T) {
	meta := map[string]string{"format": "pt", "rank": "2"}
	b, err := Encode(sample(), meta)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if (8+n)%8 != 0 {
		t.Errorf("the data starts at %d, not on an 8-byte boundary", 8+n)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v, want %v", f.Metadata, meta)
	}
	want := sample()
	if len(f.Tensors) != len(want) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(want))
	}
	for i, w := range want {
		g := f.Tensors[i]
		if g.Name != w.Name || !reflect.DeepEqual(g.Shape, w.Shape) || !reflect.DeepEqual(g.Data, w.Data) {
			t.Errorf("tensor %d: got %+v, want %+v", i, g, w)
		}
	}
	if f.Tensor("norm.weight") == nil || f.Tensor("missing") != nil {
		t.Error("File.Tensor finds the wrong tensors")
	}
}

func TestEncodeRejects(t *testing.T) {
	for name, ts := range map[string][]Tensor{
		"shape":     {{Name: "a", Shape: []int{2, 2}, Data: []float32{1, 2, 3}}},
		"negative":  {{Name: "a", Shape: []int{-1}, Data: nil}},
		"duplicate": {{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}},
		"metadata":  {{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}},
		"unnamed":   {{Shape: []int{1}, Data: []float32{1}}},
	} {
		if _, err := Encode(ts, nil); !errors.Is(err, ErrTensor) {
			t.Errorf("%s: err %v, want ErrTensor", name, err)
		}
	}
}

// file builds a file from a raw header and data.
func file(hdr string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	return append(append(b, hdr...), data...)
}

func TestDecodeRejects(t *testing.T) {
	four := make([]byte, 4)
	for name, b := range map[string][]byte{
		"short":        {1, 2, 3},
		"length":       binary.LittleEndian.AppendUint64(nil, 1<<40),
		"not object":   file(`[1]`, nil),
		"bad json":     file(`{"a":`, nil),
		"dtype":        file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, four),
		"shape":        file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, four),
		"hole":         file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)),
		"overlap":      file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, four),
		"past end":     file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, four),
		"trailing":     file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8)),
		"duplicate":    file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, four),
		"unknown":      file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, four),
		"metadata":     file(`{"__metadata__":{"a":1}}`, nil),
		"after object": file(`{} {}`, nil),
		"overflow":     file(`{"a":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,0]}}`, nil),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err %v, want ErrFormat", name, err)
		}
	}
	if _, err := Decode(file(`{}   `, nil)); err != nil {
		t.Errorf("an empty, space-padded file: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteFile(path, sample(), nil); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 4 || f.Metadata != nil {
		t.Errorf("read back %d tensors, metadata %v", len(f.Tensors), f.Metadata)
	}
}

// pyReader is an independent reader of the format: Python's standard
// library only (struct, json, array), written from the format's
// description, not from this package.
const pyReader = `
import json, struct, sys, array
with open(sys.argv[1], "rb") as f:
    raw = f.read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
out = {"metadata": header.pop("__metadata__", {}), "tensors": {}, "aligned": (8 + n) % 8 == 0}
for name, t in header.items():
    assert t["dtype"] == "F32", t["dtype"]
    b, e = t["data_offsets"]
    a = array.array("f")
    a.frombytes(data[b:e])
    if sys.byteorder != "little":
        a.byteswap()
    count = 1
    for d in t["shape"]:
        count *= d
    assert len(a) == count, (name, len(a), count)
    out["tensors"][name] = {"shape": t["shape"], "values": [float(x) for x in a]}
json.dump(out, sys.stdout)
`

// RequirePython runs an independent Python reader, or skips (loudly)
// when python3 is absent, unless STRATA_REQUIRE_PYTHON=1 makes that a
// failure.
func RequirePython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("STRATA_REQUIRE_PYTHON") == "1" {
			t.Fatalf("python3 not found and STRATA_REQUIRE_PYTHON=1: %v", err)
		}
		t.Skip("SKIPPED: python3 not found: the independent safetensors reader cannot run (set STRATA_REQUIRE_PYTHON=1 to make this a failure)")
	}
	return py
}

func TestPythonReadsWhatWeWrite(t *testing.T) {
	py := RequirePython(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := WriteFile(path, sample(), map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "read.py")
	if err := os.WriteFile(script, []byte(pyReader), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python reader: %v: %s", err, stderr.String())
	}
	var got struct {
		Metadata map[string]string
		Aligned  bool
		Tensors  map[string]struct {
			Shape  []int
			Values []float64
		}
	}
	if err := jsonUnmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Aligned || got.Metadata["format"] != "pt" {
		t.Errorf("python: aligned %v, metadata %v", got.Aligned, got.Metadata)
	}
	for _, w := range sample() {
		g, ok := got.Tensors[w.Name]
		if !ok {
			t.Errorf("python does not see %s", w.Name)
			continue
		}
		if len(g.Shape) != len(w.Shape) || !reflect.DeepEqual(append([]int{}, g.Shape...), append([]int{}, w.Shape...)) {
			t.Errorf("%s: python reads shape %v, want %v", w.Name, g.Shape, w.Shape)
		}
		if len(g.Values) != len(w.Data) {
			t.Errorf("%s: python reads %d values, want %d", w.Name, len(g.Values), len(w.Data))
			continue
		}
		for i, v := range w.Data {
			if float32(g.Values[i]) != v {
				t.Errorf("%s[%d]: python reads %v, want %v", w.Name, i, g.Values[i], v)
			}
		}
	}
	if len(got.Tensors) != len(sample()) {
		t.Errorf("python reads %d tensors, want %d", len(got.Tensors), len(sample()))
	}
	if strings.Contains(stderr.String(), "Traceback") {
		t.Error(stderr.String())
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
