package wire

import (
	"errors"
	"math"
	"testing"
)

func TestUpdateRoundTrip(t *testing.T) {
	v := []float32{1, -2.5, float32(math.Pi), 0}
	u := Update{Job: "j", Round: 3, Region: "eu", Client: "eu-c00001", ModelVersion: 2, Vec: AppendFloat32s(nil, v)}
	b, err := Encode(TypeUpdate, &u)
	if err != nil {
		t.Fatal(err)
	}
	var got Update
	if err := Decode(b, TypeUpdate, &got); err != nil {
		t.Fatal(err)
	}
	gv, err := Float32s(got.Vec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if gv[i] != v[i] {
			t.Fatalf("element %d: got %v, want %v", i, gv[i], v[i])
		}
	}
	if got.Client != u.Client || got.Round != 3 {
		t.Fatalf("got %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(TypePartial, &Partial{Job: "j", Sum: []byte{1, 2, 3, 4}})
	wrongType, _ := Encode(TypeUpdate, &Update{Job: "j"})
	wrongVersion := append([]byte{}, good...)
	wrongVersion[1] = 99
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"header only", []byte{2}, ErrMalformed},
		{"wrong type", wrongType, ErrType},
		{"wrong version", wrongVersion, ErrVersion},
		{"garbage body", []byte{byte(TypePartial), Version, 0xc1}, ErrMalformed},
		{"truncated", good[:len(good)-3], ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Partial
			if err := Decode(tt.b, TypePartial, &p); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFloat32sUnaligned(t *testing.T) {
	b := AppendFloat32s([]byte{0}, []float32{1.5, -3})
	v, err := Float32s(b[1:])
	if err != nil || v[0] != 1.5 || v[1] != -3 {
		t.Fatalf("got %v, %v", v, err)
	}
	if _, err := Float32s(b[:3]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("3 bytes: got %v, want ErrMalformed", err)
	}
}

func FuzzDecodeUpdate(f *testing.F) {
	good, _ := Encode(TypeUpdate, &Update{Job: "j", Vec: AppendFloat32s(nil, []float32{1, 2})})
	f.Add(good)
	f.Add([]byte{2, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var u Update
		if err := Decode(b, TypeUpdate, &u); err != nil {
			return
		}
		Float32s(u.Vec)
	})
}

func FuzzDecodePartial(f *testing.F) {
	good, _ := Encode(TypePartial, &Partial{Job: "j", Count: 1, Rejected: map[string]int{"x": 1}, Sum: AppendFloat64s(nil, []float64{1})})
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Partial
		if err := Decode(b, TypePartial, &p); err != nil {
			return
		}
		dst := make([]float64, 1)
		AddFloat64sTo(dst, p.Sum)
	})
}

func FuzzDecodeRoundOpen(f *testing.F) {
	good, _ := Encode(TypeRoundOpen, &RoundOpen{Job: "j", Sampled: []string{"a"}})
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r RoundOpen
		Decode(b, TypeRoundOpen, &r)
	})
}

// TestFloat64BytesRoundTrips: a sum sent in its own memory reads back
// bit for bit, for lengths around every small size and values of every
// sign, magnitude and special kind, and AddFloat64sTo adds it.
func TestFloat64BytesRoundTrips(t *testing.T) {
	vals := []float64{0, -0.0, 1, -1, 1e-310, 3.4e38, 1e300, -1e-300, math.Inf(1), 0.1, 12345.678}
	for n := 0; n <= 37; n++ {
		v := make([]float64, n)
		for i := range v {
			v[i] = vals[(i*7+n)%len(vals)] * float64(i+1)
		}
		want := AppendFloat64s(nil, v)
		got := Float64Bytes(append([]float64(nil), v...))
		if string(got) != string(want) {
			t.Fatalf("n=%d: in place %x, want %x", n, got, want)
		}
		back, err := Float64s(append([]byte{0}, got...)[1:]) // misaligned: decoded
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]float64, n)
		if err := AddFloat64sTo(dst, got); err != nil {
			t.Fatal(err)
		}
		for i := range v {
			if math.Float64bits(back[i]) != math.Float64bits(v[i]) || (dst[i] != v[i] && !math.IsNaN(v[i])) {
				t.Fatalf("n=%d, i=%d: read back %v and %v, want %v", n, i, back[i], dst[i], v[i])
			}
		}
	}
}
