package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/history"
	"github.com/strata-fl/strata/internal/netlab"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// ChaosConfig sizes the chaos scenario.
type ChaosConfig struct {
	// Rounds is how many rounds are committed under faults; default 500
	// (quick 30), ≥ 1.
	Rounds int
	// SteadyRounds is how many rounds are counted undisturbed first, for
	// the reference rate; default 60 (quick 10), ≥ 1.
	SteadyRounds int
	// Seed draws the faults (kind, target, hold, gap); default 2026.
	// The same seed replays the same schedule of faults (their timing
	// against the rounds depends on the machine).
	Seed uint64
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c ChaosConfig) Validate() error {
	switch {
	case c.Rounds < 0:
		return fmt.Errorf("%w: ChaosConfig.Rounds %d: want ≥ 1 (0 means 500, quick 30)", ErrConfig, c.Rounds)
	case c.SteadyRounds < 0:
		return fmt.Errorf("%w: ChaosConfig.SteadyRounds %d: want ≥ 1 (0 means 60, quick 10)", ErrConfig, c.SteadyRounds)
	}
	return nil
}

func (c ChaosConfig) withDefaults(quick bool) ChaosConfig {
	if c.Rounds == 0 {
		c.Rounds = 500
		if quick {
			c.Rounds = 30
		}
	}
	if c.SteadyRounds == 0 {
		c.SteadyRounds = 60
		if quick {
			c.SteadyRounds = 10
		}
	}
	if c.Seed == 0 {
		c.Seed = 2026
	}
	return c
}

// The fault kinds of the chaos scenario.
const (
	chaosKill      = "kill"      // SIGKILL, restarted from its data dir after the hold
	chaosPause     = "pause"     // SIGSTOP, SIGCONT after the hold
	chaosPartition = "partition" // a host cut off from every other, healed after the hold
)

// ChaosRow is one fault: what was done to which process, for how long, and
// how long the mesh took to get over it.
type ChaosRow struct {
	Index  int    `json:"index"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	// AtRound is the leader's committed rounds when the fault began.
	AtRound int     `json:"at_round"`
	HoldMs  float64 `json:"hold_ms"` // from the fault to the restart / SIGCONT
	// NextCommitMs is from the fault to the next committed round (the mesh
	// going on, with or without the target).
	NextCommitMs float64 `json:"next_commit_ms"`
	// RecoverMs is from the end of the fault (restart, SIGCONT) until the
	// target does its work again: a global node has caught up with the
	// leader's log, a region's partial or an edge fleet's update is on the
	// wire, the NATS server has carried a committed round.
	RecoverMs float64 `json:"recover_ms"`
}

// chaosObserver records, from outside the mesh, what crosses NATS: round
// invitations, client updates and regional partials (for the history
// checker), and the last time each region's partial and updates were seen.
type chaosObserver struct {
	rec         history.Recorder
	mu          sync.Mutex
	lastPartial map[string]time.Time
	lastUpdate  map[string]time.Time
}

func (o *chaosObserver) seen(m map[string]time.Time, region string) {
	o.mu.Lock()
	m[region] = time.Now()
	o.mu.Unlock()
}

func (o *chaosObserver) since(m map[string]time.Time, region string, t time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return m[region].After(t)
}

func (o *chaosObserver) subscribe(nc *nats.Conn, job string) error {
	sub := func(subj string, fn func(*nats.Msg)) error {
		_, err := nc.Subscribe(subj, fn)
		return err
	}
	base := "strata." + job + "."
	if err := sub(base+"invite.*.*", func(msg *nats.Msg) {
		var r wire.RoundOpen
		if wire.Decode(msg.Data, wire.TypeRoundOpen, &r) == nil {
			client := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
			o.rec.Add(history.Event{Kind: history.Announce, Round: r.Round, Region: r.Region, Clients: []string{client}, ModelVersion: r.ModelVersion})
		}
	}); err != nil {
		return err
	}
	if err := sub(base+"update.*.*", func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypeUpdate:
			var u wire.Update
			if wire.Decode(msg.Data, wire.TypeUpdate, &u) == nil {
				o.rec.Add(history.Event{Kind: history.Update, Round: u.Round, Region: u.Region, Client: u.Client})
				o.seen(o.lastUpdate, u.Region)
			}
		case wire.TypeStreamOpen:
			var s wire.StreamOpen
			if wire.Decode(msg.Data, wire.TypeStreamOpen, &s) == nil {
				o.rec.Add(history.Event{Kind: history.Update, Round: s.Round, Region: s.Region, Client: s.Client})
				o.seen(o.lastUpdate, s.Region)
			}
		}
	}); err != nil {
		return err
	}
	if err := sub(base+"partial.*", func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypePartial:
			var p wire.Partial
			if wire.Decode(msg.Data, wire.TypePartial, &p) == nil {
				o.rec.Add(history.Event{Kind: history.Partial, Round: p.Round, Region: p.Region, Count: p.Count})
				o.seen(o.lastPartial, p.Region)
			}
		case wire.TypePartialChunk:
			if h, _, err := wire.DecodePartialChunk(msg.Data); err == nil && h.Last {
				o.rec.Add(history.Event{Kind: history.Partial, Round: h.Round, Region: h.Region, Count: h.Count})
				o.seen(o.lastPartial, h.Region)
			}
		}
	}); err != nil {
		return err
	}
	return nc.Flush()
}

const chaosTopology = `job: chaos
seed: 7
regions:
  - {id: a, clients: 250}
  - {id: b, clients: 250}
privacy: {sampling_rate: 0.4, budget: 1000000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: 1000000}
task: {name: mnist, pretrain_epochs: 1, hidden: 64, local_epochs: 2, public_examples: 2000, eval_examples: 300}
round: {timeout: 3s}
`

// Chaos runs a mesh of separate strata processes — strata nats, 3 global
// nodes on raft over TCP, 2 regions and their edge fleets, secured as in
// production — counts SteadyRounds undisturbed, then injects seeded faults
// one after the other until Rounds more rounds are committed: SIGKILL of
// any strata role but the NATS server (restarted from its data dir) and
// SIGSTOP/SIGCONT of any process, the NATS server included. It reports
// rounds per minute under faults beside the undisturbed rate of the same
// run, the time to recover per fault kind, and the verdict of the history
// checker (internal/history) over what it saw on the wire and the three
// ledgers read from disk at the end. Killing the NATS server is left out:
// the observer would miss what crosses while it reconnects, and the
// checker could not tell that from an update counted without being sent.
func Chaos(ctx context.Context, env Env, cfg ChaosConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("chaos", env, struct {
		Rounds       int    `json:"rounds"`
		SteadyRounds int    `json:"steady_rounds"`
		Seed         uint64 `json:"seed"`
	}{cfg.Rounds, cfg.SteadyRounds, cfg.Seed})
	bin, err := env.self()
	if err != nil {
		return out, err
	}
	dir := filepath.Join(env.TempDir, "chaos")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return out, err
	}
	defer os.RemoveAll(dir)
	bar := NewProgress(env.Progress, "chaos", cfg.SteadyRounds+cfg.Rounds)
	bar.Label("starting 8 processes")
	topo := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(topo, []byte(chaosTopology), 0o600); err != nil {
		return out, err
	}
	t, err := topology.Load(topo)
	if err != nil {
		return out, err
	}
	// Where network namespaces can be made, every process runs on a host
	// of its own (the regions' processes on their region's), so that a
	// host can be cut off and healed; else all run on loopback.
	lab, labErr := netlab.Open(nil, "nats", "g1", "g2", "g3", "ra", "rb")
	mode := "each on a host of its own (network namespaces)"
	if lab != nil {
		defer lab.Close()
	} else {
		mode = "on loopback (no partitions: " + labErr.Error() + ")"
	}
	host := func(name string) *netlab.Host {
		if lab == nil {
			return nil
		}
		return lab.Host(name)
	}
	ports, err := freePorts(4)
	if err != nil {
		return out, err
	}
	addr := func(h string, loopbackPort int) string {
		switch {
		case lab != nil && h == "nats":
			return lab.Host(h).Addr(4222)
		case lab != nil:
			return lab.Host(h).Addr(7000)
		}
		return fmt.Sprintf("127.0.0.1:%d", loopbackPort)
	}
	natsAddr := addr("nats", ports[3])
	natsHost, natsPort, _ := strings.Cut(natsAddr, ":")
	url := "nats://" + natsAddr
	spec := roles.Spec(t, []string{"g1", "g2", "g3"})
	spec.Hosts = []string{natsHost}
	secrets := filepath.Join(dir, "secrets")
	if err := identity.GenerateMesh(secrets, spec); err != nil {
		return out, err
	}
	natsProc := &fproc{name: "nats", host: host("nats"), args: []string{"nats", "--data", filepath.Join(dir, "nats"), "--host", natsHost, "--port", natsPort, "--secrets", secrets, "--topology", topo}}
	var peers []string
	for i, p := range ports[:3] {
		peers = append(peers, fmt.Sprintf("g%d=%s", i+1, addr(fmt.Sprintf("g%d", i+1), p)))
	}
	procs := map[string]*fproc{"nats": natsProc}
	order := []string{"nats"}
	for i, p := range ports[:3] {
		id := fmt.Sprintf("g%d", i+1)
		procs[id] = &fproc{name: id, host: host(id), args: []string{"global", "--id", id, "--raft-bind", addr(id, p), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, id), "--nats", url, "--topology", topo, "--secrets", secrets}}
		order = append(order, id)
	}
	for _, r := range []string{"a", "b"} {
		procs["regional-"+r] = &fproc{name: "regional-" + r, host: host("r" + r), args: []string{"regional", "--region", r, "--nats", url, "--topology", topo, "--secrets", secrets}}
		procs["edge-"+r] = &fproc{name: "edge-" + r, host: host("r" + r), args: []string{"edge", "--region", r, "--nats", url, "--topology", topo, "--data", filepath.Join(dir, "edge-"+r), "--workers", "1", "--secrets", secrets}}
		order = append(order, "regional-"+r, "edge-"+r)
	}
	defer func() {
		for _, p := range procs {
			if p.cmd != nil && p.cmd.Process != nil {
				p.cmd.Process.Signal(syscall.SIGCONT)
			}
			p.kill()
		}
	}()
	if err := natsProc.start(bin, dir); err != nil {
		return out, err
	}
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		return out, err
	}
	opKey, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		return out, err
	}
	// The bench's own connection (status, observer) dials from the NATS
	// server's host, which no partition cuts off.
	connOpts := []nats.Option{nats.Name("bench-chaos"), nats.Secure(tlsc), nats.Nkey(opKey.Public(), opKey.SignNonce),
		nats.CustomInboxPrefix(mesh.InboxPrefix(opKey.Kind, opKey.ID)), nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}
	if lab != nil {
		connOpts = append(connOpts, nats.SetCustomDialer(lab.Host("nats")))
	}
	var nc *nats.Conn
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if nc, err = nats.Connect(url, connOpts...); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return out, errors.Join(ctx.Err(), fmt.Errorf("bench chaos: strata nats: %w", err))
		}
	}
	defer nc.Close()
	obs := &chaosObserver{lastPartial: map[string]time.Time{}, lastUpdate: map[string]time.Time{}}
	if err := obs.subscribe(nc, t.Job); err != nil {
		return out, err
	}
	for _, name := range order[1:] {
		if err := procs[name].start(bin, dir); err != nil {
			return out, err
		}
	}

	status := func(id string) (global.Status, bool) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		s, err := global.RequestStatus(ctx, nc, id)
		return s, err == nil
	}
	leader := func() (string, global.Status) {
		for _, id := range []string{"g1", "g2", "g3"} {
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
		for _, name := range order {
			if data, err := os.ReadFile(filepath.Join(dir, name+".log")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				fmt.Fprintf(&b, "\n--- %s: %s", name, lines[len(lines)-1])
			}
		}
		return b.String()
	}
	committed := func() int { _, s := leader(); return s.Committed }

	var s0 global.Status
	if !waitFor(3*time.Minute, func() bool { _, s0 = leader(); return s0.Committed >= 1 }) {
		return out, errors.Join(ctx.Err(), fmt.Errorf("bench chaos: no round committed within 3 minutes; last log lines:%s", logTail()))
	}
	bar.Label("%d rounds undisturbed", cfg.SteadyRounds)
	steadyStart := time.Now()
	if !waitFor(10*time.Minute, func() bool { c := committed(); bar.Set(c - s0.Committed); return c >= s0.Committed+cfg.SteadyRounds }) {
		return out, errors.Join(ctx.Err(), fmt.Errorf("bench chaos: %d undisturbed rounds took over 10 minutes%s", cfg.SteadyRounds, logTail()))
	}
	_, s1 := leader()
	steadyRate := float64(s1.Committed-s0.Committed) / time.Since(steadyStart).Minutes()

	rng := rand.New(rand.NewPCG(cfg.Seed, 0xc4a05))
	killable := []string{"g1", "g2", "g3", "regional-a", "regional-b", "edge-a", "edge-b"}
	// Hosts a partition cuts off: a global node's, or a region's (its
	// aggregator and its fleet); never the NATS server's, where the
	// bench's observer dials from.
	partitionable := []string{"g1", "g2", "g3", "ra", "rb"}
	var rows []ChaosRow
	chaosStart := time.Now()
	target := s1.Committed + cfg.Rounds
	for k := 1; ; k++ {
		c := committed()
		bar.Set(cfg.SteadyRounds + c - s1.Committed)
		if c >= target {
			break
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		// The fault: its kind, target, hold and the gap after it, all from
		// the seed.
		row := ChaosRow{Index: k, Kind: chaosKill, AtRound: c}
		kinds := 2
		if lab != nil {
			kinds = 3
		}
		switch rng.IntN(kinds) {
		case 0:
			row.Target = killable[rng.IntN(len(killable))]
		case 1:
			row.Kind = chaosPause
			row.Target = order[rng.IntN(len(order))]
		case 2:
			row.Kind = chaosPartition
			row.Target = partitionable[rng.IntN(len(partitionable))]
		}
		hold := time.Duration(300+rng.IntN(2700)) * time.Millisecond
		gap := time.Duration(200+rng.IntN(800)) * time.Millisecond
		bar.Label("fault %d: %s %s for %v", k, row.Kind, row.Target, hold.Round(100*time.Millisecond))
		p := procs[row.Target]
		began := time.Now()
		_, lead := leader()
		var caughtUp uint64
		switch row.Kind {
		case chaosKill:
			p.kill()
		case chaosPause:
			if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				return out, fmt.Errorf("bench chaos: SIGSTOP %s: %w", row.Target, err)
			}
		case chaosPartition:
			if err := lab.Isolate(row.Target); err != nil {
				return out, fmt.Errorf("bench chaos: %w", err)
			}
		}
		// Hold the fault, watching for the next committed round meanwhile.
		for time.Since(began) < hold {
			if row.NextCommitMs == 0 && row.Target != "nats" {
				if _, s := leader(); s.Committed > c {
					row.NextCommitMs = time.Since(began).Seconds() * 1e3
				}
			}
			time.Sleep(25 * time.Millisecond)
		}
		switch row.Kind {
		case chaosKill:
			if err := p.start(bin, dir); err != nil {
				return out, err
			}
			if strings.HasPrefix(row.Target, "g") {
				obs.rec.Add(history.Event{Kind: history.Restart, Node: row.Target})
			}
		case chaosPause:
			if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				return out, fmt.Errorf("bench chaos: SIGCONT %s: %w", row.Target, err)
			}
		case chaosPartition:
			if err := lab.Heal(row.Target); err != nil {
				return out, fmt.Errorf("bench chaos: %w", err)
			}
		}
		ended := time.Now()
		row.HoldMs = ended.Sub(began).Seconds() * 1e3
		if row.NextCommitMs == 0 {
			if !waitFor(2*time.Minute, func() bool { _, s := leader(); return s.Committed > c }) {
				return out, fmt.Errorf("bench chaos: fault %d (%s %s): no round committed within 2 minutes%s", k, row.Kind, row.Target, logTail())
			}
			row.NextCommitMs = time.Since(began).Seconds() * 1e3
		}
		var recovered func() bool
		switch {
		case strings.HasPrefix(row.Target, "g"):
			// Caught up: it applies what the leader had applied when the
			// fault ended (or leads itself).
			if _, l := leader(); l.Applied > lead.Applied {
				caughtUp = l.Applied
			} else {
				caughtUp = lead.Applied
			}
			recovered = func() bool { s, ok := status(row.Target); return ok && (s.Applied >= caughtUp || s.Leader) }
		case strings.HasPrefix(row.Target, "regional-"), row.Target == "ra", row.Target == "rb":
			r := strings.TrimPrefix(strings.TrimPrefix(row.Target, "regional-"), "r")
			recovered = func() bool { return obs.since(obs.lastPartial, r, ended) }
		case strings.HasPrefix(row.Target, "edge-"):
			r := strings.TrimPrefix(row.Target, "edge-")
			recovered = func() bool { return obs.since(obs.lastUpdate, r, ended) }
		default: // nats
			recovered = func() bool { _, s := leader(); return s.Committed > c }
		}
		if !waitFor(3*time.Minute, recovered) {
			return out, fmt.Errorf("bench chaos: fault %d (%s %s): not recovered within 3 minutes%s", k, row.Kind, row.Target, logTail())
		}
		row.RecoverMs = time.Since(ended).Seconds() * 1e3
		rows = append(rows, row)
		time.Sleep(gap)
	}
	_, final := leader()
	chaosRate := float64(final.Committed-s1.Committed) / time.Since(chaosStart).Minutes()

	// Stop the mesh, every node with its ledger on disk, and check the
	// history: the wire as observed, and the three ledgers as read.
	bar.Label("stopping the mesh; checking the history")
	// The regions first, so that no round opens any more; then the global
	// nodes once all three have applied the same log.
	for _, name := range order[4:] {
		procs[name].kill()
	}
	applied := func() (uint64, bool) {
		var a []uint64
		for _, id := range []string{"g1", "g2", "g3"} {
			s, ok := status(id)
			if !ok {
				return 0, false
			}
			a = append(a, s.Applied)
		}
		return a[0], a[0] == a[1] && a[1] == a[2]
	}
	var last uint64
	stable := 0
	waitFor(time.Minute, func() bool {
		a, same := applied()
		if same && a == last {
			stable++
		} else {
			stable = 0
		}
		last = a
		time.Sleep(200 * time.Millisecond)
		return stable >= 25 // 5 s unchanged: longer than a round's timeout
	})
	for _, name := range order[1:4] {
		procs[name].kill()
	}
	for _, id := range []string{"g1", "g2", "g3"} {
		if err := obs.rec.DataDir(id, filepath.Join(dir, id), nil); err != nil {
			return out, fmt.Errorf("bench chaos: %w", err)
		}
	}
	events := obs.rec.Events()
	verdict := history.Check(events)
	bar.Done()

	out.Report.Rows = rows
	violations := 0.0
	note := fmt.Sprintf("history checker: no violation in %d events (wire and the three ledgers)", len(events))
	if verdict != nil {
		violations = 1
		note = fmt.Sprintf("history checker: %v", verdict)
	}
	out.Report.Notes = []string{note}
	if lab == nil {
		out.Report.Notes = append(out.Report.Notes, fmt.Sprintf("no partitions: %v", labErr))
	}
	sum := map[string]float64{
		"rounds_per_min_steady":       steadyRate,
		"rounds_per_min_chaos":        chaosRate,
		"ratio_rate_chaos_steady":     chaosRate / steadyRate,
		"rounds_committed_chaos":      float64(final.Committed - s1.Committed),
		"rounds_aborted":              float64(final.Rounds - final.Committed),
		"faults":                      float64(len(rows)),
		"history_violations":          violations,
		"history_events":              float64(len(events)),
		"chaos_minutes":               time.Since(chaosStart).Minutes(),
		"steady_rounds":               float64(s1.Committed - s0.Committed),
		"next_commit_ms_median_all":   0,
		"recover_ms_median_all":       0,
		"recover_ms_max_all":          0,
		"faults_on_global_nodes":      0,
		"faults_on_regions_and_edges": 0,
	}
	var allNext, allRec []float64
	type kindKey struct{ kind, tier string }
	byKind := map[kindKey][]float64{}
	for _, r := range rows {
		allNext, allRec = append(allNext, r.NextCommitMs), append(allRec, r.RecoverMs)
		tier := chaosTier(r.Target)
		byKind[kindKey{r.Kind, tier}] = append(byKind[kindKey{r.Kind, tier}], r.RecoverMs)
		if tier == "global" {
			sum["faults_on_global_nodes"]++
		} else if tier != "nats" {
			sum["faults_on_regions_and_edges"]++
		}
	}
	sum["next_commit_ms_median_all"] = percentile(allNext, 0.5)
	sum["recover_ms_median_all"] = percentile(allRec, 0.5)
	sum["recover_ms_max_all"] = percentile(allRec, 1)
	dist := Table{Title: "chaos: time to recover after the fault ends (restart / SIGCONT), per fault kind and tier",
		Header: []string{"fault", "tier", "n", "p50 ms", "p90 ms", "max ms"}}
	var keys []kindKey
	for k := range byKind {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b kindKey) int { return strings.Compare(a.kind+a.tier, b.kind+b.tier) })
	for _, k := range keys {
		v := byKind[k]
		name := k.kind + "_" + k.tier
		sum["recover_ms_p50_"+name] = percentile(v, 0.5)
		sum["recover_ms_p90_"+name] = percentile(v, 0.9)
		sum["recover_ms_max_"+name] = percentile(v, 1)
		sum["faults_"+name] = float64(len(v))
		dist.Add(k.kind, k.tier, len(v), percentile(v, 0.5), percentile(v, 0.9), percentile(v, 1))
	}
	out.Report.Summary = sum
	head := Table{Title: fmt.Sprintf("chaos: strata nats, 3 global processes (raft over TCP), 2 regions, %s; %.1f rounds/min undisturbed, %.1f under %d faults (ratio %.2f); %d rounds committed under faults, %d aborted in all; %s",
		mode, steadyRate, chaosRate, len(rows), chaosRate/steadyRate, final.Committed-s1.Committed, final.Rounds-final.Committed, note),
		Header: []string{"#", "fault", "target", "at round", "hold ms", "next commit ms", "recover ms"}}
	for _, r := range rows {
		head.Add(r.Index, r.Kind, r.Target, r.AtRound, r.HoldMs, r.NextCommitMs, r.RecoverMs)
	}
	fig := Figure{Name: "chaos_recovery", Title: "Time to recover after each fault ends", XLabel: "fault #", YLabel: "ms after restart / SIGCONT"}
	series := map[string]*Series{}
	for _, r := range rows {
		name := r.Kind + " " + chaosTier(r.Target)
		if series[name] == nil {
			series[name] = &Series{Name: name}
		}
		series[name].X = append(series[name].X, float64(r.Index))
		series[name].Y = append(series[name].Y, r.RecoverMs)
	}
	for _, k := range keys {
		if s := series[k.kind+" "+k.tier]; s != nil {
			fig.Series = append(fig.Series, *s)
		}
	}
	out.Tables = []Table{head, dist}
	out.Figures = []Figure{fig}
	out.end()
	if verdict != nil {
		return out, fmt.Errorf("bench chaos: %w", verdict)
	}
	return out, nil
}

// chaosTier names a target's tier.
func chaosTier(target string) string {
	switch {
	case strings.HasPrefix(target, "g"):
		return "global"
	case strings.HasPrefix(target, "regional-"):
		return "regional"
	case target == "ra", target == "rb":
		return "region" // its host: the aggregator and its fleet
	case strings.HasPrefix(target, "edge-"):
		return "edge"
	}
	return "nats"
}
