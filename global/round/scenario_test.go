package round_test

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

var update = flag.Bool("update", false, "rewrite the expected output of the scenarios in testdata/")

// TestScenarios runs the scripts in testdata/*.txt against a machine, a
// real ledger (every proposal is applied to it, as raft would) and a
// scripted network, and compares what the machine did with the expected
// output (go test -update rewrites it), as etcd raft's interaction tests
// do. See testdata/README for the commands.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata (%v)", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

// segment is either free text (comments, blank lines) or one command with
// its input and expected output.
type segment struct {
	text  string // free text, verbatim
	line  int
	cmd   string
	input string
	want  string
	isCmd bool
}

func parseScript(t *testing.T, path string) []segment {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var segs []segment
	sc := bufio.NewScanner(f)
	n := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		n++
		return sc.Text(), true
	}
	for {
		l, ok := next()
		if !ok {
			break
		}
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			segs = append(segs, segment{text: l})
			continue
		}
		s := segment{isCmd: true, cmd: l, line: n}
		var in []string
		for {
			l, ok := next()
			if !ok {
				t.Fatalf("%s:%d: command without ----", path, s.line)
			}
			if l == "----" {
				break
			}
			in = append(in, l)
		}
		s.input = strings.Join(in, "\n")
		var want []string
		for {
			l, ok := next()
			if !ok || l == "" {
				break
			}
			want = append(want, l)
		}
		s.want = strings.Join(want, "\n")
		segs = append(segs, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return segs
}

func runScript(t *testing.T, path string) {
	segs := parseScript(t, path)
	s := &sim{t: t}
	var out strings.Builder
	for i := range segs {
		seg := &segs[i]
		if !seg.isCmd {
			out.WriteString(seg.text + "\n")
			continue
		}
		s.out.Reset()
		s.exec(fmt.Sprintf("%s:%d", path, seg.line), seg.cmd, seg.input)
		got := strings.TrimRight(s.out.String(), "\n")
		if !*update && got != seg.want {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, seg.line, seg.cmd, got, seg.want)
		}
		out.WriteString(seg.cmd + "\n")
		if seg.input != "" {
			out.WriteString(seg.input + "\n")
		}
		out.WriteString("----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		out.WriteString("\n")
	}
	if *update {
		b := strings.TrimRight(out.String(), "\n") + "\n"
		if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// args splits a command line into its name, positional arguments and
// key=value arguments; values may be double-quoted.
func args(line string) (string, []string, map[string]string) {
	var toks []string
	var cur strings.Builder
	quoted := false
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				toks = append(toks, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		toks = append(toks, cur.String())
	}
	kv := map[string]string{}
	var pos []string
	for _, tk := range toks[1:] {
		if k, v, ok := strings.Cut(tk, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, tk)
		}
	}
	return toks[0], pos, kv
}

// t0 is the scenarios' clock at its start.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// sim is a machine's world: a real ledger, a toy pricer, a model store,
// an evaluator and a network driven by the script.
type sim struct {
	t   *testing.T
	out strings.Builder
	at  string // where the current command is, for failures

	top   *topology.Topology
	dim   int
	l     *ledger.Ledger
	index uint64
	m     *round.Machine
	now   time.Time
	keys  map[string]*identity.Key // region keys
	store map[uint64][2][]float64  // version → θ, velocity
	stop  bool

	// The toy pricer: a round costs step of public ε for every client
	// eligible in it (ε composes by addition; the RDP "curve" holds ε at
	// each order), twice that against the global operator.
	step      float64
	priceFail string

	reports  []round.Report
	draws    []float64
	evals    [][2]float64
	canary   []string
	noise    float64
	tamper   string
	round    uint64    // the round last proposed
	opened   time.Time // when it opened
	collects bool
	// plog is the partial log (a stream capturing the partial subject):
	// every message sent in the current round, kept whether a leader is
	// alive (dead false) or not, emptied when the round ends.
	plog []round.PartialMsg
	dead bool
	// dieAt, when "store", kills the leader right after it stored its
	// candidate (before the evaluation); merged is the record the runner
	// keeps beside a stored candidate.
	dieAt  string
	merged *round.Merged
}

func (s *sim) fatalf(format string, a ...any) {
	s.t.Helper()
	s.t.Fatalf("%s: "+format, append([]any{s.at}, a...)...)
}

func (s *sim) printf(format string, a ...any) { fmt.Fprintf(&s.out, format+"\n", a...) }

func (s *sim) exec(at, line, input string) {
	s.at = at
	cmd, pos, kv := args(line)
	if s.m == nil && cmd != "topology" && cmd != "start" && cmd != "price" {
		s.fatalf("%s before start", cmd)
	}
	switch cmd {
	case "topology":
		top, err := topology.Parse([]byte(input))
		if err != nil {
			s.fatalf("topology: %v", err)
		}
		s.top = top
	case "start":
		s.start(kv)
	case "price":
		if v, ok := kv["step"]; ok {
			s.step = s.float(v)
		}
		s.priceFail = kv["fail"]
	case "next":
		s.run(round.Next{View: s.view()})
	case "probe":
		s.run(round.Probed{Alive: s.int(kv["alive"]), View: s.view(), Now: s.now})
	case "ack":
		s.run(round.Acked{Regions: pos})
	case "partial":
		s.partial(kv)
	case "send":
		s.run(round.PartialMsg{Data: []byte(kv["bytes"]), At: s.now})
	case "deadline":
		until, ok := s.m.Collecting()
		if !ok {
			s.fatalf("deadline while not collecting")
		}
		s.now = until
		s.run(round.Deadline{At: until})
	case "advance":
		d, err := time.ParseDuration(pos[0])
		if err != nil {
			s.fatalf("advance: %v", err)
		}
		s.now = s.now.Add(d)
	case "draws":
		for _, p := range pos {
			s.draws = append(s.draws, s.float(p))
		}
	case "eval":
		s.evals = append(s.evals, [2]float64{s.float(kv["acc"]), s.float(kv["loss"])})
	case "canary":
		s.canary = append(s.canary, kv["reason"])
	case "noise":
		s.noise = s.float(pos[0])
	case "tamper":
		s.tamper = pos[0]
	case "ledger":
		s.ledgerCmd(pos, kv)
	case "state":
		s.state()
	case "kill":
		if kv["at"] != "" {
			s.dieAt = kv["at"]
			break
		}
		s.dead = true
		s.printf("leader killed: %d message(s) in the partial log", len(s.plog))
	case "failover":
		s.failover(kv)
	default:
		s.fatalf("unknown command %q", cmd)
	}
}

func (s *sim) float(v string) float64 {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		s.fatalf("%q: %v", v, err)
	}
	return f
}

func (s *sim) int(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		s.fatalf("%q: %v", v, err)
	}
	return n
}

var orders = []float64{2, 4, 8}

func (s *sim) start(kv map[string]string) {
	if s.top == nil {
		s.fatalf("start before topology")
	}
	s.dim, s.now, s.l, s.store, s.keys = 2, t0, ledger.New(), map[uint64][2][]float64{}, map[string]*identity.Key{}
	s.plog, s.dead, s.stop, s.index, s.dieAt, s.merged = nil, false, false, 0, "", nil
	if s.step == 0 {
		s.step = 0.1
	}
	if v, ok := kv["dim"]; ok {
		s.dim = s.int(v)
	}
	t := s.top
	s.apply(&ledger.StartJob{Job: ledger.Job{Name: t.Job, ConfigHash: "h", Delta: t.Privacy.Delta, Budget: t.Privacy.Budget,
		Population: t.Population(), PlannedRounds: t.Train.Rounds, Accountant: "rdp", Orders: orders, Signed: t.Security.Signed(), ClientBudgets: true}})
	var nodes []ledger.Node
	var es []ledger.Enrollment
	for _, r := range t.Regions {
		k, err := identity.New(identity.KindRegion, r.ID)
		if err != nil {
			s.fatalf("%v", err)
		}
		s.keys[r.ID] = k
		nodes = append(nodes, ledger.Node{ID: r.ID, Kind: identity.KindRegion, PubKey: k.Public()})
		for i := 0; i < r.Clients; i++ {
			id := topology.ClientID(r.ID, i)
			b := t.Privacy.Budget
			if v, ok := t.Privacy.ClientBudgets[id]; ok {
				b = v
			}
			es = append(es, ledger.Enrollment{ID: id, Region: r.ID, Budget: b, PubKey: "U" + id})
		}
	}
	for _, cc := range t.CanaryClients() {
		es = append(es, ledger.Enrollment{ID: cc.ID, Region: cc.Region, Budget: t.Privacy.Budget, PubKey: "U" + cc.ID})
	}
	s.apply(&ledger.EnrollNodes{Nodes: nodes})
	s.apply(&ledger.EnrollClients{Clients: es, Purpose: "scenario"})
	m, err := round.New(round.Config{Topology: t, Pricer: round.PricerFunc(s.price), Theta: make([]float64, s.dim),
		Hash0: "h0", Base: round.Evaluation{Score: 0.9}, PartialGrace: 5 * time.Second})
	if err != nil {
		s.fatalf("%v", err)
	}
	s.m = m
}

func (s *sim) apply(cmd ledger.Command) ledger.Result {
	s.index++
	res := s.l.Apply(s.index, cmd)
	if res.Err != nil && s.m == nil {
		s.fatalf("setup: %T: %v", cmd, res.Err)
	}
	return res
}

func (s *sim) view() *round.View {
	v, err := round.ViewOf(s.l)
	if err != nil {
		s.fatalf("view: %v", err)
	}
	return v
}

// price is the toy pricer.
func (s *sim) price(t *topology.Topology, dim int, v *round.View) (round.Plan, error) {
	if s.priceFail != "" {
		return round.Plan{}, errors.New(s.priceFail)
	}
	curve := func(e float64) []float64 { return []float64{e, e, e} }
	spent := 0.0
	if len(v.Spent.Curve.Public) > 0 {
		spent = v.Spent.Curve.Public[0]
	}
	cost := func(rounds int) round.Cost {
		k := float64(rounds) * s.step
		return round.Cost{
			RDP:          ledger.PerObserver[[]float64]{Public: curve(s.step), FellowClients: curve(s.step), GlobalOperator: curve(2 * s.step), RegionalOperator: curve(math.Inf(1))},
			EpsilonAfter: ledger.PerObserver[float64]{Public: spent + k, FellowClients: spent + k, GlobalOperator: 2 * (spent + k), RegionalOperator: math.Inf(1)},
			Sigma:        ledger.PerObserver[float64]{Public: 1, FellowClients: 1, GlobalOperator: 0.8},
		}
	}
	clip := t.Privacy.ClipNorm
	if v.ClipNorm > 0 {
		clip = v.ClipNorm
	}
	p := round.Plan{Noise: ledger.Noise(t.Privacy.Noise), Clip: clip, Cost: cost(1)}
	if remaining := t.Train.Rounds - v.Committed; t.Privacy.Pacing.Patience > 0 && remaining > 0 {
		c := cost(remaining)
		p.Remaining, p.RemainingRounds = &c, remaining
	}
	for _, g := range append(v.Groups, round.Group{From: v.Next}) {
		if g.From == v.Next && len(p.Groups) > 0 && p.Groups[len(p.Groups)-1].From == v.Next {
			continue
		}
		e := s.step
		if len(g.Public) > 0 {
			e += g.Public[0]
		}
		p.Groups = append(p.Groups, ledger.GroupEpsilon{From: g.From, Epsilon: e})
	}
	return p, nil
}

// run steps the machine from ev, answering every action the world answers
// by itself, until the machine waits for the script (a probe, the regions'
// acknowledgements, partials) or stops.
func (s *sim) run(ev round.Event) {
	if s.stop {
		s.fatalf("%T after the machine stopped: the script goes on too long", ev)
	}
	for ev != nil {
		acts := s.m.Step(ev)
		ev = nil
		for _, a := range acts {
			if e := s.act(a); e != nil {
				ev = e
			}
		}
		if ev == nil && s.m.Idle() && !s.stop {
			ev = round.Next{View: s.view()}
		}
	}
}

func (s *sim) act(a round.Action) round.Event {
	switch a := a.(type) {
	case round.Probe:
		s.printf("probe")
	case round.Wait:
		s.printf("wait %v", a.For)
		s.now = s.now.Add(a.For)
	case round.LoadModel:
		st, ok := s.store[a.Version]
		s.printf("load v%d hash=%s", a.Version, a.Hash)
		if a.Version == 0 {
			return round.ModelLoaded{Version: 0, Theta: make([]float64, s.dim)}
		}
		if !ok {
			return round.ModelLoaded{Version: a.Version, Err: fmt.Errorf("no v%d in the store", a.Version)}
		}
		return round.ModelLoaded{Version: a.Version, Theta: st[0], Velocity: st[1]}
	case round.Draw:
		u := make([]float64, a.N)
		for i := range u {
			if len(s.draws) > 0 {
				u[i], s.draws = s.draws[0], s.draws[1:]
			}
		}
		s.printf("draw %d: %v", a.N, u)
		return round.Drawn{U: u}
	case round.Propose:
		return s.propose(a.Cmd)
	case round.OpenRegions:
		// The write-ahead rule, checked in every scenario: a round is
		// announced only once its OpenRound is in the ledger.
		if e, ok := s.l.OpenRoundEntry(); !ok || e.Round != a.Round {
			s.fatalf("round %d announced before its OpenRound was committed", a.Round)
		}
		s.printf("open-regions round=%d", a.Round)
		for _, ro := range a.Regions {
			sa := ""
			switch p := ro.Open.SecAgg; {
			case p != nil && p.Infeasible != "":
				sa = " secagg=infeasible"
			case p != nil:
				sa = fmt.Sprintf(" secagg=k%d,t%d", p.Degree, p.Threshold)
			}
			s.printf("  %s: sampled=%v invite-names=%v deadline=+%v registry=%d clip=%g%s", ro.Region, ro.Clients, ro.Invite.Sampled,
				time.UnixMilli(ro.Open.DeadlineUnixMs).Sub(s.opened), ro.Open.Registry, ro.Open.ClipNorm, sa)
		}
	case round.Collect:
		s.printf("collect until=+%v", a.Until.Sub(s.opened))
	case round.AddNoise:
		s.printf("add-noise sigma=%g", a.Sigma)
		for i := range a.Values {
			a.Values[i] += s.noise
		}
		return round.Noised{}
	case round.StoreModel:
		s.printf("store v%d theta=%s velocity=%s", a.Version, vec(a.Theta), vec(a.Velocity))
		s.store[a.Version] = [2][]float64{append([]float64(nil), a.Theta...), append([]float64(nil), a.Velocity...)}
		rec := a.Merged
		rec.Hash = fmt.Sprintf("h%d", a.Version)
		s.merged = &rec
		if s.dieAt == "store" {
			s.dieAt, s.dead = "", true
			s.printf("leader killed after storing v%d: %d message(s) in the partial log", a.Version, len(s.plog))
			return nil
		}
		return round.Stored{Hash: rec.Hash}
	case round.Evaluate:
		acc, loss := 0.9, 1/float64(a.Version)
		if len(s.evals) > 0 {
			acc, loss, s.evals = s.evals[0][0], s.evals[0][1], s.evals[1:]
		}
		s.printf("evaluate v%d: accuracy=%g loss=%g", a.Version, acc, loss)
		return round.Evaluated{Evaluation: round.Evaluation{Score: acc, Loss: loss, Metric: "accuracy", Metrics: []ledger.Metric{{Name: "accuracy", Value: acc}}}}
	case round.CanaryGate:
		reason := ""
		if len(s.canary) > 0 {
			reason, s.canary = s.canary[0], s.canary[1:]
		}
		s.printf("canary-gate: %q", reason)
		return round.GateChecked{Reason: reason}
	case round.Progress:
		r := a.Report
		s.reports = append(s.reports, r)
		s.printf("progress round=%d participants=%d regions=%d retired=%d accuracy=%g gate=%q aborted=%q", r.Round, r.Participants, r.Regions, r.Retired, r.Eval.Score, r.GateFailed, r.Aborted)
		s.printf("  merged=%s rejected=%s", merged(r.Merged), rejected(r.Rejected))
	case round.Log:
		var b strings.Builder
		for i := 0; i+1 < len(a.Args); i += 2 {
			fmt.Fprintf(&b, " %v=%v", a.Args[i], a.Args[i+1])
		}
		s.printf("log %s %q%s", strings.ToLower(a.Level.String()), a.Msg, b.String())
	case round.Announce:
		s.printf("announce %q", a.Reason)
	case round.Stop:
		if errors.Is(a.Err, round.ErrUnexpected) {
			s.fatalf("the machine stopped: %v", a.Err)
		}
		s.stop = true
		if a.Err == nil {
			s.printf("stop: job finished")
		} else {
			s.printf("stop: %v (budget exhausted: %v)", a.Err, errors.Is(a.Err, round.ErrBudgetExhausted))
		}
	default:
		s.fatalf("unknown action %T", a)
	}
	return nil
}

func (s *sim) propose(cmd ledger.Command) round.Event {
	switch c := cmd.(type) {
	case *ledger.OpenRound:
		s.round, s.opened = c.Round, time.UnixMilli(c.OpenedUnixMs)
		s.printf("propose open_round round=%d version=%d eligible=%d sampled=%v retire=%v eps=%.4g groups=%s", c.Round, c.ModelVersion, c.Eligible, c.SampledClients, c.Retire, c.EpsilonAfter.Public, groups(c.Groups))
		if s.tamper == "drop-retire" {
			s.tamper = ""
			s.printf("  (tampered: retire dropped, as a leader that forgot would)")
			cp := *c
			cp.Retire = nil
			cmd = &cp
		}
	case *ledger.CommitModel:
		s.printf("propose commit_model round=%d version=%d promoted=%v participants=%d regions=%v next_clip=%.4g gate=%q", c.Round, c.Version, c.Promoted, c.Participants, c.Regions, c.NextClipNorm, c.GateReason)
	case *ledger.AbortRound:
		s.printf("propose abort_round round=%d reason=%q", c.Round, c.Reason)
	case *ledger.FinishJob:
		planned := 0
		if c.Planned != nil {
			planned = c.Planned.Rounds
		}
		s.printf("propose finish_job planned=%d reason=%q", planned, c.Reason)
	default:
		s.printf("propose %T", cmd)
	}
	res := s.apply(cmd)
	switch cmd.(type) {
	case *ledger.CommitModel, *ledger.AbortRound:
		if res.Err == nil {
			s.plog = nil // the runner purges the partial log when a round ends
		}
	}
	switch {
	case res.Err != nil:
		s.printf("  rejected %s: %v", ledger.ReasonCode(res.Err), res.Err)
	case res.Duplicate:
		s.printf("  duplicate")
	default:
		s.printf("  committed at %d", s.index)
	}
	return round.Applied{Result: res}
}

// partial sends a region's partial of the current round (or round=N):
// count updates summing sum (default: count·0.5 at every coordinate),
// signed by the region's key unless sig=bad or sig=none, whole or in
// chunks=K, at=D after the round opened.
func (s *sim) partial(kv map[string]string) {
	p := wire.Partial{Job: s.top.Job, Round: s.round, Region: kv["region"], Count: 1}
	if v, ok := kv["job"]; ok {
		p.Job = v
	}
	if v, ok := kv["round"]; ok {
		p.Round = uint64(s.int(v))
	}
	if v, ok := kv["count"]; ok {
		p.Count = s.int(v)
	}
	if v, ok := kv["bits"]; ok {
		p.BitSum = s.float(v)
	}
	if v, ok := kv["rejected"]; ok {
		reason, n, _ := strings.Cut(v, ":")
		p.Rejected = map[string]int{reason: s.int(n)}
	}
	dim := s.dim
	if v, ok := kv["dim"]; ok {
		dim = s.int(v)
	}
	sum := make([]float64, dim)
	for i := range sum {
		sum[i] = 0.5 * float64(p.Count)
	}
	if v, ok := kv["sum"]; ok {
		for i, f := range strings.Split(v, ",") {
			sum[i] = s.float(f)
		}
	}
	p.Sum = wire.AppendFloat64s(nil, sum)
	switch kv["sig"] {
	case "", "good":
		if k := s.keys[p.Region]; k != nil {
			p.Sig = k.Sign(identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, identity.Digest(p.Sum)))
		}
	case "bad":
		p.Sig = make([]byte, 64)
	}
	at := s.now
	if v, ok := kv["at"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.fatalf("at: %v", err)
		}
		at = s.opened.Add(d)
	}
	chunks := 1
	if v, ok := kv["chunks"]; ok {
		chunks = s.int(v)
	}
	if chunks == 1 {
		b, err := wire.Encode(wire.TypePartial, &p)
		if err != nil {
			s.fatalf("%v", err)
		}
		s.deliver(round.PartialMsg{Data: b, At: at})
		return
	}
	per := (dim + chunks - 1) / chunks
	var crc uint32
	for off := 0; off < dim; off += per {
		end := min(dim, off+per)
		data := p.Sum[8*off : 8*end]
		crc = crc32.Update(crc, wire.Castagnoli, data)
		h := wire.PartialChunkHeader{Job: p.Job, Round: p.Round, Region: p.Region, Count: p.Count, Rejected: p.Rejected, Offset: off, Total: dim}
		if end == dim {
			h.Last, h.Digest, h.BitSum, h.Sig = true, crc, p.BitSum, p.Sig
			if kv["digest"] == "bad" {
				h.Digest++
			}
		}
		b, err := wire.AppendPartialChunk(nil, &h, data)
		if err != nil {
			s.fatalf("%v", err)
		}
		if _, ok := s.m.Collecting(); !ok && !s.dead {
			return // the collection closed (a late chunk)
		}
		s.deliver(round.PartialMsg{Data: b, At: at})
	}
}

// deliver puts one message into the partial log and, while a leader is
// alive, hands it to the leader's machine.
func (s *sim) deliver(msg round.PartialMsg) {
	s.plog = append(s.plog, msg)
	if !s.dead {
		s.run(msg)
	}
}

// failover starts the next leader: a new machine holding the serving
// version, told of the round left open with what the partial log holds
// (candidate=true: the dead leader had stored its candidate).
func (s *sim) failover(kv map[string]string) {
	v := s.view()
	theta, vel := make([]float64, s.dim), []float64(nil)
	if st, ok := s.store[v.Serving]; ok && v.Serving != 0 {
		theta, vel = append([]float64(nil), st[0]...), append([]float64(nil), st[1]...)
	}
	m, err := round.New(round.Config{Topology: s.top, Pricer: round.PricerFunc(s.price), Theta: theta, Velocity: vel, Version: v.Serving,
		Hash0: "h0", Base: round.Evaluation{Score: 0.9}, PartialGrace: 5 * time.Second})
	if err != nil {
		s.fatalf("%v", err)
	}
	s.m, s.dead, s.stop = m, false, false
	open, ok := round.LeftOpenOf(s.l)
	if !ok {
		s.printf("no round left open")
		s.run(round.Next{View: v})
		return
	}
	ev := round.Resume{View: v, Open: open, Stored: append([]round.PartialMsg(nil), s.plog...), Now: s.now, Candidate: kv["candidate"] == "true"}
	if st, ok := s.store[v.Latest+1]; ok {
		ev.Candidate = true
		if rec := s.merged; rec != nil && rec.Round == open.Round && kv["record"] != "lost" {
			ev.Adopt = &round.Adopted{Merged: *rec, Theta: append([]float64(nil), st[0]...), Velocity: append([]float64(nil), st[1]...)}
		}
	}
	s.printf("new leader: round %d left open, %d message(s) in the partial log, candidate=%v recorded=%v, now=+%v", open.Round, len(s.plog), ev.Candidate, ev.Adopt != nil, s.now.Sub(s.opened))
	s.run(ev)
}

func (s *sim) ledgerCmd(pos []string, kv map[string]string) {
	var cmd ledger.Command
	switch pos[0] {
	case "enroll":
		cmd = &ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: kv["id"], Region: kv["region"], Budget: s.float(kv["budget"]), PubKey: "U" + kv["id"]}}}
	case "withdraw":
		cmd = &ledger.Withdraw{Client: kv["id"]}
	case "rollback":
		cmd = &ledger.Rollback{To: uint64(s.int(kv["to"]))}
	default:
		s.fatalf("ledger %s?", pos[0])
	}
	if res := s.apply(cmd); res.Err != nil {
		s.printf("ledger %s: rejected: %v", pos[0], res.Err)
	} else {
		s.printf("ledger %s: applied at %d", pos[0], s.index)
	}
}

// state prints what the ledger holds.
func (s *sim) state() {
	l := s.l
	for _, r := range l.Rounds {
		s.printf("round %d %s eps=%.4g sampled=%d eligible=%d retired=%v", r.Round, r.Status, r.EpsilonAfter.Public, r.Sampled, r.Eligible, r.Retired)
		if r.SecAgg != nil {
			for _, ss := range r.SecAgg.Sessions {
				s.printf("  secagg %s: n=%d k=%d t=%d infeasible=%v", ss.Region, ss.Clients, ss.Degree, ss.Threshold, ss.Infeasible != "")
			}
		}
	}
	for _, m := range l.Models {
		s.printf("model v%d round=%d promoted=%v gate=%q", m.Version, m.Round, m.Promoted, m.GateReason)
	}
	s.printf("serving v%d clip=%.4g spent=%.4g finished=%v", l.Serving, l.ClipNorm, l.Spent(ledger.Public), l.Finished)
	var ids []string
	for _, c := range l.Clients {
		if c.Status != ledger.ClientActive {
			ids = append(ids, c.ID+":"+c.Status)
		}
	}
	if len(ids) > 0 {
		s.printf("clients not active: %v", ids)
	}
}

func vec(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'g', 6, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func groups(gs []ledger.GroupEpsilon) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = fmt.Sprintf("%d:%.4g", g.From, g.Epsilon)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func merged(ms []round.MergedPartial) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s:%d", m.Region, m.Count)
		if len(m.Rejected) > 0 {
			var rs []string
			for k, n := range m.Rejected {
				rs = append(rs, fmt.Sprintf("%s=%d", k, n))
			}
			sort.Strings(rs)
			parts[i] += "(" + strings.Join(rs, ",") + ")"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func rejected(rs []round.Rejection) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		region := r.Region
		if region == "" {
			region = "-"
		}
		parts[i] = fmt.Sprintf("%s/%s:%d", region, r.Reason, r.Count)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
