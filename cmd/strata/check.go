package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

// errPolicy marks a plan that breaks its policy.
var errPolicy = errors.New("policy check failed")

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	topo := fs.String("topology", "", "topology YAML file (default: $STRATA_TOPOLOGY, else the built-in one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	t, err := loadTopology(*topo)
	if err != nil {
		return err
	}
	return checkPlan(t, stdout)
}

// modelDim is the number of trained parameters of the topology's task.
func modelDim(t *topology.Topology) (int, error) { return builtin.Dim(t) }

// checkPlan prints the projected ε per observer and fails, naming each
// rule, when the plan breaks its policy.
func checkPlan(t *topology.Topology, w io.Writer) error {
	dim, err := modelDim(t)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	p, vs, err := global.Check(t, dim)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "plan %s: %d rounds, q=%g, δ=%g; projected ε at the end of the job:\n", t.Job, p.Rounds, t.Privacy.SamplingRate, p.Delta)
	for _, o := range ledger.Observers {
		fmt.Fprintf(w, "  %-18s ε %-10s (noise multiplier credited %.4g)\n", o, fmtEps(p.Epsilon.Get(o)), p.Sigma.Get(o))
	}
	fmt.Fprintf(w, "  (ε at δ less %.3g charged for the noise sampler's tails%s)\n", p.DeltaCharged, map[bool]string{true: " and the top-up caps", false: ""}[len(p.Caps) > 0])
	if len(p.Caps) > 0 {
		fmt.Fprintf(w, "top-up: each region accepts at most K updates a round and tops its noise up to K clients' edge noise:")
		for _, c := range p.Caps {
			fmt.Fprintf(w, " %s K=%d (of %d)", c.Region, c.Cap, c.Clients)
		}
		fmt.Fprintln(w)
	}
	if n := t.Privacy.Noise; n.Edge > 0 && !t.Privacy.TopUp && !t.SecAgg.On && !t.DataPath.Compressed() {
		fmt.Fprintln(w, "hint: a client adds edge noise only when sampled, so the public's ε pays for participation being visible (the revealed-sampling curve); privacy.top_up: true makes regions top the noise up to a fixed total and credits it (docs/privacy-model.md)")
	}
	if s := t.SecAgg; s.On {
		fmt.Fprintf(w, "secure aggregation: on (Z_2^%d, %g steps per clip norm, dropout %g, corrupt %g): regions see only their survivors' sum; ε against the regional operator is the edge noise's\n", s.Bits, s.Scale, s.Dropout, s.Corrupt)
	}
	if len(vs) == 0 {
		fmt.Fprintln(w, "policy: ok")
		return nil
	}
	for _, v := range vs {
		fmt.Fprintf(w, "policy violated: %s\n", v)
	}
	return fmt.Errorf("%w: %d rule(s) broken, first %s", errPolicy, len(vs), vs[0].Rule)
}
