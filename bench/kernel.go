package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
	"unsafe"

	"github.com/strata-fl/strata/internal/accum"
	"github.com/strata-fl/strata/mesh/wire"
)

// KernelConfig sizes the kernel scenario.
type KernelConfig struct {
	// Ds are the vector lengths; default 1e3…1e7 (quick: 1e4, 1e6).
	Ds []int
	// Bytes is how much float32 input each measurement streams (cycling
	// over enough distinct vectors to exceed the last-level cache);
	// default 1 GB (quick 256 MB).
	Bytes int64
	// Reps is how many times each measurement is repeated (the best
	// counts); default 3, ≥ 0.
	Reps int
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c KernelConfig) Validate() error {
	if err := checkInts("KernelConfig.Ds", c.Ds, 1, math.MaxInt32); err != nil {
		return err
	}
	switch {
	case c.Bytes < 0:
		return fmt.Errorf("%w: KernelConfig.Bytes %d: want ≥ 0 (0 means 1 GB, quick 256 MB)", ErrConfig, c.Bytes)
	case c.Reps < 0:
		return fmt.Errorf("%w: KernelConfig.Reps %d: want ≥ 0 (0 means 3)", ErrConfig, c.Reps)
	}
	return nil
}

// KernelRow is one vector length: each kernel in GB/s of float32 input,
// beside a plain memory read of the same bytes in the same run.
type KernelRow struct {
	D            int     `json:"d"`
	Vectors      int     `json:"vectors"` // distinct vectors cycled over
	Kernel       string  `json:"kernel"`
	AddManyGBs   float64 `json:"add_many_gb_s"`
	AddGBs       float64 `json:"add_gb_s"`
	GenericGBs   float64 `json:"generic_gb_s"`
	PlainLoopGBs float64 `json:"plain_loop_gb_s"`
	MemreadGBs   float64 `json:"memread_gb_s"`
	AddManyRatio float64 `json:"add_many_ratio"`   // AddMany ÷ memread
	GenericRatio float64 `json:"generic_vs_plain"` // portable fallback ÷ plain loop
	SumSqGBs     float64 `json:"sum_squares_gb_s"` // the norm pass of a region
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick).
func (c KernelConfig) withDefaults(quick bool) KernelConfig {
	if len(c.Ds) == 0 {
		c.Ds = []int{1e3, 1e4, 1e5, 1e6, 1e7}
		if quick {
			c.Ds = []int{1e4, 1e6}
		}
	}
	if c.Bytes <= 0 {
		c.Bytes = 1 << 30
		if quick {
			c.Bytes = 256 << 20
		}
	}
	if c.Reps <= 0 {
		c.Reps = 3
	}
	return c
}

// Kernel measures the accumulation kernels (accum.AddMany, accum.Add, the
// portable fallback and the plain loop a Go programmer would write) and
// the sum-of-squares pass, each beside accum.ReadBytes over the same
// bytes, interleaved so the machine's load hits them alike.
func Kernel(ctx context.Context, env Env, cfg KernelConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("kernel", env, cfg)
	bar := NewProgress(env.Progress, "kernel", len(cfg.Ds))
	var rows []KernelRow
	for _, d := range cfg.Ds {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		bar.Label("d=%d", d)
		rows = append(rows, kernelRow(d, cfg))
		bar.Step()
	}
	bar.Done()
	out.Report.Rows = rows
	t := Table{Title: "kernel: GB/s of float32 input (" + accum.Kernel() + "), beside a memory read of the same bytes",
		Header: []string{"d", "AddMany", "Add", "fallback", "plain loop", "memread", "AddMany/read", "fallback/plain", "sum sq"}}
	fig := Figure{Name: "kernel", Title: "Accumulation kernels vs memory read", XLabel: "d (float32 values per vector)", YLabel: "GB/s of input", LogX: true}
	series := make([]Series, 5)
	for i, n := range []string{"AddMany", "Add", "portable fallback", "plain loop", "memory read"} {
		series[i].Name = n
	}
	for _, r := range rows {
		t.Add(r.D, r.AddManyGBs, r.AddGBs, r.GenericGBs, r.PlainLoopGBs, r.MemreadGBs, r.AddManyRatio, r.GenericRatio, r.SumSqGBs)
		for i, v := range []float64{r.AddManyGBs, r.AddGBs, r.GenericGBs, r.PlainLoopGBs, r.MemreadGBs} {
			series[i].X = append(series[i].X, float64(r.D))
			series[i].Y = append(series[i].Y, v)
		}
	}
	fig.Series = series
	out.Tables = []Table{t}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}

func kernelRow(d int, cfg KernelConfig) KernelRow {
	// Enough distinct vectors to stream from memory (512 MB, or the whole
	// budget when smaller), at least 2.
	distinct := int(max(2, min(cfg.Bytes, 512<<20)/(4*int64(d))))
	r := rand.New(rand.NewPCG(uint64(d), 7))
	srcs := make([][]byte, distinct)
	for i := range srcs {
		v := make([]float32, d)
		for j := range v {
			v[j] = float32(r.NormFloat64())
		}
		srcs[i] = wire.AppendFloat32s(make([]byte, 0, 4*d), v)
	}
	dst := make([]float64, d)
	passes := int(max(1, cfg.Bytes/(int64(distinct)*4*int64(d))))
	bytes := float64(passes) * float64(distinct) * 4 * float64(d)
	var sink uint64
	var sq float64
	fns := []func(){
		func() { // AddMany
			for range passes {
				accum.AddMany(dst, srcs)
			}
		},
		func() { // Add, one vector at a time
			for range passes {
				for _, s := range srcs {
					accum.Add(dst, s)
				}
			}
		},
		func() { // the portable fallback
			for range passes {
				for _, s := range srcs {
					accum.AddGeneric(dst, s)
				}
			}
		},
		func() { // the plain loop over a []float32 viewed in place
			for range passes {
				for _, s := range srcs {
					v := unsafe.Slice((*float32)(unsafe.Pointer(&s[0])), d)
					for i, x := range v {
						dst[i] += float64(x)
					}
				}
			}
		},
		func() { // the memory read reference
			for range passes {
				for _, s := range srcs {
					sink ^= accum.ReadBytes(s)
				}
			}
		},
		func() { // the sum of squares (a region's norm check)
			for range passes {
				for _, s := range srcs {
					v, _ := accum.SumSquares(s)
					sq += v
				}
			}
		},
	}
	best := make([]float64, len(fns))
	for i := range best {
		best[i] = math.Inf(1)
	}
	for range cfg.Reps {
		for i, f := range fns { // interleaved: load hits every kernel alike
			t := time.Now()
			f()
			best[i] = min(best[i], time.Since(t).Seconds())
		}
	}
	_, _ = sink, sq
	gbs := func(i int) float64 { return bytes / best[i] / 1e9 }
	row := KernelRow{D: d, Vectors: distinct, Kernel: accum.Kernel(), AddManyGBs: gbs(0), AddGBs: gbs(1), GenericGBs: gbs(2),
		PlainLoopGBs: gbs(3), MemreadGBs: gbs(4), SumSqGBs: gbs(5)}
	row.AddManyRatio = row.AddManyGBs / row.MemreadGBs
	row.GenericRatio = row.GenericGBs / row.PlainLoopGBs
	return row
}

func sortedCopy(v []float64) []float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s
}
