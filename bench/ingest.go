package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/accum"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
)

// IngestConfig configures the ingest benchmark.
type IngestConfig struct {
	// Ns and Ds are the client counts and model dimensions, each ≥ 1;
	// every pair is measured. Defaults {10, 100, 1000} × {1e5, 1e6, 1e7}.
	Ns, Ds []int
	// ChunkBytes of update data per chunk, at most MaxIngestChunk;
	// default 1 MiB. The raw NATS reference publishes messages of the same
	// size.
	ChunkBytes int
	// Slots and Window are the region's stream slots and the clients'
	// window of unacknowledged chunks, each ≥ 0; 0 means the region's
	// default slots and a window of 4.
	Slots, Window int
	// Encoding of the updates (wire.EncodingF32, EncodingQ8 or
	// EncodingTopK); default f32.
	Encoding string
	// Signed runs the rounds as a production job runs them: each client
	// signs its stream's payload digest (identity.Digest) and the region
	// verifies the signature and hashes every byte it ingests. The
	// payload is encoded and digested once for all clients, as it is
	// encoded once (a client's own hashing happens on its own machine).
	// Default false.
	Signed bool
	// Conns is how many NATS connections the simulated clients share
	// (client i uses connection i mod Conns); default 16, ≥ 0. Each stream
	// has its own inbox, so sharing changes nothing in the protocol; it
	// keeps the load generator's own cost near the raw reference's one
	// publisher (a thousand connections in one process each keep a write
	// buffer as large as a chunk).
	Conns int
	// StoreDir is the NATS server's JetStream directory; required by
	// Ingest (IngestScenario defaults it to the scenario's TempDir).
	StoreDir string
	// RegionCmd returns the command that runs the region process (it must
	// call RegionMain with the RegionEnv variable, which Ingest sets);
	// default: this executable with "bench region".
	RegionCmd func() *exec.Cmd
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// MaxIngestChunk is the largest IngestConfig.ChunkBytes: the benchmark
// server's 8 MiB max payload less 64 KiB of room for a chunk's header.
const MaxIngestChunk = 8<<20 - 64<<10

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c IngestConfig) Validate() error {
	if err := checkInts("IngestConfig.Ns", c.Ns, 1, math.MaxInt32); err != nil {
		return err
	}
	if err := checkInts("IngestConfig.Ds", c.Ds, 1, math.MaxInt32); err != nil {
		return err
	}
	switch {
	case c.ChunkBytes < 0 || c.ChunkBytes > MaxIngestChunk:
		return fmt.Errorf("%w: IngestConfig.ChunkBytes %d: want 1..%d bytes (0 means 1 MiB)", ErrConfig, c.ChunkBytes, MaxIngestChunk)
	case c.Slots < 0:
		return fmt.Errorf("%w: IngestConfig.Slots %d: want ≥ 0 (0 means the region's default)", ErrConfig, c.Slots)
	case c.Window < 0:
		return fmt.Errorf("%w: IngestConfig.Window %d: want ≥ 0 (0 means 4)", ErrConfig, c.Window)
	case c.Encoding != "" && c.Encoding != wire.EncodingF32 && c.Encoding != wire.EncodingQ8 && c.Encoding != wire.EncodingTopK:
		return fmt.Errorf("%w: IngestConfig.Encoding %q: want %s, %s or %s", ErrConfig, c.Encoding, wire.EncodingF32, wire.EncodingQ8, wire.EncodingTopK)
	case c.Conns < 0:
		return fmt.Errorf("%w: IngestConfig.Conns %d: want ≥ 0 (0 means 16)", ErrConfig, c.Conns)
	case c.StoreDir == "":
		return fmt.Errorf("%w: IngestConfig.StoreDir is required", ErrConfig)
	}
	return nil
}

// IngestResult is one (N, d) measurement. Ratios are of figures measured
// in the same run.
type IngestResult struct {
	N           int     `json:"n"`
	D           int     `json:"d"`
	Encoding    string  `json:"encoding"`
	Signed      bool    `json:"signed"`
	ChunkBytes  int     `json:"chunk_bytes"`
	WireBytes   int64   `json:"wire_bytes"` // update data bytes sent by all clients
	IngestMBs   float64 `json:"ingest_mb_s"`
	UpdatesPerS float64 `json:"updates_s"`
	NatsRawMBs  float64 `json:"nats_raw_mb_s"`
	IngestRatio float64 `json:"ingest_ratio"`
	Kernel      string  `json:"kernel"`
	KernelGBs   float64 `json:"kernel_gb_s"`
	MemreadGBs  float64 `json:"memread_gb_s"`
	KernelRatio float64 `json:"kernel_ratio"`
	PeakRSS     int64   `json:"peak_rss_bytes"`
	RSSBound    int64   `json:"rss_bound_bytes"` // 3·(8·d) + 64 MiB
	Accepted    int     `json:"accepted"`
	Rejected    int     `json:"rejected"`
	// CPU seconds per GB of update data, medians over the rounds (Linux
	// only, 10 ms resolution): the raw arm's publisher, server and
	// subscriber; the ingest arm's clients and server, and its region. On
	// a machine with fewer cores than busy threads, throughput is CPU-bound
	// and the ingest ratio is about RawCPU ÷ (IngestCPU + RegionCPU).
	RawCPU       float64 `json:"raw_cpu_s_per_gb"`
	IngestCPU    float64 `json:"ingest_cpu_s_per_gb"`
	RegionCPU    float64 `json:"region_cpu_s_per_gb"`
	SlowConsumer int64   `json:"slow_consumers"` // server-side slow-consumer events in the ingest
	SubDropped   int     `json:"region_dropped"` // messages the region's subscriptions dropped
	Reconnects   uint64  `json:"region_reconnects"`
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c IngestConfig) withDefaults() IngestConfig {
	if len(c.Ns) == 0 {
		c.Ns = []int{10, 100, 1000}
	}
	if len(c.Ds) == 0 {
		c.Ds = []int{1e5, 1e6, 1e7}
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 1 << 20
	}
	if c.Window <= 0 {
		c.Window = 4
	}
	if c.Encoding == "" {
		c.Encoding = wire.EncodingF32
	}
	if c.Conns <= 0 {
		c.Conns = 16
	}
	if c.RegionCmd == nil {
		c.RegionCmd = func() *exec.Cmd {
			self, err := os.Executable()
			if err != nil {
				self = os.Args[0]
			}
			return exec.Command(self, "bench", "region")
		}
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// CPUFeatures returns the model name and the SIMD flags of /proc/cpuinfo.
func CPUFeatures() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	var model string
	var flags []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "flags":
			if flags == nil {
				flags = []string{}
				for _, f := range strings.Fields(v) {
					if strings.HasPrefix(f, "avx") || strings.HasPrefix(f, "sse4") || f == "fma" {
						flags = append(flags, f)
					}
				}
			}
		}
	}
	return fmt.Sprintf("%s; %d CPUs; %s", model, runtime.NumCPU(), strings.Join(flags, " "))
}

// Ingest runs the benchmark for every (N, d).
func Ingest(ctx context.Context, cfg IngestConfig) ([]IngestResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// The server and the load generator (both arms: raw NATS and ingest)
	// allocate a buffer per large message; collect less often.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: cfg.StoreDir, MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	defer srv.Shutdown()
	var out []IngestResult
	for _, d := range cfg.Ds {
		for _, n := range cfg.Ns {
			res, err := ingestOne(ctx, cfg, srv, n, d)
			if err != nil {
				return out, fmt.Errorf("bench ingest N=%d d=%d: %w", n, d, err)
			}
			cfg.Logf("N=%d d=%d: ingest %.0f MB/s vs raw NATS %.0f MB/s (%.2f); kernel %.1f vs memread %.1f GB/s (%.2f); peak RSS %d MiB (bound %d MiB)",
				n, d, res.IngestMBs, res.NatsRawMBs, res.IngestRatio, res.KernelGBs, res.MemreadGBs, res.KernelRatio, res.PeakRSS>>20, res.RSSBound>>20)
			out = append(out, res)
		}
	}
	return out, nil
}

func ingestOne(ctx context.Context, cfg IngestConfig, srv *server.Server, n, d int) (IngestResult, error) {
	res := IngestResult{N: n, D: d, Encoding: cfg.Encoding, Signed: cfg.Signed, ChunkBytes: cfg.ChunkBytes, Kernel: accum.Kernel(), RSSBound: 3*8*int64(d) + 64<<20}
	job, region := "bench", fmt.Sprintf("r%dx%d", n, d)
	url := srv.ClientURL()

	// The update every client sends: norm 0.9 under the clip norm 1.
	rng := rand.New(rand.NewPCG(uint64(n), uint64(d)))
	delta := make([]float64, d)
	s := 0.0
	for i := range delta {
		delta[i] = rng.NormFloat64()
		s += delta[i] * delta[i]
	}
	for i := range delta {
		delta[i] *= 0.9 / math.Sqrt(s)
	}
	sc := edge.StreamConfig{ChunkBytes: cfg.ChunkBytes, Encoding: cfg.Encoding}
	payload := sc.Encode(delta, rng.Float64)
	delta = nil
	res.WireBytes = int64(n) * int64(len(payload.Data))

	// 1. The region, in its own process.
	rc, _ := json.Marshal(RegionConfig{URL: url, Job: job, Region: region, Slots: cfg.Slots, Window: cfg.Window,
		MemoryLimit: regional.MemoryLimit(d, cfg.Slots, 0)})
	cmd := cfg.RegionCmd()
	cmd.Env = append(os.Environ(), RegionEnv+"="+string(rc))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start region: %w", err)
	}
	defer cmd.Process.Kill()
	// The region reads its configuration before it says ready.
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<16), 1<<20)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Wait()
		return res, fmt.Errorf("region process did not start: %q", lines.Text())
	}

	// 2. The clients' connections, and the observer.
	conns := make([]*nats.Conn, min(n, cfg.Conns))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = (mesh.Dialer{URL: url}).Connect(fmt.Sprintf("bench-c%d", i)); err != nil {
			return res, err
		}
	}
	obs, err := mesh.Dialer{URL: url}.Connect("bench-observer")
	if err != nil {
		return res, err
	}
	defer obs.Close()
	partSubj, _ := mesh.PartialSubject(job, region)
	partDone := make(chan wire.PartialChunkHeader, 1)
	psub, err := obs.Subscribe(partSubj, func(m *nats.Msg) {
		if t, _ := wire.Peek(m.Data); t == wire.TypePartial {
			var p wire.Partial
			if wire.Decode(m.Data, wire.TypePartial, &p) == nil {
				partDone <- wire.PartialChunkHeader{Count: p.Count, Rejected: p.Rejected, Last: true}
			}
			return
		}
		if h, _, err := wire.DecodePartialChunk(m.Data); err == nil && h.Last {
			partDone <- h
		}
	})
	if err != nil {
		return res, err
	}
	psub.SetPendingLimits(-1, -1)
	obs.Flush()

	sampled := make([]string, n)
	for i := range sampled {
		sampled[i] = fmt.Sprintf("c%d", i)
	}
	var signer func(i int, so *wire.StreamOpen)
	if cfg.Signed {
		if signer, err = serveRegistry(obs, job, region, sampled, payload); err != nil {
			return res, err
		}
	}
	roundSubj, _ := mesh.RoundSubject(job, region)
	slowBefore := srv.NumSlowConsumers()

	// 3. Rounds of the burst (every client streams at once), each beside a
	// raw NATS run of the same bytes: the machines are shared and noisy, so
	// the two are interleaved and the medians reported.
	// The first pair runs on a cold heap: the shared server and the
	// clients fault in fresh pages and zero them, which can cost more than
	// the traffic itself. Up to 4 GB a warm-up pair (not counted) comes
	// first; under 1 GB a round is short enough that collections swing
	// single runs, so five pairs are measured.
	reps, warm := 1, 0
	if os.Getenv("STRATA_BENCH_ONLY_INGEST") == "" {
		if res.WireBytes <= 4e9 {
			reps, warm = 2, 1
		}
		if res.WireBytes < 1e9 {
			reps = 6
		}
	}
	var ingest, raw, rawCPU, ingestCPU, regionCPU []float64
	perGB := func(cpu float64) float64 { return cpu / float64(res.WireBytes) * 1e9 }
	for rep := range reps {
		if os.Getenv("STRATA_BENCH_ONLY_INGEST") == "" {
			c0 := processCPU(os.Getpid())
			r, err := rawNATS(url, res.WireBytes, cfg.ChunkBytes)
			if err != nil {
				return res, err
			}
			raw = append(raw, r)
			rawCPU = append(rawCPU, perGB(processCPU(os.Getpid())-c0))
		}
		round := uint64(rep + 1)
		open := wire.RoundOpen{Job: job, Round: round, Region: region, ModelVersion: 1, Dim: d, ClipNorm: 1,
			DeadlineUnixMs: time.Now().Add(time.Hour).UnixMilli(), Sampled: sampled}
		if cfg.Signed {
			open.Signed, open.Registry = true, 1
		}
		ob, err := wire.Encode(wire.TypeRoundOpen, &open)
		if err != nil {
			return res, err
		}
		if _, err := obs.Request(roundSubj, ob, 10*time.Second); err != nil {
			return res, fmt.Errorf("round.open: %w", err)
		}
		var failed atomic.Int64
		var firstErr atomic.Value
		c0, r0 := processCPU(os.Getpid()), processCPU(cmd.Process.Pid)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				so := wire.StreamOpen{Job: job, Round: round, Region: region, Client: sampled[i], ModelVersion: 1, Dim: d}
				if signer != nil {
					signer(i, &so)
				}
				updSubj, _ := mesh.UpdateSubject(job, region, sampled[i])
				if err := edge.PublishStream(ctx, conns[i%len(conns)], updSubj, so, payload); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		var ph wire.PartialChunkHeader
		select {
		case ph = <-partDone:
		case <-time.After(time.Minute):
			return res, errors.New("no partial within a minute of the last update")
		case <-ctx.Done():
			return res, ctx.Err()
		}
		el := time.Since(start).Seconds()
		ingestCPU = append(ingestCPU, perGB(processCPU(os.Getpid())-c0))
		regionCPU = append(regionCPU, perGB(processCPU(cmd.Process.Pid)-r0))
		if f := failed.Load(); f > 0 {
			return res, fmt.Errorf("%d clients failed, first: %v", f, firstErr.Load())
		}
		ingest = append(ingest, float64(res.WireBytes)/el/1e6)
		res.Accepted = ph.Count
		res.Rejected = 0
		for _, v := range ph.Rejected {
			res.Rejected += v
		}
		if res.Accepted != n {
			return res, fmt.Errorf("round %d: %d of %d updates accepted, rejected %v", round, res.Accepted, n, ph.Rejected)
		}
	}
	ingest, ingestCPU, regionCPU = ingest[warm:], ingestCPU[warm:], regionCPU[warm:]
	if len(raw) > 0 {
		raw, rawCPU = raw[warm:], rawCPU[warm:]
	}
	res.SlowConsumer = int64(srv.NumSlowConsumers() - slowBefore)
	res.RawCPU, res.IngestCPU, res.RegionCPU = median(rawCPU), median(ingestCPU), median(regionCPU)
	res.IngestMBs = median(ingest)
	res.UpdatesPerS = res.IngestMBs * 1e6 / float64(len(payload.Data))
	if len(raw) > 0 {
		// The ratio is the median of each round's ratio to the raw run
		// just before it: load that drifts over the run hits both alike.
		res.NatsRawMBs = median(raw)
		ratios := make([]float64, len(raw))
		for i := range raw {
			ratios[i] = ingest[i] / raw[i]
		}
		res.IngestRatio = median(ratios)
	}

	// 4. End the job; collect the region's peak RSS and counters.
	doneSubj, _ := mesh.DoneSubject(job)
	db, _ := wire.Encode(wire.TypeJobDone, &wire.JobDone{Job: job, Reason: "bench"})
	obs.Publish(doneSubj, db)
	obs.Flush()
	var rr RegionResult
	for lines.Scan() {
		if json.Unmarshal(lines.Bytes(), &rr) == nil {
			break
		}
	}
	cmd.Wait()
	if rr.Err != "" {
		return res, fmt.Errorf("region: %s", rr.Err)
	}
	res.PeakRSS = rr.PeakRSS
	res.SubDropped = rr.Stats.SlowConsumerDrops
	res.Reconnects = rr.Reconnects
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// 5. The kernel beside a memory read of the same bytes.
	res.KernelGBs, res.MemreadGBs = kernelVsRead(n, d)
	res.KernelRatio = res.KernelGBs / res.MemreadGBs
	return res, nil
}

// serveRegistry enrols a key for every client, answers the region's
// registry requests on obs as the global tier would, and returns what signs
// a client's stream open: the payload's digest, computed here once, and the
// client's signature over it.
func serveRegistry(obs *nats.Conn, job, region string, clients []string, p edge.Payload) (func(int, *wire.StreamOpen), error) {
	keys := make([]*identity.Key, len(clients))
	entries := make([]identity.Entry, len(clients))
	for i, c := range clients {
		k, err := identity.New(identity.KindClient, c)
		if err != nil {
			return nil, err
		}
		keys[i] = k
		entries[i] = identity.Entry{ID: c, Kind: identity.KindClient, Region: region, Public: k.Public(), Status: identity.StatusActive}
	}
	reg, err := identity.EncodeRegistry(identity.NewRegistry(1, entries))
	if err != nil {
		return nil, err
	}
	subj, err := mesh.RegistrySubject(job, region)
	if err != nil {
		return nil, err
	}
	if _, err := obs.Subscribe(subj, func(m *nats.Msg) { m.Respond(reg) }); err != nil {
		return nil, err
	}
	if err := obs.Flush(); err != nil {
		return nil, err
	}
	digest := p.Digest()
	return func(i int, so *wire.StreamOpen) {
		so.Digest = digest[:]
		so.Sig = keys[i].Sign(identity.UpdateMessage(so.Job, so.Round, so.ModelVersion, so.Region, so.Client, so.Unclipped, digest))
	}, nil
}

// processCPU returns the user and system CPU seconds process pid has used,
// from /proc (0 where it cannot be read).
func processCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name, which may hold spaces:
	// utime and stime are the 12th and 13th, in clock ticks (100 per s).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// rawNATS measures core NATS pub/sub of total bytes in msg-byte messages.
func rawNATS(url string, total int64, msg int) (float64, error) {
	pub, err := mesh.Dialer{URL: url}.Connect("bench-raw-pub")
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	sub, err := mesh.Dialer{URL: url}.Connect("bench-raw-sub")
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	count := int((total + int64(msg) - 1) / int64(msg))
	done := make(chan struct{})
	got := 0
	s, err := sub.Subscribe("bench.raw", func(m *nats.Msg) {
		got++
		if got == count {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	s.SetPendingLimits(-1, 1<<30)
	sub.Flush()
	data := make([]byte, msg)
	start := time.Now()
	for range count {
		if err := pub.Publish("bench.raw", data); err != nil {
			return 0, err
		}
	}
	pub.Flush()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("raw NATS: %d of %d messages after 5 minutes", got, count)
	}
	return float64(count) * float64(msg) / time.Since(start).Seconds() / 1e6, nil
}

// kernelVsRead sums n vectors of d float32 with accum.AddMany and reads
// the same bytes with accum.ReadBytes; both in GB/s of input. At most
// 512 MB of distinct vectors are allocated, reused cyclically.
func kernelVsRead(n, d int) (kernel, read float64) {
	// Enough distinct vectors that they do not fit in the last-level
	// cache: both figures are then of input streamed from memory, as a
	// region's updates are.
	distinct := max(1, (512<<20)/(4*d))
	n = max(n, distinct)
	r := rand.New(rand.NewPCG(3, 4))
	srcs := make([][]byte, distinct)
	for i := range srcs {
		v := make([]float32, d)
		for j := range v {
			v[j] = float32(r.NormFloat64())
		}
		srcs[i] = wire.AppendFloat32s(make([]byte, 0, 4*d), v)
	}
	dst := make([]float64, d)
	batches := (n + distinct - 1) / distinct
	bytes := float64(batches) * float64(distinct) * 4 * float64(d)
	best := func(f func()) float64 {
		b := math.Inf(1)
		for range 3 {
			t := time.Now()
			f()
			b = min(b, time.Since(t).Seconds())
		}
		return bytes / b / 1e9
	}
	kernel = best(func() {
		for range batches {
			accum.AddMany(dst, srcs)
		}
	})
	var sink uint64
	read = best(func() {
		for range batches {
			for _, s := range srcs {
				sink ^= accum.ReadBytes(s)
			}
		}
	})
	_ = sink
	return kernel, read
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// IngestScenario runs Ingest as a scenario of the suite (quick: N = 10,
// 100 at d = 1e5 and N = 10 at d = 1e6).
func IngestScenario(ctx context.Context, env Env, cfg IngestConfig) (Output, error) {
	quickSet := env.Quick && len(cfg.Ns) == 0 && len(cfg.Ds) == 0
	if quickSet {
		cfg.Ns, cfg.Ds = []int{10, 100}, []int{1e5}
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = env.TempDir
	}
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults()
	out := begin("ingest", env, struct {
		Ns         []int  `json:"n"`
		Ds         []int  `json:"d"`
		ChunkBytes int    `json:"chunk_bytes"`
		Encoding   string `json:"encoding"`
		Conns      int    `json:"conns"`
	}{cfg.Ns, cfg.Ds, cfg.ChunkBytes, cfg.Encoding, cfg.Conns})
	bar := NewProgress(env.Progress, "ingest", len(cfg.Ns)*len(cfg.Ds))
	cfg.Logf = func(format string, args ...any) {
		bar.Step()
	}
	bar.Label("N × d = %v × %v", cfg.Ns, cfg.Ds)
	res, err := Ingest(ctx, cfg)
	if err != nil {
		return out, err
	}
	bar.Done()
	out.Report.Rows = res
	t := Table{Title: "ingest: a region's ingest over real NATS beside raw NATS pub/sub of the same bytes (same run)",
		Header: []string{"N", "d", "ingest MB/s", "raw NATS MB/s", "ratio", "updates/s", "kernel GB/s", "memread GB/s", "ratio", "peak RSS MiB", "bound MiB", "slow", "CPU s/GB raw", "clients+server", "region"}}
	byD := map[int]*[2]Series{}
	var ds []int
	for _, r := range res {
		t.Add(r.N, r.D, r.IngestMBs, r.NatsRawMBs, r.IngestRatio, r.UpdatesPerS, r.KernelGBs, r.MemreadGBs, r.KernelRatio, r.PeakRSS>>20, r.RSSBound>>20, r.SlowConsumer+int64(r.SubDropped), r.RawCPU, r.IngestCPU, r.RegionCPU)
		s, ok := byD[r.D]
		if !ok {
			s = &[2]Series{{Name: fmt.Sprintf("ingest, d=%.0e", float64(r.D))}, {Name: fmt.Sprintf("raw NATS, d=%.0e", float64(r.D)), Dashed: true}}
			byD[r.D] = s
			ds = append(ds, r.D)
		}
		s[0].X, s[0].Y = append(s[0].X, float64(r.N)), append(s[0].Y, r.IngestMBs)
		s[1].X, s[1].Y = append(s[1].X, float64(r.N)), append(s[1].Y, r.NatsRawMBs)
	}
	fig := Figure{Name: "ingest", Title: "Region ingest vs raw NATS (same run)", XLabel: "clients N", YLabel: "MB/s", LogX: true}
	for _, d := range ds {
		fig.Series = append(fig.Series, byD[d][0], byD[d][1])
	}
	out.Tables = []Table{t}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}
