package topology

// Security says how a job's mesh authenticates what it aggregates.
type Security struct {
	// Unsigned turns update and partial signatures off: regions then accept
	// any well-formed update from a sampled client id. Only for benchmarks
	// of the raw data path and for meshes whose clients cannot hold keys;
	// the default (false) is signed, with every client enrolled by key.
	Unsigned bool `yaml:"unsigned,omitempty"`
}

// Signed reports whether updates and partials must be signed.
func (s Security) Signed() bool { return !s.Unsigned }
