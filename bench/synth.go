package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// synthConfig describes one synthetic mesh run: the real tiers (embedded
// NATS server, raft global tier with bolt stores, regional runners, an
// edge fleet with one NATS connection per client) around a trainer that
// does no training, so a round's latency is the system's alone. Zero
// fields take the defaults given with each.
type synthConfig struct {
	// Regions, PerRegion (clients in each) and Dim (parameters) are the
	// mesh's shape; each required, ≥ 1.
	Regions, PerRegion, Dim int
	// Rounds are measured after one warm-up round; ≥ 0.
	Rounds int
	// Q is the sampling rate, in (0, 1]; default 1 (every client every
	// round).
	Q float64
	// GlobalNodes is 1 (default: in-memory raft transport) or more (3:
	// raft over TCP loopback, a quorum of 2 for every commit).
	GlobalNodes int
	// ProbeRaft commits a raft barrier every 50 ms during the rounds and
	// records how long each took to commit and apply.
	ProbeRaft bool
	// Dir holds the run's data dirs (removed at the end); required.
	Dir string
	// Timeout is the round deadline; default 10 minutes, ≥ 0.
	Timeout time.Duration
	// OnRound is called after every round (warm-up included); nil: not.
	OnRound func(done, total int)
}

// Validate names the field that is wrong.
func (c synthConfig) Validate() error {
	switch {
	case c.Regions < 1:
		return fmt.Errorf("%w: synthConfig.Regions %d: want ≥ 1", ErrConfig, c.Regions)
	case c.PerRegion < 1:
		return fmt.Errorf("%w: synthConfig.PerRegion %d: want ≥ 1 client", ErrConfig, c.PerRegion)
	case c.Dim < 1:
		return fmt.Errorf("%w: synthConfig.Dim %d: want ≥ 1 parameter", ErrConfig, c.Dim)
	case c.Rounds < 0:
		return fmt.Errorf("%w: synthConfig.Rounds %d: want ≥ 0", ErrConfig, c.Rounds)
	case c.Q != 0 && !(c.Q > 0 && c.Q <= 1):
		return fmt.Errorf("%w: synthConfig.Q %v: want a rate in (0, 1] (0 means 1)", ErrConfig, c.Q)
	case c.GlobalNodes < 0:
		return fmt.Errorf("%w: synthConfig.GlobalNodes %d: want ≥ 1 (0 means 1)", ErrConfig, c.GlobalNodes)
	case c.Dir == "":
		return fmt.Errorf("%w: synthConfig.Dir is required", ErrConfig)
	case c.Timeout < 0:
		return fmt.Errorf("%w: synthConfig.Timeout %v: want ≥ 0 (0 means 10m)", ErrConfig, c.Timeout)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c synthConfig) withDefaults() synthConfig {
	if c.Q == 0 {
		c.Q = 1
	}
	if c.GlobalNodes == 0 {
		c.GlobalNodes = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	return c
}

type synthResult struct {
	RoundSeconds []float64 // measured rounds, warm-up excluded
	Participants int       // of the last round
	ConnectSec   float64   // connecting and subscribing every client
	PeakRSS      int64     // highest VmRSS sampled during the rounds
	PeakHeap     uint64    // highest Go heap in use sampled
	BaseRSS      int64     // VmRSS before the mesh started
	RaftMs       []float64 // barrier commit latencies
	Goroutines   int
	// SlowConsumers counts the server's slow-consumer events (a
	// connection that fell WriteDeadline behind is cut off and its
	// messages lost); MinParticipants is the smallest round's count.
	SlowConsumers   int
	MinParticipants int
	// Aborted counts rounds the coordinator aborted (a region did not
	// acknowledge round.open within 5 s, or fewer than min_regions — all
	// of them here — reported); their time is in RoundSeconds, as the
	// cost of the round that followed.
	Aborted int
	// Region counters summed over regions: rejected updates by reason,
	// updates dropped because a region's queue was full, and messages NATS
	// dropped because a region fell behind.
	Rejected         map[string]int
	RegionQueueDrops int
	RegionNATSDrops  int
	FleetFailed      int
	// LeaderChanges counts coordinator terms after the first: raft
	// elections the load caused (a round in flight is then aborted and
	// the next leader goes on).
	LeaderChanges int
}

// fixedTrainer is the load generator's client: it "trains" by writing a
// fixed update of norm 0.9 (under the clip norm 1), so clipping changes
// nothing and the region's checks pass, at the cost of one copy.
type fixedTrainer struct{ delta []float64 }

func newFixedTrainer(d int) fixedTrainer {
	r := rand.New(rand.NewPCG(uint64(d), 99))
	v := make([]float64, d)
	s := 0.0
	for i := range v {
		v[i] = r.NormFloat64()
		s += v[i] * v[i]
	}
	for i := range v {
		v[i] *= 0.9 / math.Sqrt(s)
	}
	return fixedTrainer{v}
}

func (f fixedTrainer) Train(_ context.Context, _ string, _ uint64, theta, delta []float64) (int, error) {
	if len(delta) != len(f.delta) {
		return 0, fmt.Errorf("bench: trainer of dim %d asked for %d", len(f.delta), len(delta))
	}
	copy(delta, f.delta)
	return 1, nil
}

// synthTask is the synthetic mesh's task: θ of dim zeros, a trainer that
// writes a fixed update, and an evaluator that scores a model by its mean
// square (there is no test set; the gate is off in synthetic topologies,
// so it only costs the pass over θ an evaluation would).
type synthTask struct {
	dim     int
	trainer fixedTrainer
}

func (s synthTask) Name() string                   { return "synthetic" }
func (s synthTask) Layout() []task.Tensor          { return []task.Tensor{{Name: "theta", Shape: []int{s.dim}}} }
func (s synthTask) Initial() []float64             { return make([]float64, s.dim) }
func (s synthTask) Trainer() (task.Trainer, error) { return s.trainer, nil }
func (s synthTask) Evaluator() task.Evaluator      { return normEvaluator{} }
func (s synthTask) Final() task.Evaluator          { return normEvaluator{} }

type normEvaluator struct{}

func (normEvaluator) Evaluate(_ context.Context, theta []float64) (task.Evaluation, error) {
	s := 0.0
	for _, x := range theta {
		s += x * x
	}
	return task.Evaluation{Loss: s / float64(len(theta)), Metrics: []task.Metric{{Name: "mean_square", Value: s / float64(len(theta))}}}, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	var ports []int
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// synthTopology is the topology of a defaulted cfg.
func synthTopology(cfg synthConfig) (*topology.Topology, error) {
	t := &topology.Topology{Job: "bench", Seed: 1}
	for r := range cfg.Regions {
		t.Regions = append(t.Regions, topology.Region{ID: fmt.Sprintf("r%d", r), Clients: cfg.PerRegion})
	}
	t.Privacy = topology.Privacy{SamplingRate: cfg.Q, Budget: 1e9, MinRegions: cfg.Regions, Noise: topology.Noise{Regional: 1, Global: 1}}
	t.Train = topology.Training{Rounds: cfg.Rounds + 1, GateMaxDrop: 1}
	t.Task = topology.Task{Name: "synthetic"}
	// Long enough for the largest point on a loaded machine (10 minutes
	// by default); a round that lost updates (a slow consumer cut off)
	// ends here with fewer participants, which the report shows.
	t.Round.Timeout.Duration = cfg.Timeout
	// The synthetic mesh times aggregation and coordination of the raw
	// data path: unsigned, on an open in-process server. The faults
	// scenario and strata up run signed, over TLS, with authorization.
	t.Security.Unsigned = true
	t.ApplyDefaults()
	return t, t.Validate()
}

// runSynth runs one synthetic mesh to the end of its rounds.
func runSynth(ctx context.Context, cfg synthConfig) (res synthResult, err error) {
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	cfg = cfg.withDefaults()
	t, err := synthTopology(cfg)
	if err != nil {
		return res, err
	}
	runtime.GC()
	res.BaseRSS = RSS()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return res, err
	}
	defer os.RemoveAll(cfg.Dir)
	n, err := roles.StartNATS(roles.NATSConfig{StoreDir: filepath.Join(cfg.Dir, "nats"), Port: -1})
	if err != nil {
		return res, err
	}
	defer n.Close()
	srv, dial := n.Server, n.Operator
	tk := synthTask{dim: cfg.Dim, trainer: newFixedTrainer(cfg.Dim)}

	// The global tier: every node runs the service of `strata global`, so a
	// leadership change under load moves the job rather than ending it.
	var peers []global.Peer
	if cfg.GlobalNodes > 1 {
		ports, err := freePorts(cfg.GlobalNodes)
		if err != nil {
			return res, err
		}
		for i, p := range ports {
			peers = append(peers, global.Peer{ID: fmt.Sprintf("g%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", p)})
		}
	} else {
		peers = []global.Peer{{ID: "g1"}}
	}
	var mu sync.Mutex
	var stamps []time.Time
	var last, minPart, aborted int
	progress := func(r global.RoundReport) {
		mu.Lock()
		stamps = append(stamps, time.Now())
		if r.Aborted != "" {
			aborted++
		}
		last = r.Participants
		if len(stamps) == 1 || r.Participants < minPart {
			minPart = r.Participants
		}
		n := len(stamps)
		mu.Unlock()
		if cfg.OnRound != nil {
			cfg.OnRound(n, cfg.Rounds+1)
		}
	}
	var terms atomic.Int64
	var globals []*roles.Global
	defer func() {
		for _, g := range globals {
			g.Close()
		}
	}()
	for _, p := range peers {
		gc := roles.GlobalConfig{ID: p.ID, DataDir: filepath.Join(cfg.Dir, p.ID), Bind: p.Addr, Dialer: dial, Topology: t, Task: tk,
			ExitWhenFinished: true, FinishGrace: 200 * time.Millisecond, Progress: progress, OnLead: func() { terms.Add(1) }}
		if p.Addr != "" {
			gc.Peers = peers
		}
		g, err := roles.NewGlobal(ctx, gc)
		if err != nil {
			return res, err
		}
		globals = append(globals, g)
	}
	leader := func() *global.Node {
		for _, g := range globals {
			if g.Node().IsLeader() {
				return g.Node()
			}
		}
		return nil
	}
	var regions []*roles.Regional
	var runners []*regional.Runner
	for _, r := range t.Regions {
		rr, err := roles.NewRegional(roles.RegionalConfig{Region: r.ID, Dialer: dial, Topology: t, QueueSize: r.Clients + 16})
		if err != nil {
			return res, err
		}
		defer rr.Close()
		regions = append(regions, rr)
		runners = append(runners, rr.Runner())
	}
	e, err := roles.NewEdge(ctx, roles.EdgeConfig{Dialer: dial, Topology: t, Task: tk})
	if err != nil {
		return res, err
	}
	defer e.Close()
	fleet := e.Fleet()

	var wg sync.WaitGroup
	errs := make(chan error, len(runners)+2)
	for _, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("region: %w", err)
				cancel()
			}
		}()
	}
	connStart := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := e.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("edge fleet: %w", err)
			cancel()
		}
	}()
	// Memory: sample RSS and the Go heap while the mesh runs.
	sampleDone := make(chan struct{})
	var peakRSS int64
	var peakHeap uint64
	var ms runtime.MemStats
	sample := func() {
		peakRSS = max(peakRSS, RSS())
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapInuse)
	}
	go func() {
		defer close(sampleDone)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				sample()
			}
		}
	}()
	waits := []<-chan struct{}{fleet.Ready()}
	for _, r := range runners {
		waits = append(waits, r.Ready())
	}
	for _, w := range waits {
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			<-sampleDone
			return res, errors.Join(ctx.Err(), drain(errs))
		case <-w:
		}
	}
	res.ConnectSec = time.Since(connStart).Seconds()
	res.Goroutines = runtime.NumGoroutine()

	// Raft commit latency, probed while the rounds run.
	svcErrs := make(chan error, len(globals))
	for _, g := range globals {
		go func() { svcErrs <- g.Run(ctx) }()
	}
	probeDone := make(chan struct{})
	var raftMs []float64
	go func() {
		defer close(probeDone)
		if !cfg.ProbeRaft {
			return
		}
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				l := leader()
				if l == nil {
					continue
				}
				start := time.Now()
				if err := l.Barrier(5 * time.Second); err == nil {
					raftMs = append(raftMs, time.Since(start).Seconds()*1e3)
				}
			}
		}
	}()
	var cerr error
	for range globals {
		if err := <-svcErrs; err != nil {
			cerr = errors.Join(cerr, err)
			cancel() // one failed service ends the run
		}
	}
	cancel()
	wg.Wait()
	<-sampleDone
	<-probeDone
	if err := errors.Join(cerr, drain(errs)); err != nil {
		return res, err
	}
	res.PeakRSS, res.PeakHeap, res.RaftMs, res.Participants = peakRSS, peakHeap, raftMs, last
	res.LeaderChanges = int(terms.Load()) - 1
	res.SlowConsumers, res.MinParticipants, res.Aborted = int(srv.NumSlowConsumers()), minPart, aborted
	res.Rejected = map[string]int{}
	for _, r := range runners {
		st := r.Stats()
		for k, v := range st.Rejected {
			res.Rejected[k] += v
		}
		res.RegionQueueDrops += st.QueueDrops
		res.RegionNATSDrops += st.SlowConsumerDrops
	}
	res.FleetFailed = fleet.Stats().Failed
	for i := 1; i < len(stamps); i++ {
		res.RoundSeconds = append(res.RoundSeconds, stamps[i].Sub(stamps[i-1]).Seconds())
	}
	if len(res.RoundSeconds) == 0 {
		return res, fmt.Errorf("bench: %d rounds reported, need at least 2", len(stamps))
	}
	return res, nil
}

func drain(errs chan error) error {
	var all []error
	for {
		select {
		case e := <-errs:
			all = append(all, e)
		default:
			return errors.Join(all...)
		}
	}
}
