package privacy

import "fmt"

// newPLDByName is replaced by the PLD accountant.
func newPLDByName() (Accountant, error) {
	return nil, fmt.Errorf("%w: accountant \"pld\" is not available yet", ErrInvalidParameter)
}
