package regional

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/mesh/wire"
)

// BenchmarkStreamsIngest feeds a round 100 streamed updates of d = 10⁶
// (1 MiB chunks, a window of 4, interleaved as the slots allow) with no
// network, so that its ns per input byte is the region's own work: the
// checks, the staging and the sum.
func BenchmarkStreamsIngest(b *testing.B) {
	const d, n, chunkElems = 1_000_000, 100, 1 << 18
	r := rand.New(rand.NewPCG(8, 8))
	sampled := make([]string, n)
	var vecs [][]chunk
	for range 16 { // distinct vectors, reused: 64 MB, beyond the cache
		vecs = append(vecs, chunksOf("x", randVec(r, d, 0.9), chunkElems))
	}
	for i := range sampled {
		sampled[i] = fmt.Sprint("c", i)
	}
	for _, slots := range []int{2, 3} {
		b.Run(fmt.Sprintf("slots=%d", slots), func(b *testing.B) {
			b.SetBytes(int64(n) * 4 * d)
			for b.Loop() {
				open := wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: sampled}
				rd, _ := NewRound(open)
				s := NewStreams(rd, slots, 0)
				var live []int
				for i, c := range sampled {
					if granted, reason := s.Open(streamOpen(c, d)); reason != "" {
						b.Fatal(reason)
					} else if granted {
						live = append(live, i)
					}
				}
				next := make([]int, n)
				for len(live) > 0 {
					var still []int
					for _, i := range live {
						// up to a window of chunks from each live stream
						for w := 0; w < 4; w++ {
							ch := vecs[i%len(vecs)][next[i]]
							ch.h.Client = sampled[i]
							reason, done, _, grants := s.Chunk(ch.h, ch.data)
							if reason != "" {
								b.Fatal(reason)
							}
							next[i]++
							for _, g := range grants {
								var k int
								fmt.Sscan(g[1:], &k)
								still = append(still, k)
							}
							if done {
								break
							}
							if w == 3 {
								still = append(still, i)
							}
						}
					}
					live = still
				}
				if _, err := rd.Finalize(nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
