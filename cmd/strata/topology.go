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
		return fmt.Errorf("%w: strata topology default [TASK] | validate FILE", errUsage)
	}
	switch args[0] {
	case "default":
		if len(args) > 2 {
			return fmt.Errorf("%w: strata topology default [TASK]", errUsage)
		}
		name := ""
		if len(args) == 2 {
			name = args[1]
		}
		t, err := topology.DefaultFor(name)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		opts, err := builtin.Options(t)
		if err != nil {
			return err
		}
		t.Task.Options = opts // the task's settings spelled out, to edit
		b, err := t.YAML()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# The built-in topology of `strata up --task %s`. Save it, edit it, and run\n# `strata up --topology FILE`.\n", t.Task.Name)
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
