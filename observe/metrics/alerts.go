package metrics

import (
	"github.com/strata-fl/strata/observe/report"

	"fmt"
	"math"
)

// Alerts are the thresholds the global tier checks after every round. They
// are shown on the dashboard and exported as strata_alert_* metrics.
type Alerts struct {
	// EpsilonFraction fires an observer's alert when its ε reaches this
	// fraction of its limit: the job's budget for the public, the
	// topology's policy.max_epsilon for the others (no limit, no alert; an
	// ε of ∞ against a limited observer always fires). Default 0.9.
	EpsilonFraction float64
	// RejectionRate fires when, in the last round the tier saw, rejected
	// updates / (accepted + rejected) reaches it. Default 0.1.
	RejectionRate float64
	// RoundSeconds fires when a round took longer than this to close
	// (committed or aborted). Default 0: 80 % of the topology's round
	// timeout.
	RoundSeconds float64
}

// WithDefaults returns a copy with unset thresholds filled in; roundTimeout
// is the topology's round.timeout in seconds.
func (a Alerts) WithDefaults(roundTimeout float64) Alerts {
	if a.EpsilonFraction == 0 {
		a.EpsilonFraction = 0.9
	}
	if a.RejectionRate == 0 {
		a.RejectionRate = 0.1
	}
	if a.RoundSeconds == 0 {
		a.RoundSeconds = 0.8 * roundTimeout
	}
	return a
}

// Validate names the threshold that cannot work.
func (a Alerts) Validate() error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) || v < 0 }
	switch {
	case bad(a.EpsilonFraction) || a.EpsilonFraction > 1:
		return fmt.Errorf("metrics: alert epsilon fraction %v: must be in (0, 1], e.g. 0.9 (--alert-epsilon-fraction)", a.EpsilonFraction)
	case bad(a.RejectionRate) || a.RejectionRate > 1:
		return fmt.Errorf("metrics: alert rejection rate %v: must be in (0, 1], e.g. 0.1 (--alert-rejection-rate)", a.RejectionRate)
	case bad(a.RoundSeconds):
		return fmt.Errorf("metrics: alert round seconds %v: must be positive, e.g. 30 (--alert-round-seconds)", a.RoundSeconds)
	}
	return nil
}

// Alert is the state of one threshold.
type Alert struct {
	Name      string       `json:"name"`
	Value     report.Float `json:"value"`
	Threshold report.Float `json:"threshold"`
	Firing    bool         `json:"firing"`
	Detail    string       `json:"detail"`
}
