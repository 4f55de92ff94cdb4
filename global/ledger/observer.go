package ledger

// PerObserver holds one value per observer. It is a struct rather than a
// map so that its encoding is deterministic (replicas must produce
// byte-identical snapshots, and msgpack does not sort generic maps).
type PerObserver[T any] struct {
	Public T `msgpack:"public" json:"public"`
	// FellowClients was added after the first ledgers were written: those
	// decode it as the zero value (see Ledger.upgradeFellow).
	FellowClients    T `msgpack:"fellow_clients" json:"fellow_clients"`
	GlobalOperator   T `msgpack:"global_operator" json:"global_operator"`
	RegionalOperator T `msgpack:"regional_operator" json:"regional_operator"`
}

// Get returns the value for o (the zero value for an unknown observer).
func (p *PerObserver[T]) Get(o Observer) T {
	if f := p.field(o); f != nil {
		return *f
	}
	var zero T
	return zero
}

// Set stores v for o; unknown observers are ignored.
func (p *PerObserver[T]) Set(o Observer, v T) {
	if f := p.field(o); f != nil {
		*f = v
	}
}

func (p *PerObserver[T]) field(o Observer) *T {
	switch o {
	case Public:
		return &p.Public
	case FellowClients:
		return &p.FellowClients
	case GlobalOperator:
		return &p.GlobalOperator
	case RegionalOperator:
		return &p.RegionalOperator
	}
	return nil
}
