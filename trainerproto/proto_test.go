package trainerproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden frames in testdata")

// samples holds one message of every type, with every field set, as the
// golden frames in testdata encode them.
var samples = map[Type]any{
	TypeHello: &Hello{Agent: "strata edge eu", Task: "mnist-adapter",
		Layout: []Tensor{{"adapter.scale", []int{784}}, {"head.weight", []int{10, 32}}}, Dim: 1104,
		Personal: []string{"head.weight"}, DataDir: "shards", StateDir: "state", MaxChunk: MaxChunk},
	TypeReady:      &Ready{Trainer: "numpy-example", Personal: true},
	TypeTrain:      &Train{Client: "eu-c00003", Round: 7, ModelVersion: 6, Dim: 1104, Chunks: 1, Epochs: 3, Batch: 10, LR: 0.3, Seed: 42, DeadlineMs: 1764400000000, PersonalEpochs: 10},
	TypeChunk:      &Chunk{Offset: 262144, Data: []byte{0, 0, 128, 63, 0, 0, 0, 192}},
	TypeResult:     &Result{Client: "eu-c00003", Round: 7, Kind: KindDelta, Examples: 10, Dim: 1104, Chunks: 1, Loss: 0.25},
	TypeError:      &Error{Client: "eu-c00003", Round: 7, Code: "no_data", Message: "no shard for client eu-c00003"},
	TypeEvaluate:   &Evaluate{Client: "eu-c00003", Dim: 1104, Chunks: 1},
	TypeEvaluation: &Evaluation{Client: "eu-c00003", Examples: 100, Accuracy: 0.75, Personal: true, PersonalAccuracy: 0.875},
	TypeShutdown:   &Shutdown{Reason: "job done"},
}

// TestGoldenFrames checks every message type both ways: encoding the sample
// gives the golden bytes, and decoding the golden bytes gives the sample.
// Trainers in other languages test against the same files.
func TestGoldenFrames(t *testing.T) {
	for _, typ := range Types {
		t.Run(typ.String(), func(t *testing.T) {
			msg, ok := samples[typ]
			if !ok {
				t.Fatalf("no sample message for %v", typ)
			}
			got, err := AppendFrame(nil, typ, msg)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", typ.String()+".bin")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding %v:\n got %x\nwant %x", typ, got, want)
			}
			gt, body, _, err := ReadFrame(bytes.NewReader(want), nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := NewMessage(typ)
			if err := DecodeBody(gt, typ, body, dec); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dec, msg) {
				t.Fatalf("decoding %v:\n got %+v\nwant %+v", typ, dec, msg)
			}
		})
	}
}

func TestReadFrameRejects(t *testing.T) {
	good, _ := AppendFrame(nil, TypeReady, &Ready{Trainer: "x"})
	wrongVersion := append([]byte(nil), good...)
	wrongVersion[5] = 9
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"short length", []byte{0, 0, 0, 1, 2}, ErrMalformed},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 2, 1}, ErrTooLarge},
		{"truncated", good[:len(good)-2], ErrMalformed},
		{"wrong version", wrongVersion, ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := ReadFrame(bytes.NewReader(tt.b), nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	typ, body, _, err := ReadFrame(bytes.NewReader(good), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := DecodeBody(typ, TypeResult, body, &Result{}); !errors.Is(err, ErrType) {
		t.Fatalf("ready decoded as result: got %v, want ErrType", err)
	}
}

// TestVectorRoundTrip streams a vector longer than one chunk and checks
// values, chunk order and shape errors.
func TestVectorRoundTrip(t *testing.T) {
	v := make([]float64, MaxChunk+5)
	for i := range v {
		v[i] = float64(float32(math.Sin(float64(i))))
	}
	var buf bytes.Buffer
	c := NewConn(&buf, &buf)
	if err := c.SendVector(v); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	got := make([]float64, len(v))
	if err := NewConn(bytes.NewReader(buf.Bytes()), nil).RecvVector(got, Chunks(len(v))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatal("vector changed in transit")
	}
	short := make([]float64, len(v)-1)
	if err := NewConn(bytes.NewReader(buf.Bytes()), nil).RecvVector(short, 2); !errors.Is(err, ErrShape) {
		t.Fatalf("vector one value too long: got %v, want ErrShape", err)
	}
	long := make([]float64, len(v)+1)
	if err := NewConn(bytes.NewReader(buf.Bytes()), nil).RecvVector(long, 2); !errors.Is(err, ErrShape) {
		t.Fatalf("vector one value short: got %v, want ErrShape", err)
	}
}

func TestPutChunkRejects(t *testing.T) {
	nan := []byte{0, 0, 0xc0, 0x7f}
	inf := []byte{0, 0, 0x80, 0x7f}
	dst := make([]float64, 2)
	tests := []struct {
		name string
		next int
		ch   Chunk
		want error
	}{
		{"NaN", 0, Chunk{Data: nan}, ErrNonFinite},
		{"Inf", 1, Chunk{Offset: 1, Data: inf}, ErrNonFinite},
		{"out of order", 0, Chunk{Offset: 1, Data: []byte{0, 0, 0, 0}}, ErrShape},
		{"overflows", 1, Chunk{Offset: 1, Data: make([]byte, 8)}, ErrShape},
		{"ragged", 0, Chunk{Data: make([]byte, 5)}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := PutChunk(dst, tt.next, tt.ch); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and every
// message decoder: they must return errors, never panic or allocate what a
// hostile length claims.
func FuzzReadFrame(f *testing.F) {
	for _, typ := range Types {
		b, err := AppendFrame(nil, typ, samples[typ])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 7, 4, 1, 0x81, 0xa4, 'd', 'a', 't', 'a', 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var buf []byte
		for {
			typ, body, nb, err := ReadFrame(r, buf)
			buf = nb
			if err != nil {
				return
			}
			msg := NewMessage(typ)
			if msg == nil {
				continue
			}
			if err := DecodeBody(typ, typ, body, msg); err != nil {
				continue
			}
			if ch, ok := msg.(*Chunk); ok {
				PutChunk(make([]float64, 4), 0, *ch)
			}
		}
	})
}

// TestPythonHelperAgrees reads every golden frame with the Python helper
// (clients/python/strata_trainer.py), has it re-encode the message, and
// decodes the helper's bytes here: the message must come back unchanged.
// Skipped (loudly) without a Python that has numpy and msgpack.
func TestPythonHelperAgrees(t *testing.T) {
	py := ""
	for _, c := range []string{os.Getenv("STRATA_PYTHON"), "python3", "/usr/bin/python3"} {
		if c != "" && exec.Command(c, "-c", "import numpy, msgpack").Run() == nil {
			py = c
			break
		}
	}
	if py == "" {
		t.Skip("SKIPPED: no Python with numpy and msgpack (install python3-numpy python3-msgpack or set STRATA_PYTHON)")
	}
	helper, _ := filepath.Abs(filepath.Join("..", "clients", "python"))
	const script = `
import io, sys
sys.path.insert(0, sys.argv[1])
import strata_trainer as st
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        typ, body = st.read_frame(f)
    print(st.encode_frame(typ, body).hex())
`
	args := []string{"-c", script, helper}
	for _, typ := range Types {
		args = append(args, filepath.Join("testdata", typ.String()+".bin"))
	}
	out, err := exec.Command(py, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("python helper: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(Types) {
		t.Fatalf("python printed %d frames, want %d:\n%s", len(lines), len(Types), out)
	}
	for i, typ := range Types {
		b, err := hex.DecodeString(lines[i])
		if err != nil {
			t.Fatal(err)
		}
		gt, body, _, err := ReadFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatalf("%v from python: %v", typ, err)
		}
		dec := NewMessage(typ)
		if err := DecodeBody(gt, typ, body, dec); err != nil {
			t.Fatalf("%v from python: %v", typ, err)
		}
		if !reflect.DeepEqual(dec, samples[typ]) {
			t.Fatalf("%v after a trip through python:\n got %+v\nwant %+v", typ, dec, samples[typ])
		}
	}
}
