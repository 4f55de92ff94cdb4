package topology

import (
	"strings"
	"time"
)

// Evaluator is an external evaluator: a process that speaks the trainer
// protocol (docs/trainer-protocol.md) and scores model versions for the
// global tier instead of the task's own evaluation — the per-round gate on
// its held-out set and the report on its final set — so that a job whose
// model exists only in another language can be gated and reported. Each
// node of the global tier starts its own. What it reports is what the
// ledger records, so it is part of the job's plan and of its config hash.
type Evaluator struct {
	// Command is the program and its arguments, taken as they are (no
	// shell, no splitting); a relative path is resolved from the global
	// node's working directory. Required.
	Command []string `yaml:"command"`
	// Timeout bounds one evaluation, the process's start-up included; an
	// evaluator that does not answer in time is killed and the round's
	// evaluation fails. Default 2m. It is left out of the config hash, so
	// that a job stopped by a slow evaluator resumes with a longer one.
	Timeout Duration `yaml:"timeout,omitempty"`
}

// applyEvaluatorDefaults fills the evaluator's zero fields, if it has one.
func (t *Topology) applyEvaluatorDefaults() {
	if e := t.Task.Evaluator; e != nil && e.Timeout.Duration == 0 {
		e.Timeout.Duration = 2 * time.Minute
	}
}

// cloneEvaluator deep-copies the evaluator into c.
func (t *Topology) cloneEvaluator(c *Topology) {
	if e := t.Task.Evaluator; e != nil {
		ce := *e
		ce.Command = append([]string(nil), e.Command...)
		c.Task.Evaluator = &ce
	}
}

func (t *Topology) validateEvaluator(bad func(field, format string, args ...any)) {
	e := t.Task.Evaluator
	if e == nil {
		return
	}
	switch {
	case len(e.Command) == 0:
		bad("task.evaluator.command", "empty: name the evaluator's program and its arguments, e.g. [python3, clients/python/torch_trainer.py]")
	case strings.TrimSpace(e.Command[0]) == "":
		bad("task.evaluator.command[0]", "%q: name the program to start", e.Command[0])
	}
	if e.Timeout.Duration < 0 {
		bad("task.evaluator.timeout", "%v: must be positive, e.g. 2m (0 means 2m)", e.Timeout)
	}
}

// withoutOperational returns t, or a copy without the settings that only
// operate the job (the evaluator's timeout, round.resume), for the config
// hash.
func (t *Topology) withoutOperational() *Topology {
	if t.Task.Evaluator == nil && t.Round.Resume == nil {
		return t
	}
	c := t.Clone()
	if c.Task.Evaluator != nil {
		c.Task.Evaluator.Timeout = Duration{}
	}
	c.Round.Resume = nil
	return c
}
