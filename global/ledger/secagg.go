package ledger

// SecAggRecord is what a round ran with secure aggregation: the ring and
// quantization, the threat model the sessions' parameters were chosen for
// (secagg.Security: δ, γ), and each region's session. The ε the round
// charges is stated under that threat model (secagg/doc.go, "What the ledger
// may claim"): secure aggregation hides each update from the regional
// operator but adds no noise, so the regional operator's ε is the client's
// own edge noise's, ∞ without it.
type SecAggRecord struct {
	Bits    int     `msgpack:"bits" json:"bits"`
	Scale   float64 `msgpack:"scale" json:"scale"` // quantization steps per clip norm
	Dropout float64 `msgpack:"dropout" json:"dropout"`
	Corrupt float64 `msgpack:"corrupt" json:"corrupt"`
	// CorrectnessBits (η) and SecurityBits (σ): a session fails (safely)
	// with probability at most 2^-η under Dropout, and its graph lets the
	// colluders learn more than the sum with probability at most 2^-σ.
	CorrectnessBits float64 `msgpack:"eta" json:"correctness_bits"`
	SecurityBits    float64 `msgpack:"sigma" json:"security_bits"`
	// Sessions are the regions' sessions, sorted by region.
	Sessions []SecAggSession `msgpack:"sessions" json:"sessions"`
}

// SecAggSession is one region's session in a round.
type SecAggSession struct {
	Region string `msgpack:"region" json:"region"`
	// Clients is n (the region's sampled clients), Degree k, Threshold t.
	Clients      int `msgpack:"n" json:"n"`
	Degree       int `msgpack:"k" json:"k"`
	Threshold    int `msgpack:"t" json:"t"`
	MinSurvivors int `msgpack:"min_survivors" json:"min_survivors"`
	// Infeasible says why no session ran (e.g. one sampled client).
	Infeasible string `msgpack:"infeasible,omitempty" json:"infeasible,omitempty"`
	// Survivors is how many clients' inputs the region's sum held, set when
	// the round commits; 0 for a region whose partial was not merged (its
	// session failed or it was late).
	Survivors int `msgpack:"survivors" json:"survivors"`
}

// clone deep-copies a record (commands must not alias replicated state).
func (r *SecAggRecord) clone() *SecAggRecord {
	if r == nil {
		return nil
	}
	c := *r
	c.Sessions = append([]SecAggSession(nil), r.Sessions...)
	return &c
}
