package regional_test

import (
	"fmt"
	"time"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
)

// noNoise stands in for the region's noise source, to show the sum.
type noNoise struct{}

func (noNoise) AddTo64([]float64, float64) error            { return nil }
func (noNoise) AddTo64On([]float64, float64, float64) error { return nil }

// Stepping a region's lifecycle by hand, as its runner does: each event in
// returns the actions to carry out.
func ExampleLifecycle() {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := regional.NewLifecycle(regional.LifecycleConfig{Job: "j", Region: "eu", Noise: noNoise{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	show := func(ev regional.Event) {
		acts, err := l.Step(ev)
		if err != nil {
			fmt.Println(err)
		}
		for _, a := range acts {
			switch a := a.(type) {
			case regional.AckOpen:
				fmt.Println("ack round", a.Round)
			case regional.SetTimer:
				fmt.Println("timer at", a.At.Sub(now))
			case regional.PublishPartial:
				sum, _ := wire.Float64s(a.Partial.Sum)
				fmt.Println("partial of", a.Partial.Count, "update:", sum)
			}
		}
	}
	open, _ := wire.Encode(wire.TypeRoundOpen, &wire.RoundOpen{Job: "j", Round: 1, Region: "eu", ModelVersion: 1,
		Dim: 2, ClipNorm: 1, Sampled: []string{"c1", "c2"}, DeadlineUnixMs: now.Add(time.Minute).UnixMilli()})
	show(regional.OpenArrived{Now: now, Data: open, Reply: "reply-subject"})
	upd, _ := wire.Encode(wire.TypeUpdate, &wire.Update{Job: "j", Round: 1, Region: "eu", Client: "c1", ModelVersion: 1,
		Vec: wire.AppendFloat32s(nil, []float32{0.5, -0.25})})
	show(regional.UpdateArrived{Now: now, Data: upd})
	show(regional.Tick{Now: now.Add(time.Minute)})
	// Output:
	// ack round 1
	// timer at 1m0s
	// partial of 1 update: [0.5 -0.25]
}
