package e2e

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
)

// TestCanaryGateAcrossRestart runs a small job with canaries and the
// promotion gate audit.max_empirical_epsilon, stopped after round 3 and
// resumed (so the second coordinator rebuilds the gate's statistics from
// the versions promoted before). Every decision is then recomputed
// independently from the object store: a version held back names the
// estimate over the promoted versions before it and itself, and it exceeds
// the threshold; a promoted one's does not.
func TestCanaryGateAcrossRestart(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 6
	top.Train.GateMaxDrop = 1 // only the canary gate decides
	top.Audit.Canaries = 20
	top.Audit.MaxEpsilon = 5 // this tiny job's estimates (20 canaries) range over 0.4–10: a mix
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	m, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir, Progress: func(r global.RoundReport) {
		if r.Round == 3 {
			stop()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.Run(runCtx)
	m.Close()
	m, err = roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	runErr := m.Run(ctx)
	l, lerr := m.Ledger()
	m.Close()
	if runErr != nil || lerr != nil {
		t.Fatal(runErr, lerr)
	}

	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: filepath.Join(dir, "nats"), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := mesh.Dialer{Server: srv}.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	store, err := mesh.OpenModelStore(ctx, nc, top.Job, 1)
	if err != nil {
		t.Fatal(err)
	}
	get := func(v uint64) []float64 {
		b, err := store.Get(ctx, "model", v, "")
		if err != nil {
			t.Fatal(err)
		}
		f, err := wire.Float32s(b)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(f))
		for i, x := range f {
			out[i] = float64(x)
		}
		return out
	}
	k := top.Audit.Canaries
	served := make([]float64, 2*k)
	for i := range served {
		served[i] = math.Inf(-1)
	}
	promoted, held, rebuiltFrom := 0, 0, 0
	for _, mv := range l.Models {
		if mv.Round <= 3 && mv.Promoted {
			rebuiltFrom++
		}
		theta, base := get(mv.Version), get(l.Rounds[mv.Round-1].ModelVersion)
		for i := range theta {
			theta[i] -= base[i]
		}
		cand := append([]float64(nil), served...)
		for i := range cand {
			cand[i] = math.Max(cand[i], empirical.Cosine(empirical.Direction(top.CanarySeed(), i, len(theta)), theta))
		}
		est, err := empirical.EstimateFrom(cand[:k], cand[k:], nil, top.Privacy.Delta)
		if err != nil {
			t.Fatal(err)
		}
		eps := float64(est.Epsilon)
		t.Logf("v%d (round %d, from v%d): estimate %.4g, promoted %v %s", mv.Version, mv.Round, l.Rounds[mv.Round-1].ModelVersion, eps, mv.Promoted, mv.GateReason)
		if mv.Promoted {
			promoted++
			if eps > top.Audit.MaxEpsilon {
				t.Errorf("v%d promoted with estimate %.4g over the gate's %v", mv.Version, eps, top.Audit.MaxEpsilon)
			}
			served = cand
			continue
		}
		held++
		var named float64
		if _, err := fmt.Sscanf(strings.TrimPrefix(mv.GateReason, "empirical ε estimate "), "%g", &named); err != nil {
			t.Fatalf("v%d held back for %q", mv.Version, mv.GateReason)
		}
		if eps <= top.Audit.MaxEpsilon || math.Abs(named-eps) > 5e-4*eps {
			t.Errorf("v%d held back naming estimate %v; recomputed %.6g (gate %v)", mv.Version, named, eps, top.Audit.MaxEpsilon)
		}
	}
	t.Logf("%d versions promoted, %d held back by the canary gate; the resumed coordinator rebuilt its statistics from %d promoted versions", promoted, held, rebuiltFrom)
	if len(l.Models) != top.Train.Rounds {
		t.Fatalf("%d versions for %d rounds", len(l.Models), top.Train.Rounds)
	}
}
