package privacy

import (
	"fmt"
	"strings"
)

// AccountantByName returns the accountant with the given short name, as
// accepted by the --accountant flag: "rdp" or "pld" (case-insensitive).
func AccountantByName(name string) (Accountant, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "rdp":
		return NewRDP(), nil
	case "pld":
		return newPLDByName()
	}
	return nil, fmt.Errorf("%w: accountant %q: want \"rdp\" or \"pld\"", ErrInvalidParameter, name)
}
