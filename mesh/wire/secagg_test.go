package wire

import (
	"reflect"
	"testing"
)

func TestSecAggEnvelopesRoundTrip(t *testing.T) {
	open := RoundOpen{Job: "j", Round: 3, Sampled: []string{"a", "b"}, SecAgg: &SecAggPlan{Degree: 4, Threshold: 2, MinSurvivors: 3, Bits: 32, Scale: 1 << 20, Range: 1}}
	b, err := Encode(TypeRoundOpen, &open)
	if err != nil {
		t.Fatal(err)
	}
	var back RoundOpen
	if err := Decode(b, TypeRoundOpen, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, open) {
		t.Fatalf("round.open with a secagg plan: got %+v, want %+v", back, open)
	}
	up := SecAggUp{Job: "j", Round: 3, Region: "eu", Client: "c", Body: []byte{1, 2, 3}, Sig: []byte{9}}
	if b, err = Encode(TypeSecAggUp, &up); err != nil {
		t.Fatal(err)
	}
	var upBack SecAggUp
	if err := Decode(b, TypeSecAggUp, &upBack); err != nil || !reflect.DeepEqual(upBack, up) {
		t.Fatalf("secagg.up: %+v, %v", upBack, err)
	}
	if err := Decode(b, TypeSecAggDown, &SecAggDown{}); err == nil {
		t.Fatal("a secagg.up decoded as secagg.down")
	}
}

func FuzzDecodeSecAgg(f *testing.F) {
	up, _ := Encode(TypeSecAggUp, &SecAggUp{Job: "j", Round: 1, Region: "r", Client: "c", Body: []byte("SA")})
	down, _ := Encode(TypeSecAggDown, &SecAggDown{Job: "j", Round: 1, Region: "r", Body: []byte("SA")})
	open, _ := Encode(TypeRoundOpen, &RoundOpen{Job: "j", SecAgg: &SecAggPlan{Bits: 32}})
	f.Add(up)
	f.Add(down)
	f.Add(open)
	f.Fuzz(func(t *testing.T, b []byte) {
		var u SecAggUp
		Decode(b, TypeSecAggUp, &u)
		var d SecAggDown
		Decode(b, TypeSecAggDown, &d)
		var r RoundOpen
		Decode(b, TypeRoundOpen, &r)
	})
}
