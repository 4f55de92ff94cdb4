package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
)

// proc is one strata process of a test cluster.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  *os.File
}

func (p *proc) start(t *testing.T, bin, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.log = f
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	if p.log != nil {
		p.log.Close()
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func buildStrata(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "strata")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/strata").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func status(nc *nats.Conn, id string) (global.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	s, err := global.RequestStatus(ctx, nc, id)
	return s, err == nil
}

// TestLeaderKilledTwentyTimes runs a mesh of separate processes — 3 global
// nodes on raft over TCP, 2 regions, 2 edge fleets, over a NATS server — and
// SIGKILLs the raft leader at a random point 20 times in a row (seeded),
// restarting it from its data dir each time. Every time a new leader must be
// elected and rounds must progress. Then a follower is killed and restarted
// (it must catch up), and one region is killed mid-job (min_regions 1: the
// rounds complete from the other region). The job must complete; the
// ledgers of all nodes must be byte-identical, with every round charged once
// and no committed round or model version lost.
func TestLeaderKilledTwentyTimes(t *testing.T) {
	// Not under -short: it builds the strata binary, runs a mesh of
	// separate processes and SIGKILLs them (about 2.5 min on 2 cores).
	if testing.Short() {
		t.Skip("fault test with real processes")
	}
	const kills = 20
	bin := buildStrata(t)
	dir := t.TempDir()
	topo := filepath.Join(dir, "topo.yaml")
	os.WriteFile(topo, []byte(`job: faults
seed: 5
regions:
  - {id: a, clients: 60}
  - {id: b, clients: 60}
privacy: {sampling_rate: 0.3, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: 2000}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, public_examples: 2000, eval_examples: 300}
round: {timeout: 4s}
`), 0o600)
	// Every process runs with TLS and its own identity, as in production.
	secrets := filepath.Join(dir, "secrets")
	if out, err := exec.Command(bin, "certs", "--dir", secrets, "--topology", topo).CombinedOutput(); err != nil {
		t.Fatalf("strata certs: %v\n%s", err, out)
	}
	srv, op := startSecureServer(t, filepath.Join(dir, "nats"), secrets, "faults")
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
	for _, r := range []string{"a", "b"} {
		all = append(all, &proc{name: "regional-" + r, args: []string{"regional", "--region", r, "--nats", url, "--topology", topo, "--secrets", secrets}},
			&proc{name: "edge-" + r, args: []string{"edge", "--region", r, "--nats", url, "--topology", topo, "--data", filepath.Join(dir, "edge-"+r), "--workers", "1", "--secrets", secrets}})
	}
	for _, p := range all {
		p.start(t, bin, dir)
	}
	defer func() {
		for _, p := range all {
			p.kill()
		}
	}()
	nc, err := op.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

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
	waitFor := func(what string, d time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			if cond() {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("timed out waiting for %s", what)
		return false
	}
	var first global.Status
	if !waitFor("the first committed round", 90*time.Second, func() bool {
		_, s := leader("")
		first = s
		return s.Committed >= 1
	}) {
		t.Fatal("no round committed")
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	var elect, progress []time.Duration
	maxCommitted := 0
	for k := 0; k < kills; k++ {
		// The stimulus, not a wait: a random point of the round to kill at.
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		var id string
		var before global.Status
		waitFor("a leader", 30*time.Second, func() bool { id, before = leader(""); return id != "" })
		if id == "" {
			t.Fatalf("kill %d: no leader", k+1)
		}
		if before.Finished {
			t.Fatalf("the job finished after only %d kills: make it longer", k)
		}
		maxCommitted = max(maxCommitted, before.Committed)
		globals[id].kill()
		killed := time.Now()
		var next string
		if !waitFor("a new leader", 30*time.Second, func() bool { next, _ = leader(id); return next != "" }) {
			t.Fatalf("kill %d of %s: no new leader", k+1, id)
		}
		elect = append(elect, time.Since(killed))
		if !waitFor("round progress", 60*time.Second, func() bool {
			_, s := leader(id)
			return s.Committed > before.Committed || s.Finished
		}) {
			t.Fatalf("kill %d of %s: no round progress under the new leader %s", k+1, id, next)
		}
		progress = append(progress, time.Since(killed))
		globals[id].start(t, bin, dir) // restart from its data dir
		waitFor("the restarted node", 30*time.Second, func() bool { _, ok := status(nc, id); return ok })
	}
	t.Logf("first leader view: %+v", first)

	// Enrolment and withdrawal through the running leader, as an operator does.
	for _, args := range [][]string{
		{"enroll", "--client", "a-newcomer", "--region", "a", "--nats", url, "--secrets", secrets, "--topology", topo, "--purpose", "fault test"},
		{"withdraw", "--client", "a-c00001", "--nats", url, "--secrets", secrets},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("strata %s: %v\n%s", args[0], err, out)
		}
	}

	// A follower killed and restarted from its data dir catches up.
	lid, ls := leader("")
	var follower string
	for id := range globals {
		if id != lid {
			follower = id
			break
		}
	}
	globals[follower].kill()
	if !waitFor("rounds without the follower", 60*time.Second, func() bool { _, s := leader(""); return s.Committed >= ls.Committed+5 }) {
		t.Fatal("no progress with a follower down")
	}
	globals[follower].start(t, bin, dir)
	if !waitFor("the follower to catch up", 60*time.Second, func() bool {
		fs, ok := status(nc, follower)
		_, s := leader("")
		return ok && fs.Committed >= s.Committed-1 && fs.Committed > ls.Committed+5
	}) {
		t.Fatal("restarted follower did not catch up")
	}

	// Killing one region mid-round: with min_regions 1 the rounds complete
	// from the other region and the job goes on.
	var region *proc
	for _, p := range all {
		if p.name == "regional-a" {
			region = p
		}
	}
	_, before := leader("")
	region.kill()
	if !waitFor("rounds without region a", 60*time.Second, func() bool { _, s := leader(""); return s.Committed >= before.Committed+3 }) {
		t.Fatal("the job stopped when region a died")
	}

	// The ledger of a running node can be read over NATS.
	lid, _ = leader("")
	out, err := exec.Command(bin, "ledger", "--nats", url, "--node", lid, "--secrets", secrets).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rounds committed") {
		t.Fatalf("strata ledger --nats: %v\n%s", err, out)
	}
	if !waitFor("the job to finish on every node", 5*time.Minute, func() bool {
		for id := range globals {
			s, ok := status(nc, id)
			if ok && !s.Finished {
				return false
			}
		}
		return true
	}) {
		t.Fatal("job did not finish")
	}
	for _, g := range globals {
		g.cmd.Wait()
	}
	report := func(name string, ds []time.Duration) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		if len(ds) > 0 {
			t.Logf("%s over %d kills: median %v, max %v", name, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
		}
	}
	report("kill → new leader", elect)
	report("kill → next committed round", progress)

	var snaps [][]byte
	var ref *ledger.Ledger
	for _, id := range []string{"g1", "g2", "g3"} {
		l, err := global.ReadLedger(filepath.Join(dir, id))
		if err != nil {
			t.Fatal(err)
		}
		l.Applied = 0 // replicas may have applied trailing no-op entries; compare the state
		b, _ := l.Snapshot()
		snaps = append(snaps, b)
		ref = l
	}
	if !bytes.Equal(snaps[0], snaps[1]) || !bytes.Equal(snaps[1], snaps[2]) {
		t.Fatal("the ledgers of the three nodes differ")
	}
	if !ref.Finished || ref.CommittedRounds() != 2000 {
		t.Fatalf("finished %v with %d committed rounds, want 2000", ref.Finished, ref.CommittedRounds())
	}
	if ref.CommittedRounds() < maxCommitted {
		t.Fatalf("committed rounds went from %d to %d: entries lost", maxCommitted, ref.CommittedRounds())
	}
	aborted := 0
	for i, r := range ref.Rounds {
		if r.Round != uint64(i+1) {
			t.Fatalf("round %d recorded as %d", i+1, r.Round)
		}
		if r.Status == "aborted" {
			aborted++
		}
	}
	for i, m := range ref.Models {
		if m.Version != uint64(i+1) {
			t.Fatalf("model versions not consecutive: %d at position %d", m.Version, i)
		}
	}
	models, err := mesh.OpenModelStore(t.Context(), nc, "faults", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ref.Models {
		if _, err := models.Get(t.Context(), "model", m.Version, m.Hash); err != nil {
			t.Fatalf("model v%d lost or corrupted: %v", m.Version, err)
		}
	}
	t.Logf("%d rounds recorded: 2000 committed, %d aborted by failovers (their spend kept)", len(ref.Rounds), aborted)
	if c, ok := ref.Client("a-newcomer"); !ok || c.PubKey == "" || c.Purpose != "fault test" {
		t.Fatalf("enrolled client's record: %+v (found %v)", c, ok)
	}
	if c, _ := ref.Client("a-c00001"); c.Status != ledger.ClientWithdrawn {
		t.Fatalf("withdrawn client's status: %s", c.Status)
	}
}
