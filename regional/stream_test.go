package regional

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
)

type chunk struct {
	h    wire.ChunkHeader
	data []byte
}

// chunksOf cuts a float32 vector into chunks of n elements, with the digest
// on the last, as edge.PublishStream does.
func chunksOf(client string, v []float32, n int) []chunk {
	data := wire.AppendFloat32s(nil, v)
	var out []chunk
	crc := uint32(0)
	for lo := 0; lo < len(v); lo += n {
		hi := min(lo+n, len(v))
		d := data[4*lo : 4*hi]
		crc = crc32.Update(crc, wire.Castagnoli, d)
		h := wire.ChunkHeader{Job: "j", Round: 2, Client: client, Offset: lo, Total: len(v)}
		if hi == len(v) {
			h.Last, h.Digest = true, crc
		}
		out = append(out, chunk{h, d})
	}
	return out
}

func streamOpen(client string, dim int) wire.StreamOpen {
	return wire.StreamOpen{Job: "j", Round: 2, Region: "eu", Client: client, ModelVersion: 1, Dim: dim, Total: dim, Encoding: wire.EncodingF32}
}

func randVec(r *rand.Rand, d int, norm float64) []float32 {
	v := make([]float32, d)
	s := 0.0
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		s += x * x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) * norm / math.Sqrt(s))
	}
	return v
}

// TestStreamEqualsSingleUpdate: interleaved streams of several clients
// produce bit for bit the sum the single-message path produces.
func TestStreamEqualsSingleUpdate(t *testing.T) {
	const d = 1000
	r := rand.New(rand.NewPCG(1, 1))
	open := wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: []string{"a", "b", "c"}}
	single, _ := NewRound(open)
	streamed, _ := NewRound(open)
	s := NewStreams(streamed, 3, 0)
	var all [][]chunk
	for _, c := range open.Sampled { // a, b, c
		v := randVec(r, d, 0.9)
		b, _ := wire.Encode(wire.TypeUpdate, &wire.Update{Job: "j", Round: 2, Region: "eu", Client: c, ModelVersion: 1, Vec: wire.AppendFloat32s(nil, v)})
		if reason := single.Add(b); reason != "" {
			t.Fatal(reason)
		}
		granted, reason := s.Open(streamOpen(c, d))
		if reason != "" {
			t.Fatalf("open %s: %q", c, reason)
		}
		if granted != (c != "c") {
			t.Fatalf("open %s: granted %v; want a and b granted, c queued until one is in its tail", c, granted)
		}
		all = append(all, chunksOf(c, v, 300))
	}
	// Feed one chunk per granted client in turn (interleaved), granting as
	// the region says.
	live := map[int]bool{0: true, 1: true}
	next := make([]int, len(all))
	for len(live) > 0 {
		for k := range all {
			if !live[k] {
				continue
			}
			cs := all[k]
			reason, done, ok, grants := s.Chunk(cs[next[k]].h, cs[next[k]].data)
			if !ok || reason != "" {
				t.Fatalf("client %d chunk %d: ok %v, reason %q", k, next[k], ok, reason)
			}
			next[k]++
			if done {
				delete(live, k)
			}
			for _, g := range grants {
				live[int(g[0]-'a')] = true
			}
		}
	}
	if !streamed.Complete() || streamed.Count() != 3 {
		t.Fatalf("count %d, want 3", streamed.Count())
	}
	for i := range single.sum {
		if math.Float64bits(single.sum[i]) != math.Float64bits(streamed.sum[i]) {
			t.Fatalf("element %d: streamed %v, single %v", i, streamed.sum[i], single.sum[i])
		}
	}
}

// TestStreamRejectionsLeaveSumUntouched: a stream that fails anywhere, or
// is cut off by the deadline, contributes nothing, and its reason is named.
func TestStreamRejectionsLeaveSumUntouched(t *testing.T) {
	const d = 100
	r := rand.New(rand.NewPCG(2, 2))
	good := randVec(r, d, 0.9)
	tests := []struct {
		name string
		mut  func([]chunk) []chunk
		want string
	}{
		{"digest", func(cs []chunk) []chunk { cs[3].h.Digest++; return cs }, ReasonDigest},
		{"corrupt data", func(cs []chunk) []chunk {
			cs[1].data = append([]byte(nil), cs[1].data...)
			cs[1].data[0] ^= 1
			return cs
		}, ReasonDigest},
		{"out of order", func(cs []chunk) []chunk { cs[1], cs[2] = cs[2], cs[1]; return cs }, ReasonChunk},
		{"missing chunk", func(cs []chunk) []chunk { return append(cs[:1], cs[2:]...) }, ReasonChunk},
		{"wrong total", func(cs []chunk) []chunk { cs[2].h.Total = 99; return cs }, ReasonChunk},
		{"odd length", func(cs []chunk) []chunk { cs[2].data = cs[2].data[:7]; return cs }, ReasonChunk},
		{"last too early", func(cs []chunk) []chunk { cs[1].h.Last = true; return cs }, ReasonChunk},
		{"NaN in last chunk", func(cs []chunk) []chunk {
			v := append([]float32(nil), good...)
			v[d-1] = float32(math.NaN())
			return chunksOf("a", v, 30)
		}, ReasonNonFinite},
		{"norm over C in last chunk", func(cs []chunk) []chunk {
			v := append([]float32(nil), good...)
			v[d-1] = 2
			return chunksOf("a", v, 30)
		}, ReasonNorm},
		{"deadline", func(cs []chunk) []chunk { return cs[:3] }, ReasonIncomplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: []string{"a"}})
			s := NewStreams(rd, 1, 0)
			if _, reason := s.Open(streamOpen("a", d)); reason != "" {
				t.Fatal(reason)
			}
			got := ""
			for _, c := range tt.mut(chunksOf("a", good, 30)) {
				reason, done, ok, _ := s.Chunk(c.h, c.data)
				if !ok {
					break
				}
				if done {
					got = reason
					break
				}
			}
			if tt.want == ReasonIncomplete {
				s.Abort()
				got = ReasonIncomplete
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if rd.Count() != 0 || rd.Rejected()[tt.want] != 1 {
				t.Errorf("count %d, rejected %v; want 0 and one %q", rd.Count(), rd.Rejected(), tt.want)
			}
			for i, x := range rd.sum {
				if x != 0 {
					t.Fatalf("sum[%d] = %v after a rejected stream", i, x)
				}
			}
		})
	}
}

// TestStreamSlots: beyond its slots a region queues streams, grants them in
// order as slots free, refuses duplicates, and refuses the queue at Abort.
func TestStreamSlots(t *testing.T) {
	const d = 10
	rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: []string{"a", "b", "c", "e"}})
	s := NewStreams(rd, 1, 0)
	v := make([]float32, d)
	v[0] = 0.5
	if g, _ := s.Open(streamOpen("a", d)); !g {
		t.Fatal("first stream not granted")
	}
	if g, reason := s.Open(streamOpen("b", d)); g || reason != "" {
		t.Fatalf("second stream: granted %v, reason %q; want queued", g, reason)
	}
	s.Open(streamOpen("c", d))
	if _, reason := s.Open(streamOpen("b", d)); reason != ReasonBusy {
		t.Fatalf("second open of a queued client: %q, want %q", reason, ReasonBusy)
	}
	var grants []string
	for _, c := range chunksOf("a", v, d) {
		_, _, _, grants = s.Chunk(c.h, c.data)
	}
	if len(grants) != 1 || grants[0] != "b" {
		t.Fatalf("grants %v, want [b]", grants)
	}
	if _, reason := s.Open(streamOpen("a", d)); reason != ReasonDuplicate {
		t.Fatalf("reopen after acceptance: %q, want %q", reason, ReasonDuplicate)
	}
	if refused := s.Abort(); len(refused) != 1 || refused[0] != "c" {
		t.Fatalf("refused %v, want [c]", refused)
	}
	if rd.Count() != 1 || rd.Rejected()[ReasonIncomplete] != 2 {
		t.Errorf("count %d, rejected %v", rd.Count(), rd.Rejected())
	}
}

func TestStreamCompressedEncodings(t *testing.T) {
	const d = 8
	rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: []string{"q", "k"}})
	s := NewStreams(rd, 2, 0)
	// q8: two chunks of 4 with their scales.
	oq := streamOpen("q", d)
	oq.Encoding = wire.EncodingQ8
	s.Open(oq)
	q := []byte{127, 0, 0, 0, byte(0x81) /* -127 */, 0, 0, 1}
	var sb [4]byte
	crc := uint32(0)
	for i, sc := range []float32{0.004, 0.002} {
		binary.LittleEndian.PutUint32(sb[:], math.Float32bits(sc))
		crc = crc32.Update(crc, wire.Castagnoli, sb[:])
		crc = crc32.Update(crc, wire.Castagnoli, q[4*i:4*i+4])
		h := wire.ChunkHeader{Job: "j", Round: 2, Client: "q", Offset: 4 * i, Total: d, Scale: sc, Last: i == 1, Digest: crc}
		if reason, _, _, _ := s.Chunk(h, q[4*i:4*i+4]); reason != "" {
			t.Fatalf("q8 chunk %d: %q", i, reason)
		}
	}
	// topk: entries (1, 0.5) and (6, -0.25).
	ok := streamOpen("k", d)
	ok.Encoding, ok.Total = wire.EncodingTopK, 2
	s.Open(ok)
	var kd []byte
	for _, e := range []struct {
		i uint32
		x float32
	}{{1, 0.5}, {6, -0.25}} {
		kd = binary.LittleEndian.AppendUint32(kd, e.i)
		kd = binary.LittleEndian.AppendUint32(kd, math.Float32bits(e.x))
	}
	h := wire.ChunkHeader{Job: "j", Round: 2, Client: "k", Total: 2, Last: true, Digest: crc32.Checksum(kd, wire.Castagnoli)}
	if reason, _, _, _ := s.Chunk(h, kd); reason != "" {
		t.Fatalf("topk: %q", reason)
	}
	want := []float64{127 * float64(float32(0.004)), 0.5, 0, 0, -127 * float64(float32(0.002)), 0, -0.25, float64(float32(0.002))}
	for i := range want {
		if math.Abs(rd.sum[i]-want[i]) > 1e-12 {
			t.Errorf("sum[%d] = %v, want %v", i, rd.sum[i], want[i])
		}
	}
}

// FuzzStreamChunk feeds arbitrary chunk messages to a staged stream: no
// input crashes it, and the sum moves only on an accepted stream.
func FuzzStreamChunk(f *testing.F) {
	v := []float32{0.5, 0.5, 0.5}
	for _, c := range chunksOf("a", v, 2) {
		b, _ := wire.AppendChunk(nil, &c.h, c.data)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: 3, ClipNorm: 1, Sampled: []string{"a"}})
		s := NewStreams(rd, 1, 0)
		s.Open(streamOpen("a", 3))
		h, data, err := wire.DecodeChunk(b)
		if err != nil {
			return
		}
		reason, done, _, _ := s.Chunk(h, data)
		if !(done && reason == "") {
			for _, x := range rd.sum {
				if x != 0 {
					t.Fatal("sum moved without an accepted stream")
				}
			}
		}
	})
}

// FuzzSignedStreamChunk: in a signed round, whatever one chunk message
// holds, the region accepts a stream only when its data is the data the
// client signed, CRC or no CRC.
func FuzzSignedStreamChunk(f *testing.F) {
	k, err := identity.New(identity.KindClient, "a")
	if err != nil {
		f.Fatal(err)
	}
	reg := identity.NewRegistry(1, []identity.Entry{{ID: "a", Kind: identity.KindClient, Region: "eu", Public: k.Public(), Status: identity.StatusActive}})
	signed := wire.AppendFloat32s(nil, []float32{0.5, -0.25, 0.125})
	digest := wire.PayloadDigest(wire.EncodingF32, 3, identity.Digest(signed), nil)
	o := streamOpen("a", 3)
	o.Digest = digest[:]
	o.Sig = k.Sign(identity.UpdateMessage("j", 2, 1, "eu", "a", 0, digest))
	for _, c := range chunksOf("a", []float32{0.5, -0.25, 0.125}, 3) {
		b, _ := wire.AppendChunk(nil, &c.h, c.data)
		f.Add(b)
		c.h.Digest++
		b, _ = wire.AppendChunk(nil, &c.h, c.data)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: 3, ClipNorm: 1, Sampled: []string{"a"}, Signed: true, Registry: 1})
		rd.UseRegistry(reg)
		s := NewStreams(rd, 1, 0)
		if _, reason := s.Open(o); reason != "" {
			t.Fatal(reason)
		}
		h, data, err := wire.DecodeChunk(b)
		if err != nil {
			return
		}
		reason, done, _, _ := s.Chunk(h, data)
		if done && reason == "" && string(data) != string(signed) {
			t.Fatalf("accepted %x, signed %x", data, signed)
		}
	})
}

// TestSignedStreamChecksTheSignedDigest: in a signed round a stream counts
// when its data matches the digest its client signed — the chunk CRC is
// not what decides — and is rejected whole when a byte differs or the
// signature does not verify.
func TestSignedStreamChecksTheSignedDigest(t *testing.T) {
	const d = 100
	k, err := identity.New(identity.KindClient, "a")
	if err != nil {
		t.Fatal(err)
	}
	reg := identity.NewRegistry(1, []identity.Entry{{ID: "a", Kind: identity.KindClient, Region: "eu", Public: k.Public(), Status: identity.StatusActive}})
	v := randVec(rand.New(rand.NewPCG(3, 3)), d, 0.9)
	data := wire.AppendFloat32s(nil, v)
	digest := wire.PayloadDigest(wire.EncodingF32, d, identity.Digest(data), nil)
	tests := []struct {
		name    string
		sig     []byte
		mut     func([]chunk) []chunk
		want    string
		counted int
	}{
		{"intact", nil, func(cs []chunk) []chunk { return cs }, "", 1},
		{"wrong CRC, intact data", nil, func(cs []chunk) []chunk { cs[3].h.Digest++; return cs }, "", 1},
		{"corrupt data", nil, func(cs []chunk) []chunk {
			cs[1].data = append([]byte(nil), cs[1].data...)
			cs[1].data[5] ^= 1
			return cs
		}, ReasonDigest, 0},
		{"signature of another payload", k.Sign([]byte("strata/update/v1 something else")), nil, ReasonBadSignature, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, _ := NewRound(wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: d, ClipNorm: 1, Sampled: []string{"a"}, Signed: true, Registry: 1})
			rd.UseRegistry(reg)
			s := NewStreams(rd, 1, 0)
			o := streamOpen("a", d)
			o.Digest = digest[:]
			o.Sig = tt.sig
			if o.Sig == nil {
				o.Sig = k.Sign(identity.UpdateMessage("j", 2, 1, "eu", "a", o.Unclipped, digest))
			}
			granted, reason := s.Open(o)
			got := reason
			if reason == "" {
				if !granted {
					t.Fatal("stream not granted")
				}
				for _, c := range tt.mut(chunksOf("a", v, 30)) {
					if reason, done, _, _ := s.Chunk(c.h, c.data); done {
						got = reason
						break
					}
				}
			}
			if got != tt.want || rd.Count() != tt.counted {
				t.Fatalf("reason %q, count %d; want %q and %d", got, rd.Count(), tt.want, tt.counted)
			}
		})
	}
}

// TestMemoryLimit: the limit a region's process sets covers the sum, the
// staged streams and the encoded partial, and with the default slots stays
// under the data path's RSS bound of 3·(8·d) + 64 MiB.
func TestMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		dim, slots int
		want       int64
	}{
		{1_000_000, 0, 24_000_000 + 32<<20},      // 3 default slots
		{100_000_000, 0, 2_000_000_000 + 32<<20}, // 2 above LargeDim
		{1_000_000, 6, 36_000_000 + 32<<20},
	} {
		got := MemoryLimit(tt.dim, tt.slots, 0)
		if got != tt.want {
			t.Errorf("MemoryLimit(%d, %d) = %d, want %d", tt.dim, tt.slots, got, tt.want)
		}
		if bound := 24*int64(tt.dim) + 64<<20; tt.slots == 0 && got > bound {
			t.Errorf("MemoryLimit(%d) = %d over the RSS bound %d", tt.dim, got, bound)
		}
	}
}
