package topology

import (
	"errors"
	"testing"
)

func TestDataPathValidate(t *testing.T) {
	tests := []struct {
		name string
		d    DataPath
		ok   bool
	}{
		{"zero", DataPath{}, true},
		{"q8", DataPath{Compression: "q8"}, true},
		{"topk", DataPath{Compression: "topk", TopK: 0.05}, true},
		{"unknown", DataPath{Compression: "zstd"}, false},
		{"top_k > 1", DataPath{Compression: "topk", TopK: 2}, false},
		{"chunk over payload", DataPath{ChunkBytes: 9 << 20}, false},
		{"negative slots", DataPath{StreamSlots: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
