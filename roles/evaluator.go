package roles

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/trainerproto"
)

// newExternalEvaluator prepares the topology's external evaluator
// (task.evaluator) for a global node: the process is started on the first
// evaluation and kept (restarted after a failure) until the node closes.
// A task an external trainer can train (task.External) exports what the
// evaluator needs — its test set, which of it is the per-round held-out
// set — into DataDir/evaluator/data; an evaluator of any other task brings
// its own data.
func newExternalEvaluator(cfg GlobalConfig) (*trainerproto.Remote, error) {
	ec := cfg.Topology.Task.Evaluator
	layout := cfg.Task.Layout()
	tensors := make([]trainerproto.Tensor, len(layout))
	for i, l := range layout {
		tensors[i] = trainerproto.Tensor{Name: l.Name, Shape: l.Shape}
	}
	dir := filepath.Join(cfg.DataDir, "evaluator")
	rc := trainerproto.Config{Command: ec.Command, Agent: "strata global " + cfg.ID, Task: cfg.Task.Name(), Layout: tensors,
		StateDir: filepath.Join(dir, "state"), Timeout: ec.Timeout.Duration, Stderr: cfg.EvaluatorStderr,
		Logger: cfg.Logger.With("evaluator", ec.Command)}
	if ext, ok := cfg.Task.(task.External); ok {
		rc.Task, rc.DataDir = ext.Recipe().Task, filepath.Join(dir, "data")
		if err := ext.Export(rc.DataDir, nil); err != nil {
			return nil, fmt.Errorf("external evaluator (task.evaluator): exporting the held-out data: %w", err)
		}
	}
	r, err := trainerproto.NewRemote(rc)
	if err != nil {
		return nil, fmt.Errorf("%w: GlobalConfig.Topology: task.evaluator: %v", ErrConfig, err)
	}
	return r, nil
}

// externalEvaluator scores θ on one of the job's held-out sets in the
// external evaluator process; its metrics are the evaluator's, by the
// names it gives them, the first being the gate's.
type externalEvaluator struct {
	r   *trainerproto.Remote
	set string // trainerproto.SetHeldOut or SetFinal
}

func (e externalEvaluator) Evaluate(ctx context.Context, theta []float64) (task.Evaluation, error) {
	ev, err := e.r.EvaluateSet(ctx, e.set, theta)
	if err != nil {
		return task.Evaluation{}, fmt.Errorf("external evaluator (task.evaluator): %w", err)
	}
	ms, err := ev.Scores() // checked by EvaluateSet: cannot fail here
	if err != nil {
		return task.Evaluation{}, fmt.Errorf("external evaluator (task.evaluator) %s: %w", e.r.Name(), err)
	}
	out := task.Evaluation{Loss: ev.Loss, Metrics: make([]task.Metric, len(ms))}
	for i, m := range ms {
		out.Metrics[i] = task.Metric{Name: m.Name, Value: m.Value, HigherIsBetter: m.HigherIsBetter}
	}
	return out, nil
}
