package trainerproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
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
		Personal: []string{"head.weight"}, DataDir: "shards", StateDir: "state", MaxChunk: MaxChunk, Protocol: Protocol},
	TypeReady:    &Ready{Trainer: "numpy-example", Personal: true, Protocol: Protocol},
	TypeTrain:    &Train{Client: "eu-c00003", Round: 7, ModelVersion: 6, Dim: 1104, Chunks: 1, Epochs: 3, Batch: 10, LR: 0.3, Seed: 42, DeadlineMs: 1764400000000, PersonalEpochs: 10},
	TypeChunk:    &Chunk{Offset: 262144, Data: []byte{0, 0, 128, 63, 0, 0, 0, 192}},
	TypeResult:   &Result{Client: "eu-c00003", Round: 7, Kind: KindDelta, Examples: 10, Dim: 1104, Chunks: 1, Loss: 0.25},
	TypeError:    &Error{Client: "eu-c00003", Round: 7, Code: "no_data", Message: "no shard for client eu-c00003"},
	TypeEvaluate: &Evaluate{Dim: 1104, Chunks: 1, Set: SetHeldOut},
	TypeEvaluation: &Evaluation{Client: "eu-c00003", Examples: 100, Accuracy: 0.75, Personal: true, PersonalAccuracy: 0.875,
		Loss: 0.5, Metrics: []Metric{{"accuracy", 0.75, true}, {"balanced_accuracy", 0.625, true}}},
	TypeShutdown: &Shutdown{Reason: "job done"},
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

// v1 holds, per message that protocol 2 extended, the golden frame a
// peer of protocol 1 sends (testdata/<name>-v1.bin, written before the
// extension) and what it must decode to.
var v1 = map[Type]any{
	TypeHello: &Hello{Agent: "strata edge eu", Task: "mnist-adapter",
		Layout: []Tensor{{"adapter.scale", []int{784}}, {"head.weight", []int{10, 32}}}, Dim: 1104,
		Personal: []string{"head.weight"}, DataDir: "shards", StateDir: "state", MaxChunk: MaxChunk},
	TypeReady:      &Ready{Trainer: "numpy-example", Personal: true},
	TypeEvaluate:   &Evaluate{Client: "eu-c00003", Dim: 1104, Chunks: 1},
	TypeEvaluation: &Evaluation{Client: "eu-c00003", Examples: 100, Accuracy: 0.75, Personal: true, PersonalAccuracy: 0.875},
}

func readGolden(t *testing.T, name string, typ Type, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	gt, body, _, err := ReadFrame(bytes.NewReader(b), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := DecodeBody(gt, typ, body, v); err != nil {
		t.Fatal(err)
	}
}

// TestProtocol1FramesStillRead decodes what peers of protocol 1 send:
// they negotiate revision 1, their evaluate asks for the client's own
// data, and their evaluation's accuracy is read as the one metric
// "accuracy", higher is better, with loss 0.
func TestProtocol1FramesStillRead(t *testing.T) {
	for typ, want := range v1 {
		got := NewMessage(typ)
		readGolden(t, typ.String()+"-v1.bin", typ, got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v of protocol 1:\n got %+v\nwant %+v", typ, got, want)
		}
	}
	var r Ready
	readGolden(t, "ready-v1.bin", TypeReady, &r)
	if got := Revision(r.Protocol); got != 1 {
		t.Errorf("a ready without protocol speaks revision %d, want 1", got)
	}
	var ev Evaluation
	readGolden(t, "evaluation-v1.bin", TypeEvaluation, &ev)
	m, err := ev.Scores()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Metric{{"accuracy", 0.75, true}}; !reflect.DeepEqual(m, want) || ev.Loss != 0 {
		t.Errorf("protocol-1 evaluation scores %+v, loss %v; want %+v, loss 0", m, ev.Loss, want)
	}
	// And the other way: an agent of protocol 1 reads a protocol-2
	// evaluation's accuracy, which trainers keep sending beside Metrics.
	type evaluationV1 struct {
		Client   string  `msgpack:"client"`
		Examples int     `msgpack:"examples"`
		Accuracy float64 `msgpack:"accuracy"`
	}
	var old evaluationV1
	readGolden(t, "evaluation.bin", TypeEvaluation, &old)
	if old.Accuracy != 0.75 || old.Client != "eu-c00003" {
		t.Errorf("a protocol-1 agent reads a protocol-2 evaluation as %+v, want accuracy 0.75 for eu-c00003", old)
	}
	var nw Evaluation
	readGolden(t, "evaluation.bin", TypeEvaluation, &nw)
	if m, err := nw.Scores(); err != nil || len(m) != 2 || m[0].Name != "accuracy" || m[1].Name != "balanced_accuracy" || nw.Loss != 0.5 {
		t.Errorf("protocol-2 evaluation scores %+v (%v), loss %v; want accuracy then balanced_accuracy, loss 0.5", m, err, nw.Loss)
	}
}

// TestScoresRejectsMalformedMetrics checks every way a metric list can be
// wrong: each is refused with ErrMetrics and an error naming the metric.
func TestScoresRejectsMalformedMetrics(t *testing.T) {
	many := make([]Metric, MaxMetrics+1)
	for i := range many {
		many[i] = Metric{Name: fmt.Sprintf("m%d", i), Value: 1}
	}
	tests := []struct {
		name     string
		ev       Evaluation
		contains string
	}{
		{"NaN value", Evaluation{Metrics: []Metric{{"accuracy", 0.5, true}, {"perplexity", math.NaN(), false}}}, `metrics[1] "perplexity" = NaN`},
		{"infinite value", Evaluation{Metrics: []Metric{{"bits_per_byte", math.Inf(1), false}}}, `metrics[0] "bits_per_byte" = +Inf`},
		{"infinite loss", Evaluation{Loss: math.Inf(-1), Metrics: []Metric{{"accuracy", 0.5, true}}}, "loss -Inf"},
		{"NaN accuracy of protocol 1", Evaluation{Accuracy: math.NaN()}, "accuracy NaN"},
		{"no name", Evaluation{Metrics: []Metric{{"", 0.5, true}}}, "metrics[0]: no name"},
		{"reported twice", Evaluation{Metrics: []Metric{{"loss", 1, false}, {"loss", 2, false}}}, `metrics[1] "loss" is reported twice`},
		{"odd character", Evaluation{Metrics: []Metric{{"acc uracy", 1, true}}}, `holds ' '`},
		{"not UTF-8", Evaluation{Metrics: []Metric{{"acc\xff", 1, true}}}, "metrics[0]"},
		{"long name", Evaluation{Metrics: []Metric{{strings.Repeat("a", MaxMetricName+1), 1, true}}}, "at most 64"},
		{"too many", Evaluation{Metrics: many}, "33 metrics, at most 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ev.Scores()
			if !errors.Is(err, ErrMetrics) || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("got %v, want ErrMetrics mentioning %q", err, tt.contains)
			}
		})
	}
	ok := Evaluation{Loss: 2.1, Metrics: []Metric{{"perplexity", 8.2, false}, {"next_token_accuracy", 0.4, true}, {"bits_per_byte", 1.3, false}}}
	if m, err := ok.Scores(); err != nil || !reflect.DeepEqual(m, ok.Metrics) {
		t.Fatalf("the language model's metrics: got %+v, %v; want them as sent", m, err)
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
	for typ := range v1 {
		b, err := os.ReadFile(filepath.Join("testdata", typ.String()+"-v1.bin"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	bad, err := AppendFrame(nil, TypeEvaluation, &Evaluation{Metrics: []Metric{{"a b", math.NaN(), true}, {"a b", 1, false}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bad)
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
			switch m := msg.(type) {
			case *Chunk:
				PutChunk(make([]float64, 4), 0, *m)
			case *Evaluation:
				if sc, err := m.Scores(); err == nil && (len(sc) == 0 || len(sc) > MaxMetrics) {
					t.Fatalf("Scores accepted %d metrics from %+v", len(sc), m)
				}
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
