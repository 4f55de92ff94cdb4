package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/regional"
)

// RegionEnv names the environment variable that carries a RegionConfig to
// a re-executed region process.
const RegionEnv = "STRATA_BENCH_REGION"

// RegionConfig configures a benchmark region process (as JSON in RegionEnv).
// Zero fields take the defaults given with each.
type RegionConfig struct {
	// URL is the NATS server to connect to; required.
	URL string `json:"url"`
	// Job and Region name the region's subjects; both required, valid
	// subject tokens.
	Job    string `json:"job"`
	Region string `json:"region"`
	// Slots and Window are regional.Config's StreamSlots and
	// StreamWindow, each ≥ 0; 0 means the region's defaults.
	Slots  int `json:"slots"`
	Window int `json:"window"`
	// MemoryLimit, in bytes, is the region's soft memory limit
	// (debug.SetMemoryLimit), as strata regional sets it
	// (regional.MemoryLimit): the region collects when its heap nears this
	// budget; 0 leaves the runtime's defaults.
	MemoryLimit int64 `json:"memory_limit"`
}

// Validate names the field that is wrong.
func (c RegionConfig) Validate() error {
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: RegionConfig.URL is required", ErrConfig)
	case c.Slots < 0:
		return fmt.Errorf("%w: RegionConfig.Slots %d: want ≥ 0 (0 means the region's default)", ErrConfig, c.Slots)
	case c.Window < 0:
		return fmt.Errorf("%w: RegionConfig.Window %d: want ≥ 0 (0 means the region's default)", ErrConfig, c.Window)
	case c.MemoryLimit < 0:
		return fmt.Errorf("%w: RegionConfig.MemoryLimit %d: want ≥ 0 bytes (0 leaves the runtime's default)", ErrConfig, c.MemoryLimit)
	}
	if _, err := mesh.RoundSubject(c.Job, c.Region); err != nil {
		return fmt.Errorf("%w: RegionConfig.Job %q, Region %q: %w", ErrConfig, c.Job, c.Region, err)
	}
	return nil
}

// RegionResult is what a region process reports when the job ends.
type RegionResult struct {
	PeakRSS    int64          `json:"peak_rss_bytes"`
	Stats      regional.Stats `json:"stats"`
	Reconnects uint64         `json:"reconnects"`
	Err        string         `json:"err,omitempty"`
}

// RegionMain runs a region over NATS until the job is done. It writes
// "ready" once subscribed and then one JSON RegionResult line to out.
func RegionMain(ctx context.Context, cfgJSON string, out io.Writer) error {
	var cfg RegionConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("bench region: %s: %w", RegionEnv, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bench region: %s: %w", RegionEnv, err)
	}
	if path := os.Getenv("STRATA_BENCH_REGION_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	if cfg.MemoryLimit > 0 {
		// Collect when the heap nears the region's O(d) budget rather than
		// only when it doubles: retired chunks are garbage by the megabyte.
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	nc, err := mesh.Dialer{URL: cfg.URL}.Connect("bench-region")
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := regional.NewRunner(regional.Config{Job: cfg.Job, Region: cfg.Region, Conn: nc, StreamSlots: cfg.Slots, StreamWindow: cfg.Window})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-errc:
		return err
	}
	fmt.Fprintln(out, "ready")
	err = <-errc
	res := RegionResult{PeakRSS: PeakRSS(), Stats: r.Stats(), Reconnects: nc.Stats().Reconnects}
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Fprintln(out, string(b))
	return err
}

// PeakRSS returns this process's peak resident set size (VmHWM), or -1
// where /proc is not available.
func PeakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}
