package regional

import (
	"errors"
	"fmt"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// ErrNoSecAgg reports a round.open without a runnable secagg plan.
var ErrNoSecAgg = errors.New("regional: round has no runnable secagg session")

// secAggSetup derives the region's session from its round.open, as each
// sampled client does on its own (edge/secagg.go: the same fields).
func secAggSetup(open *wire.RoundOpen) (*secagg.Setup, error) {
	p := open.SecAgg
	switch {
	case p == nil:
		return nil, ErrNoSecAgg
	case p.Infeasible != "":
		return nil, fmt.Errorf("%w: %s", ErrNoSecAgg, p.Infeasible)
	}
	s, err := secagg.NewSetup(secagg.SetupConfig{Names: []string{open.Job, open.Region}, Round: open.Round, Members: open.Sampled,
		Degree: p.Degree, Threshold: p.Threshold, MinSurvivors: p.MinSurvivors, Bits: p.Bits, Dim: open.Dim,
		Clip: open.ClipNorm, Range: p.Range, Scale: p.Scale, Bit: open.ClipBits})
	if err != nil {
		return nil, fmt.Errorf("regional: round %d region %s: secagg plan: %w", open.Round, open.Region, err)
	}
	return s, nil
}
