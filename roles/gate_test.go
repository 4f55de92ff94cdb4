package roles

import (
	"testing"

	"github.com/strata-fl/strata/task"
)

// The gate compares higher-is-better scores, so a perplexity gates
// negated; the ledger records it as the task named it, with every metric.
func TestGateRecordsTheTasksMetrics(t *testing.T) {
	cases := []struct {
		ev         task.Evaluation
		score      float64
		name       string
		value      float64
		recordedAs int
	}{
		{task.Evaluation{Loss: 2.1, Metrics: []task.Metric{{Name: "perplexity", Value: 8.2}, {Name: "top1", Value: 0.4, HigherIsBetter: true}}}, -8.2, "perplexity", 8.2, 2},
		{task.Evaluation{Loss: 0.3, Metrics: []task.Metric{{Name: "accuracy", Value: 0.91, HigherIsBetter: true}}}, 0.91, "accuracy", 0.91, 1},
		{task.Evaluation{Loss: 0.7}, -0.7, "loss", 0.7, 1},
	}
	for _, c := range cases {
		g := gateEvaluation(c.ev)
		name, value := g.Primary()
		if g.Score != c.score || name != c.name || value != c.value || len(g.Metrics) != c.recordedAs || g.Loss != c.ev.Loss {
			t.Errorf("%+v: gate sees score %v, primary %s = %v, %d metrics, loss %v; want %v, %s = %v, %d, %v",
				c.ev, g.Score, name, value, len(g.Metrics), g.Loss, c.score, c.name, c.value, c.recordedAs, c.ev.Loss)
		}
	}
	twice := task.Evaluation{Metrics: []task.Metric{{Name: "a", Value: 1}, {Name: "a", Value: 2}}}
	if err := twice.Validate(); err == nil {
		t.Error("a metric reported twice passed Validate")
	}
}
