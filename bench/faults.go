package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/netlab"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// FaultsConfig sizes the faults scenario.
type FaultsConfig struct {
	// LeaderKills is how many times the raft leader is SIGKILLed (and
	// restarted from its data dir); default 10 (quick 2), ≥ 0.
	LeaderKills int
	// Steady is how long rounds are counted undisturbed first, for the
	// reference rate; default 20s (quick 8s), ≥ 0.
	Steady time.Duration
	// Seed draws the kill times; default 2026.
	Seed uint64
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c FaultsConfig) Validate() error {
	switch {
	case c.LeaderKills < 0:
		return fmt.Errorf("%w: FaultsConfig.LeaderKills %d: want ≥ 1 (0 means 10, quick 2)", ErrConfig, c.LeaderKills)
	case c.Steady < 0:
		return fmt.Errorf("%w: FaultsConfig.Steady %v: want ≥ 0 (0 means 20s, quick 8s)", ErrConfig, c.Steady)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick).
func (c FaultsConfig) withDefaults(quick bool) FaultsConfig {
	if c.LeaderKills == 0 {
		c.LeaderKills = 10
		if quick {
			c.LeaderKills = 2
		}
	}
	if c.Steady == 0 {
		c.Steady = 20 * time.Second
		if quick {
			c.Steady = 8 * time.Second
		}
	}
	if c.Seed == 0 {
		c.Seed = 2026
	}
	return c
}

// FaultRow is one fault: what was killed, how long until a leader was
// serving again (leader kills) and until the next round committed.
type FaultRow struct {
	Event           string  `json:"event"` // leader_kill or region_kill
	Index           int     `json:"index"`
	Killed          string  `json:"killed"`
	CommittedBefore int     `json:"committed_before"`
	NewLeaderMs     float64 `json:"new_leader_ms"` // leader kills; 0 for a region kill
	NextCommitMs    float64 `json:"next_commit_ms"`
}

// fproc is one strata process of the faults mesh.
type fproc struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  *os.File
	// host, when set, is the network namespace it runs in (bench chaos).
	host *netlab.Host
}

func (p *fproc) start(bin, dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.log = f
	if p.host != nil {
		p.cmd = p.host.Command(bin, p.args...)
	} else {
		p.cmd = exec.Command(bin, p.args...)
	}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	return nil
}

// kill SIGKILLs this process (by its own pid) and reaps it.
func (p *fproc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
	if p.log != nil {
		p.log.Close()
		p.log = nil
	}
}

// Faults runs a mesh of separate strata processes — a NATS server, 3
// global nodes on raft over TCP, 2 regions and their edge fleets — counts
// rounds undisturbed, then SIGKILLs the raft leader LeaderKills times at
// random points (restarting it each time) and finally kills one region
// (min_regions 1), timing each recovery.
func Faults(ctx context.Context, env Env, cfg FaultsConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("faults", env, struct {
		LeaderKills int     `json:"leader_kills"`
		SteadyS     float64 `json:"steady_s"`
		Seed        uint64  `json:"seed"`
	}{cfg.LeaderKills, cfg.Steady.Seconds(), cfg.Seed})
	bin, err := env.self()
	if err != nil {
		return out, err
	}
	dir := filepath.Join(env.TempDir, "faults")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return out, err
	}
	defer os.RemoveAll(dir)
	bar := NewProgress(env.Progress, "faults", cfg.LeaderKills+3)
	bar.Label("starting 8 processes")
	topo := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(topo, []byte(`job: faults
seed: 5
regions:
  - {id: a, clients: 60}
  - {id: b, clients: 60}
privacy: {sampling_rate: 0.3, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: 100000}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, public_examples: 2000, eval_examples: 300}
round: {timeout: 4s}
`), 0o600); err != nil {
		return out, err
	}
	// As in production: TLS, one identity per process, signed updates.
	secrets := filepath.Join(dir, "secrets")
	srv, op, err := secureServer(topo, secrets, filepath.Join(dir, "nats"))
	if err != nil {
		return out, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	url := srv.ClientURL()
	ports, err := freePorts(3)
	if err != nil {
		return out, err
	}
	var peers []string
	for i, p := range ports {
		peers = append(peers, fmt.Sprintf("g%d=127.0.0.1:%d", i+1, p))
	}
	globals := map[string]*fproc{}
	var all []*fproc
	for i, p := range ports {
		id := fmt.Sprintf("g%d", i+1)
		g := &fproc{name: id, args: []string{"global", "--id", id, "--raft-bind", fmt.Sprintf("127.0.0.1:%d", p), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, id), "--nats", url, "--topology", topo, "--secrets", secrets}}
		globals[id] = g
		all = append(all, g)
	}
	regions := map[string]*fproc{}
	for _, r := range []string{"a", "b"} {
		rp := &fproc{name: "regional-" + r, args: []string{"regional", "--region", r, "--nats", url, "--topology", topo, "--secrets", secrets}}
		regions[r] = rp
		all = append(all, rp, &fproc{name: "edge-" + r, args: []string{"edge", "--region", r, "--nats", url, "--topology", topo, "--data", filepath.Join(dir, "edge-"+r), "--workers", "1", "--secrets", secrets}})
	}
	defer func() {
		for _, p := range all {
			p.kill()
		}
	}()
	for _, p := range all {
		if err := p.start(bin, dir); err != nil {
			return out, err
		}
	}
	nc, err := op.Connect("bench-faults")
	if err != nil {
		return out, err
	}
	defer nc.Close()
	status := func(id string) (global.Status, bool) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		s, err := global.RequestStatus(ctx, nc, id)
		return s, err == nil
	}
	leader := func(except string) (string, global.Status) {
		for id := range globals {
			if id == except {
				continue
			}
			if s, ok := status(id); ok && s.Leader {
				return id, s
			}
		}
		return "", global.Status{}
	}
	waitFor := func(d time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if cond() {
				return true
			}
			time.Sleep(25 * time.Millisecond)
		}
		return false
	}
	logTail := func() string {
		var b strings.Builder
		for _, p := range all {
			if data, err := os.ReadFile(filepath.Join(dir, p.name+".log")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				fmt.Fprintf(&b, "\n--- %s: %s", p.name, lines[len(lines)-1])
			}
		}
		return b.String()
	}
	var s0 global.Status
	if !waitFor(3*time.Minute, func() bool { _, s0 = leader(""); return s0.Committed >= 1 }) {
		return out, errors.Join(ctx.Err(), fmt.Errorf("bench faults: no round committed within 3 minutes; last log lines:%s", logTail()))
	}
	bar.Step()
	bar.Label("counting rounds for %s undisturbed", cfg.Steady)
	steadyStart := time.Now()
	time.Sleep(cfg.Steady)
	_, s1 := leader("")
	steadyRate := float64(s1.Committed-s0.Committed) / time.Since(steadyStart).Minutes()
	bar.Step()

	var rows []FaultRow
	rng := rand.New(rand.NewPCG(cfg.Seed, 11))
	faultStart := time.Now()
	_, before0 := leader("")
	for k := range cfg.LeaderKills {
		bar.Label("leader kill %d/%d", k+1, cfg.LeaderKills)
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		var id string
		var before global.Status
		if !waitFor(30*time.Second, func() bool { id, before = leader(""); return id != "" }) {
			return out, fmt.Errorf("bench faults: kill %d: no leader%s", k+1, logTail())
		}
		globals[id].kill()
		killed := time.Now()
		row := FaultRow{Event: "leader_kill", Index: k + 1, Killed: id, CommittedBefore: before.Committed}
		if !waitFor(60*time.Second, func() bool { next, _ := leader(id); return next != "" }) {
			return out, fmt.Errorf("bench faults: kill %d of %s: no new leader within 60s%s", k+1, id, logTail())
		}
		row.NewLeaderMs = time.Since(killed).Seconds() * 1e3
		if !waitFor(90*time.Second, func() bool { _, s := leader(id); return s.Committed > before.Committed }) {
			return out, fmt.Errorf("bench faults: kill %d of %s: no round committed within 90s%s", k+1, id, logTail())
		}
		row.NextCommitMs = time.Since(killed).Seconds() * 1e3
		rows = append(rows, row)
		if err := globals[id].start(bin, dir); err != nil {
			return out, err
		}
		waitFor(30*time.Second, func() bool { _, ok := status(id); return ok })
		bar.Step()
	}
	_, after := leader("")
	faultRate := float64(after.Committed-before0.Committed) / time.Since(faultStart).Minutes()

	bar.Label("region kill")
	_, before := leader("")
	regions["a"].kill()
	killed := time.Now()
	row := FaultRow{Event: "region_kill", Index: 1, Killed: "regional-a", CommittedBefore: before.Committed}
	if !waitFor(90*time.Second, func() bool { _, s := leader(""); return s.Committed > before.Committed }) {
		return out, fmt.Errorf("bench faults: no round committed within 90s of the region kill%s", logTail())
	}
	row.NextCommitMs = time.Since(killed).Seconds() * 1e3
	rows = append(rows, row)
	if !waitFor(90*time.Second, func() bool { _, s := leader(""); return s.Committed >= before.Committed+3 }) {
		return out, fmt.Errorf("bench faults: rounds stopped after the region kill%s", logTail())
	}
	_, final := leader("")
	bar.Done()

	out.Report.Rows = rows
	var elect, next []float64
	for _, r := range rows {
		if r.Event == "leader_kill" {
			elect, next = append(elect, r.NewLeaderMs), append(next, r.NextCommitMs)
		}
	}
	out.Report.Summary = map[string]float64{
		"rounds_per_min_steady":         steadyRate,
		"rounds_per_min_under_kills":    faultRate,
		"rounds_committed":              float64(final.Committed),
		"rounds_aborted":                float64(final.Rounds - final.Committed),
		"new_leader_ms_median":          percentile(elect, 0.5),
		"new_leader_ms_max":             percentile(elect, 1),
		"next_commit_ms_median":         percentile(next, 0.5),
		"next_commit_ms_max":            percentile(next, 1),
		"region_kill_next_commit_ms":    row.NextCommitMs,
		"leader_kills":                  float64(len(elect)),
		"ratio_rate_under_kills_steady": faultRate / steadyRate,
	}
	t := Table{Title: fmt.Sprintf("faults: 3 global processes (raft over TCP), 2 regions; %.1f rounds/min undisturbed, %.1f under kills (ratio %.2f); %d rounds committed, %d aborted",
		steadyRate, faultRate, faultRate/steadyRate, final.Committed, final.Rounds-final.Committed),
		Header: []string{"event", "#", "killed", "committed before", "new leader ms", "next commit ms"}}
	for _, r := range rows {
		t.Add(r.Event, r.Index, r.Killed, r.CommittedBefore, r.NewLeaderMs, r.NextCommitMs)
	}
	fig := Figure{Name: "faults_recovery", Title: "Recovery after each leader kill", XLabel: "kill #", YLabel: "ms after SIGKILL"}
	var se, sn Series
	se.Name, sn.Name = "new leader", "next committed round"
	for _, r := range rows {
		if r.Event == "leader_kill" {
			se.X, se.Y = append(se.X, float64(r.Index)), append(se.Y, r.NewLeaderMs)
			sn.X, sn.Y = append(sn.X, float64(r.Index)), append(sn.Y, r.NextCommitMs)
		}
	}
	fig.Series = []Series{se, sn}
	out.Tables = []Table{t}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}

// secureServer creates a mesh's secrets for the topology and starts a NATS
// server as `strata nats --secrets` does; it returns an operator dialer.
func secureServer(topoPath, secrets, store string) (*server.Server, mesh.Dialer, error) {
	t, err := topology.Load(topoPath)
	if err != nil {
		return nil, mesh.Dialer{}, err
	}
	if err := identity.GenerateMesh(secrets, roles.Spec(t, []string{"g1", "g2", "g3"})); err != nil {
		return nil, mesh.Dialer{}, err
	}
	n, err := roles.StartNATS(roles.NATSConfig{StoreDir: store, Secrets: secrets, Job: t.Job})
	if err != nil {
		return nil, mesh.Dialer{}, err
	}
	op := n.Operator
	op.Server = nil // the faults scenario's tools connect over TCP, as separate processes would
	return n.Server, op, nil
}
