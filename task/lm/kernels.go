package lm

import (
	"math"
	"runtime"
	"sync"
)

// arena hands out the float32 buffers of one pass and takes them all back
// when the pass ends: a client's local steps reuse the same memory instead
// of allocating megabytes per step for the collector to sweep.
type arena struct {
	buf []float32
	off int
	// spill is what a pass needed beyond buf; the next reset grows buf
	// to hold it.
	spill int
}

var arenas = sync.Pool{New: func() any { return new(arena) }}

func getArena() *arena { return arenas.Get().(*arena) }

// release resets a and returns it to the pool; nothing it handed out may
// be used after.
func (a *arena) release() {
	if a.spill > 0 {
		a.buf = make([]float32, (a.off+a.spill)*5/4)
		a.spill = 0
	}
	a.off = 0
	arenas.Put(a)
}

// get returns n zeroed values.
func (a *arena) get(n int) []float32 {
	if a.off+n <= len(a.buf) {
		s := a.buf[a.off : a.off+n : a.off+n]
		a.off += n
		clear(s)
		return s
	}
	a.spill += n
	return make([]float32, n)
}

// expf is e^x in float32 (Cephes' expf: range reduction by ln 2 and a
// degree-6 polynomial, within 2 ulp of e^x), several times faster than
// math.Exp in float64, which dominated the softmaxes.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375
		c2    = -2.12194440e-4
	)
	if x < -87.33654 {
		return 0
	}
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	// Round x·log2(e) to the nearest integer by adding and subtracting
	// 1.5·2²³, which leaves r = x − k·ln 2 within ±ln 2 / 2.
	const magic = 12582912
	fx := float32(float32(x*log2e)+magic) - magic
	x -= fx * c1
	x -= fx * c2
	z := x * x
	y := ((((1.9875691500e-4*x+1.3981999507e-3)*x+8.3334519073e-3)*x+4.1665795894e-2)*x+1.6666665459e-1)*x + 5.0000001201e-1
	y = y*z + x + 1
	return y * math.Float32frombits(uint32(int32(fx)+127)<<23)
}

// tanhf is tanh in float32 from expf: 1 − 2/(e^{2x}+1), within 1e-7 of
// tanh in absolute terms (GELU multiplies it by x, so its relative error
// near 0 does not matter); |x| > 9 is ±1 to float32 precision.
func tanhf(x float32) float32 {
	switch {
	case x > 9:
		return 1
	case x < -9:
		return -1
	}
	return 1 - 2/(expf(2*x)+1)
}

const geluC = 0.7978845608028654 // √(2/π)

// geluT returns GELU's tanh approximation's inner tanh at u; gelu(u) is
// 0.5·u·(1+t) and its derivative geluGradT(u, t), so the backward pass
// reuses the forward's t instead of evaluating tanh again.
func geluT(u float32) float32 { return tanhf(geluC * (u + 0.044715*u*u*u)) }

func geluGradT(u, t float32) float32 {
	return 0.5*(1+t) + 0.5*u*(1-t*t)*geluC*(1+3*0.044715*u*u)
}

// accBGrad adds s·dyᵀ·z to an adapter's B gradient gb ([out][r]), where
// dy is [rows][out] with row stride ldy and z = x·Aᵀ is [rows][r]. The
// product is skinny (r is 4 by default), a shape at which a general GEMM
// runs several times below its peak; accumulating Bᵀ row by row keeps
// the inner loop over out contiguous values. tmp holds r·out values.
func accBGrad(gb, dy []float32, ldy int, z []float32, rows, out, r int, s float32, tmp []float32) {
	tmp = tmp[:r*out]
	clear(tmp)
	for n := 0; n < rows; n++ {
		dyn := dy[n*ldy : n*ldy+out]
		for k, zk := range z[n*r : n*r+r] {
			c := s * zk
			t := tmp[k*out : k*out+out]
			for o, v := range dyn {
				t[o] += c * v
			}
		}
	}
	for o := 0; o < out; o++ {
		row := gb[o*r : o*r+r]
		for k := range row {
			row[k] += tmp[k*out+o]
		}
	}
}

// transposeIn writes the rows×cols block of src (row stride lds) to dst
// as [cols][rows].
func transposeIn(dst, src []float32, rows, cols, lds int) {
	for r := 0; r < rows; r++ {
		for c, v := range src[r*lds : r*lds+cols] {
			dst[c*rows+r] = v
		}
	}
}

// transposeOut writes src, [rows][cols], to dst as its transpose: the
// cols×rows block of dst with row stride ldd.
func transposeOut(dst []float32, ldd int, src []float32, rows, cols int) {
	for r := 0; r < rows; r++ {
		for c, v := range src[r*cols : r*cols+cols] {
			dst[c*ldd+r] = v
		}
	}
}

// headWorkers is how many goroutines share a pass's units of per-head
// work: the products of one head of one window are too small for GEMM to
// split over cores, as it does the projections'.
func headWorkers(units int) int { return max(1, min(runtime.GOMAXPROCS(0), units)) }

// eachHead calls f(worker, b, h) for every window b < nb and head h < H,
// on workers goroutines; calls with different (b, h) touch disjoint data.
func eachHead(nb, H, workers int, f func(w, b, h int)) {
	if workers <= 1 {
		for u := 0; u < nb*H; u++ {
			f(0, u/H, u%H)
		}
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := w; u < nb*H; u += workers {
				f(w, u/H, u%H)
			}
		}()
	}
	wg.Wait()
}
