package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// TestLeaderKilledMidRoundResumes runs the process mesh of
// TestLeaderKilledTwentyTimes (3 `strata global` processes on raft over
// TCP, 2 regions, 2 edge fleets, one NATS server) and SIGKILLs the raft
// leader mid-round, just after region a's partial of the round was
// delivered and before region b's (b's edge fleet is held with SIGSTOP
// until the kill, so its partial comes after). With round.resume on (the
// default) the next leader finishes that very round — both regions merged
// — and every round's cost is on every node's ledger exactly once; with it
// off the round is aborted and the next one runs from scratch. Each mode
// logs kill → next committed round (the figures in docs/operating.md).
func TestLeaderKilledMidRoundResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test with real processes")
	}
	bin := buildStrata(t)
	for _, mode := range []struct {
		name   string
		resume bool
	}{{"resume", true}, {"abort", false}} {
		t.Run(mode.name, func(t *testing.T) { killMidRound(t, bin, mode.resume) })
	}
}

func killMidRound(t *testing.T, bin string, resume bool) {
	const kills = 4
	dir := t.TempDir()
	topo := filepath.Join(dir, "topo.yaml")
	// STRATA_RESUME_LOCAL_EPOCHS makes the clients train longer, so that a
	// round takes seconds rather than under one (the measurement in
	// docs/operating.md); the round timeout grows with it.
	epochs, timeout := 3, 8
	if v := os.Getenv("STRATA_RESUME_LOCAL_EPOCHS"); v != "" {
		if _, err := fmt.Sscan(v, &epochs); err != nil || epochs < 1 {
			t.Fatalf("STRATA_RESUME_LOCAL_EPOCHS=%q: want a positive number", v)
		}
		timeout = 8 + epochs
	}
	round := fmt.Sprintf("round: {timeout: %ds}", timeout)
	if !resume {
		round = fmt.Sprintf("round: {timeout: %ds, resume: false}", timeout)
	}
	os.WriteFile(topo, []byte(`job: resume
seed: 5
regions:
  - {id: a, clients: 20}
  - {id: b, clients: 20}
privacy: {sampling_rate: 0.3, budget: 100000, min_regions: 2, noise: {regional: 2, global: 2}}
training: {rounds: 1000}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, public_examples: 1000, eval_examples: 200, local_epochs: `+fmt.Sprint(epochs)+`}
`+round+"\n"), 0o600)
	secrets := filepath.Join(dir, "secrets")
	if out, err := exec.Command(bin, "certs", "--dir", secrets, "--topology", topo).CombinedOutput(); err != nil {
		t.Fatalf("strata certs: %v\n%s", err, out)
	}
	srv, op := startSecureServer(t, filepath.Join(dir, "nats"), secrets, "resume")
	defer srv.Shutdown()
	url := srv.ClientURL()
	ports := freePorts(t, 3)
	var peers []string
	for i, p := range ports {
		peers = append(peers, fmt.Sprintf("g%d=127.0.0.1:%d", i+1, p))
	}
	globals := map[string]*proc{}
	var all []*proc
	for i, p := range ports {
		id := fmt.Sprintf("g%d", i+1)
		g := &proc{name: id, args: []string{"global", "--id", id, "--raft-bind", fmt.Sprintf("127.0.0.1:%d", p), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, id), "--nats", url, "--topology", topo, "--secrets", secrets}}
		globals[id] = g
		all = append(all, g)
	}
	var edgeB *proc
	for _, r := range []string{"a", "b"} {
		e := &proc{name: "edge-" + r, args: []string{"edge", "--region", r, "--nats", url, "--topology", topo, "--data", filepath.Join(dir, "edge-"+r), "--workers", "1", "--secrets", secrets}}
		if r == "b" {
			edgeB = e
		}
		all = append(all, &proc{name: "regional-" + r, args: []string{"regional", "--region", r, "--nats", url, "--topology", topo, "--secrets", secrets}}, e)
	}
	for _, p := range all {
		p.start(t, bin, dir)
	}
	defer func() {
		if edgeB.cmd != nil && edgeB.cmd.Process != nil {
			edgeB.cmd.Process.Signal(syscall.SIGCONT)
		}
		for _, p := range all {
			p.kill()
		}
	}()
	nc, err := op.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// The spy: which region's partial of which round reached the server.
	var mu sync.Mutex
	seen := map[[2]string]bool{}
	first := make(chan [2]string, 64)
	sub, _ := mesh.PartialWildcard("resume")
	if _, err := nc.Subscribe(sub, func(m *nats.Msg) {
		var round uint64
		var region string
		if typ, _ := wire.Peek(m.Data); typ == wire.TypePartialChunk {
			h, _, err := wire.DecodePartialChunk(m.Data)
			if err != nil {
				return
			}
			round, region = h.Round, h.Region
		} else {
			var p wire.Partial
			if wire.Decode(m.Data, wire.TypePartial, &p) != nil {
				return
			}
			round, region = p.Round, p.Region
		}
		k := [2]string{fmt.Sprint(round), region}
		mu.Lock()
		defer mu.Unlock()
		if !seen[k] {
			seen[k] = true
			select {
			case first <- k:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	leader := func(except string) (string, global.Status) {
		for id := range globals {
			if id == except {
				continue
			}
			if s, ok := status(nc, id); ok && s.Leader {
				return id, s
			}
		}
		return "", global.Status{}
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the first committed round", 3*time.Minute, func() bool { _, s := leader(""); return s.Committed >= 1 })

	var recover []time.Duration
	var killedRounds []uint64
	for k := 0; k < kills; k++ {
		// Hold b's edge fleet, then kill the leader as soon as a round's
		// partial from a has arrived while b's has not.
		edgeB.cmd.Process.Signal(syscall.SIGSTOP)
		var id string
		var before global.Status
		var target uint64
		for target == 0 {
			select {
			case key := <-first:
				if key[1] != "a" {
					continue
				}
				mu.Lock()
				bIn := seen[[2]string{key[0], "b"}]
				mu.Unlock()
				id, before = leader("")
				if bIn || id == "" || fmt.Sprint(before.Rounds) != key[0] {
					continue
				}
				fmt.Sscan(key[0], &target)
			case <-time.After(2 * time.Minute):
				t.Fatalf("kill %d: no partial from a", k+1)
			}
		}
		globals[id].kill()
		killed := time.Now()
		edgeB.cmd.Process.Signal(syscall.SIGCONT)
		killedRounds = append(killedRounds, target)
		waitFor("a committed round after the kill", 2*time.Minute, func() bool {
			_, s := leader(id)
			return s.Committed > before.Committed
		})
		recover = append(recover, time.Since(killed))
		globals[id].start(t, bin, dir)
		waitFor("the restarted node", time.Minute, func() bool { _, ok := status(nc, id); return ok })
	}
	// No round can open without the regions; once the last one has
	// closed and every node has applied the same entries, the nodes stop.
	for _, p := range all {
		if strings.HasPrefix(p.name, "regional-") || strings.HasPrefix(p.name, "edge-") {
			p.kill()
		}
	}
	type applied struct {
		applied         uint64
		rounds, commits int
	}
	var last [3]applied
	waitFor("every node to apply the same entries, unchanged for 15s", 3*time.Minute, func() bool {
		var now [3]applied
		for i := range 3 {
			s, ok := status(nc, fmt.Sprintf("g%d", i+1))
			if !ok {
				return false
			}
			now[i] = applied{s.Applied, s.Rounds, s.Committed}
		}
		same := now[0] == now[1] && now[1] == now[2] && now == last
		if !same {
			last = now
			time.Sleep(15 * time.Second)
		}
		return same
	})
	for _, g := range globals {
		g.kill()
	}

	// Every node's ledger: the killed rounds committed (resume) or aborted
	// (off), each round charged once, all ledgers alike.
	var ref *ledger.Ledger
	for id := range globals {
		l, err := global.ReadLedger(filepath.Join(dir, id))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		var sum []float64
		for i := range l.Rounds {
			step := l.StepCurves(&l.Rounds[i]).Public
			if sum == nil {
				sum = make([]float64, len(step))
			}
			for j, v := range step {
				sum[j] += v
			}
		}
		if cum := l.Curve(ledger.Public); !slices.Equal(cum, sum) {
			t.Errorf("%s: cumulative public curve %v, its %d rounds' steps add to %v", id, cum, len(l.Rounds), sum)
		}
		for _, r := range killedRounds {
			e := l.Rounds[r-1]
			switch {
			case resume && (e.Status != "committed" || !slices.Equal(e.Regions, []string{"a", "b"})):
				t.Errorf("%s: round %d, whose leader was killed after a's partial, is %s with regions %v (%s); want committed with [a b]", id, r, e.Status, e.Regions, e.AbortReason)
			case !resume && e.Status != "aborted":
				t.Errorf("%s: round %d is %s with round.resume off, want aborted", id, r, e.Status)
			}
		}
		if ref == nil {
			ref = l
		} else if len(l.Rounds) != len(ref.Rounds) || len(l.Models) != len(ref.Models) || !slices.Equal(l.Curve(ledger.Public), ref.Curve(ledger.Public)) {
			t.Errorf("%s: %d rounds, %d models; another node has %d, %d", id, len(l.Rounds), len(l.Models), len(ref.Rounds), len(ref.Models))
		}
	}
	aborted := 0
	for _, r := range ref.Rounds {
		if r.Status == "aborted" {
			aborted++
		}
	}
	sort.Slice(recover, func(i, j int) bool { return recover[i] < recover[j] })
	t.Logf("local_epochs %d, round.resume %v: kill → next committed round over %d kills (rounds %v): median %v, min %v, max %v; %d of %d rounds aborted (charged, nothing released)", epochs, resume, len(recover), killedRounds,
		recover[len(recover)/2].Round(time.Millisecond), recover[0].Round(time.Millisecond), recover[len(recover)-1].Round(time.Millisecond), aborted, len(ref.Rounds))
}
