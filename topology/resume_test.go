package topology

import "testing"

// TestRoundResume: round.resume is on unless set to false, rejects what
// is not a boolean by its field, and only operates the job: the
// topology's hash does not depend on it.
func TestRoundResume(t *testing.T) {
	const base = "job: j\nregions:\n  - {id: a, clients: 1}\n"
	hashes := map[string]string{}
	for _, c := range []struct {
		round string
		want  bool
	}{{"", true}, {"round: {resume: true}\n", true}, {"round: {resume: false}\n", false}} {
		top, err := Parse([]byte(base + c.round))
		if err != nil {
			t.Fatalf("%q: %v", c.round, err)
		}
		if got := top.Round.Resumes(); got != c.want {
			t.Errorf("%q: Resumes() = %v, want %v", c.round, got, c.want)
		}
		h, err := top.Hash()
		if err != nil {
			t.Fatal(err)
		}
		hashes[c.round] = h
	}
	if hashes[""] != hashes["round: {resume: false}\n"] || hashes[""] != hashes["round: {resume: true}\n"] {
		t.Errorf("round.resume changes the topology's hash: %v", hashes)
	}
	if _, err := Parse([]byte(base + "round: {resume: sometimes}\n")); err == nil {
		t.Error("round.resume: sometimes accepted")
	}
}
