package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
)

// printClient shows one client's spend and remaining budget per observer.
func printClient(w io.Writer, l *ledger.Ledger, id string, asJSON bool) error {
	c, ok := l.Client(id)
	if !ok {
		return fmt.Errorf("client %q is not enrolled in job %s (ids look like %s)", id, l.Job.Name, exampleID(l))
	}
	e, err := l.ClientEpsilon(id)
	if err != nil {
		return err
	}
	if asJSON {
		eps := map[ledger.Observer]jf{}
		for _, o := range ledger.Observers {
			eps[o] = jf(e.Get(o))
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"client": c, "epsilon": eps, "budget_remaining_public": jf(c.Budget - e.Public)})
	}
	until := "now"
	if c.EligibleUntil != 0 {
		until = fmt.Sprintf("round %d", c.EligibleUntil)
	}
	fmt.Fprintf(w, "client %s (region %s): %s; eligible from round %d until %s; sampled in %d rounds %v\n",
		c.ID, c.Region, c.Status, c.EligibleFrom, until, len(c.Sampled), c.Sampled)
	fmt.Fprintf(w, "consent: enrolled %s for %q", time.UnixMilli(c.EnrolledMs).Format(time.RFC3339), c.Purpose)
	if c.WithdrawnMs != 0 {
		fmt.Fprintf(w, ", withdrawn %s", time.UnixMilli(c.WithdrawnMs).Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	for _, o := range ledger.Observers {
		line := fmt.Sprintf("  ε %-18s %s", o, fmtEps(e.Get(o)))
		if o == ledger.Public {
			line += fmt.Sprintf("   budget %.4g, remaining %.4g", c.Budget, c.Budget-e.Public)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

func exampleID(l *ledger.Ledger) string {
	if len(l.Clients) > 0 {
		return l.Clients[0].ID
	}
	return "(none enrolled)"
}

func runWithdraw(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("withdraw", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up")
	client := fs.String("client", "", "client id whose consent is withdrawn (required)")
	reason := fs.String("reason", "consent withdrawn", "reason recorded in the ledger")
	natsURL := fs.String("nats", "", "withdraw through a running mesh's global leader at this NATS URL instead of a stopped data dir")
	secrets := fs.String("secrets", "", "with --nats: the mesh's secrets dir (TLS and the operator key)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *client == "" {
		return fmt.Errorf("%w: --client is required", errUsage)
	}
	if *natsURL != "" {
		if err := operatorRequest(ctx, *natsURL, *secrets, global.EnrollRequest{Withdraw: *client, Reason: *reason}); err != nil {
			return fmt.Errorf("withdraw %s: %w", *client, err)
		}
		fmt.Fprintf(stdout, "client %s withdrawn: regions refuse its updates from the next round; its spend stays on record\n", *client)
		return nil
	}
	key, err := dataKey()
	if err != nil {
		return err
	}
	if _, err := global.ReadLedgerKey(filepath.Join(*data, "global"), key); err != nil {
		return err
	}
	n, err := global.OpenNode(global.NodeConfig{DataDir: filepath.Join(*data, "global"), Key: key})
	if err != nil {
		return err
	}
	defer n.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(wctx); err != nil {
		return err
	}
	res, err := n.Apply(wctx, &ledger.Withdraw{Client: *client, Reason: *reason, UnixMs: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	if res.Duplicate {
		fmt.Fprintf(stdout, "client %s had already withdrawn\n", *client)
		return nil
	}
	fmt.Fprintf(stdout, "client %s withdrawn: it will never be sampled again; its spend stays on record\n", *client)
	return nil
}
