// Package builtin chooses a job's task by the name its topology gives:
// the one place that knows every built-in task, so that nothing outside
// task/… imports a particular model.
package builtin

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/lm"
	"github.com/strata-fl/strata/task/mnist"
	"github.com/strata-fl/strata/topology"
)

// ErrUnknownTask reports a task name no built-in task has.
var ErrUnknownTask = errors.New("task: unknown task")

// ErrNoText reports audit.secrets on a task whose clients hold no text.
var ErrNoText = errors.New("task: the task's clients hold no text")

// Names lists the built-in tasks.
func Names() []string {
	n := []string{mnist.Name, lm.Name}
	sort.Strings(n)
	return n
}

// Clients returns the ids of the topology's clients that hold data, in the
// order tasks deal their data: every region's clients in turn. Audit
// canaries hold none.
func Clients(t *topology.Topology) []string {
	var ids []string
	for _, r := range t.Regions {
		for i := 0; i < r.Clients; i++ {
			ids = append(ids, topology.ClientID(r.ID, i))
		}
	}
	return ids
}

// Validate checks the topology's task section without loading any data:
// the name is a built-in task and its settings are valid for the job.
func Validate(t *topology.Topology) error {
	switch t.Task.Name {
	case mnist.Name, "":
		_, err := mnist.ParseConfig(t.Task.Options, t.Population())
		return err
	case lm.Name:
		_, err := lm.ParseConfig(t.Task.Options)
		return err
	}
	return fmt.Errorf("%w: task.name %q: use one of %v", ErrUnknownTask, t.Task.Name, Names())
}

// Options returns the task section's settings with every default spelled
// out, for `strata topology default`.
func Options(t *topology.Topology) (map[string]any, error) {
	switch t.Task.Name {
	case mnist.Name, "":
		c, err := mnist.ParseConfig(t.Task.Options, t.Population())
		if err != nil {
			return nil, err
		}
		return c.Options(), nil
	case lm.Name:
		c, err := lm.ParseConfig(t.Task.Options)
		if err != nil {
			return nil, err
		}
		return c.Options(), nil
	}
	return nil, fmt.Errorf("%w: task.name %q: use one of %v", ErrUnknownTask, t.Task.Name, Names())
}

// Spec is what preparing a task needs besides the topology.
type Spec struct {
	// CacheDir keeps what the task prepares once (its pre-trained
	// checkpoint); empty keeps nothing.
	CacheDir string
	// Logf receives one-line progress messages; nil drops them.
	Logf func(string, ...any)
}

// Prepare prepares the topology's task. Every role of a job calls it with
// the same topology and gets the same task (deterministic from its seed).
// With audit.secrets, the Secret-Sharer secrets are planted in their
// holders' data (task.TextHolder) before anyone trains.
func Prepare(ctx context.Context, t *topology.Topology, s Spec) (task.Task, error) {
	tk, err := prepare(ctx, t, s)
	if err != nil || t.Audit.Secrets == 0 {
		return tk, err
	}
	return tk, PlantSecrets(tk, t)
}

// PlantSecrets writes each inserted secret's line into its holders' text.
func PlantSecrets(tk task.Task, t *topology.Topology) error {
	th, ok := tk.(task.TextHolder)
	if !ok {
		return fmt.Errorf("%w: audit.secrets: task %q holds no text to plant secrets in: use the lm task, or drop audit.secrets", ErrNoText, tk.Name())
	}
	holders, err := t.SecretHolders()
	if err != nil {
		return err
	}
	inserted, _ := t.SecretValues()
	for i, ids := range holders {
		for _, id := range ids {
			if err := th.InsertText(id, topology.SecretLine(inserted[i]), t.Audit.SecretPlan().Repeats); err != nil {
				return fmt.Errorf("audit.secrets: %w", err)
			}
		}
	}
	return nil
}

func prepare(ctx context.Context, t *topology.Topology, s Spec) (task.Task, error) {
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
	switch t.Task.Name {
	case mnist.Name, "":
		c, err := mnist.ParseConfig(t.Task.Options, t.Population())
		if err != nil {
			return nil, err
		}
		return mnist.Prepare(ctx, mnist.Spec{Config: c, Clients: Clients(t), Seed: t.Seed, CacheDir: s.CacheDir, Logf: s.Logf})
	case lm.Name:
		c, err := lm.ParseConfig(t.Task.Options)
		if err != nil {
			return nil, err
		}
		return lm.Prepare(ctx, lm.Spec{Config: c, Clients: Clients(t), Seed: t.Seed, CacheDir: s.CacheDir, Logf: s.Logf})
	}
	return nil, fmt.Errorf("%w: task.name %q: use one of %v", ErrUnknownTask, t.Task.Name, Names())
}

// Dim returns the length of θ of the topology's task without preparing it
// (no data loaded, nothing trained), for planning (`strata check`).
func Dim(t *topology.Topology) (int, error) {
	switch t.Task.Name {
	case mnist.Name, "":
		c, err := mnist.ParseConfig(t.Task.Options, t.Population())
		if err != nil {
			return 0, err
		}
		return (&mnist.Model{Hidden: c.Hidden, Full: c.Full}).Dim(), nil
	case lm.Name:
		c, err := lm.ParseConfig(t.Task.Options)
		if err != nil {
			return 0, err
		}
		return c.Dim(), nil
	}
	return 0, fmt.Errorf("%w: task.name %q: use one of %v", ErrUnknownTask, t.Task.Name, Names())
}
