package accum_test

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/strata-fl/strata/internal/accum"
)

// A region adds each client's float32 update, as delivered in a message,
// into a float64 running sum, and checks its norm in one more pass.
func Example() {
	update := func(v ...float32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		return b
	}
	sum := make([]float64, 3)
	for _, u := range [][]byte{update(0.6, 0, 0.8), update(0, 1, 0)} {
		sq, _ := accum.SumSquares(u)
		fmt.Printf("norm %.2f\n", math.Sqrt(sq))
		accum.Add(sum, u)
	}
	fmt.Printf("sum %.2f\n", sum)
	// Output:
	// norm 1.00
	// norm 1.00
	// sum [0.60 1.00 0.80]
}
