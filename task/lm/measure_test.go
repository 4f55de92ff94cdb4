package lm

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestMeasurePretrain (STRATA_LM_LONG=1) pre-trains the default backbone
// and prints its bits per byte on both held-out domains: the shift the
// README reports.
func TestMeasurePretrain(t *testing.T) {
	if os.Getenv("STRATA_LM_LONG") == "" {
		t.Skip("set STRATA_LM_LONG=1 to pre-train the default backbone (minutes)")
	}
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = string(rune('a'+i%26)) + string(rune(i))
	}
	start := time.Now()
	tk, err := Prepare(context.Background(), Spec{Config: c, Clients: ids, Seed: 1, CacheDir: os.Getenv("STRATA_LM_CACHE"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared in %v: %d code dirs, %d held out (%d bytes), %d prose bytes", time.Since(start), len(tk.Corpus.Dirs), len(tk.Split.HeldDirs), len(tk.Split.Held), len(tk.Corpus.ProseTrain))
	ev, err := tk.Final().Evaluate(context.Background(), tk.Initial())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("version 0: %+v", ev)
}
