package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/strata-fl/strata/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: strata bench ingest [--json] [--n 10,100,1000] [--d 1e5,1e6,1e7]", errUsage)
	}
	switch args[0] {
	case "ingest":
		return runBenchIngest(ctx, args[1:], stdout, stderr)
	case "region": // the region process of `bench ingest`, re-executed
		return bench.RegionMain(ctx, os.Getenv(bench.RegionEnv), stdout)
	}
	return fmt.Errorf("%w: unknown bench %q (want ingest)", errUsage, args[0])
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 1 || v != float64(int(v)) {
			return nil, fmt.Errorf("%w: %q is not a positive integer", errUsage, f)
		}
		out = append(out, int(v))
	}
	return out, nil
}

func runBenchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	ns := fs.String("n", "10,100,1000", "client counts N, comma-separated")
	ds := fs.String("d", "1e5,1e6,1e7", "model dimensions d, comma-separated")
	chunk := fs.Int("chunk", 1<<20, "bytes of update data per chunk (and per raw NATS message)")
	slots := fs.Int("slots", 0, "streams the region stages at once (0: 3, or 2 above 4M parameters)")
	window := fs.Int("window", 0, "unacknowledged chunks per client (0: 4)")
	enc := fs.String("encoding", "f32", "update encoding: f32, q8 or topk")
	conns := fs.Int("conns", 16, "NATS connections the simulated clients share")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the bench process (server and clients) to this file")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg := bench.IngestConfig{ChunkBytes: *chunk, Slots: *slots, Window: *window, Encoding: *enc, Conns: *conns}
	var err error
	if cfg.Ns, err = parseInts(*ns); err != nil {
		return err
	}
	if cfg.Ds, err = parseInts(*ds); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "strata-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.StoreDir = dir
	if !*asJSON {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cpu := bench.CPUFeatures()
	res, err := bench.Ingest(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(struct {
			CPU     string               `json:"cpu"`
			Results []bench.IngestResult `json:"results"`
		}{cpu, res})
	}
	fmt.Fprintf(stdout, "cpu: %s\n\n", cpu)
	fmt.Fprintf(stdout, "%6s %9s %10s %10s %6s %9s %8s %8s %6s %10s %10s %5s\n",
		"N", "d", "ingest", "raw NATS", "ratio", "updates/s", "kernel", "memread", "ratio", "peak RSS", "bound", "slow")
	for _, r := range res {
		fmt.Fprintf(stdout, "%6d %9d %7.0f MB/s %5.0f MB/s %6.2f %9.1f %5.1f GB/s %4.1f GB/s %6.2f %6d MiB %6d MiB %5d\n",
			r.N, r.D, r.IngestMBs, r.NatsRawMBs, r.IngestRatio, r.UpdatesPerS, r.KernelGBs, r.MemreadGBs, r.KernelRatio,
			r.PeakRSS>>20, r.RSSBound>>20, r.SlowConsumer+int64(r.SubDropped))
	}
	return nil
}
