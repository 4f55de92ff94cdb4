package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/strata-fl/strata/privacy"
)

const privacyUsage = `usage: strata privacy <subcommand> [flags]

subcommands:
  epsilon    ε of a schedule at δ
               --q Q --sigma S --steps T --delta D   (or --schedule q:sigma:steps[,...])
  calibrate  smallest noise multiplier σ meeting (ε, δ)
               --epsilon E --delta D --q Q --steps T
  steps      largest number of rounds T meeting (ε, δ)
               --epsilon E --delta D --q Q --sigma S

common flags: --accountant rdp|pld (default rdp), --interval H (PLD discretisation,
default 1e-4), --json (one JSON object; +Inf is printed as "inf")
`

// runPrivacy is the budget planner: it prints ε for a schedule, or the σ or
// T that meets a target, with the accountant used.
func runPrivacy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, privacyUsage)
		return nil
	}
	switch args[0] {
	case "epsilon":
		return privacyEpsilon(args[1:], stdout, stderr)
	case "calibrate":
		return privacyCalibrate(args[1:], stdout, stderr)
	case "steps":
		return privacySteps(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, privacyUsage)
	return fmt.Errorf("%w: unknown privacy subcommand %q", errUsage, args[0])
}

// privacyFlags are the flags shared by the subcommands. Unset numeric flags
// are NaN so that "required" can be told from "given as 0".
type privacyFlags struct {
	fs                   *flag.FlagSet
	q, sigma, eps, delta *float64
	steps                *int
	schedule             *string
	accountant           *string
	interval             *float64
	asJSON               *bool
}

func newPrivacyFlags(name string, stderr io.Writer) *privacyFlags {
	fs := flag.NewFlagSet("privacy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	nan := math.NaN()
	return &privacyFlags{
		fs:         fs,
		q:          fs.Float64("q", nan, "sampling rate per round, in [0, 1]"),
		sigma:      fs.Float64("sigma", nan, "noise multiplier (noise std / clip norm)"),
		steps:      fs.Int("steps", -1, "number of rounds T"),
		eps:        fs.Float64("epsilon", nan, "target ε"),
		delta:      fs.Float64("delta", nan, "δ, in (0, 1)"),
		schedule:   fs.String("schedule", "", "heterogeneous schedule q:sigma:steps[,q:sigma:steps...]"),
		accountant: fs.String("accountant", "rdp", "accountant: rdp or pld"),
		interval:   fs.Float64("interval", privacy.DefaultPLDInterval, "PLD discretisation interval"),
		asJSON:     fs.Bool("json", false, "print one JSON object"),
	}
}

// parse parses args; a nil error with done = true means -h was handled.
func (f *privacyFlags) parse(args []string) (done bool, err error) {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.fs.NArg() > 0 {
		return false, fmt.Errorf("%w: unexpected argument %q", errUsage, f.fs.Arg(0))
	}
	return false, nil
}

func (f *privacyFlags) set(name string) bool {
	found := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			found = true
		}
	})
	return found
}

// require returns a usage error naming the first missing flag.
func (f *privacyFlags) require(names ...string) error {
	for _, n := range names {
		if !f.set(n) {
			return fmt.Errorf("%w: --%s is required", errUsage, n)
		}
	}
	return nil
}

// forbid returns a usage error for flags that do not apply.
func (f *privacyFlags) forbid(why string, names ...string) error {
	for _, n := range names {
		if f.set(n) {
			return fmt.Errorf("%w: --%s %s", errUsage, n, why)
		}
	}
	return nil
}

func (f *privacyFlags) accountantValue() (privacy.Accountant, error) {
	switch strings.ToLower(*f.accountant) {
	case "pld":
		acc, err := privacy.NewPLDWithConfig(privacy.PLDConfig{Interval: *f.interval})
		if err != nil {
			return nil, fmt.Errorf("%w: --interval: %w", errUsage, err)
		}
		return acc, nil
	case "rdp":
		if f.set("interval") {
			return nil, fmt.Errorf("%w: --interval applies to --accountant pld only", errUsage)
		}
	}
	acc, err := privacy.AccountantByName(*f.accountant)
	if err != nil {
		return nil, fmt.Errorf("%w: --accountant: %w", errUsage, err)
	}
	return acc, nil
}

// usageErr marks a rejected parameter as a command-line error (exit 2).
func usageErr(err error) error {
	if errors.Is(err, privacy.ErrInvalidParameter) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return err
}

// parseSchedule parses q:sigma:steps[,q:sigma:steps...].
func parseSchedule(s string) ([]privacy.Part, error) {
	var parts []privacy.Part
	for i, item := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(item), ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: --schedule part %d %q: want q:sigma:steps", errUsage, i+1, item)
		}
		q, err1 := strconv.ParseFloat(f[0], 64)
		sigma, err2 := strconv.ParseFloat(f[1], 64)
		steps, err3 := strconv.Atoi(f[2])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%w: --schedule part %d %q: %v", errUsage, i+1, item, err)
		}
		parts = append(parts, privacy.Part{Q: q, Sigma: sigma, Steps: steps})
	}
	return parts, nil
}

// jsonNum prints +Inf as the string "inf" (JSON has no infinity).
type jsonNum float64

func (n jsonNum) MarshalJSON() ([]byte, error) {
	if math.IsInf(float64(n), 1) {
		return []byte(`"inf"`), nil
	}
	return json.Marshal(float64(n))
}

type jsonPart struct {
	Q     float64 `json:"q"`
	Sigma float64 `json:"sigma"`
	Steps int     `json:"steps"`
}

func jsonParts(ps []privacy.Part) []jsonPart {
	out := make([]jsonPart, len(ps))
	for i, p := range ps {
		out[i] = jsonPart{p.Q, p.Sigma, p.Steps}
	}
	return out
}

func fmtNum(x float64) string {
	if math.IsInf(x, 1) {
		return "inf"
	}
	return strconv.FormatFloat(x, 'g', 10, 64)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func privacyEpsilon(args []string, stdout, stderr io.Writer) error {
	f := newPrivacyFlags("epsilon", stderr)
	if done, err := f.parse(args); done || err != nil {
		return err
	}
	if err := f.forbid("does not apply to epsilon", "epsilon"); err != nil {
		return err
	}
	if err := f.require("delta"); err != nil {
		return err
	}
	var parts []privacy.Part
	if f.set("schedule") {
		if err := f.forbid("cannot be combined with --schedule", "q", "sigma", "steps"); err != nil {
			return err
		}
		var err error
		if parts, err = parseSchedule(*f.schedule); err != nil {
			return err
		}
	} else {
		if err := f.require("q", "sigma", "steps"); err != nil {
			return err
		}
		parts = []privacy.Part{{Q: *f.q, Sigma: *f.sigma, Steps: *f.steps}}
	}
	acc, err := f.accountantValue()
	if err != nil {
		return err
	}
	eps, err := acc.Epsilon(parts, *f.delta)
	if err != nil {
		return usageErr(err)
	}
	if *f.asJSON {
		return writeJSON(stdout, struct {
			Epsilon    jsonNum    `json:"epsilon"`
			Delta      float64    `json:"delta"`
			Accountant string     `json:"accountant"`
			Schedule   []jsonPart `json:"schedule"`
		}{jsonNum(eps), *f.delta, acc.Name(), jsonParts(parts)})
	}
	fmt.Fprintf(stdout, "epsilon %s at delta %g (accountant %s)\n", fmtNum(eps), *f.delta, acc.Name())
	for _, p := range parts {
		fmt.Fprintf(stdout, "  %d steps, q %g, sigma %g\n", p.Steps, p.Q, p.Sigma)
	}
	return nil
}

func privacyCalibrate(args []string, stdout, stderr io.Writer) error {
	f := newPrivacyFlags("calibrate", stderr)
	if done, err := f.parse(args); done || err != nil {
		return err
	}
	if err := f.forbid("does not apply to calibrate", "sigma", "schedule"); err != nil {
		return err
	}
	if err := f.require("epsilon", "delta", "q", "steps"); err != nil {
		return err
	}
	acc, err := f.accountantValue()
	if err != nil {
		return err
	}
	sigma, err := privacy.CalibrateSigma(acc, *f.q, *f.steps, *f.eps, *f.delta)
	if err != nil {
		return usageErr(err)
	}
	achieved, err := acc.Epsilon([]privacy.Part{{Q: *f.q, Sigma: sigma, Steps: *f.steps}}, *f.delta)
	if err != nil {
		return err
	}
	if *f.asJSON {
		return writeJSON(stdout, struct {
			Sigma      float64 `json:"sigma"`
			Epsilon    jsonNum `json:"epsilon"`
			Target     float64 `json:"target_epsilon"`
			Delta      float64 `json:"delta"`
			Q          float64 `json:"q"`
			Steps      int     `json:"steps"`
			Accountant string  `json:"accountant"`
		}{sigma, jsonNum(achieved), *f.eps, *f.delta, *f.q, *f.steps, acc.Name()})
	}
	fmt.Fprintf(stdout, "sigma %.6f meets epsilon %g at delta %g for %d steps at q %g (achieved epsilon %s; accountant %s)\n",
		sigma, *f.eps, *f.delta, *f.steps, *f.q, fmtNum(achieved), acc.Name())
	return nil
}

func privacySteps(args []string, stdout, stderr io.Writer) error {
	f := newPrivacyFlags("steps", stderr)
	if done, err := f.parse(args); done || err != nil {
		return err
	}
	if err := f.forbid("does not apply to steps", "steps", "schedule"); err != nil {
		return err
	}
	if err := f.require("epsilon", "delta", "q", "sigma"); err != nil {
		return err
	}
	acc, err := f.accountantValue()
	if err != nil {
		return err
	}
	T, err := privacy.MaxSteps(acc, *f.q, *f.sigma, *f.eps, *f.delta)
	if err != nil {
		return usageErr(err)
	}
	if *f.asJSON {
		return writeJSON(stdout, struct {
			Steps      int     `json:"steps"`
			Epsilon    float64 `json:"epsilon"`
			Delta      float64 `json:"delta"`
			Q          float64 `json:"q"`
			Sigma      float64 `json:"sigma"`
			Accountant string  `json:"accountant"`
		}{T, *f.eps, *f.delta, *f.q, *f.sigma, acc.Name()})
	}
	fmt.Fprintf(stdout, "%d steps at q %g, sigma %g stay within epsilon %g at delta %g (accountant %s)\n",
		T, *f.q, *f.sigma, *f.eps, *f.delta, acc.Name())
	return nil
}
