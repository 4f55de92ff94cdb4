package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
)

// runModel lists model versions, rolls the serving one back through
// the raft log (never by editing files) and exports one (export.go).
func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "export" {
		return runModelExport(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "rollback") {
		return fmt.Errorf("%w: strata model list [--data DIR] | rollback --to N [--data DIR | --nats URL] [--reason R] | export --format safetensors|peft --out DIR [--data DIR] [--version N]", errUsage)
	}
	op := args[0]
	fs := flag.NewFlagSet("model "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up (its ledger is under global/) or global node")
	natsURL := fs.String("nats", "", "roll back on a running global tier through its leader instead")
	to := fs.Int64("to", -1, "version to serve again (0 = the pre-trained checkpoint)")
	reason := fs.String("reason", "operator rollback", "reason recorded in the ledger")
	secrets := fs.String("secrets", "", "with --nats: the mesh's secrets dir (TLS and the operator key)")
	if err := fs.Parse(args[1:]); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	dir := nodeDir(*data)
	key, err := dataKey()
	if err != nil {
		return err
	}
	if op == "list" {
		l, err := global.ReadLedgerKey(dir, key)
		if err != nil {
			return err
		}
		printModels(stdout, l)
		return nil
	}
	if *to < 0 {
		return fmt.Errorf("%w: model rollback needs --to N", errUsage)
	}
	if *natsURL != "" {
		d, err := operatorDialer(*natsURL, *secrets)
		if err != nil {
			return err
		}
		nc, err := d.Connect("strata-model")
		if err != nil {
			return err
		}
		defer nc.Close()
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := global.RequestRollback(rctx, nc, global.RollbackRequest{To: uint64(*to), Reason: *reason}); err != nil {
			return fmt.Errorf("model rollback on %s: %w", *natsURL, err)
		}
	} else {
		if _, err := global.ReadLedgerKey(dir, key); err != nil {
			return err
		}
		n, err := global.OpenNode(global.NodeConfig{DataDir: dir, Key: key})
		if err != nil {
			return err
		}
		defer n.Close()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := n.WaitLeader(wctx); err != nil {
			return err
		}
		if err := n.Rollback(wctx, uint64(*to), *reason); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "model v%d serves new rounds again; the ledger's spend is unchanged\n", *to)
	return nil
}

func printModels(w io.Writer, l *ledger.Ledger) {
	mark := func(v uint64) string {
		if v == l.ServingVersion() {
			return "*"
		}
		return " "
	}
	fmt.Fprintf(w, "%s v0     pre-trained checkpoint\n", mark(0))
	for _, m := range l.Models {
		state := "promoted"
		if !m.Promoted {
			state = "not promoted: " + m.GateReason
		}
		metric, v := m.Primary()
		fmt.Fprintf(w, "%s v%-4d  round %-4d  %s %.4f  loss %.4f  %.12s  %s\n", mark(m.Version), m.Version, m.Round, metric, v, m.Loss, m.Hash, state)
	}
	for _, r := range l.Rollbacks {
		fmt.Fprintf(w, "rollback v%d → v%d at %s: %s\n", r.From, r.To, time.UnixMilli(r.UnixMs).Format(time.RFC3339), r.Reason)
	}
	fmt.Fprintf(w, "* = serving; public ε spent %s (rollbacks refund nothing)\n", fmtEps(l.Spent(ledger.Public)))
}
