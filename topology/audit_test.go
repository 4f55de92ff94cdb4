package topology

import (
	"errors"
	"strings"
	"testing"
)

func TestAuditCanaries(t *testing.T) {
	for _, bad := range []string{"-1", "3", "100001"} {
		_, err := Parse([]byte("job: j\nregions: [{id: r, clients: 1}]\naudit: {canaries: " + bad + "}\n"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.canaries") {
			t.Errorf("canaries %s: err = %v, want one naming audit.canaries", bad, err)
		}
	}
	for _, bad := range []string{"{max_empirical_epsilon: 3}", "{canaries: 10, max_empirical_epsilon: -1}", "{canaries: 10, max_empirical_epsilon: .inf}"} {
		_, err := Parse([]byte("job: j\nregions: [{id: r, clients: 1}]\naudit: " + bad + "\n"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.max_empirical_epsilon") {
			t.Errorf("audit %s: err = %v, want one naming audit.max_empirical_epsilon", bad, err)
		}
	}
	p, err := Parse([]byte("job: j\nseed: 7\nregions: [{id: a, clients: 1}, {id: b, clients: 2}]\naudit: {canaries: 11}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cs := p.CanaryClients()
	if len(cs) != 11 || cs[0].Region != "a" || cs[1].Region != "b" || cs[10].Index != 10 || p.CanarySeed() != 7 {
		t.Fatalf("canaries %+v, seed %d", cs, p.CanarySeed())
	}
	seen := map[string]bool{ClientID("a", 0): true, ClientID("b", 0): true, ClientID("b", 1): true}
	for _, c := range cs {
		if seen[c.ID] {
			t.Fatalf("canary id %s collides", c.ID)
		}
		seen[c.ID] = true
	}
	if p.Population() != 3 {
		t.Fatalf("Population() = %d counts canaries: it sizes the data partition", p.Population())
	}
	// A topology without an audit renders without the key, so the hash
	// of existing jobs' topologies is unchanged.
	b, err := Default().YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "audit") {
		t.Fatalf("default YAML mentions audit:\n%s", b)
	}
}
