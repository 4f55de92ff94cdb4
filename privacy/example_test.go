package privacy_test

import (
	"fmt"

	"github.com/strata-fl/strata/privacy"
)

// A DP-FedAvg plan: 1000 rounds sampling 1% of clients with noise multiplier
// 1.0, reported at δ = 1e-5.
func Example() {
	acc := privacy.NewRDP()
	eps, err := acc.Epsilon([]privacy.Part{{Q: 0.01, Sigma: 1, Steps: 1000}}, 1e-5)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: ε = %.2f\n", acc.Name(), eps)
	// Output: rdp: ε = 2.10
}
