// Command strata is the one binary of the Strata mesh: every role and every
// tool is a subcommand. This file only dispatches; each subcommand lives in a
// file of its own and returns an error rather than exiting.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"privacy":  {"plan budgets: epsilon for a schedule, calibrate sigma", runPrivacy},
		"check":    {"project ε per observer for a plan and enforce its policy", runCheck},
		"withdraw": {"withdraw a client's consent (running mesh with --nats, or a stopped data dir)", runWithdraw},
		"certs":    {"create a dev mesh's CA, NATS certificate and identity keys", runCerts},
		"enroll":   {"create a client identity and enrol it with a running global tier", runEnroll},
		"nats":     {"run a NATS server with JetStream for a multi-process mesh", runNATS},
		"health":   {"check a running role (nats, global, regional): exit 0 when it serves", runHealth},
		"global":   {"run one node of the raft-replicated global tier (and `global members`)", runGlobal},
		"regional": {"run one regional aggregator", runRegional},
		"edge":     {"run one region's simulated edge clients", runEdge},
		"audit":    {"verify or export the audit trail; measure the privacy a job leaked (audit privacy)", runAudit},
		"keygen":   {"print (or --out FILE: write) a new AES-256 key for encryption at rest", runKeygen},
		"model":    {"list model versions, roll the serving one back, export one (safetensors, PEFT)", runModel},
		"generate": {"sample text from a model version of a language-model job", runGenerate},
		"up":       {"run a whole mesh and a DP fine-tuning job in one process", runUp},
		"ledger":   {"print the committed privacy ledger of a data dir", runLedger},
		"report":   {"write the HTML report (and PNG plots) of a job from its data dir", runReport},
		"topology": {"print the default topology, validate a file", runTopology},
		"bench":    {"benchmarks: strata bench SCENARIO|--all [--quick] [--json] [--plot DIR]", runBench},
	}
}

// errUsage marks an error caused by the command line; main exits 2 on it.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "strata:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "strata:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout, cmds)
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		printUsage(stderr, cmds)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func printUsage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: strata <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
}
