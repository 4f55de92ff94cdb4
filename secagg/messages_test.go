package secagg

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz from a sample session")

// sampleMessages runs a small session with one dropout at each late stage
// and returns every message it exchanged, by type.
func sampleMessages(t testing.TB) map[byte][]Message {
	t.Helper()
	p := Params{Clients: 6, Degree: 4, Threshold: 2, MinSurvivors: 4, Bits: 8, Dim: 5}
	r := seeded(5)
	sess := SessionID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	out := map[byte][]Message{}
	keep := func(m Message) { out[m.msgType()] = append(out[m.msgType()], m) }
	srv, err := NewServer(ServerConfig{Session: sess, Params: p, Rand: r})
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]*Client, p.Clients+1)
	for i := 1; i <= p.Clients; i++ {
		cs[i], _ = NewClient(ClientConfig{ID: ID(i), Session: sess, Params: p, Rand: r})
		m, _ := cs[i].AdvertiseKeys()
		keep(m)
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	nks, _ := srv.FinishAdvertiseKeys()
	for _, nk := range nks {
		keep(nk)
		m, _ := cs[nk.To].ShareKeys(nk)
		keep(m)
		srv.HandleShareKeys(m)
	}
	bundles, _ := srv.FinishShareKeys()
	for _, b := range bundles {
		keep(b)
		if b.To == 1 {
			continue // drops before masked input
		}
		m, err := cs[b.To].MaskInput(b, []uint32{0, 1, 2, 254, 255})
		if err != nil {
			t.Fatal(err)
		}
		keep(m)
		srv.HandleMaskedInput(m)
	}
	reqs, err := srv.FinishMaskedInput()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		keep(r)
		if r.To == 2 {
			continue // drops before unmasking
		}
		m, _ := cs[r.To].Unmask(r)
		keep(m)
		srv.HandleUnmaskResponse(m)
	}
	if _, err := srv.Finish(); err != nil {
		t.Fatal(err)
	}
	return out
}

var fuzzNames = map[byte]string{
	typeAdvertiseKeys:  "FuzzAdvertiseKeys",
	typeNeighbourKeys:  "FuzzNeighbourKeys",
	typeShareKeys:      "FuzzShareKeys",
	typeShareBundle:    "FuzzShareBundle",
	typeMaskedInput:    "FuzzMaskedInput",
	typeUnmaskRequest:  "FuzzUnmaskRequest",
	typeUnmaskResponse: "FuzzUnmaskResponse",
}

func TestMessagesRoundTrip(t *testing.T) {
	msgs := sampleMessages(t)
	for typ, name := range fuzzNames {
		if len(msgs[typ]) == 0 {
			t.Fatalf("%s: the sample session produced no message", name)
		}
		for _, m := range msgs[typ] {
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("%s: Decode: %v", name, err)
			}
			if !reflect.DeepEqual(normalise(got), normalise(m)) {
				t.Fatalf("%s: round trip\n got %+v\nwant %+v", name, got, m)
			}
		}
	}
	if !*updateCorpus {
		return
	}
	hdir := filepath.Join("testdata", "fuzz", "FuzzHandlers")
	if err := os.MkdirAll(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for typ, name := range fuzzNames {
		b, _ := msgs[typ][0].MarshalBinary()
		stage := typ % 4
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%s)\n", rune(stage), strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(hdir, name[len("Fuzz"):]), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for typ, name := range fuzzNames {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, m := range msgs[typ][:min(3, len(msgs[typ]))] {
			b, _ := m.MarshalBinary()
			writeSeed(t, filepath.Join(dir, fmt.Sprintf("session-%d", i)), b)
			if i == 0 && len(b) > headerSize+2 {
				writeSeed(t, filepath.Join(dir, "truncated"), b[:len(b)-3])
			}
		}
	}
}

func writeSeed(t *testing.T, path string, b []byte) {
	t.Helper()
	body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// normalise maps empty slices to nil so decoded and built messages compare.
func normalise(m Message) Message {
	switch v := m.(type) {
	case *UnmaskRequest:
		c := *v
		if len(c.Survivors) == 0 {
			c.Survivors = nil
		}
		if len(c.Dropped) == 0 {
			c.Dropped = nil
		}
		return &c
	case *ShareBundle:
		c := *v
		if len(c.Shares) == 0 {
			c.Shares = nil
		}
		return &c
	}
	return m
}

func TestDecodeRejects(t *testing.T) {
	msgs := sampleMessages(t)
	good, _ := msgs[typeMaskedInput][0].MarshalBinary()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short header", good[:10]},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"future version", mod(func(b []byte) []byte { b[2] = 2; return b })},
		{"unknown type", mod(func(b []byte) []byte { b[3] = 99; return b })},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"zero sender", mod(func(b []byte) []byte { copy(b[headerSize:], []byte{0, 0, 0, 0}); return b })},
		{"bits 0", mod(func(b []byte) []byte { b[headerSize+4] = 0; return b })},
		{"element outside ring", mod(func(b []byte) []byte { b[len(b)-1] = 1; return b })},
		{"huge count", mod(func(b []byte) []byte { copy(b[headerSize+5:], []byte{0xff, 0xff, 0xff, 0x7f}); return b })},
	}
	for _, tc := range tests {
		if m, err := Decode(tc.in); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: Decode = %v, %v; want ErrDecode", tc.name, m, err)
		}
	}
}

// fuzzDecoder checks one message type's decoder: it never panics, rejects
// with ErrDecode, and what it accepts re-encodes to the same bytes (the
// encoding is canonical).
func fuzzDecoder[M any, P interface {
	*M
	Message
	UnmarshalBinary([]byte) error
}](f *testing.F, typ byte) {
	for _, m := range sampleMessages(f)[typ] {
		b, _ := m.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m M
		if err := P(&m).UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v is not ErrDecode", err)
			}
			return
		}
		b, err := P(&m).MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding a decoded message: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", b, data)
		}
	})
}

func FuzzAdvertiseKeys(f *testing.F)  { fuzzDecoder[AdvertiseKeys](f, typeAdvertiseKeys) }
func FuzzNeighbourKeys(f *testing.F)  { fuzzDecoder[NeighbourKeys](f, typeNeighbourKeys) }
func FuzzShareKeys(f *testing.F)      { fuzzDecoder[ShareKeys](f, typeShareKeys) }
func FuzzShareBundle(f *testing.F)    { fuzzDecoder[ShareBundle](f, typeShareBundle) }
func FuzzMaskedInput(f *testing.F)    { fuzzDecoder[MaskedInput](f, typeMaskedInput) }
func FuzzUnmaskRequest(f *testing.F)  { fuzzDecoder[UnmaskRequest](f, typeUnmaskRequest) }
func FuzzUnmaskResponse(f *testing.F) { fuzzDecoder[UnmaskResponse](f, typeUnmaskResponse) }

// FuzzDecode feeds any bytes to the type-dispatching decoder.
func FuzzDecode(f *testing.F) {
	for _, ms := range sampleMessages(f) {
		for _, m := range ms {
			b, _ := m.MarshalBinary()
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v is not ErrDecode", err)
			}
			return
		}
		b, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("re-encoding differs or fails: %v", err)
		}
	})
}
