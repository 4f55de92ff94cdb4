package wire

// Secure aggregation (package secagg) between a region and its sampled
// clients. The secagg messages keep their own canonical binary encoding;
// these envelopes bind them to a job, round, region and client, and carry
// the client's signature.
const (
	TypeSecAggUp   Type = 20 // client → region: strata.<job>.secagg.<region>.<client>
	TypeSecAggDown Type = 21 // region → client: strata.<job>.secagg_to.<region>.<client>
)

// SecAggPlan is a round's secure-aggregation session for one region, fixed
// by the global tier with the round (never by a client or the region), so
// every party holds the same parameters. The session's clients are the
// region's sampled clients, sorted; client i (0-based) has session ID i+1.
type SecAggPlan struct {
	// Degree, Threshold and MinSurvivors are secagg.Params' k, t and the
	// fewest survivors; Bits is the ring Z_{2^Bits}.
	Degree       int `msgpack:"degree"`
	Threshold    int `msgpack:"threshold"`
	MinSurvivors int `msgpack:"min_survivors"`
	Bits         int `msgpack:"bits"`
	// Scale is the quantization steps per clip norm; Range the coordinate
	// bound in clip norms (topology.SecAgg).
	Scale float64 `msgpack:"scale"`
	Range float64 `msgpack:"range"`
	// Infeasible, when set, says why no session can run this round (e.g.
	// one sampled client): the region contributes nothing and its clients
	// send nothing.
	Infeasible string `msgpack:"infeasible,omitempty"`
}

// SecAggUp carries one secagg message from a client to its region. Sig is
// the client's signature over identity.SecAggMessage when the round is
// signed.
type SecAggUp struct {
	Job    string `msgpack:"job"`
	Round  uint64 `msgpack:"round"`
	Region string `msgpack:"region"`
	Client string `msgpack:"client"`
	Body   []byte `msgpack:"body"` // a secagg message, its own encoding
	Sig    []byte `msgpack:"sig,omitempty"`
}

// SecAggDown carries one secagg message from a region to one client. It
// is not signed: only the region may publish on the client's subject
// (mesh.Permissions), and the secagg threat model trusts the region to
// follow the protocol.
type SecAggDown struct {
	Job    string `msgpack:"job"`
	Round  uint64 `msgpack:"round"`
	Region string `msgpack:"region"`
	Body   []byte `msgpack:"body"`
}
