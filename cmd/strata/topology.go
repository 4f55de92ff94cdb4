package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

func runTopology(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: strata topology default | validate FILE", errUsage)
	}
	switch args[0] {
	case "default":
		t := topology.Default()
		opts, err := builtin.Options(t)
		if err != nil {
			return err
		}
		t.Task.Options = opts // the task's settings spelled out, to edit
		b, err := t.YAML()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "# The built-in default topology of `strata up`. Save it, edit it, and run\n# `strata up --topology FILE`.")
		_, err = stdout.Write(b)
		return err
	case "validate":
		fs := flag.NewFlagSet("topology validate", flag.ContinueOnError)
		fs.SetOutput(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: strata topology validate FILE", errUsage)
		}
		t, err := loadTopology(fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: valid: job %s, %d clients in %d regions\n", fs.Arg(0), t.Job, t.Population(), len(t.Regions))
		return nil
	}
	return fmt.Errorf("%w: unknown topology command %q (use default or validate)", errUsage, args[0])
}
