package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/mesh"
)

// runHealth checks one role of a running mesh and exits non-zero when it is
// not serving. Container images of Strata hold no shell, so a healthcheck
// must exec a binary that is in the image: this one.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "strata health nats [--url http://127.0.0.1:8222] | global --id ID [--nats URL] [--secrets DIR] | regional --region R [--nats URL] [--secrets DIR] [--topology FILE]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stderr, "usage:", usage)
			return nil
		}
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	role, args := args[0], args[1:]
	fs := flag.NewFlagSet("health "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	secrets := fs.String("secrets", "", "secrets dir of a secured mesh: connect over TLS as its operator (global and regional checks)")
	switch role {
	case "nats":
		url := fs.String("url", "http://127.0.0.1:8222", "the NATS server's monitoring address (its http port)")
		if err := fs.Parse(args); err != nil {
			return helpOK(fmt.Errorf("%w: %v", errUsage, err))
		}
		return natsHealth(ctx, *url, *timeout, stdout)
	case "global":
		id := fs.String("id", "", "the node's id (its --id; required)")
		if err := fs.Parse(args); err != nil {
			return helpOK(fmt.Errorf("%w: %v", errUsage, err))
		}
		if *id == "" {
			return fmt.Errorf("%w: health global needs --id (the node's --id)", errUsage)
		}
		return globalHealth(ctx, *natsURL, *secrets, *id, *timeout, stdout)
	case "regional":
		region := fs.String("region", "", "the region id (required)")
		topo := fs.String("topology", "", "topology YAML file (default: $STRATA_TOPOLOGY, else the built-in one)")
		if err := fs.Parse(args); err != nil {
			return helpOK(fmt.Errorf("%w: %v", errUsage, err))
		}
		t, err := loadRegionTopology(*topo, *region)
		if err != nil {
			return err
		}
		return regionalHealth(ctx, *natsURL, *secrets, t.Job, *region, *timeout, stdout)
	default:
		return fmt.Errorf("%w: health %q: the roles with a health check are nats, global and regional: %s", errUsage, role, usage)
	}
}

// natsHealth asks a NATS server's monitoring endpoint /healthz, which
// answers 200 only when the server accepts clients and, with JetStream on,
// when JetStream is current (in a cluster: a meta leader is known).
func natsHealth(ctx context.Context, url string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	endpoint := strings.TrimRight(url, "/") + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return fmt.Errorf("%w: health nats --url %q: %v", errUsage, url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health nats: %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health nats: %s answered %s: %s", endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "nats healthy: %s\n", strings.TrimSpace(string(body)))
	return nil
}

// healthConn connects as the operator of a secured mesh (over TLS with the
// operator's key), or in the clear to an open one.
func healthConn(url, secrets string) (*nats.Conn, error) {
	d, err := operatorDialer(url, secrets)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	return d.Connect("strata-health")
}

// globalHealth asks a global node for its status: it is healthy when it
// answers and knows a leader (it is part of a working raft cluster).
func globalHealth(ctx context.Context, url, secrets, id string, timeout time.Duration, stdout io.Writer) error {
	nc, err := healthConn(url, secrets)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := global.RequestStatus(ctx, nc, id)
	switch {
	case errors.Is(err, global.ErrMalformedStatus):
		return fmt.Errorf("health global: node %q: %w", id, err)
	case err != nil:
		return fmt.Errorf("health global: node %q did not answer on %s: %w", id, url, err)
	}
	if s.LeaderID == "" {
		return fmt.Errorf("health global: node %q answers but knows no leader (raft has no quorum yet)", id)
	}
	fmt.Fprintf(stdout, "global %s healthy: leader %s, applied %d, %d rounds committed, finished %v\n", s.ID, s.LeaderID, s.Applied, s.Committed, s.Finished)
	return nil
}

// regionalHealth pings a region the way the global tier does before it
// opens a round.
func regionalHealth(ctx context.Context, url, secrets, job, region string, timeout time.Duration, stdout io.Writer) error {
	subj, err := mesh.PingSubject(job, region)
	if err != nil {
		return err
	}
	nc, err := healthConn(url, secrets)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := nc.RequestWithContext(ctx, subj, nil); err != nil {
		return fmt.Errorf("health regional: region %q of job %s did not answer on %s: %w", region, job, url, err)
	}
	fmt.Fprintf(stdout, "regional %s healthy (job %s)\n", region, job)
	return nil
}
