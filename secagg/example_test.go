package secagg_test

import (
	"fmt"

	"github.com/strata-fl/strata/secagg"
)

// Ten clients quantize their updates, one drops out after sharing its keys,
// and the server learns only the nine survivors' sum.
func Example() {
	const n, d, bits = 10, 4, 16
	q, err := secagg.NewQuantizer(bits, 1, 100, n) // |x| <= 1, steps of 0.01
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := secagg.ChooseParams(n, d, bits, secagg.Security{Dropout: 0.3})
	if err != nil {
		fmt.Println(err)
		return
	}
	inputs := make([][]uint32, n)
	for i := range inputs {
		inputs[i] = make([]uint32, d)
		if _, err := q.Quantize(inputs[i], []float64{0.5, -0.25, 0.75, 1}, nil); err != nil {
			fmt.Println(err)
			return
		}
	}
	res, _, err := secagg.Simulate(secagg.Simulation{
		Params: p,
		Inputs: inputs,
		Drop:   map[secagg.ID]secagg.Stage{3: secagg.DropBeforeMaskedInput},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	sum := make([]float64, d)
	q.Dequantize(sum, res.Sum)
	fmt.Println(len(res.Survivors), "survivors, dropped", res.Dropped)
	fmt.Println(sum)
	// Output:
	// 9 survivors, dropped [3]
	// [4.5 -2.25 6.75 9]
}

// NewQuantizer refuses a ring too small for the sum.
func ExampleNewQuantizer() {
	_, err := secagg.NewQuantizer(16, 1, 1000, 100)
	fmt.Println(err)
	// Output:
	// secagg: ring too small for the sum: n = 100 clients × max|x| = clip 1 × scale 1000 (⌈1000⌉ steps) = 100000 exceeds 2^(bits-1)-1 = 32767 for bits = 16; use bits >= 18 or a smaller clip or scale
}
