package secagg

import (
	"errors"
	"math"
	"testing"
)

func TestSetupIsDerivedAlikeByEveryParty(t *testing.T) {
	cfg := SetupConfig{Names: []string{"job", "eu"}, Round: 7, Members: []string{"c", "a", "b", "a"},
		Degree: 2, Threshold: 1, MinSurvivors: 2, Bits: 32, Dim: 3, Clip: 2, Range: 1, Scale: 1 << 16, Bit: true}
	s1, err := NewSetup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Members = []string{"b", "c", "a"}
	s2, err := NewSetup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Session != s2.Session || s1.Params != s2.Params {
		t.Fatal("two parties derived different sessions from the same round")
	}
	if id, _ := s1.ID("a"); id != 1 || s1.Params.Clients != 3 || s1.Params.Dim != 4 {
		t.Fatalf("numbering %v, params %+v: want sorted members from 1, a duplicate dropped, one element for the bit", s1.Members, s1.Params)
	}
	for _, mut := range []func(*SetupConfig){
		func(c *SetupConfig) { c.Round = 8 },
		func(c *SetupConfig) { c.Names = []string{"job", "us"} },
		func(c *SetupConfig) { c.Names = []string{"jobe", "u"} },
	} {
		c := cfg
		mut(&c)
		s, err := NewSetup(c)
		if err != nil {
			t.Fatal(err)
		}
		if s.Session == s1.Session {
			t.Fatalf("%+v shares a session with another round", c)
		}
	}
	// Encode then Decode of three members' inputs: within one step each.
	v := []float64{1.5, -2, 0.3}
	sum := make([]uint32, 4)
	for _, bit := range []uint8{1, 0, 1} {
		x, err := s1.Encode(v, bit)
		if err != nil {
			t.Fatal(err)
		}
		for i := range sum {
			sum[i] += x[i]
		}
	}
	got, bits, err := s1.Decode(sum, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if d := math.Abs(got[i] - 3*v[i]); d > 3*cfg.Clip/cfg.Scale {
			t.Fatalf("sum[%d] = %v, want %v within 3 steps", i, got[i], 3*v[i])
		}
	}
	if bits != 0.5 {
		t.Fatalf("bit sum %v, want 2 - 3/2 = 0.5", bits)
	}
	cfg.Bits, cfg.Scale = 8, 100
	if _, err := NewSetup(cfg); !errors.Is(err, ErrHeadroom) {
		t.Fatalf("a scale that overflows 8 bits: %v, want ErrHeadroom", err)
	}
}
