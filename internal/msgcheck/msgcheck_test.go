package msgcheck

import (
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestValidate(t *testing.T) {
	good, _ := msgpack.Marshal(map[string]any{"a": []byte{1, 2, 3}, "b": []any{1, "x", 2.5, nil, true}, "c": map[string]int{"k": 7}})
	if err := Validate(good); err != nil {
		t.Fatalf("valid body rejected: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":              {},
		"bin32 of 4 GiB":     {0xc6, 0xff, 0xff, 0xff, 0xff},
		"str32 beyond end":   {0xdb, 0, 0, 1, 0, 'x'},
		"array32 of 4G":      {0xdd, 0xff, 0xff, 0xff, 0xff, 1},
		"map32 of 800M":      {0xdf, 0x30, 0x30, 0x30, 0x30, 1, 2},
		"never-used 0xc1":    {0xc1},
		"truncated float64":  {0xcb, 0, 0},
		"fixarray too short": {0x93, 1, 2},
	} {
		if err := Validate(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzValidate(f *testing.F) {
	good, _ := msgpack.Marshal(map[string]any{"a": []byte{1}, "b": []any{1, "x"}})
	f.Add(good)
	f.Add([]byte{0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if Validate(b) != nil {
			return
		}
		var v any
		msgpack.Unmarshal(b, &v) // must not allocate past len(b)-bounded claims
	})
}
