package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/strata-fl/strata/global"
)

// runMembers changes the global tier's voters through the leader (a raft
// configuration change), never by editing files.
func runMembers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: strata global members add --id ID --addr HOST:PORT | remove --id ID | list  [--nats URL]", errUsage)
	}
	op := args[0]
	fs := flag.NewFlagSet("members "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL")
	id := fs.String("id", "", "node id")
	addr := fs.String("addr", "", "raft address of the node to add")
	secrets := fs.String("secrets", "", "the mesh's secrets dir (TLS and the operator key)")
	if err := fs.Parse(args[1:]); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	switch {
	case op != "add" && op != "remove" && op != "list":
		return fmt.Errorf("%w: members %q: use add, remove or list", errUsage, op)
	case op != "list" && *id == "":
		return fmt.Errorf("%w: members %s needs --id", errUsage, op)
	case op == "add" && *addr == "":
		return fmt.Errorf("%w: members add needs --addr HOST:PORT (the new node's --raft-bind)", errUsage)
	}
	d, err := operatorDialer(*natsURL, *secrets)
	if err != nil {
		return err
	}
	nc, err := d.Connect("strata-members")
	if err != nil {
		return err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	members, err := global.RequestMembers(rctx, nc, global.MembersRequest{Op: op, ID: *id, Addr: *addr})
	if err != nil {
		return fmt.Errorf("members %s on %s: %w", op, *natsURL, err)
	}
	for _, p := range members {
		fmt.Fprintf(stdout, "%s\t%s\n", p.ID, p.Addr)
	}
	return nil
}
