package mesh

import (
	"strings"
	"testing"
)

func TestSubjectsRejectBadTokens(t *testing.T) {
	for _, tok := range []string{"", "a.b", "a*", ">", "a b", strings.Repeat("x", 65)} {
		if _, err := UpdateSubject("job", tok, "c1"); err == nil {
			t.Errorf("region %q: got nil error", tok)
		}
		if _, err := UpdateSubject("job", "eu", tok); err == nil && tok != strings.Repeat("x", 65) {
			t.Errorf("client %q: got nil error", tok)
		}
		if _, err := PartialSubject(tok, "eu"); err == nil {
			t.Errorf("job %q: got nil error", tok)
		}
	}
	s, err := UpdateSubject("job-1", "eu_west", "eu_west-c00001")
	if err != nil || s != "strata.job-1.update.eu_west.eu_west-c00001" {
		t.Fatalf("got %q, %v", s, err)
	}
}

func FuzzSubjects(f *testing.F) {
	f.Add("job", "eu")
	f.Fuzz(func(t *testing.T, job, region string) {
		s, err := RoundSubject(job, region)
		if err != nil {
			return
		}
		// A valid subject has exactly four tokens and no wildcard.
		if parts := strings.Split(s, "."); len(parts) != 4 || strings.ContainsAny(s, "*> \t") {
			t.Fatalf("built invalid subject %q", s)
		}
	})
}
