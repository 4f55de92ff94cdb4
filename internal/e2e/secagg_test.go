package e2e

import (
	"context"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/secagg"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// fixedTrainer returns, for each client and round, the same pseudo-random
// delta whatever θ, of norm up to twice the clip norm (so clipping acts on
// some): two runs of a round then differ only by what the mesh does.
type fixedTrainer struct{}

func (fixedTrainer) Train(_ context.Context, client string, round uint64, _, delta []float64) (int, error) {
	h := fnv.New64a()
	h.Write([]byte(client))
	r := rand.New(rand.NewPCG(h.Sum64(), round))
	scale := 2 * r.Float64() / math.Sqrt(float64(len(delta)))
	for i := range delta {
		delta[i] = scale * r.NormFloat64()
	}
	return 10, nil
}

// oneRound runs one round of the small topology with regional and edge
// noise off, so that the only random draws of the round — the sample and
// the global noise — come, in the same order, from the same seeded source
// in both runs.
func oneRound(t *testing.T, secAgg bool) (theta, theta0 []float64, l *ledger.Ledger, top *topology.Topology) {
	t.Helper()
	top = smallTopology(t)
	top.Train.Rounds = 1
	top.Train.GateMaxDrop = 1
	top.Privacy.Noise = topology.Noise{Global: 0.7}
	if secAgg {
		top.SecAgg = topology.SecAgg{On: true}
		top.ApplyDefaults()
		if err := top.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	m, l := runMesh(t, roles.UpConfig{Topology: top, Rand: rand.NewChaCha8([32]byte{7}),
		WrapTrainer: func(task.Trainer) task.Trainer { return fixedTrainer{} }})
	if l.CommittedRounds() != 1 {
		t.Fatalf("secagg %v: %d rounds committed, want 1", secAgg, l.CommittedRounds())
	}
	theta0 = slices.Clone(mnistOf(t, m).Theta0)
	for i, x := range theta0 {
		theta0[i] = float64(float32(x))
	}
	return serving(t, m), theta0, l, top
}

// TestSecAggRoundEqualsPlainRound runs the same round over real NATS and
// raft with secure aggregation off and on and checks that the models agree
// up to the quantization error, bounded per coordinate:
//
//   - each client's update, divided by C, is rounded stochastically to a
//     step of 1/scale: an error below C/scale per coordinate, so below
//     n·C/scale for the sum of n survivors;
//   - the plain round sends float32 updates (error ≤ 2^-24·|x| ≤ 2^-24·C
//     each) and both runs send float32 partials (≤ 2^-24·|S| ≤ 2^-24·n·C
//     over the regions): 3·2^-24·n·C in all, doubled for slack;
//   - the global noise is the same draw in both runs (same seed, same
//     order), but the sampler snaps the sum to its granularity g first:
//     up to g/2 in each run;
//   - the server step divides by q·N and multiplies by the learning rate,
//     and rounds velocity and θ to float32 in each run.
func TestSecAggRoundEqualsPlainRound(t *testing.T) {
	off, theta0, lOff, top := oneRound(t, false)
	on, _, lOn, topOn := oneRound(t, true)
	rOff, rOn := lOff.Rounds[0], lOn.Rounds[0]
	if rOn.SecAgg == nil || rOff.SecAgg != nil || rOn.SecAgg.CorrectnessBits != 20 || rOn.SecAgg.SecurityBits != 40 || rOn.SecAgg.Dropout != 0.3 {
		t.Fatalf("ledger secagg records: on %+v, off %+v", rOn.SecAgg, rOff.SecAgg)
	}
	if rOn.Participants != rOff.Participants || rOn.Sampled != rOff.Sampled || !slices.Equal(rOn.Regions, rOff.Regions) {
		t.Fatalf("the runs differ in who took part: on %d of %d %v, off %d of %d %v", rOn.Participants, rOn.Sampled, rOn.Regions, rOff.Participants, rOff.Sampled, rOff.Regions)
	}
	survivors := 0
	for _, s := range rOn.SecAgg.Sessions {
		survivors += s.Survivors
		if s.Degree == 0 || s.Threshold == 0 || s.Survivors != s.Clients {
			t.Fatalf("session %+v: want a full session with k, t set", s)
		}
	}
	if survivors != rOn.Participants {
		t.Fatalf("sessions' survivors %d, round's participants %d", survivors, rOn.Participants)
	}
	n := float64(rOn.Participants)
	c := top.Privacy.ClipNorm
	scale := topOn.SecAgg.Scale
	g := privacy.Granularity(top.Privacy.Noise.Global * c)
	sumBound := n*c/scale + 2*3*n*c*0x1p-24 + g
	denom := top.Privacy.SamplingRate * float64(rOn.Eligible)
	lr := top.Train.ServerLR
	worst, moved := 0.0, 0.0
	for i := range on {
		dOn, dOff := math.Abs(on[i]-theta0[i]), math.Abs(off[i]-theta0[i])
		// |v| ≈ |θ − θ0|/lr, doubled to cover its own rounding.
		v := 2 * (dOn + dOff) / lr
		tol := lr*(sumBound/denom+0x1p-24*v) + 0x1p-24*(math.Abs(on[i])+math.Abs(off[i]))
		d := math.Abs(on[i] - off[i])
		if d > tol {
			t.Fatalf("θ[%d]: %v with secagg, %v without, differ by %.3g > bound %.3g", i, on[i], off[i], d, tol)
		}
		worst = max(worst, d/tol)
		moved = max(moved, dOff)
	}
	// The bound must be far below what the round changed, or it proves
	// nothing.
	if q := lr * n * c / scale / denom; moved < 1e3*q {
		t.Fatalf("the round moved θ by at most %.3g, not far above the quantization bound %.3g", moved, q)
	}
	t.Logf("n = %v survivors, scale %v: max |Δθ| / bound = %.3f; quantization bound on θ %.3g, largest move of θ %.3g", n, scale, worst, lr*n*c/scale/denom, moved)
}

// dropper makes clients of one region drop out: in round 1 one client
// before its masked input (its pairwise masks must be removed) and one
// after it (its self mask must be rebuilt); in round 2 all but one
// client before their masked inputs, which leaves too few survivors.
type dropper struct {
	region string
	mu     sync.Mutex
	before map[uint64][]string // dropped before the masked input
	after  map[uint64][]string // dropped after it, before unmasking
	spare  string              // round 2's one survivor: the first to ask
}

func (d *dropper) drop(client string, round uint64, st secagg.Stage) bool {
	if !strings.HasPrefix(client, d.region+"-") {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch st {
	case secagg.DropBeforeMaskedInput:
		if round == 2 && d.spare == "" {
			d.spare = client
			return false
		}
		if round == 1 && len(d.before[1]) == 0 || round == 2 && client != d.spare {
			d.before[round] = append(d.before[round], client)
			return true
		}
	case secagg.DropBeforeUnmask:
		if round == 1 && len(d.after[1]) == 0 {
			d.after[1] = append(d.after[1], client)
			return true
		}
	}
	return false
}

// TestSecAggSurvivesDropoutsAndFailsCleanly: round 1 commits with both
// regions although region a lost one client before and one after its
// masked input (the sum holds every client but the first); in round 2
// region a keeps one survivor, below its session's threshold: the session
// ends without a sum, counted as too_few_survivors, the region contributes
// nothing, and the round commits with region b alone. Adaptive clipping is
// on, so every masked vector also carries its clipping bit.
func TestSecAggSurvivesDropoutsAndFailsCleanly(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 2
	top.Train.GateMaxDrop = 1
	top.Privacy.MinRegions = 1
	top.Round.Timeout.Duration = top.Round.Timeout.Duration / 2
	top.Privacy.AdaptiveClip.Enabled = true
	top.SecAgg = topology.SecAgg{On: true}
	top.ApplyDefaults()
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	d := &dropper{region: "a", before: map[uint64][]string{}, after: map[uint64][]string{}}
	m, l := runMesh(t, roles.UpConfig{Topology: top, SecAggDrop: d.drop,
		WrapTrainer: func(task.Trainer) task.Trainer { return fixedTrainer{} }})
	if l.CommittedRounds() != 2 {
		t.Fatalf("%d rounds committed, want 2", l.CommittedRounds())
	}
	session := func(r ledger.RoundEntry, region string) ledger.SecAggSession {
		t.Helper()
		if r.SecAgg == nil {
			t.Fatalf("round %d has no secagg record", r.Round)
		}
		for _, s := range r.SecAgg.Sessions {
			if s.Region == region {
				return s
			}
		}
		t.Fatalf("round %d has no session for region %s", r.Round, region)
		return ledger.SecAggSession{}
	}
	r1, r2 := l.Rounds[0], l.Rounds[1]
	if len(d.before[1]) != 1 || len(d.after[1]) != 1 {
		t.Fatalf("round 1 dropped %v before and %v after the masked input, want one each", d.before[1], d.after[1])
	}
	if !slices.Equal(r1.Regions, []string{"a", "b"}) {
		t.Fatalf("round 1 merged %v, want both regions", r1.Regions)
	}
	if s := session(r1, "a"); s.Survivors != s.Clients-1 {
		t.Fatalf("round 1, region a: %d survivors of %d, want all but the one that dropped before its masked input", s.Survivors, s.Clients)
	}
	if s := session(r1, "b"); s.Survivors != s.Clients {
		t.Fatalf("round 1, region b: %d survivors of %d, want all", s.Survivors, s.Clients)
	}
	if !slices.Equal(r2.Regions, []string{"b"}) {
		t.Fatalf("round 2 merged %v, want region b alone (region a's session has too few survivors)", r2.Regions)
	}
	if s := session(r2, "a"); s.Survivors != 0 || len(d.before[2]) != s.Clients-1 {
		t.Fatalf("round 2, region a: %+v with %d dropped, want no survivors recorded and all but one dropped", s, len(d.before[2]))
	}
	st := m.Regions["a"].Runner().Stats()
	if st.SecAggFailed[regional.SecAggTooFew] != 1 || st.SecAggSessions != 1 {
		t.Fatalf("region a stats: failed %v, sessions %d; want one too_few_survivors and one session delivered", st.SecAggFailed, st.SecAggSessions)
	}
	if st := m.Regions["b"].Runner().Stats(); st.SecAggSessions != 2 || len(st.SecAggFailed) != 0 {
		t.Fatalf("region b stats: failed %v, sessions %d; want two sessions delivered", st.SecAggFailed, st.SecAggSessions)
	}
	if l.ClipNorm == top.Privacy.ClipNorm || !(l.ClipNorm > 0) {
		t.Fatalf("clip norm %v after two rounds, started at %v: the clipping bits did not reach the global tier", l.ClipNorm, top.Privacy.ClipNorm)
	}
}
