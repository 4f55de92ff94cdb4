// Package datapath tests the streamed data path over a real NATS server:
// edge.PublishStream into a regional.Runner, flow control under a burst,
// and the region's peak memory measured in a process of its own.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/bench"
	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
)

// TestMain lets the test binary serve as the region process of
// bench.Ingest (RegionEnv set), so its peak RSS is the region's alone.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(bench.RegionEnv); cfg != "" {
		if err := bench.RegionMain(context.Background(), cfg, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func randUpdate(r *rand.Rand, d int, norm float64) []float64 {
	v := make([]float64, d)
	s := 0.0
	for i := range v {
		v[i] = r.NormFloat64()
		s += v[i] * v[i]
	}
	for i := range v {
		v[i] *= norm / math.Sqrt(s)
	}
	return v
}

// TestStreamedRoundOverNATS: clients stream concurrently through two slots;
// the partial is exactly the sum of the accepted updates; a stream with a
// bad digest and one cut off by the deadline are rejected by name and
// contribute nothing.
//
// The cut-off client opens its stream only once every other stream has
// ended: a silent stream holds its slot until the deadline, and while it
// ramps up no queued stream is granted (Streams' staggered grants), so a
// stream queued behind it would itself be cut off by the deadline.
func TestStreamedRoundOverNATS(t *testing.T) {
	const d, good = 100_003, 12
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dial := mesh.Dialer{Server: srv}
	rc, err := dial.Connect("region")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	opened := make(chan wire.RoundOpen, 1)
	runner, err := regional.NewRunner(regional.Config{Job: "j", Region: "eu", Conn: rc, StreamSlots: 2, StreamWindow: 3,
		OnRoundOpen: func(o wire.RoundOpen) { opened <- o }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- runner.Run(ctx) }()
	<-runner.Ready()

	obs, err := dial.Connect("observer")
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	partials, err := obs.SubscribeSync("strata.j.partial.eu")
	if err != nil {
		t.Fatal(err)
	}
	sampled := []string{"bad-digest", "cut-off"}
	for i := range good {
		sampled = append(sampled, fmt.Sprintf("c%d", i))
	}
	open := wire.RoundOpen{Job: "j", Round: 1, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1,
		DeadlineUnixMs: time.Now().Add(6 * time.Second).UnixMilli(), Sampled: sampled}
	ob, _ := wire.Encode(wire.TypeRoundOpen, &open)
	if _, err := obs.Request("strata.j.round.eu", ob, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if o := <-opened; o.Round != 1 || o.Dim != d {
		t.Fatalf("OnRoundOpen saw round %d of dim %d, want round 1 of %d", o.Round, o.Dim, d)
	}

	r := rand.New(rand.NewPCG(7, 7))
	sc := edge.StreamConfig{ChunkBytes: 64 << 10}
	want := make([]float64, d)
	var wg sync.WaitGroup
	errs := make([]error, good)
	for i := range good {
		p := sc.Encode(randUpdate(r, d, 0.9), r.Float64)
		v, _ := wire.Float32s(p.Data)
		for j, x := range v {
			want[j] += float64(x)
		}
		nc, err := dial.Connect(fmt.Sprint("c", i))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			so := wire.StreamOpen{Job: "j", Round: 1, Region: "eu", Client: fmt.Sprint("c", i), ModelVersion: 1, Dim: d}
			errs[i] = edge.PublishStream(ctx, nc, "strata.j.update.eu.c", so, p)
		}()
	}
	// A client whose last chunk carries a wrong digest.
	bad, _ := dial.Connect("bad")
	defer bad.Close()
	p := sc.Encode(randUpdate(r, d, 0.5), r.Float64)
	corrupt := p
	corrupt.Data = append([]byte(nil), p.Data...)
	corrupt.Data[len(corrupt.Data)-1] ^= 0x01 // still finite, still within the norm: only the digest can tell
	wg.Add(1)
	var badErr error
	go func() {
		defer wg.Done()
		so := wire.StreamOpen{Job: "j", Round: 1, Region: "eu", Client: "bad-digest", ModelVersion: 1, Dim: d}
		badErr = publishWithDigestOf(ctx, bad, so, corrupt, p)
	}()
	wg.Wait()
	// A client that opens a stream, sends one chunk and goes silent, after
	// every other stream ended (see above).
	cut, err := dial.Connect("cut")
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	if err := cutOff(cut, sc); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("client c%d: %v", i, err)
		}
	}
	if !errors.Is(badErr, edge.ErrStreamRefused) {
		t.Errorf("bad digest: got %v, want ErrStreamRefused", badErr)
	}

	m, err := partials.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var part wire.Partial
	if err := wire.Decode(m.Data, wire.TypePartial, &part); err != nil {
		t.Fatal(err)
	}
	if part.Count != good {
		t.Errorf("count %d, want %d", part.Count, good)
	}
	if part.Rejected[regional.ReasonDigest] != 1 || part.Rejected[regional.ReasonIncomplete] != 1 {
		t.Errorf("rejected %v, want one %s and one %s", part.Rejected, regional.ReasonDigest, regional.ReasonIncomplete)
	}
	got, _ := wire.Float64s(part.Sum)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sum[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	st := runner.Stats()
	if st.SlowConsumerDrops != 0 || st.QueueDrops != 0 {
		t.Errorf("drops: %+v", st)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
}

// publishWithDigestOf streams data but puts orig's digest on the last chunk.
func publishWithDigestOf(ctx context.Context, nc *nats.Conn, so wire.StreamOpen, data, orig edge.Payload) error {
	// Re-encode through PublishStream's framing by hand: one window of
	// chunks at a time is not needed for a test, so send all and read acks.
	inbox := nc.NewRespInbox()
	sub, _ := nc.SubscribeSync(inbox)
	defer sub.Unsubscribe()
	so.Encoding, so.Total = data.Encoding, data.Total
	ob, _ := wire.Encode(wire.TypeStreamOpen, &so)
	nc.PublishMsg(&nats.Msg{Subject: "strata.j.update.eu.c", Reply: inbox, Data: ob})
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return err
	}
	var g wire.StreamGrant
	if err := wire.Decode(m.Data, wire.TypeStreamGrant, &g); err != nil {
		return fmt.Errorf("stream grant: %w", err)
	}
	if g.Reason != "" {
		return fmt.Errorf("%w at the open: %s", edge.ErrStreamRefused, g.Reason)
	}
	crc := crc32.Checksum(orig.Data, wire.Castagnoli)
	n := (data.Total + data.ChunkElems - 1) / data.ChunkElems
	for i := range n {
		lo, hi := i*data.ChunkElems, min((i+1)*data.ChunkElems, data.Total)
		h := wire.ChunkHeader{Job: so.Job, Round: so.Round, Client: so.Client, Offset: lo, Total: data.Total, Last: i == n-1}
		if h.Last {
			h.Digest = crc
		}
		b, _ := wire.AppendChunk(nil, &h, data.Data[4*lo:4*hi])
		nc.PublishMsg(&nats.Msg{Subject: "strata.j.update.eu.c", Reply: inbox, Data: b})
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return err
		}
		var a wire.ChunkAck
		if err := wire.Decode(m.Data, wire.TypeChunkAck, &a); err != nil {
			return fmt.Errorf("chunk ack: %w", err)
		}
		if a.Reason != "" {
			return fmt.Errorf("%w: %s", edge.ErrStreamRefused, a.Reason)
		}
	}
	return nil
}

// cutOff opens a stream, sends its first chunk once granted and goes
// silent. A stream refused at the open (the deadline came while it was
// queued) counts as incomplete too.
func cutOff(nc *nats.Conn, sc edge.StreamConfig) error {
	r := rand.New(rand.NewPCG(9, 9))
	p := sc.Encode(randUpdate(r, 100_003, 0.5), r.Float64)
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	so := wire.StreamOpen{Job: "j", Round: 1, Region: "eu", Client: "cut-off", ModelVersion: 1, Dim: 100_003, Encoding: p.Encoding, Total: p.Total}
	ob, _ := wire.Encode(wire.TypeStreamOpen, &so)
	nc.PublishMsg(&nats.Msg{Subject: "strata.j.update.eu.c", Reply: inbox, Data: ob})
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		return fmt.Errorf("cut-off client: no answer to its open: %w", err)
	}
	var g wire.StreamGrant
	if err := wire.Decode(m.Data, wire.TypeStreamGrant, &g); err != nil {
		return fmt.Errorf("cut-off client: stream grant: %w", err)
	}
	if g.Reason != "" {
		return nil // refused at the deadline while queued: incomplete
	}
	h := wire.ChunkHeader{Job: "j", Round: 1, Client: "cut-off", Total: p.Total}
	b, _ := wire.AppendChunk(nil, &h, p.Data[:4*p.ChunkElems])
	nc.PublishMsg(&nats.Msg{Subject: "strata.j.update.eu.c", Reply: inbox, Data: b})
	return nc.Flush()
}

// TestBurstAndMemory: 100 clients × 4 MB (d = 10⁶) start streaming at once
// into a region in its own process: no slow-consumer event anywhere, every
// update accepted, and the region's peak RSS under 3·(8·d) + 64 MiB, for
// N = 10 as for N = 100.
func TestBurstAndMemory(t *testing.T) {
	// Not under -short: the region runs in a process of its own (its peak
	// RSS is the measurement) and 440 MB cross NATS.
	if testing.Short() {
		t.Skip("streams 440 MB through NATS")
	}
	res, err := bench.Ingest(context.Background(), bench.IngestConfig{
		Ns: []int{10, 100}, Ds: []int{1_000_000}, StoreDir: t.TempDir(),
		RegionCmd: func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.SlowConsumer != 0 || r.SubDropped != 0 || r.Reconnects != 0 {
			t.Errorf("N=%d: %d slow-consumer events, %d dropped, %d reconnects; want none", r.N, r.SlowConsumer, r.SubDropped, r.Reconnects)
		}
		if r.Accepted != r.N || r.Rejected != 0 {
			t.Errorf("N=%d: accepted %d, rejected %d", r.N, r.Accepted, r.Rejected)
		}
		if r.PeakRSS <= 0 || r.PeakRSS > r.RSSBound {
			t.Errorf("N=%d: region peak RSS %d MiB, bound %d MiB", r.N, r.PeakRSS>>20, r.RSSBound>>20)
		}
	}
}

// TestSignedStreamsOverNATS: a signed round, as production jobs run them:
// the region fetches its clients' keys over NATS, verifies each stream's
// signature and checks every byte against the signed digest — float32 and
// q8 (whose chunk scales the digest covers) — and accepts every update.
func TestSignedStreamsOverNATS(t *testing.T) {
	for _, enc := range []string{wire.EncodingF32, wire.EncodingQ8} {
		res, err := bench.Ingest(context.Background(), bench.IngestConfig{
			Ns: []int{5}, Ds: []int{300_000}, ChunkBytes: 256 << 10, Encoding: enc, Signed: true,
			StoreDir: t.TempDir(), RegionCmd: func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
			Logf: t.Logf,
		})
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if r := res[0]; !r.Signed || r.Accepted != 5 || r.Rejected != 0 {
			t.Errorf("%s: signed %v, accepted %d, rejected %d; want a signed round with all 5 accepted", enc, r.Signed, r.Accepted, r.Rejected)
		}
	}
}

// BenchmarkIngest is `strata bench ingest --n 100 --d 1e6` in Go's
// harness: the region's ingest beside raw NATS, and the kernel beside a
// memory read, measured in the same run and reported as ratios.
func BenchmarkIngest(b *testing.B) {
	for b.Loop() {
		res, err := bench.Ingest(context.Background(), bench.IngestConfig{
			Ns: []int{100}, Ds: []int{1_000_000}, StoreDir: b.TempDir(),
			RegionCmd: func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
		})
		if err != nil {
			b.Fatal(err)
		}
		r := res[0]
		b.ReportMetric(r.IngestMBs, "ingest_MB/s")
		b.ReportMetric(r.NatsRawMBs, "nats_raw_MB/s")
		b.ReportMetric(r.IngestRatio, "ingest_ratio")
		b.ReportMetric(r.KernelRatio, "kernel_ratio")
		b.ReportMetric(float64(r.PeakRSS)/(1<<20), "peak_RSS_MiB")
	}
}
