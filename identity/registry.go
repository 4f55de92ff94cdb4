package identity

import (
	"fmt"
	"sort"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/internal/msgcheck"
)

// Statuses of a registry entry, as the ledger records them.
const (
	StatusActive    = "active"
	StatusRetired   = "retired"   // out of budget: still a known sender, never sampled again
	StatusWithdrawn = "withdrawn" // consent revoked: nothing it sends is accepted
)

// Entry is one enrolled identity as receivers see it.
type Entry struct {
	_msgpack struct{} `msgpack:",as_array"`

	ID     string `msgpack:"id" json:"id"`
	Kind   string `msgpack:"kind" json:"kind"`
	Region string `msgpack:"region" json:"region,omitempty"`
	Public string `msgpack:"public" json:"public"`
	Status string `msgpack:"status" json:"status"`
}

// Registry is a copy of the ledger's enrolled identities at one version.
// Receivers hold one and refresh it when a round announces a newer version.
type Registry struct {
	Version uint64  `msgpack:"version"`
	Entries []Entry `msgpack:"entries"` // sorted by Kind, then ID
	index   map[string]int
}

// NewRegistry builds a registry from entries in any order.
func NewRegistry(version uint64, entries []Entry) *Registry {
	r := &Registry{Version: version, Entries: append([]Entry(nil), entries...)}
	sort.Slice(r.Entries, func(i, j int) bool {
		a, b := r.Entries[i], r.Entries[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.ID < b.ID
	})
	r.reindex()
	return r
}

func (r *Registry) reindex() {
	r.index = make(map[string]int, len(r.Entries))
	for i, e := range r.Entries {
		r.index[e.Kind+"\x00"+e.ID] = i
	}
}

// Lookup returns the entry of one identity.
func (r *Registry) Lookup(kind, id string) (Entry, bool) {
	if r == nil {
		return Entry{}, false
	}
	i, ok := r.index[kind+"\x00"+id]
	if !ok {
		return Entry{}, false
	}
	return r.Entries[i], true
}

// Check verifies that msg was signed by the enrolled, consenting identity.
// The error is ErrUnknown, ErrWithdrawn or ErrBadSignature (wrapped).
func (r *Registry) Check(kind, id string, msg, sig []byte) error {
	e, ok := r.Lookup(kind, id)
	if !ok || e.Public == "" {
		return fmt.Errorf("%w: %s %q", ErrUnknown, kind, id)
	}
	if e.Status == StatusWithdrawn {
		return fmt.Errorf("%w: %s %q", ErrWithdrawn, kind, id)
	}
	if err := Verify(e.Public, msg, sig); err != nil {
		return fmt.Errorf("%w: %s %q", err, kind, id)
	}
	return nil
}

// Len returns the number of entries.
func (r *Registry) Len() int { return len(r.Entries) }

// EncodeRegistry writes r for the wire.
func EncodeRegistry(r *Registry) ([]byte, error) { return msgpack.Marshal(r) }

// DecodeRegistry reads a registry from the wire, checking every length the
// message claims before allocating for it.
func DecodeRegistry(b []byte) (*Registry, error) {
	if err := msgcheck.Validate(b); err != nil {
		return nil, fmt.Errorf("identity: registry: %w", err)
	}
	var r Registry
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("identity: registry: %w", err)
	}
	for i, e := range r.Entries {
		if e.Public != "" {
			if err := ValidPublic(e.Public); err != nil {
				return nil, fmt.Errorf("identity: registry entry %d (%s %q): %w", i, e.Kind, e.ID, err)
			}
		}
	}
	return NewRegistry(r.Version, r.Entries), nil
}
