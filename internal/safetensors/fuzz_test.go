package safetensors

import (
	"bytes"
	"testing"
)

// FuzzDecode: Decode never panics, and what it accepts encodes back to a
// file that decodes to the same tensors and metadata.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample(), map[string]string{"k": "v"})
	f.Add(good)
	f.Add(file(`{}`, nil))
	f.Add(file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 128, 63}))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if err != nil {
			return
		}
		re, err := Encode(d.Tensors, d.Metadata)
		if err != nil {
			t.Fatalf("a decoded file does not encode: %v", err)
		}
		d2, err := Decode(re)
		if err != nil {
			t.Fatalf("a re-encoded file does not decode: %v", err)
		}
		if len(d2.Tensors) != len(d.Tensors) || len(d2.Metadata) != len(d.Metadata) {
			t.Fatalf("round trip changed the file: %d→%d tensors", len(d.Tensors), len(d2.Tensors))
		}
		a, _ := Encode(d2.Tensors, d2.Metadata)
		if !bytes.Equal(a, re) {
			t.Fatal("encoding is not stable over a round trip")
		}
	})
}
