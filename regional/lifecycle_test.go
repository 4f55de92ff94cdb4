package regional

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
)

var updateGoldens = flag.Bool("update", false, "rewrite the expected output of the lifecycle scenarios in testdata/lifecycle")

// TestLifecycleScenarios runs the scripts in testdata/lifecycle: each block
// is a command (an event for the core, or a question to the harness), a
// "----" line, and the actions the core answered with, one a line, until
// a blank line. With -update the expected output is rewritten from what
// the core does (etcd raft's interaction tests work the same way).
//
// Commands (key=value arguments, all optional):
//
//	open round=N sampled=a,b deadline=10s signed registry=V noise=σ dim=D reply=R job=J region=R malformed secagg
//	update client=C round=N version=V vec=x,y,z signed badsig
//	stream client=C round=N reply=R signed          a stream open of C's vector
//	chunk client=C round=N from=I to=J reply=R      elements [I, J) of C's vector; the last carries the digest
//	secagg client=C                                 a secure-aggregation envelope of C (a well-formed but empty one)
//	registry version=V clients=a,b withdrawn=c      the pending registry request answers
//	registry-fail                                   the pending registry request fails
//	tick [D]                                        time passes D, or up to the timer; the timer fires
//	done | ping reply=R | stats
//
// Times print relative to the scenario's start; stats print as the
// change since the previous report.
func TestLifecycleScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/lifecycle/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScenarioFile(t, f) })
	}
}

func runScenarioFile(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := newScenario(t)
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		cmd := sc.Text()
		if strings.TrimSpace(cmd) == "" || strings.HasPrefix(cmd, "#") {
			out.WriteString(cmd + "\n")
			continue
		}
		var want []string
		if !sc.Scan() || sc.Text() != "----" {
			t.Fatalf("%s:%d: %q is not followed by ----", path, line, cmd)
		}
		line++
		for sc.Scan() {
			line++
			if sc.Text() == "" {
				break
			}
			want = append(want, sc.Text())
		}
		got := s.run(cmd)
		out.WriteString(cmd + "\n----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		out.WriteString("\n")
		if !*updateGoldens && strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n\t%s\nwant:\n\t%s", path, line, cmd, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	}
	if *updateGoldens {
		if err := os.WriteFile(path, append(bytes.TrimRight(out.Bytes(), "\n"), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.checkInvariants()
}

// scenario drives a Lifecycle and prints what it does.
type scenario struct {
	t         *testing.T
	lc        *Lifecycle
	t0, now   time.Time
	armed     time.Time
	prev      Stats
	open      wire.RoundOpen // the last round announced, for the defaults of updates
	keys      map[string]*identity.Key
	fetching  []uint64       // registry requests in flight, oldest first
	published map[uint64]int // partials per round
}

func newScenario(t *testing.T) *scenario {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rk, err := identity.New(identity.KindRegion, "eu")
	if err != nil {
		t.Fatal(err)
	}
	return &scenario{t: t, t0: t0, now: t0, keys: map[string]*identity.Key{}, published: map[uint64]int{},
		prev: Stats{Rejected: map[string]int{}, SecAggFailed: map[string]int{}},
		lc:   newLifecycle(t, LifecycleConfig{Job: "j", Region: "eu", Noise: fixedNoise(1), Key: rk, StreamSlots: 1, StreamWindow: 2})}
}

func (s *scenario) key(client string) *identity.Key {
	if k := s.keys[client]; k != nil {
		return k
	}
	k, err := identity.New(identity.KindClient, client)
	if err != nil {
		s.t.Fatal(err)
	}
	s.keys[client] = k
	return k
}

type args map[string]string

func parseArgs(fields []string) args {
	a := args{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		a[k] = v
	}
	return a
}

func (a args) has(k string) bool { _, ok := a[k]; return ok }

func (a args) str(k, def string) string {
	if v, ok := a[k]; ok {
		return v
	}
	return def
}

func (a args) num(k string, def uint64) uint64 {
	if v, ok := a[k]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("%s=%s: %v", k, v, err))
		}
		return n
	}
	return def
}

func (a args) list(k string, def []string) []string {
	if v, ok := a[k]; ok {
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	return def
}

func (a args) vec(k string, def []float32) []float32 {
	v, ok := a[k]
	if !ok {
		return def
	}
	var out []float32
	for _, x := range strings.Split(v, ",") {
		f, err := strconv.ParseFloat(x, 32)
		if err != nil {
			panic(err)
		}
		out = append(out, float32(f))
	}
	return out
}

// vector is a client's update in the scenarios: norm 1 for dim 3.
func (s *scenario) vector(a args) []float32 {
	def := make([]float32, s.open.Dim)
	copy(def, []float32{0.6, 0, 0.8})
	return a.vec("vec", def)
}

func (s *scenario) run(cmd string) []string {
	fields := strings.Fields(cmd)
	a := parseArgs(fields[1:])
	var ev Event
	switch fields[0] {
	case "open":
		o := wire.RoundOpen{Job: a.str("job", "j"), Round: a.num("round", 1), Region: a.str("region", "eu"), ModelVersion: 1,
			Dim: int(a.num("dim", 3)), ClipNorm: 1, Sampled: a.list("sampled", []string{"c1", "c2"}),
			Signed: a.has("signed"), Registry: a.num("registry", 0), RegionalNoise: float64(a.num("noise", 0))}
		d, err := time.ParseDuration(a.str("deadline", "10s"))
		if err != nil {
			s.t.Fatal(err)
		}
		o.DeadlineUnixMs = s.now.Add(d).UnixMilli()
		if a.has("secagg") {
			signed, reg := o.Signed, o.Registry
			o = secAggOpen(s.t, len(o.Sampled))
			o.Round, o.DeadlineUnixMs, o.Signed, o.Registry = a.num("round", 1), s.now.Add(d).UnixMilli(), signed, reg
		}
		b, _ := wire.Encode(wire.TypeRoundOpen, &o)
		if a.has("malformed") {
			b = b[:len(b)/2]
		}
		if o.Job == "j" && o.Region == "eu" {
			s.open = o
		}
		ev = OpenArrived{Now: s.now, Data: b, Reply: Reply(a.str("reply", "open"))}
	case "update":
		u := wire.Update{Job: "j", Round: a.num("round", s.open.Round), Region: "eu", Client: a.str("client", "c1"),
			ModelVersion: a.num("version", 1), Vec: wire.AppendFloat32s(nil, s.vector(a))}
		if a.has("signed") || a.has("badsig") {
			signer := s.key(u.Client)
			if a.has("badsig") {
				signer = s.key("intruder")
			}
			d := wire.PayloadDigest(wire.EncodingF32, len(u.Vec)/4, identity.Digest(u.Vec), nil)
			u.Sig = signer.Sign(identity.UpdateMessage(u.Job, u.Round, u.ModelVersion, u.Region, u.Client, 0, d))
		}
		b, _ := wire.Encode(wire.TypeUpdate, &u)
		ev = UpdateArrived{Now: s.now, Data: b}
	case "stream":
		c := a.str("client", "c1")
		data := wire.AppendFloat32s(nil, s.vector(a))
		o := wire.StreamOpen{Job: "j", Round: a.num("round", s.open.Round), Region: "eu", Client: c, ModelVersion: 1,
			Dim: s.open.Dim, Total: s.open.Dim, Encoding: wire.EncodingF32}
		if a.has("signed") {
			d := wire.PayloadDigest(wire.EncodingF32, o.Total, identity.Digest(data), nil)
			o.Digest = d[:]
			o.Sig = s.key(c).Sign(identity.UpdateMessage("j", o.Round, 1, "eu", c, 0, d))
		}
		b, _ := wire.Encode(wire.TypeStreamOpen, &o)
		ev = UpdateArrived{Now: s.now, Data: b, Reply: Reply(a.str("reply", "s-"+c))}
	case "chunk":
		c := a.str("client", "c1")
		data := wire.AppendFloat32s(nil, s.vector(a))
		from, to := int(a.num("from", 0)), int(a.num("to", uint64(s.open.Dim)))
		h := wire.ChunkHeader{Job: "j", Round: a.num("round", s.open.Round), Client: c, Offset: from, Total: s.open.Dim, Last: to == s.open.Dim}
		if h.Last {
			h.Digest = crc32.Checksum(data[:4*to], wire.Castagnoli)
		}
		b, _ := wire.AppendChunk(nil, &h, data[4*from:4*to])
		ev = UpdateArrived{Now: s.now, Data: b, Reply: Reply(a.str("reply", "s-"+c))}
	case "secagg":
		c := a.str("client", "c1")
		b, _ := wire.Encode(wire.TypeSecAggUp, &wire.SecAggUp{Job: "j", Round: a.num("round", s.open.Round), Region: "eu", Client: c, Body: []byte{1}})
		ev = SecAggArrived{Now: s.now, Subject: "strata.j.secagg.eu." + c, Data: b}
	case "registry", "registry-fail":
		if len(s.fetching) == 0 {
			return []string{"harness: no registry request in flight"}
		}
		want := s.fetching[0]
		s.fetching = s.fetching[1:]
		if fields[0] == "registry-fail" {
			ev = RegistryArrived{Now: s.now, Want: want, Err: errors.New("nats: timeout")}
			break
		}
		var es []identity.Entry
		for _, c := range a.list("clients", nil) {
			es = append(es, identity.Entry{ID: c, Kind: identity.KindClient, Region: "eu", Public: s.key(c).Public(), Status: identity.StatusActive})
		}
		for _, c := range a.list("withdrawn", nil) {
			es = append(es, identity.Entry{ID: c, Kind: identity.KindClient, Region: "eu", Public: s.key(c).Public(), Status: identity.StatusWithdrawn})
		}
		b, _ := identity.EncodeRegistry(identity.NewRegistry(a.num("version", want), es))
		ev = RegistryArrived{Now: s.now, Want: want, Data: b}
	case "tick":
		if len(fields) > 1 {
			d, err := time.ParseDuration(fields[1])
			if err != nil {
				s.t.Fatal(err)
			}
			s.now = s.now.Add(d)
		} else if !s.armed.IsZero() && s.armed.After(s.now) {
			s.now = s.armed
		}
		ev = Tick{Now: s.now}
	case "done":
		ev = JobDone{Now: s.now}
	case "ping":
		ev = PingArrived{Reply: Reply(a.str("reply", "ping"))}
	case "stats":
		return s.printStats(s.lc.Stats(), Stats{Rejected: map[string]int{}, SecAggFailed: map[string]int{}})
	default:
		s.t.Fatalf("unknown command %q", cmd)
	}
	acts, err := s.lc.Step(ev)
	var out []string
	for _, act := range acts {
		out = append(out, s.print(act)...)
	}
	if err != nil {
		out = append(out, "error: "+err.Error())
	}
	if len(out) == 0 {
		out = []string{"(nothing)"}
	}
	return out
}

func (s *scenario) at(t time.Time) string { return "+" + t.Sub(s.t0).String() }

func (s *scenario) print(act Action) []string {
	switch a := act.(type) {
	case RoundOpened:
		return []string{fmt.Sprintf("opened round=%d sampled=%d signed=%v", a.Open.Round, len(a.Open.Sampled), a.Open.Signed)}
	case AckOpen:
		return []string{fmt.Sprintf("ack-open to=%s round=%d", a.To, a.Round)}
	case FetchRegistry:
		s.fetching = append(s.fetching, a.Want)
		return []string{fmt.Sprintf("fetch-registry want=%d", a.Want)}
	case Grant:
		g := a.Grant
		if g.Reason != "" {
			return []string{fmt.Sprintf("refuse-stream to=%s round=%d client=%s reason=%s", a.To, g.Round, g.Client, g.Reason)}
		}
		return []string{fmt.Sprintf("grant-stream to=%s round=%d client=%s window=%d", a.To, g.Round, g.Client, g.Window)}
	case AckChunk:
		c := a.Ack
		if c.Reason != "" {
			return []string{fmt.Sprintf("ack-chunk to=%s round=%d client=%s offset=%d reason=%s", a.To, c.Round, c.Client, c.Offset, c.Reason)}
		}
		return []string{fmt.Sprintf("ack-chunk to=%s round=%d client=%s offset=%d", a.To, c.Round, c.Client, c.Offset)}
	case SendSecAgg:
		return []string{fmt.Sprintf("secagg-send round=%d client=%s", a.Round, a.Msg.Client)}
	case PublishPartial:
		p := a.Partial
		s.published[p.Round]++
		sum, _ := wire.Float64s(p.Sum)
		var vs []string
		for _, x := range sum {
			vs = append(vs, strconv.FormatFloat(x, 'g', 4, 64))
		}
		return []string{fmt.Sprintf("publish round=%d count=%d rejected=%s sum=[%s] signed=%v elapsed=%s",
			p.Round, p.Count, sortedCounts(p.Rejected), strings.Join(vs, " "), len(p.Sig) > 0, a.Elapsed)}
	case SetTimer:
		s.armed = a.At
		if a.At.IsZero() {
			return []string{"clear-timer"}
		}
		return []string{"set-timer at=" + s.at(a.At)}
	case Pong:
		return []string{"pong to=" + string(a.To)}
	case ReportStats:
		out := s.printStats(a.Stats, s.prev)
		s.prev = a.Stats
		return out
	case Stop:
		return []string{"stop"}
	}
	return []string{fmt.Sprintf("unknown action %T", act)}
}

// printStats prints the counters of st that differ from prev.
func (s *scenario) printStats(st, prev Stats) []string {
	var diffs []string
	num := func(name string, v, was int) {
		if v != was {
			if name == "registry_waiting" {
				diffs = append(diffs, fmt.Sprintf("%s=%d", name, v))
			} else {
				diffs = append(diffs, fmt.Sprintf("%s%+d", name, v-was))
			}
		}
	}
	num("accepted", st.Accepted, prev.Accepted)
	for _, k := range sortedKeys(st.Rejected) {
		num("rejected."+k, st.Rejected[k], prev.Rejected[k])
	}
	num("stray", st.StrayChunks, prev.StrayChunks)
	num("secagg_messages", st.SecAggMessages, prev.SecAggMessages)
	num("secagg_sessions", st.SecAggSessions, prev.SecAggSessions)
	for _, k := range sortedKeys(st.SecAggFailed) {
		num("secagg_failed."+k, st.SecAggFailed[k], prev.SecAggFailed[k])
	}
	num("registry_waiting", st.RegistryWaiting, prev.RegistryWaiting)
	num("registry_failures", st.RegistryFailures, prev.RegistryFailures)
	if len(diffs) == 0 {
		return []string{"stats (no change)"}
	}
	return []string{"stats " + strings.Join(diffs, " ")}
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedCounts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// checkInvariants: whatever a scenario did, no round was published twice.
func (s *scenario) checkInvariants() {
	for r, n := range s.published {
		if n > 1 {
			s.t.Errorf("round %d published %d times, want at most once", r, n)
		}
	}
}
