package roles

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
)

// TestMemoryLimitFollowsTheRound: a process running one region sets its's soft memory
// limit to what its region holds for each round's dimension, and leaves a
// limit the operator gave in GOMEMLIMIT alone.
func TestMemoryLimitFollowsTheRound(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hook := memoryLimit(0, quiet)
	if hook == nil {
		t.Fatal("no hook without GOMEMLIMIT")
	}
	for _, d := range []int{1_000_000, 100_000_000} {
		hook(wire.RoundOpen{Dim: d})
		if got, want := debug.SetMemoryLimit(-1), regional.MemoryLimit(d, 0, 0); got != want {
			t.Errorf("dim %d: memory limit %d, want %d", d, got, want)
		}
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	if memoryLimit(0, quiet) != nil {
		t.Error("GOMEMLIMIT set, yet the region would override it")
	}
}
