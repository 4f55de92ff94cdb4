package global

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// ErrBudgetExhausted reports that the job stopped because its next round
// would exceed the privacy budget.
var ErrBudgetExhausted = errors.New("global: privacy budget exhausted")

// Evaluator scores a model version on held-out data of the clients' domain.
type Evaluator interface {
	Evaluate(theta []float64) (accuracy, loss float64, err error)
}

// RoundReport is what the coordinator tells its Progress callback after
// each round.
type RoundReport struct {
	Round        uint64
	Committed    int // rounds that released a model so far
	Planned      int
	Participants int
	Regions      int
	Accuracy     float64
	Loss         float64
	Epsilon      ledger.PerObserver[float64]
	Noise        ledger.Noise // multipliers used this round (paced or planned)
	ClipNorm     float64
	Retired      int    // clients that left the population for budget before this round
	GateFailed   string // why the round's model was not promoted, if it was not
	Aborted      string
}

// CoordinatorConfig configures the round coordinator.
type CoordinatorConfig struct {
	Topology *topology.Topology
	Node     *Node
	Conn     *nats.Conn
	Models   *mesh.ModelStore
	// Initial is θ of model version 0 (the pre-trained starting point).
	Initial   []float64
	Evaluator Evaluator
	// Rand is the source of sampling draws and global noise; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// ConfigHash identifies the topology; a data dir holding another job's
	// ledger refuses to start.
	ConfigHash string
	// PartialGrace is how long after a round's deadline partials are still
	// accepted; default 5s.
	PartialGrace time.Duration
	// AckTimeout bounds how long a region has to acknowledge a round;
	// default 5s. A region that does not is left out of the round.
	AckTimeout time.Duration
	Progress   func(RoundReport)
	Logger     *slog.Logger
	// Identities are the public keys enrolled at the start of the job
	// (clients, regions, global nodes; from `strata certs` or the
	// standalone mesh). A job with security.signed on samples only clients
	// with a key and merges only partials signed by their region's key.
	Identities []identity.Entry
}

// Coordinator runs the job's rounds on the raft leader.
type Coordinator struct {
	cfg      CoordinatorConfig
	top      *topology.Topology
	noise    *privacy.Gaussian
	partials chan *nats.Msg
	theta    []float64
	velocity []float64
	version  uint64  // the model version theta holds (the serving one)
	baseAcc  float64 // evaluation accuracy of the checkpoint (v0)
	gate     *canaryGate
	// rejectedPartials counts partials refused by reason (e.g. bad_signature).
	rejectedPartials map[string]int
}

// NewCoordinator checks the configuration.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	switch {
	case cfg.Topology == nil, cfg.Node == nil, cfg.Conn == nil, cfg.Models == nil, cfg.Evaluator == nil:
		return nil, errors.New("global: CoordinatorConfig needs Topology, Node, Conn, Models and Evaluator")
	case len(cfg.Initial) == 0:
		return nil, errors.New("global: CoordinatorConfig.Initial (model version 0) is empty")
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.PartialGrace == 0 {
		cfg.PartialGrace = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Coordinator{cfg: cfg, top: cfg.Topology, noise: privacy.NewGaussian(cfg.Rand), rejectedPartials: map[string]int{}}, nil
}

// Run drives the job to its end: it resumes from the ledger, runs the
// remaining rounds, and finishes the job. It returns nil when the job is
// finished (now or before).
func (c *Coordinator) Run(ctx context.Context) error {
	subj, err := mesh.PartialWildcard(c.top.Job)
	if err != nil {
		return err
	}
	c.partials = make(chan *nats.Msg, 4*len(c.top.Regions)+16)
	sub, err := c.cfg.Conn.ChanSubscribe(subj, c.partials)
	if err != nil {
		return fmt.Errorf("global: subscribe %s: %w", subj, err)
	}
	defer sub.Unsubscribe()
	if err := c.startOrResume(ctx); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var finished bool
		var committed int
		c.cfg.Node.Read(func(l *ledger.Ledger) { finished, committed = l.Finished, l.CommittedRounds() })
		if finished {
			return c.announceDone("finished")
		}
		if committed >= c.top.Train.Rounds {
			return c.finish(ctx, "completed planned rounds")
		}
		if reason := c.converged(); reason != "" {
			return c.finishEarly(ctx, reason)
		}
		if alive := c.liveRegions(); alive < c.top.Privacy.MinRegions {
			// Opening a round charges its cost: never open one that cannot
			// be released.
			c.cfg.Logger.Warn("waiting for regions before opening a round", "alive", alive, "required", c.top.Privacy.MinRegions)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if err := c.runRound(ctx); err != nil {
			if errors.Is(err, ErrBudgetExhausted) {
				if ferr := c.finish(ctx, err.Error()); ferr != nil {
					return ferr
				}
			}
			return err
		}
	}
}

// liveRegions counts the regions that answer a ping.
func (c *Coordinator) liveRegions() int {
	alive := 0
	for _, r := range c.top.Regions {
		subj, err := mesh.PingSubject(c.top.Job, r.ID)
		if err != nil {
			continue
		}
		if _, err := c.cfg.Conn.Request(subj, nil, time.Second); err == nil {
			alive++
		}
	}
	return alive
}

func (c *Coordinator) startOrResume(ctx context.Context) error {
	t := c.top
	res, err := c.cfg.Node.Apply(ctx, &ledger.StartJob{Job: ledger.Job{
		Name: t.Job, ConfigHash: c.cfg.ConfigHash, Delta: t.Privacy.Delta, Budget: t.Privacy.Budget,
		Population: t.Population(), PlannedRounds: t.Train.Rounds, Accountant: t.Privacy.Accountant,
		Orders: privacy.Orders(), StartedUnixMs: time.Now().UnixMilli(), Signed: t.Security.Signed(),
	}})
	if err != nil {
		return err
	}
	if res.Err != nil {
		if errors.Is(res.Err, ledger.ErrJobExists) {
			return fmt.Errorf("%w: a data dir holds one job's ledger for good; use another --data for a changed topology", res.Err)
		}
		return res.Err
	}
	if err := c.enrollTopology(ctx); err != nil {
		return err
	}
	var open ledger.RoundEntry
	var isOpen bool
	c.cfg.Node.Read(func(l *ledger.Ledger) { open, isOpen = l.OpenRoundEntry() })
	if isOpen {
		// The round's spend is already recorded and stays: abort it rather
		// than guess what its clients and regions did.
		c.cfg.Logger.Warn("aborting round left open by a previous coordinator", "round", open.Round)
		if _, err := c.cfg.Node.Apply(ctx, &ledger.AbortRound{Round: open.Round, Reason: "coordinator restarted mid-round; spend kept"}); err != nil {
			return err
		}
	}
	initial := roundTo32(append([]float64(nil), c.cfg.Initial...))
	if _, err := c.cfg.Models.Put(ctx, "model", 0, wire.AppendFloat64sAs32(nil, initial)); err != nil {
		return err
	}
	if c.baseAcc, _, err = c.cfg.Evaluator.Evaluate(initial); err != nil {
		return fmt.Errorf("global: evaluate the checkpoint: %w", err)
	}
	return c.loadServing(ctx)
}

// loadServing loads the serving model version (and its optimizer state)
// from the model store, verifying its hash against the ledger.
func (c *Coordinator) loadServing(ctx context.Context) error {
	var version uint64
	var hash string
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		version = l.ServingVersion()
		if m, ok := l.ServingModel(); ok {
			hash = m.Hash
		}
	})
	c.version = version
	if version == 0 {
		c.theta = roundTo32(append([]float64(nil), c.cfg.Initial...))
		c.velocity = make([]float64, len(c.theta))
		return nil
	}
	blob, err := c.cfg.Models.Get(ctx, "model", version, hash)
	if err != nil {
		return fmt.Errorf("global: resuming from model v%d: %w", version, err)
	}
	if c.theta, err = decode64(blob, len(c.cfg.Initial)); err != nil {
		return fmt.Errorf("global: model v%d: %w", version, err)
	}
	c.velocity = make([]float64, len(c.theta))
	if vb, err := c.cfg.Models.Get(ctx, "opt", version, ""); err == nil {
		if v, err := decode64(vb, len(c.theta)); err == nil {
			c.velocity = v
		}
	}
	return nil
}

func decode64(b []byte, dim int) ([]float64, error) {
	v, err := wire.Float32s(b)
	if err != nil {
		return nil, err
	}
	if len(v) != dim {
		return nil, fmt.Errorf("has %d parameters, the model needs %d", len(v), dim)
	}
	out := make([]float64, dim)
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

func roundTo32(v []float64) []float64 {
	for i, x := range v {
		v[i] = float64(float32(x))
	}
	return v
}

func (c *Coordinator) runRound(ctx context.Context) error {
	t := c.top
	var spent Spent
	var round, version uint64
	var hash string
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		spent = spentFrom(l)
		round, version = l.NextRound(), l.ServingVersion()
		if m, ok := l.ServingModel(); ok {
			hash = m.Hash
		}
	})
	if version != c.version {
		// A rollback moved the serving version.
		if err := c.loadServing(ctx); err != nil {
			return err
		}
	}
	if version == 0 {
		hash = mesh.Hash(wire.AppendFloat64sAs32(nil, c.theta))
	}
	plan, err := c.planRound(spent, round)
	if err != nil {
		return err
	}
	cost, err := roundCost(Mechanisms(t, plan.cost), plan.cost, spent, t.Privacy.Delta, 1)
	if err != nil {
		return err
	}
	if t.Privacy.Pacing.Patience > 0 {
		// A job that may stop on its outputs is charged its whole planned
		// run (finishEarly): the budget must hold for all of it.
		whole, _, err := c.remainingCost()
		if err != nil {
			return err
		}
		if whole.EpsilonAfter.Public > t.Privacy.Budget {
			return fmt.Errorf("%w: with early stopping the ledger charges the planned run, and its remaining rounds from %d would bring public ε to %.4g, over the budget %.4g", ErrBudgetExhausted, round, whole.EpsilonAfter.Public, t.Privacy.Budget)
		}
	}
	if cost.EpsilonAfter.Public > t.Privacy.Budget {
		var spentEps float64
		c.cfg.Node.Read(func(l *ledger.Ledger) { spentEps = l.Spent(ledger.Public) })
		return fmt.Errorf("%w: round %d would bring public ε to %.4g, over the budget %.4g (spent so far %.4g); nothing of round %d was released", ErrBudgetExhausted, round, cost.EpsilonAfter.Public, t.Privacy.Budget, spentEps, round)
	}
	pop, err := c.choosePopulation(cost)
	if err != nil {
		return err
	}
	if len(pop.eligible) == 0 {
		return fmt.Errorf("%w: no client can take part in round %d without exceeding its budget", ErrBudgetExhausted, round)
	}
	sampled, all, err := c.sample(pop.eligible)
	if err != nil {
		return err
	}
	total := len(all)
	plan.eligible = len(pop.eligible)
	saPlans, saRecord := c.secAggPlans(sampled)
	opened := time.Now()
	// Write-ahead: the round's cost is committed before anything is published.
	res, err := c.cfg.Node.Apply(ctx, &ledger.OpenRound{
		Round: round, ModelVersion: version, Sampled: total, Q: t.Privacy.SamplingRate, ClipNorm: plan.cost.Clip,
		Noise: ledger.Noise(plan.cost.Noise), Sigma: cost.Sigma, RDP: cost.RDP, EpsilonAfter: cost.EpsilonAfter, OpenedUnixMs: opened.UnixMilli(),
		Eligible: plan.eligible, SampledClients: all, Retire: pop.retire, SecAgg: saRecord,
		Slack: cost.Slack, DeltaCharge: cost.Delta, FellowExposed: t.SecAgg.On,
	})
	if err != nil {
		return err
	}
	if res.Err != nil {
		if errors.Is(res.Err, ledger.ErrBudget) {
			return fmt.Errorf("%w: %w", ErrBudgetExhausted, res.Err)
		}
		return res.Err
	}
	deadline := opened.Add(t.Round.Timeout.Duration)
	acked := map[string]bool{}
	for _, r := range t.Regions {
		ok, err := c.publishOpen(round, version, hash, r.ID, sampled[r.ID], deadline, plan, saPlans[r.ID])
		if err != nil {
			return err
		}
		if ok {
			acked[r.ID] = true
		}
	}
	parts, err := c.collect(ctx, round, deadline.Add(c.cfg.PartialGrace), acked)
	if err != nil {
		return err
	}
	report := RoundReport{Round: round, Planned: t.Train.Rounds, Epsilon: cost.EpsilonAfter, Regions: len(parts), Noise: ledger.Noise(plan.cost.Noise), ClipNorm: plan.cost.Clip, Retired: len(pop.retire)}
	if len(parts) < t.Privacy.MinRegions {
		reason := fmt.Sprintf("only %d of %d regions reported, %d required", len(parts), len(t.Regions), t.Privacy.MinRegions)
		if _, err := c.cfg.Node.Apply(ctx, &ledger.AbortRound{Round: round, Reason: reason}); err != nil {
			return err
		}
		report.Aborted = reason
		c.progress(report)
		return nil
	}
	var latest uint64
	servingAcc := c.baseAcc
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		latest = l.LatestVersion()
		if m, ok := l.ServingModel(); ok {
			servingAcc = m.Accuracy
		}
	})
	prevTheta, prevVel := append([]float64(nil), c.theta...), append([]float64(nil), c.velocity...)
	acc, loss, participants, regions, newHash, err := c.merge(ctx, latest+1, parts, plan)
	if err != nil {
		return err
	}
	// Canaries never count as participants. Partials carry only counts, so
	// every sampled canary of a reporting region is subtracted: its update
	// needs no training and is normally in; one that missed the deadline
	// makes the count of real participants low by one, never high.
	participants = max(0, participants-c.sampledCanaries(sampled, regions))
	promoted, gateReason := true, ""
	if drop := servingAcc - acc; drop > t.Train.GateMaxDrop {
		gateReason = fmt.Sprintf("evaluation accuracy %.4f is %.4f below the serving v%d's %.4f (gate allows %.4f)", acc, drop, version, servingAcc, t.Train.GateMaxDrop)
	} else if gateReason, err = c.canaryGateReason(ctx, prevTheta); err != nil {
		return err
	}
	if gateReason != "" {
		promoted = false
		c.theta, c.velocity = prevTheta, prevVel
	} else {
		c.version = latest + 1
	}
	var nextClip float64
	if ac := t.Privacy.AdaptiveClip; ac.Enabled {
		bits := 0.0
		for _, p := range parts {
			bits += p.BitSum
		}
		nextClip = NextClip(plan.cost.Clip, bits, t.Privacy.SamplingRate*float64(plan.eligible), ac.Quantile, ac.LearningRate)
	}
	res, err = c.cfg.Node.Apply(ctx, &ledger.CommitModel{Round: round, Version: latest + 1, Hash: newHash, Accuracy: acc, Loss: loss, Participants: participants, Regions: regions, NextClipNorm: nextClip, Promoted: promoted, GateReason: gateReason, Partials: provenance(parts)})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	report.Participants, report.Accuracy, report.Loss, report.GateFailed = participants, acc, loss, gateReason
	c.progress(report)
	return nil
}

func (c *Coordinator) progress(r RoundReport) {
	c.cfg.Node.Read(func(l *ledger.Ledger) { r.Committed = l.CommittedRounds() })
	c.cfg.Logger.Info("round done", "round", r.Round, "participants", r.Participants, "accuracy", r.Accuracy, "epsilon", r.Epsilon.Public, "aborted", r.Aborted)
	if c.cfg.Progress != nil {
		c.cfg.Progress(r)
	}
}

// publishOpen announces the round to a region and, once the region has
// acknowledged it, invites each of the region's sampled clients on its own
// subject. It reports whether the region acknowledged; a region that did
// not is left out of the round.
func (c *Coordinator) publishOpen(round, version uint64, hash, region string, sampled []string, deadline time.Time, plan roundPlan, sa *wire.SecAggPlan) (bool, error) {
	msg := wire.RoundOpen{
		Job: c.top.Job, Round: round, Region: region, ModelVersion: version, ModelHash: hash,
		Dim: len(c.theta), ClipNorm: plan.cost.Clip, EdgeNoise: plan.cost.Noise.Edge, RegionalNoise: plan.cost.Noise.Regional,
		DeadlineUnixMs: deadline.UnixMilli(), Sampled: sampled,
		ClipBits: c.top.Privacy.AdaptiveClip.Enabled, BitNoise: c.top.Privacy.AdaptiveClip.BitNoise,
		Signed: c.top.Security.Signed(), SecAgg: sa,
		Lattice: plan.lattice, Encoding: updateEncoding(c.top, plan.cost.Noise),
	}
	for _, cp := range plan.cost.Caps {
		if cp.Region == region {
			msg.TopUpCap = cp.Cap
		}
	}
	c.cfg.Node.Read(func(l *ledger.Ledger) { msg.Registry = l.RegistryVersion })
	b, err := wire.Encode(wire.TypeRoundOpen, &msg)
	if err != nil {
		return false, err
	}
	subj, err := mesh.RoundSubject(c.top.Job, region)
	if err != nil {
		return false, err
	}
	// The region must hold the round before its clients hear of it;
	// otherwise a fast client's update could reach the region first.
	if _, err := c.cfg.Conn.Request(subj, b, c.cfg.AckTimeout); err != nil {
		c.cfg.Logger.Warn("region did not acknowledge round", "region", region, "round", round, "err", err)
		return false, nil
	}
	invite := msg
	invite.Registry = 0
	if sa == nil {
		// A client needs no one else's id: the invitation is the same for
		// every sampled client and names none. Under secure aggregation the
		// session needs its members (the ledger accounts what fellow
		// clients then learn).
		invite.Sampled = nil
	}
	ib, err := wire.Encode(wire.TypeRoundOpen, &invite)
	if err != nil {
		return false, err
	}
	for _, id := range sampled {
		isubj, err := mesh.InviteSubject(c.top.Job, region, id)
		if err != nil {
			return false, err
		}
		if err := c.cfg.Conn.Publish(isubj, ib); err != nil {
			return false, fmt.Errorf("global: invite %s to round %d: %w", id, round, err)
		}
	}
	return true, nil
}

// collect gathers one partial per region for the round until all regions
// reported or the deadline passed. Partials of other rounds or jobs,
// duplicates and malformed ones are dropped and logged.
func (c *Coordinator) collect(ctx context.Context, round uint64, deadline time.Time, expected map[string]bool) (map[string]*wire.Partial, error) {
	parts := map[string]*wire.Partial{}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	known := map[string]bool{}
	for _, r := range c.top.Regions {
		known[r.ID] = true
	}
	chunks := map[string]*partialAssembly{}
	for len(parts) < len(expected) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return parts, nil
		case m := <-c.partials:
			var p wire.Partial
			if t, _ := wire.Peek(m.Data); t == wire.TypePartialChunk {
				h, data, err := wire.DecodePartialChunk(m.Data)
				if err != nil || h.Job != c.top.Job || h.Round != round || !expected[h.Region] || parts[h.Region] != nil {
					continue // malformed, stale, unexpected or already complete
				}
				a := chunks[h.Region]
				if a == nil {
					a = &partialAssembly{}
					chunks[h.Region] = a
				}
				full, err := a.add(h, data, len(c.theta))
				if err != nil {
					c.cfg.Logger.Warn("chunked partial rejected", "region", h.Region, "err", err)
					delete(chunks, h.Region)
					continue
				}
				if full == nil {
					continue
				}
				delete(chunks, h.Region)
				p = *full
			} else if err := wire.Decode(m.Data, wire.TypePartial, &p); err != nil {
				c.cfg.Logger.Warn("partial rejected", "reason", "malformed", "err", err)
				continue
			}
			switch {
			case p.Job != c.top.Job || p.Round != round:
				c.cfg.Logger.Debug("partial for another round dropped", "round", p.Round, "region", p.Region)
			case !known[p.Region]:
				c.cfg.Logger.Warn("partial rejected", "reason", "unknown_region", "region", p.Region)
			case !expected[p.Region]:
				c.cfg.Logger.Warn("partial rejected", "reason", "not_acknowledged", "region", p.Region)
			case parts[p.Region] != nil:
				c.cfg.Logger.Warn("partial rejected", "reason", "duplicate", "region", p.Region)
			case len(p.Sum) != 8*len(c.theta) || p.Count < 0:
				c.cfg.Logger.Warn("partial rejected", "reason", "wrong_dim", "region", p.Region)
			case c.top.Security.Signed() && c.checkPartialSignature(&p) != nil:
				c.cfg.Logger.Warn("partial rejected", "reason", "bad_signature", "region", p.Region, "err", c.checkPartialSignature(&p))
				c.rejectedPartials["bad_signature"]++
			default:
				parts[p.Region] = &p
			}
		}
	}
	return parts, nil
}

// checkPartialSignature verifies a partial against its region's enrolled key.
func (c *Coordinator) checkPartialSignature(p *wire.Partial) error {
	var key string
	var ok bool
	c.cfg.Node.Read(func(l *ledger.Ledger) { key, ok = l.NodeKey(identity.KindRegion, p.Region) })
	if !ok {
		return fmt.Errorf("%w: region %q has no enrolled key", identity.ErrUnknown, p.Region)
	}
	return identity.Verify(key, identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, identity.Digest(p.Sum)), p.Sig)
}

// provenance names the partials merged into a model version.
func provenance(parts map[string]*wire.Partial) []ledger.PartialRef {
	out := make([]ledger.PartialRef, 0, len(parts))
	for id, p := range parts {
		d := identity.Digest(p.Sum)
		out = append(out, ledger.PartialRef{Region: id, Count: p.Count, Digest: hex.EncodeToString(d[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// merge applies the DP-FedAvg server step: the merged noisy sum divided by
// the fixed denominator q·N, server momentum, and a new model version.
func (c *Coordinator) merge(ctx context.Context, version uint64, parts map[string]*wire.Partial, plan roundPlan) (acc, loss float64, participants int, regions []string, hash string, err error) {
	t := c.top
	sum := make([]float64, len(c.theta))
	for id, p := range parts {
		if err := wire.AddFloat64sTo(sum, p.Sum); err != nil {
			return 0, 0, 0, nil, "", fmt.Errorf("global: partial of %s: %w", id, err)
		}
		participants += p.Count
		regions = append(regions, id)
	}
	sort.Strings(regions)
	if sg := plan.cost.Noise.Global * plan.cost.Clip; sg > 0 {
		if err := c.noise.AddTo64On(sum, sg, plan.lattice); err != nil {
			return 0, 0, 0, nil, "", fmt.Errorf("global: noise: %w", err)
		}
	}
	denom := t.Privacy.SamplingRate * float64(plan.eligible)
	mom, lr := t.Train.ServerMomentum, t.Train.ServerLR
	for i := range c.theta {
		avg := sum[i] / denom
		c.velocity[i] = float64(float32(mom*c.velocity[i] + avg))
		c.theta[i] = float64(float32(c.theta[i] + lr*c.velocity[i]))
	}
	for _, x := range c.theta {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, 0, 0, nil, "", errors.New("global: server step produced a non-finite parameter")
		}
	}
	blob := wire.AppendFloat64sAs32(nil, c.theta)
	if hash, err = c.cfg.Models.Put(ctx, "model", version, blob); err != nil {
		return 0, 0, 0, nil, "", err
	}
	if _, err = c.cfg.Models.Put(ctx, "opt", version, wire.AppendFloat64sAs32(nil, c.velocity)); err != nil {
		return 0, 0, 0, nil, "", err
	}
	acc, loss, err = c.cfg.Evaluator.Evaluate(c.theta)
	if err != nil {
		return 0, 0, 0, nil, "", fmt.Errorf("global: evaluate v%d: %w", version, err)
	}
	return acc, loss, participants, regions, hash, nil
}

// Theta returns a copy of the current model parameters.
func (c *Coordinator) Theta() []float64 { return append([]float64(nil), c.theta...) }

func (c *Coordinator) finish(ctx context.Context, reason string) error {
	return c.finishWith(ctx, &ledger.FinishJob{Reason: reason})
}

// finishEarly ends a job that stopped on its evaluation loss: the planned
// rounds it did not run are charged as the next round would be, so that
// what the ledger reports is ε(T) of the planned run, which early stopping
// only post-processes.
func (c *Coordinator) finishEarly(ctx context.Context, reason string) error {
	planned, err := c.plannedCharge()
	if err != nil {
		return err
	}
	return c.finishWith(ctx, &ledger.FinishJob{Reason: reason, Planned: planned})
}

// remainingCost is the cost of the planned rounds not yet committed, the
// next one among them, as the next round would be planned.
func (c *Coordinator) remainingCost() (RoundCost, int, error) {
	var spent Spent
	var round uint64
	var committed int
	c.cfg.Node.Read(func(l *ledger.Ledger) { spent, round, committed = spentFrom(l), l.NextRound(), l.CommittedRounds() })
	remaining := c.top.Train.Rounds - committed
	if remaining <= 0 {
		return RoundCost{}, 0, nil
	}
	plan, err := c.planRound(spent, round)
	if err != nil {
		return RoundCost{}, 0, err
	}
	rc, err := roundCost(Mechanisms(c.top, plan.cost), plan.cost, spent, c.top.Privacy.Delta, remaining)
	return rc, remaining, err
}

func (c *Coordinator) plannedCharge() (*ledger.PlannedCharge, error) {
	rc, remaining, err := c.remainingCost()
	if err != nil || remaining == 0 {
		return nil, err
	}
	return &ledger.PlannedCharge{Rounds: remaining, RDP: rc.RDP, Slack: rc.Slack, DeltaCharge: rc.Delta, EpsilonAfter: rc.EpsilonAfter}, nil
}

func (c *Coordinator) finishWith(ctx context.Context, cmd *ledger.FinishJob) error {
	res, err := c.cfg.Node.Apply(ctx, cmd)
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	return c.announceDone(cmd.Reason)
}

func (c *Coordinator) announceDone(reason string) error {
	subj, err := mesh.DoneSubject(c.top.Job)
	if err != nil {
		return err
	}
	b, err := wire.Encode(wire.TypeJobDone, &wire.JobDone{Job: c.top.Job, Reason: reason})
	if err != nil {
		return err
	}
	if err := c.cfg.Conn.Publish(subj, b); err != nil {
		return fmt.Errorf("global: publish done: %w", err)
	}
	return c.cfg.Conn.Flush()
}
