package empirical_test

import (
	"fmt"

	"github.com/strata-fl/strata/empirical"
)

// The ε of a Gaussian mechanism with noise multiplier 1, read as the ε
// between the statistic's distribution without (P) and with (Q) the
// canary.
func ExampleEpsilon() {
	eps, err := empirical.Epsilon(empirical.Gaussian{Mu: 0, Sigma: 1}, empirical.Gaussian{Mu: 1, Sigma: 1}, 1e-5)
	if err != nil {
		panic(err)
	}
	fmt.Printf("ε = %.4f at δ = 1e-5\n", eps)
	// Output: ε = 4.3772 at δ = 1e-5
}
