package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestChunkRoundTrip(t *testing.T) {
	data := AppendFloat32s(nil, []float32{1, 2, 3, -4.5})
	h := ChunkHeader{Job: "j", Round: 7, Client: "eu-c1", Offset: 12, Total: 16, Last: true, Digest: 0xdeadbeef}
	b, err := AppendChunk(nil, &h, data)
	if err != nil {
		t.Fatal(err)
	}
	got, gd, err := DecodeChunk(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Errorf("header: got %+v, want %+v", got, h)
	}
	if !bytes.Equal(gd, data) {
		t.Errorf("data: got %v, want %v", gd, data)
	}
	if &gd[0] != &b[len(b)-len(data)] {
		t.Error("data was copied, want a view into the message")
	}
	// The chunk is a plain msgpack header then a plain bin: a generic
	// decoder of the body sees the same header.
	var viaDecode ChunkHeader
	if err := Decode(b, TypeChunk, &viaDecode); err != nil || viaDecode != h {
		t.Errorf("Decode: %+v, %v", viaDecode, err)
	}
}

func TestDecodeChunkRejects(t *testing.T) {
	good, _ := AppendChunk(nil, &ChunkHeader{Job: "j", Total: 1}, []byte{1, 2, 3, 4})
	upd, _ := Encode(TypeUpdate, &Update{Job: "j"})
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"wrong type", upd, ErrType},
		{"truncated data", good[:len(good)-1], ErrMalformed},
		{"trailing bytes", append(append([]byte{}, good...), 0), ErrMalformed},
		{"no data", good[:len(good)-9], ErrMalformed},
		{"wrong version", append([]byte{byte(TypeChunk), 9}, good[2:]...), ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := DecodeChunk(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzDecodeChunk(f *testing.F) {
	good, _ := AppendChunk(nil, &ChunkHeader{Job: "j", Round: 1, Client: "c", Total: 2, Last: true}, make([]byte, 8))
	f.Add(good)
	f.Add([]byte{byte(TypeChunk), Version, 0x80, 0xc4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := DecodeChunk(b)
		if err != nil {
			return
		}
		if len(data) > len(b) {
			t.Fatalf("data longer than the message")
		}
		_ = h
	})
}

// TestDecodeChunkClaimedLengths: a header claiming a 4 GiB string in a
// short message is rejected before anything is allocated for it.
func TestDecodeChunkClaimedLengths(t *testing.T) {
	b := []byte{byte(TypeChunk), Version, 0x81, 0xa3, 'j', 'o', 'b', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}
	allocs := testing.AllocsPerRun(10, func() { DecodeChunk(b) })
	if _, _, err := DecodeChunk(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	if allocs > 20 {
		t.Errorf("%v allocations for a 13-byte message", allocs)
	}
}
