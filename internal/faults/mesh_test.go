package faults

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/history"
	"github.com/strata-fl/strata/internal/netlab"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// job is the scenarios' job name; region is the region of the
// one-region scenarios.
const (
	job    = "partition"
	region = "a"
)

// globals are the raft nodes, which are also the lab's host names.
var globals = []string{"g1", "g2", "g3"}

// proc is one strata process running in a lab host.
type proc struct {
	name string
	host *netlab.Host
	args []string
	log  string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error
}

func (p *proc) start(t *testing.T, bin string) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = p.host.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	// The waiter is owned by the process: it ends when the process does,
	// which kill forces.
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

// kill SIGKILLs the process by its own pid and waits until it is reaped.
func (p *proc) kill() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// mesh is the scenario's deployment: one process per role, each in its
// own host, and an observer connection from outside it.
type meshLab struct {
	t     *testing.T
	lab   *netlab.Lab
	dir   string
	key   *seal.Key
	procs map[string]*proc
	order []string
	nc    *nats.Conn
	rec   *history.Recorder

	mu sync.Mutex
	// bases are the model versions (and hashes) rounds were announced
	// with: released models, read back at the end.
	bases map[[2]any]bool
	// pings tells of the leader's pings of a region, which it sends
	// right before it opens a round; its value is the region.
	pings chan string
	// watch, when set, is told of every wire event as it is recorded
	// (on the observer's handler goroutine: it must not block).
	watch func(history.Event)

	// opts is what the mesh was started with; natsHosts are the hosts of
	// its NATS servers, the first the observer's; url lists them all.
	opts      meshOpts
	natsHosts []string
	url       string
}

// meshOpts shapes a scenario's mesh.
type meshOpts struct {
	// regions each get a site: a host "r"+region running `strata
	// regional` and `strata edge`; default the one region a.
	regions []string
	// natsServers is 1 (host "nats", the default) or 3 (a NATS cluster
	// on hosts n1, n2, n3, each route to the other two, the model store
	// replicated on all three).
	natsServers int
	// siteDelay, when set, delays every packet to and from each site
	// by this much (netlab.Degrade): the sites sit across a WAN from the
	// hub, and the rounds of these small jobs, which take 15-100 ms on
	// one machine, take long enough for faults to land inside them.
	siteDelay time.Duration
}

// siteHost is the lab host of a region's site.
func siteHost(region string) string { return "r" + region }

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	buildDir  string
)

// buildStrata builds the strata binary once per test binary: every
// scenario runs the same build.
func buildStrata(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "strata-faults-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "strata")
		out, err := exec.Command("go", "build", "-o", buildBin, "../../cmd/strata").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// TestMain removes the binary buildStrata made.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// startMesh starts, each in its own lab host, `strata nats`, three
// `strata global` on raft over the lab's addresses (their logs sealed with
// one key file), and `strata regional` beside `strata edge` for the one
// region; it connects an observer that records the wire into a history.
func startMesh(t *testing.T, topology string) *meshLab {
	return startMeshWith(t, topology, meshOpts{})
}

// startMeshWith is startMesh with a site per region of opts.regions and
// opts.natsServers NATS servers.
func startMeshWith(t *testing.T, topology string, opts meshOpts) *meshLab {
	t.Helper()
	if len(opts.regions) == 0 {
		opts.regions = []string{region}
	}
	if opts.natsServers == 0 {
		opts.natsServers = 1
	}
	bin := buildStrata(t)
	natsHosts := []string{"nats"}
	if opts.natsServers == 3 {
		natsHosts = []string{"n1", "n2", "n3"}
	} else if opts.natsServers != 1 {
		t.Fatalf("meshOpts.natsServers %d: want 1 or 3", opts.natsServers)
	}
	hosts := append(append([]string(nil), natsHosts...), globals...)
	for _, r := range opts.regions {
		hosts = append(hosts, siteHost(r))
	}
	lab := netlab.New(t, hosts...)
	dir := t.TempDir()
	m := &meshLab{t: t, lab: lab, dir: dir, procs: map[string]*proc{}, rec: &history.Recorder{}, bases: map[[2]any]bool{},
		pings: make(chan string), opts: opts, natsHosts: natsHosts}
	topo := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(topo, []byte(topology), 0o600); err != nil {
		t.Fatal(err)
	}
	hexKey, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ledger.key")
	if err := os.WriteFile(keyFile, []byte(hexKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if m.key, err = seal.Load(keyFile); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, h := range natsHosts {
		urls = append(urls, "nats://"+lab.Host(h).Addr(4222))
	}
	url := strings.Join(urls, ",")
	m.url = url
	var peers []string
	for _, g := range globals {
		peers = append(peers, g+"="+lab.Host(g).Addr(7001))
	}
	add := func(name, host string, args ...string) {
		m.procs[name] = &proc{name: name, host: lab.Host(host), args: args, log: filepath.Join(dir, name+".log")}
		m.order = append(m.order, name)
	}
	for _, h := range natsHosts {
		args := []string{"nats", "--host", lab.Host(h).IP.String(), "--port", "4222", "--data", filepath.Join(dir, h)}
		if len(natsHosts) > 1 {
			var routes []string
			for _, o := range natsHosts {
				if o != h {
					routes = append(routes, "nats-route://"+lab.Host(o).Addr(6222))
				}
			}
			args = append(args, "--name", h, "--cluster", lab.Host(h).Addr(6222), "--routes", strings.Join(routes, ","))
		}
		add(h, h, args...)
	}
	replicas := "1"
	if len(natsHosts) > 1 {
		replicas = "3"
	}
	for _, g := range globals {
		add(g, g, "global", "--id", g, "--raft-bind", lab.Host(g).Addr(7001), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, g), "--nats", url, "--topology", topo, "--key-file", keyFile, "--replicas", replicas)
	}
	for _, r := range opts.regions {
		add("regional-"+r, siteHost(r), "regional", "--region", r, "--nats", url, "--topology", topo)
		add("edge-"+r, siteHost(r), "edge", "--region", r, "--nats", url, "--topology", topo, "--data", filepath.Join(dir, "edge-"+r), "--workers", "1", "--key-file", keyFile)
	}
	// Registered after the lab's cleanup, so it runs first: no process is
	// left in a namespace being deleted.
	t.Cleanup(func() {
		if m.nc != nil {
			m.nc.Close()
		}
		for i := len(m.order) - 1; i >= 0; i-- {
			m.procs[m.order[i]].kill()
		}
		if t.Failed() {
			for _, name := range m.order {
				t.Logf("--- %s (last lines):\n%s", name, m.procs[name].tail(15))
			}
		}
	})
	if opts.siteDelay > 0 {
		for _, r := range opts.regions {
			if err := lab.Degrade(siteHost(r), opts.siteDelay, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("sites %v: every packet delayed %v each way (%s)", opts.regions, opts.siteDelay, lab.DelayMethod())
	}
	for _, h := range natsHosts {
		m.procs[h].start(t, bin)
	}
	// The observer dials the first NATS server from its host: no fault a
	// scenario injects touches that host, so the observer sees the whole
	// wire throughout.
	natsHost := lab.Host(natsHosts[0])
	m.poll("the NATS server", 30*time.Second, func() bool {
		nc, err := nats.Connect(urls[0], nats.SetCustomDialer(natsHost), nats.Name("observer"), nats.MaxReconnects(-1))
		if err != nil {
			return false
		}
		m.nc = nc
		return true
	})
	m.observe()
	if len(natsHosts) > 1 {
		// The global tier makes the model store (replicated on every
		// server) when it starts: wait until the cluster's JetStream
		// answers, its meta group formed.
		js, err := jetstream.New(m.nc)
		if err != nil {
			t.Fatal(err)
		}
		m.poll("the NATS cluster's JetStream", time.Minute, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := js.AccountInfo(ctx)
			return err == nil
		})
	}
	for _, name := range m.order[len(natsHosts):] {
		m.procs[name].start(t, bin)
	}
	return m
}

// observe records, from the wire, every round announced to the region's
// clients, every update a client sends and every partial the region
// sends.
func (m *meshLab) observe() {
	t := m.t
	sub := func(subj string, fn func(*nats.Msg)) {
		if _, err := m.nc.Subscribe(subj, fn); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range m.opts.regions {
		m.observeRegion(r, sub)
	}
}

// observeRegion records the wire of one region.
func (m *meshLab) observeRegion(region string, sub func(string, func(*nats.Msg))) {
	t := m.t
	// Each sampled client is invited on its own subject: the invitation's
	// subject names the client (the invitation names no one).
	open, _ := mesh.InviteWildcard(job, region)
	sub(open, func(msg *nats.Msg) {
		var o wire.RoundOpen
		if err := wire.Decode(msg.Data, wire.TypeRoundOpen, &o); err != nil {
			t.Errorf("observer: round.open: %v", err)
			return
		}
		client := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		m.mu.Lock()
		m.bases[[2]any{o.ModelVersion, o.ModelHash}] = true
		m.mu.Unlock()
		m.add(history.Event{Kind: history.Announce, Round: o.Round, Region: o.Region, Clients: []string{client}, ModelVersion: o.ModelVersion})
	})
	ping, _ := mesh.PingSubject(job, region)
	sub(ping, func(*nats.Msg) {
		select {
		case m.pings <- region:
		default: // nobody is waiting for this one
		}
	})
	upd, _ := mesh.UpdateWildcard(job, region)
	sub(upd, func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypeUpdate:
			var u wire.Update
			if wire.Decode(msg.Data, wire.TypeUpdate, &u) == nil {
				m.add(history.Event{Kind: history.Update, Round: u.Round, Region: u.Region, Client: u.Client})
			}
		case wire.TypeStreamOpen:
			var s wire.StreamOpen
			if wire.Decode(msg.Data, wire.TypeStreamOpen, &s) == nil {
				m.add(history.Event{Kind: history.Update, Round: s.Round, Region: s.Region, Client: s.Client})
			}
		}
	})
	part, _ := mesh.PartialSubject(job, region)
	sub(part, func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypePartial:
			var p wire.Partial
			if wire.Decode(msg.Data, wire.TypePartial, &p) == nil {
				m.add(history.Event{Kind: history.Partial, Round: p.Round, Region: p.Region, Count: p.Count})
			}
		case wire.TypePartialChunk:
			if h, _, err := wire.DecodePartialChunk(msg.Data); err == nil && h.Last {
				m.add(history.Event{Kind: history.Partial, Round: h.Round, Region: h.Region, Count: h.Count})
			}
		}
	})
}

// add records a wire event and tells the watcher of it.
func (m *meshLab) add(e history.Event) {
	m.rec.Add(e)
	m.mu.Lock()
	w := m.watch
	m.mu.Unlock()
	if w != nil {
		w(e)
	}
}

// setWatch sets (nil: clears) the watcher of wire events.
func (m *meshLab) setWatch(w func(history.Event)) {
	m.mu.Lock()
	m.watch = w
	m.mu.Unlock()
}

// poll calls cond every 50ms until it holds, failing the test after d.
func (m *meshLab) poll(what string, d time.Duration, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *meshLab) status(id string) (global.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s, err := global.RequestStatus(ctx, m.nc, id)
	return s, err == nil
}

// leader returns the node that says it leads, among ids.
func (m *meshLab) leader(ids ...string) (string, global.Status) {
	for _, id := range ids {
		if s, ok := m.status(id); ok && s.Leader {
			return id, s
		}
	}
	return "", global.Status{}
}

// readLedger records a running node's ledger, read over NATS, as a view.
func (m *meshLab) readLedger(id string) *ledger.Ledger {
	m.t.Helper()
	msg, err := m.nc.Request(global.LedgerSubject(id), nil, 2*time.Second)
	if err != nil {
		m.t.Fatalf("ledger of %s: %v", id, err)
	}
	l, err := ledger.Restore(msg.Data)
	if err != nil {
		m.t.Fatalf("ledger of %s: %v", id, err)
	}
	m.rec.Ledger(id, l)
	return l
}

// tryLedger reads a running node's ledger over NATS, recording it as a
// view; ok is false when the node does not answer (it may be cut off).
func (m *meshLab) tryLedger(id string) (*ledger.Ledger, bool) {
	msg, err := m.nc.Request(global.LedgerSubject(id), nil, 2*time.Second)
	if err != nil {
		return nil, false
	}
	l, err := ledger.Restore(msg.Data)
	if err != nil {
		m.t.Errorf("ledger of %s: %v", id, err)
		return nil, false
	}
	m.rec.Ledger(id, l)
	return l, true
}

// finalLedgers waits for every global node to exit, then reads each data
// dir (the history's last views) and returns each ledger's snapshot with
// the applied index zeroed (replicas may differ by trailing no-ops).
func (m *meshLab) finalLedgers(d time.Duration) map[string][]byte {
	m.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var running []string
		for _, g := range globals {
			if !m.procs[g].exited() {
				running = append(running, g)
			}
		}
		if len(running) == 0 {
			break
		}
		if time.Now().After(deadline) {
			// Ask the stuck processes for their goroutines before they are
			// killed: the dump lands in their logs.
			for _, g := range running {
				p := m.procs[g]
				p.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-p.done:
				case <-time.After(5 * time.Second):
				}
				if dst := os.Getenv("STRATA_FAULTS_LOGS"); dst != "" {
					b, _ := os.ReadFile(p.log)
					os.WriteFile(filepath.Join(dst, g+".log"), b, 0o600)
				}
			}
			m.t.Fatalf("%v did not exit within %v of the job's end (goroutines dumped to their logs; set STRATA_FAULTS_LOGS=DIR to keep them)", running, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := map[string][]byte{}
	for _, g := range globals {
		dir := filepath.Join(m.dir, g)
		if err := m.rec.DataDir(g, dir, m.key); err != nil {
			m.t.Fatal(err)
		}
		l, err := global.ReadLedgerKey(dir, m.key)
		if err != nil {
			m.t.Fatal(err)
		}
		l.Applied = 0
		b, err := l.Snapshot()
		if err != nil {
			m.t.Fatal(err)
		}
		out[g] = b
		if _, err := global.VerifyAuditDir(dir, m.key); err != nil {
			m.t.Errorf("audit of %s: %v", g, err)
		}
	}
	return out
}

// ledger reads a stopped node's ledger from its data dir.
func (m *meshLab) ledger(id string) *ledger.Ledger {
	m.t.Helper()
	l, err := global.ReadLedgerKey(filepath.Join(m.dir, id), m.key)
	if err != nil {
		m.t.Fatal(err)
	}
	return l
}

// entry is one raft log entry as logTail reads it.
type entry struct {
	cmd    ledger.Command
	digest string // hex SHA-256 of the plaintext, as the audit chain records it
}

// logTail returns the raft log entries after index from of a running
// node, read from a copy of its bolt file (the process holds the file's
// lock). A copy taken while the node writes can be torn; it is taken
// again, up to 5 times.
func (m *meshLab) logTail(id string, from uint64) map[uint64]entry {
	m.t.Helper()
	var err error
	for range 5 {
		var out map[uint64]entry
		if out, err = m.readLogCopy(id, from); err == nil {
			return out
		}
	}
	m.t.Fatalf("%s's log: %v", id, err)
	return nil
}

func (m *meshLab) readLogCopy(id string, from uint64) (map[uint64]entry, error) {
	b, err := os.ReadFile(filepath.Join(m.dir, id, "raft", "raft.bolt"))
	if err != nil {
		return nil, err
	}
	cp := filepath.Join(m.t.TempDir(), id+".bolt")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		return nil, err
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: cp, BoltOptions: &bolt.Options{ReadOnly: true, Timeout: time.Second}})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	out := map[uint64]entry{}
	for i := from + 1; i <= last; i++ {
		var e raft.Log
		if err := store.GetLog(i, &e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Type != raft.LogCommand {
			continue
		}
		plain, err := m.key.Open(e.Data)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		cmd, err := ledger.Decode(plain)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		d := sha256.Sum256(plain)
		out[i] = entry{cmd: cmd, digest: hex.EncodeToString(d[:])}
	}
	return out, nil
}

// checkModels reads every model version of the ledger, and every version
// a round was announced with, back from the object store, and records each
// as released.
func (m *meshLab) checkModels(l *ledger.Ledger) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := mesh.OpenModelStore(ctx, m.nc, job, 0) // 0: as the global tier made it
	if err != nil {
		m.t.Fatal(err)
	}
	store.SetKey(m.key)
	read := func(version, round uint64, hash string) {
		_, err := store.Get(ctx, "model", version, hash)
		if err != nil {
			m.t.Logf("model v%d (%.12s): %v", version, hash, err)
		}
		m.rec.Add(history.Event{Kind: history.Model, Version: version, Round: round, Hash: hash, ReadOK: err == nil})
	}
	for _, v := range l.Models {
		read(v.Version, v.Round, v.Hash)
	}
	m.mu.Lock()
	var bases [][2]any
	for b := range m.bases {
		bases = append(bases, b)
	}
	m.mu.Unlock()
	for _, b := range bases {
		if v := b[0].(uint64); v > 0 {
			read(v, 0, b[1].(string))
		}
	}
}

// checkHistory runs the history checker over everything recorded.
func (m *meshLab) checkHistory() {
	m.t.Helper()
	evs := m.rec.Events()
	if err := history.Check(evs); err != nil {
		var v *history.Violation
		if errors.As(err, &v) {
			m.t.Fatalf("%v", err)
		}
		m.t.Fatal(err)
	}
	counts := map[history.Kind]int{}
	for _, e := range evs {
		counts[e.Kind]++
	}
	m.t.Logf("history: %d events pass the checker (%v)", len(evs), counts)
}

func identical(snaps map[string][]byte) error {
	ref := snaps[globals[0]]
	for _, g := range globals[1:] {
		if !bytes.Equal(snaps[g], ref) {
			return fmt.Errorf("the ledgers of %s (%d bytes) and %s (%d bytes) differ", globals[0], len(ref), g, len(snaps[g]))
		}
	}
	return nil
}

// others returns the globals but id.
func others(id string) []string {
	var out []string
	for _, g := range globals {
		if g != id {
			out = append(out, g)
		}
	}
	return out
}
