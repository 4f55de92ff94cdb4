package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ErrCheck is wrapped by every error of Check: a results file that does
// not validate.
var ErrCheck = errors.New("bench: results do not validate")

// Machine describes where a run was measured. Figures from a shared
// machine mean little without its load, so the load average is sampled
// at the start and the end of every scenario.
type Machine struct {
	CPUModel  string   `json:"cpu_model"`
	CPUFlags  []string `json:"cpu_flags"` // SIMD features: sse4*, avx*, fma
	Cores     int      `json:"cores"`
	MemBytes  int64    `json:"mem_bytes"`
	GoVersion string   `json:"go_version"`
	GOOS      string   `json:"goos"`
	GOARCH    string   `json:"goarch"`
	Hostname  string   `json:"hostname"`
}

// DescribeMachine reads the CPU model and features from /proc/cpuinfo and
// the memory from /proc/meminfo; where /proc is missing those fields stay
// empty and Cores is runtime.NumCPU.
func DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUFlags: []string{}}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPUModel == "" {
					m.CPUModel = strings.TrimSpace(v)
				}
			case "flags":
				if len(m.CPUFlags) == 0 {
					for _, f := range strings.Fields(v) {
						if strings.HasPrefix(f, "avx") || strings.HasPrefix(f, "sse4") || f == "fma" {
							m.CPUFlags = append(m.CPUFlags, f)
						}
					}
				}
			}
		}
	}
	m.MemBytes = procKB("/proc/meminfo", "MemTotal:")
	return m
}

// procKB reads a "Key:  123 kB" line of a /proc file, in bytes; -1 when
// it is not there.
func procKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), key); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// RSS returns this process's current resident set size (VmRSS), or -1.
func RSS() int64 { return procKB("/proc/self/status", "VmRSS:") }

// LoadAvg returns the 1-minute load average, or -1 where /proc is missing.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// ScenarioReport is the result of one scenario: its parameters, the load
// of the machine around it, and its rows. Rows are scenario-specific
// structs of numbers; Check requires each to be finite.
type ScenarioReport struct {
	Scenario  string    `json:"scenario"`
	Quick     bool      `json:"quick"`
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	LoadStart float64   `json:"load_avg_start"`
	LoadEnd   float64   `json:"load_avg_end"`
	Params    any       `json:"params"`
	Rows      any       `json:"rows"`
	// Summary holds the scenario's headline figures (fitted slopes,
	// reproductions beside the literature), as named numbers.
	Summary map[string]float64 `json:"summary,omitempty"`
	Notes   []string           `json:"notes,omitempty"`
	// Figures lists the plot files written (names only, in the --plot dir).
	Figures []string `json:"figures,omitempty"`
}

// Report is what `strata bench --json` prints.
type Report struct {
	Machine   Machine          `json:"machine"`
	Command   string           `json:"command"`
	Scenarios []ScenarioReport `json:"scenarios"`
}

// Check validates a results file: it decodes, names the machine (CPU
// model, cores, memory, Go version), holds at least one scenario, every
// scenario has at least one row, and every number anywhere in it is
// finite (JSON cannot carry NaN or ±Inf, so a non-finite figure shows as
// a string or null, which Check rejects in rows and summaries).
func Check(r io.Reader) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("%w: not JSON: %v", ErrCheck, err)
	}
	m, ok := raw["machine"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: no machine description", ErrCheck)
	}
	for _, k := range []string{"cpu_model", "go_version"} {
		if s, _ := m[k].(string); s == "" {
			return fmt.Errorf("%w: machine.%s is empty", ErrCheck, k)
		}
	}
	for _, k := range []string{"cores", "mem_bytes"} {
		if v, err := number(m[k]); err != nil || v <= 0 {
			return fmt.Errorf("%w: machine.%s must be a positive number, got %v", ErrCheck, k, m[k])
		}
	}
	scs, _ := raw["scenarios"].([]any)
	if len(scs) == 0 {
		return fmt.Errorf("%w: no scenarios", ErrCheck)
	}
	for i, s := range scs {
		sc, ok := s.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: scenarios[%d] is not an object", ErrCheck, i)
		}
		name, _ := sc["scenario"].(string)
		where := fmt.Sprintf("scenarios[%d] (%s)", i, name)
		if name == "" {
			return fmt.Errorf("%w: %s has no name", ErrCheck, where)
		}
		rows, _ := sc["rows"].([]any)
		if len(rows) == 0 {
			return fmt.Errorf("%w: %s has no rows", ErrCheck, where)
		}
		for _, k := range []string{"rows", "summary", "seconds"} {
			v, present := sc[k]
			if !present && k == "summary" {
				continue
			}
			if err := allFinite(v, where+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func number(v any) (float64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%v is not a number", v)
	}
	return n.Float64()
}

// allFinite walks a decoded JSON value: numbers must be finite, and no
// value may be null or a string spelling a non-finite number.
func allFinite(v any, path string) error {
	switch x := v.(type) {
	case nil:
		return fmt.Errorf("%w: %s is null", ErrCheck, path)
	case json.Number:
		f, err := x.Float64()
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: %s = %s is not a finite number", ErrCheck, path, x)
		}
	case string:
		switch strings.ToLower(strings.TrimLeft(x, "+-")) {
		case "nan", "inf", "infinity":
			return fmt.Errorf("%w: %s = %q is not a finite number", ErrCheck, path, x)
		}
	case []any:
		for i, e := range x {
			if err := allFinite(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if err := allFinite(e, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}
