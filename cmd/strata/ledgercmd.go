package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
	htmlreport "github.com/strata-fl/strata/observe/report"
)

func runLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ledger", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up or global node")
	asJSON := fs.Bool("json", false, "print the ledger as JSON")
	client := fs.String("client", "", "show one client's spend and remaining budget against each observer")
	natsURL := fs.String("nats", "", "read the ledger of a running global node over NATS instead of a data dir")
	node := fs.String("node", "g1", "with --nats: the global node to ask")
	secrets := fs.String("secrets", "", "with --nats: the mesh's secrets dir (TLS and the operator key)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var l *ledger.Ledger
	var err error
	if *natsURL != "" {
		l, err = ledgerFromNode(ctx, *natsURL, *secrets, *node)
	} else {
		var key *seal.Key
		if key, err = dataKey(); err == nil {
			l, err = global.ReadLedgerKey(nodeDir(*data), key)
		}
	}
	if err != nil {
		return err
	}
	if l.Job == nil {
		return fmt.Errorf("ledger in %s has no job yet", *data)
	}
	if *client != "" {
		return printClient(stdout, l, *client, *asJSON)
	}
	if *asJSON {
		out := map[string]any{"job": l.Job, "rounds": jsonRounds(l.Rounds), "models": l.Models, "finished": l.Finished, "finish_reason": l.FinishReason}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	j := l.Job
	fmt.Fprintf(stdout, "job %s: %d clients, δ=%g, budget ε=%g (public), %d planned rounds, accountant %s, started %s\n",
		j.Name, j.Population, j.Delta, j.Budget, j.PlannedRounds, j.Accountant, time.UnixMilli(j.StartedUnixMs).Format(time.RFC3339))
	fmt.Fprintf(stdout, "%5s  %-9s  %7s  %5s  %-26s  %10s  %10s  %10s  %s\n", "round", "status", "sampled", "model", "noise e/r/g ×C", "ε public", "ε glob.op", "ε reg.op", "raft index")
	for _, r := range l.Rounds {
		fmt.Fprintf(stdout, "%5d  %-9s  %7d  v%-4d  %-26s  %10s  %10s  %10s  %d\n", r.Round, r.Status, r.Sampled, r.ModelVersion,
			fmt.Sprintf("%.4g/%.4g/%.4g ×%.4g", r.Noise.Edge, r.Noise.Regional, r.Noise.Global, r.ClipNorm),
			fmtEps(r.EpsilonAfter.Public), fmtEps(r.EpsilonAfter.GlobalOperator), fmtEps(r.EpsilonAfter.RegionalOperator), r.Index)
		if r.SecAgg != nil {
			rr := htmlreport.Round{SecAgg: r.SecAgg}
			fmt.Fprintf(stdout, "%5s  secure aggregation: %s\n", "", rr.SecAggSummary())
		}
	}
	status := "in progress"
	if l.Finished {
		status = "finished: " + l.FinishReason
	}
	fmt.Fprintf(stdout, "%d rounds committed, %d models; %s\n", l.CommittedRounds(), len(l.Models), status)
	if cs, err := htmlreport.SummariseClients(l); err == nil && len(l.Clients) > 0 {
		fmt.Fprintf(stdout, "%d clients: %d retired for budget, %d withdrawn; per-client public ε min %s, median %s, max %s\n",
			len(l.Clients), cs.Retired, cs.Withdrawn, fmtEps(float64(cs.Epsilon[ledger.Public].Min)), fmtEps(float64(cs.Epsilon[ledger.Public].Median)), fmtEps(float64(cs.Epsilon[ledger.Public].Max)))
	}
	return nil
}

type jsonRound struct {
	ledger.RoundEntry
	Sigma        map[ledger.Observer]jf `json:"sigma"`
	EpsilonAfter map[ledger.Observer]jf `json:"epsilon_after"`
}

func jsonRounds(rs []ledger.RoundEntry) []jsonRound {
	out := make([]jsonRound, len(rs))
	for i, r := range rs {
		out[i] = jsonRound{RoundEntry: r, Sigma: map[ledger.Observer]jf{}, EpsilonAfter: map[ledger.Observer]jf{}}
		for _, o := range ledger.Observers {
			out[i].Sigma[o] = jf(r.Sigma.Get(o))
			out[i].EpsilonAfter[o] = jf(r.EpsilonAfter.Get(o))
		}
	}
	return out
}

// ledgerFromNode fetches a running node's ledger snapshot over NATS.
func ledgerFromNode(ctx context.Context, url, secrets, id string) (*ledger.Ledger, error) {
	d, err := operatorDialer(url, secrets)
	if err != nil {
		return nil, err
	}
	nc, err := d.Connect("strata-ledger")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, global.LedgerSubject(id), nil)
	if err != nil {
		return nil, fmt.Errorf("ledger: global node %q did not answer on %s: %w", id, url, err)
	}
	if len(msg.Data) == 0 {
		return nil, fmt.Errorf("ledger: global node %q could not snapshot its ledger", id)
	}
	return ledger.Restore(msg.Data)
}
