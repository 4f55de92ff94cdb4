// Package bench is the bench suite behind `strata bench`. Every figure is
// measured beside its reference in the same run and reported as a ratio:
// the region's ingest beside raw NATS pub/sub of the same message sizes
// through the same server, the accumulation kernel beside a plain memory
// read of the same bytes.
//
// The region runs in a child process (the same binary, re-executed with its
// configuration in the STRATA_BENCH_REGION environment variable), so its
// peak RSS (VmHWM) is the region's alone, not the publishers' or the
// server's.
package bench
