package topology

import (
	"errors"
	"strings"
	"testing"
)

func TestSecAggDefaultsOffAndFilled(t *testing.T) {
	if Default().SecAgg.On {
		t.Fatal("secagg is on by default; it must be off")
	}
	top, err := Parse([]byte("job: j\nregions: [{id: a, clients: 1000}, {id: b, clients: 10}]\nsecagg: {on: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := top.SecAgg
	if s.Bits != 32 || s.Dropout != 0.3 || s.Corrupt != 0 {
		t.Fatalf("defaults %+v, want bits 32, dropout 0.3, corrupt 0", s)
	}
	// The largest power of two with 1000·⌈scale⌉ <= 2^31-1 is 2^21.
	if s.Scale != 1<<21 {
		t.Fatalf("default scale %v, want 2^21 for 1000 clients in 32 bits", s.Scale)
	}
	if !s.fits(1000, 1, s.Scale) || s.fits(1000, 1, 2*s.Scale) {
		t.Fatalf("scale %v is not the largest power of two that fits", s.Scale)
	}
	b, err := top.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.SecAgg != top.SecAgg {
		t.Fatalf("round trip changed secagg: %+v, want %+v", back.SecAgg, top.SecAgg)
	}
}

func TestSecAggValidationNamesTheField(t *testing.T) {
	const base = "job: j\nregions: [{id: a, clients: 1000}]\n"
	tests := []struct {
		name, yaml, field string
		words             []string
	}{
		{"bits", base + "secagg: {on: true, bits: 64}\n", "secagg.bits", nil},
		{"dropout", base + "secagg: {on: true, dropout: 1.5}\n", "secagg.dropout", nil},
		{"corrupt", base + "secagg: {on: true, dropout: 0.5, corrupt: 0.6}\n", "secagg.corrupt", nil},
		{"compression", base + "secagg: {on: true}\ndata_path: {compression: q8}\n", "data_path.compression", []string{"compression: none"}},
		{"headroom", base + "secagg: {on: true, bits: 16, scale: 100}\n", "secagg.scale", []string{"n = 1000", "scale 100", "bits = 16", "at most 32"}},
		{"no scale fits", base + "secagg: {on: true, bits: 8}\n", "secagg.scale", []string{"n = 1000", "bits = 8"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := Parse([]byte(base + "secagg: {on: true, bits: 16, scale: 32}\npolicy: {require_secagg: true}\n")); err != nil {
		t.Fatalf("a scale that fits exactly (1000·32 <= 32767) is refused: %v", err)
	}
}
