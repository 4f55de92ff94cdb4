package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"flag"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

var (
	benchLarge   = flag.Bool("secagg.large", false, "also run the d = 1e6 benchmarks (use with -benchtime=1x)")
	benchCorrupt = flag.Float64("secagg.corrupt", 0, "Security.Corrupt (γ) for the benchmark sessions' parameters")
	benchWorkers = flag.Int("secagg.workers", 1, "ServerConfig.Workers in BenchmarkServer")
)

func benchDims() []int {
	if *benchLarge {
		return []int{1e4, 1e5, 1e6}
	}
	return []int{1e4, 1e5}
}

func benchClients(b *testing.B) []int {
	if testing.Short() {
		return []int{10, 100}
	}
	return []int{10, 100, 1000}
}

// rawAESCTR is the machine's AES-128-CTR speed: the key stream of one
// cipher over one buffer, with no ring arithmetic.
func rawAESCTR(key *[SeedSize]byte, buf []byte) {
	block, _ := aes.NewCipher(key[:])
	var iv [aes.BlockSize]byte
	cipher.NewCTR(block, iv[:]).XORKeyStream(buf, buf)
}

// BenchmarkPRG measures the mask PRG (key stream added into a ring vector)
// beside the raw AES-128-CTR key stream over the same bytes, in the same
// run. prg/aes is the PRG's time over the raw cipher's (1 = the PRG costs
// nothing beyond the cipher).
func BenchmarkPRG(b *testing.B) {
	for _, d := range []int{1e4, 1e5, 1e6} {
		b.Run(fmt.Sprintf("d=%.0e", float64(d)), func(b *testing.B) {
			var seed [SeedSize]byte
			dst := make([]uint32, d)
			buf := make([]byte, 4*d)
			b.SetBytes(int64(4 * d))
			var tPRG, tAES time.Duration
			for i := 0; b.Loop(); i++ {
				seed[0] = byte(i)
				t0 := time.Now()
				addPRG(dst, &seed, false)
				t1 := time.Now()
				rawAESCTR(&seed, buf)
				tPRG += t1.Sub(t0)
				tAES += time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(4*d)*n/tPRG.Seconds()/1e6, "prg-MB/s")
			b.ReportMetric(float64(4*d)*n/tAES.Seconds()/1e6, "aes-ctr-MB/s")
			b.ReportMetric(tPRG.Seconds()/tAES.Seconds(), "prg/aes")
		})
	}
}

// fixture is a session of n clients through the share-keys round, with 30%
// of the clients dropping before masked input (the server's worst case:
// their pairwise masks must be rebuilt and removed). It is built once per n
// and replayed: the server's graph comes from a fixed seed, so every fresh
// server builds the same graph and the recorded messages stay valid.
type fixture struct {
	p         Params
	adverts   []*AdvertiseKeys
	shareMsgs []*ShareKeys
	responses []*UnmaskResponse
	survivors []ID
	client    Client       // a surviving client right after ShareKeys
	bundle    *ShareBundle // the share bundle addressed to it
	nk        *NeighbourKeys
}

type fixtureKey struct {
	n        int
	complete bool
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[fixtureKey]*fixture{}
)

const serverSeed = 42

func getFixture(b *testing.B, n int, complete bool) *fixture {
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	key := fixtureKey{n, complete}
	if f := fixtures[key]; f != nil {
		return f
	}
	p, err := ChooseParams(n, 1, 32, Security{Dropout: 0.3, Corrupt: *benchCorrupt})
	if err != nil {
		b.Fatal(err)
	}
	if complete { // Bonawitz et al. 2017: everyone is everyone's neighbour
		p.Degree, p.Threshold = n-1, 7*(n-1)/10-1
	}
	f := &fixture{p: p}
	r := seeded(uint64(n))
	srv, _ := NewServer(ServerConfig{Params: p, Rand: seeded(serverSeed)})
	cs := make([]*Client, n+1)
	for i := 1; i <= n; i++ {
		cs[i], _ = NewClient(ClientConfig{ID: ID(i), Params: p, Rand: r})
		m, _ := cs[i].AdvertiseKeys()
		f.adverts = append(f.adverts, m)
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			b.Fatal(err)
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		b.Fatal(err)
	}
	for _, nk := range nks {
		m, err := cs[nk.To].ShareKeys(nk)
		if err != nil {
			b.Fatal(err)
		}
		f.shareMsgs = append(f.shareMsgs, m)
		if err := srv.HandleShareKeys(m); err != nil {
			b.Fatal(err)
		}
	}
	bundles, err := srv.FinishShareKeys()
	if err != nil {
		b.Fatal(err)
	}
	drop := dropPlan(n, 0.3, uint64(n), DropBeforeMaskedInput)
	synthetic := make([]uint32, 1)
	for _, bu := range bundles {
		if drop[bu.To] != Stay {
			continue
		}
		c := cs[bu.To]
		if f.bundle == nil {
			f.client, f.bundle, f.nk = *c, bu, nks[bu.To-1]
		}
		if err := c.acceptShares(bu); err != nil {
			b.Fatal(err)
		}
		c.state = clientMasked
		f.survivors = append(f.survivors, bu.To)
		if err := srv.HandleMaskedInput(&MaskedInput{Version: Version, From: bu.To, Bits: 32, Vector: synthetic}); err != nil {
			b.Fatal(err)
		}
	}
	reqs, err := srv.FinishMaskedInput()
	if err != nil {
		b.Fatal(err)
	}
	for _, rq := range reqs {
		m, err := cs[rq.To].Unmask(rq)
		if err != nil {
			b.Fatal(err)
		}
		f.responses = append(f.responses, m)
	}
	fixtures[key] = f
	return f
}

// BenchmarkServer measures the server's whole work in a session of n
// clients with d-element inputs when 30% drop before masked input: graph and
// share forwarding, summing the masked inputs, checks, rebuilding secrets,
// and expanding 0.7n self masks plus one pairwise mask per edge from a
// dropped client to a survivor — about 0.7n·(1 + 0.3k)·d PRG elements,
// with k = O(log n). The masked inputs are synthetic (the server's work
// does not depend on their values). Metrics: k, the PRG expansions, ns per
// expanded element (flat if the cost is n·k·d), and x-plain: the time over
// a plain round's server work (summing the same survivors' vectors),
// measured in the same run.
//
// graph=complete runs the same sessions on the complete graph (Bonawitz et
// al. 2017, k = n-1) for n <= 100, whose server work grows like n²·d.
func BenchmarkServer(b *testing.B) {
	for _, graph := range []string{"secagg+", "complete"} {
		for _, n := range benchClients(b) {
			if graph == "complete" && n > 100 {
				continue // 10^6 key agreements to set up: minutes
			}
			for _, d := range benchDims() {
				benchServer(b, graph, n, d)
			}
		}
	}
}

func benchServer(b *testing.B, graph string, n, d int) {
	b.Run(fmt.Sprintf("graph=%s/n=%d/d=%.0e", graph, n, float64(d)), func(b *testing.B) {
		f := getFixture(b, n, graph == "complete")
		p := f.p
		p.Dim = d
		vec := make([]uint32, d)
		addPRG(vec, &[SeedSize]byte{1}, false)
		var res *Result
		for b.Loop() {
			res = runServer(b, f, p, vec)
		}
		elems := float64(res.Expansions+len(f.survivors)) * float64(d)
		perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		// Plain round: the server sums the survivors' vectors.
		t0 := time.Now()
		sum := make([]uint32, d)
		for range f.survivors {
			for i, v := range vec {
				sum[i] += v
			}
		}
		plain := float64(time.Since(t0).Nanoseconds())
		b.ReportMetric(float64(res.Degree), "k")
		b.ReportMetric(float64(res.Expansions), "expansions")
		b.ReportMetric(perOp/elems, "ns/elem")
		b.ReportMetric(perOp/(float64(n)*math.Log2(float64(n))*float64(d)), "ns/(n·log2n·d)")
		b.ReportMetric(perOp/plain, "x-plain")
	})
}

func runServer(b *testing.B, f *fixture, p Params, vec []uint32) *Result {
	srv, err := NewServer(ServerConfig{Params: p, Rand: seeded(serverSeed), Workers: *benchWorkers})
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range f.adverts {
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.FinishAdvertiseKeys(); err != nil {
		b.Fatal(err)
	}
	for _, m := range f.shareMsgs {
		if err := srv.HandleShareKeys(m); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.FinishShareKeys(); err != nil {
		b.Fatal(err)
	}
	for _, id := range f.survivors {
		if err := srv.HandleMaskedInput(&MaskedInput{Version: Version, From: id, Bits: uint8(p.Bits), Vector: vec}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.FinishMaskedInput(); err != nil {
		b.Fatal(err)
	}
	for _, m := range f.responses {
		if err := srv.HandleUnmaskResponse(m); err != nil {
			b.Fatal(err)
		}
	}
	res, err := srv.Finish()
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkClient measures one surviving client's work in a session of n:
// keys (AdvertiseKeys and ShareKeys: two key pairs, k key agreements,
// Shamir sharing, k encryptions; independent of d) and mask (MaskInput: k
// decryptions, k key agreements, and k+1 mask expansions of d elements).
func BenchmarkClient(b *testing.B) {
	for _, n := range benchClients(b) {
		b.Run(fmt.Sprintf("keys/n=%d", n), func(b *testing.B) {
			f := getFixture(b, n, false)
			r := seeded(7)
			for b.Loop() {
				c, _ := NewClient(ClientConfig{ID: f.nk.To, Params: f.p, Rand: r})
				if _, err := c.AdvertiseKeys(); err != nil {
					b.Fatal(err)
				}
				if _, err := c.ShareKeys(f.nk); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(f.nk.Neighbours)), "k")
		})
		for _, d := range benchDims() {
			b.Run(fmt.Sprintf("mask/n=%d/d=%.0e", n, float64(d)), func(b *testing.B) {
				f := getFixture(b, n, false)
				x := make([]uint32, d)
				for b.Loop() {
					c := f.client
					c.cfg.Params.Dim = d
					if _, err := c.MaskInput(f.bundle, x); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(f.bundle.Shares)), "k")
			})
		}
	}
}

// BenchmarkQuantize measures clipping and stochastic rounding.
func BenchmarkQuantize(b *testing.B) {
	const d = 1e5
	q, _ := NewQuantizer(32, 1, 1<<20, 1000)
	x := make([]float64, d)
	for i := range x {
		x[i] = float64(i%200)/100 - 1
	}
	dst := make([]uint32, d)
	r := seeded(1)
	b.SetBytes(8 * d)
	for b.Loop() {
		q.Quantize(dst, x, r)
	}
}
