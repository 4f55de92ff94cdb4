package netlab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"
)

// Op is what one scheduled event does.
type Op string

// The operations of a schedule.
const (
	OpCut     Op = "cut"     // cut A from B
	OpIsolate Op = "isolate" // isolate A
	OpDegrade Op = "degrade" // degrade A by Delay, Jitter, Loss
	OpHeal    Op = "heal"    // heal A (and B if set); neither: heal all
)

// Event is one fault at a time after the schedule starts.
type Event struct {
	At     time.Duration
	Op     Op
	A, B   string
	Delay  time.Duration
	Jitter time.Duration
	Loss   float64
}

func (e Event) String() string {
	switch e.Op {
	case OpCut:
		return fmt.Sprintf("+%v cut %s|%s", e.At, e.A, e.B)
	case OpIsolate:
		return fmt.Sprintf("+%v isolate %s", e.At, e.A)
	case OpDegrade:
		return fmt.Sprintf("+%v degrade %s delay %v jitter %v loss %.3f", e.At, e.A, e.Delay, e.Jitter, e.Loss)
	}
	if e.A == "" {
		return fmt.Sprintf("+%v heal all", e.At)
	}
	return strings.TrimSpace(fmt.Sprintf("+%v heal %s %s", e.At, e.A, e.B))
}

// Schedule draws a reproducible fault sequence: the same Schedule always
// yields the same Events. Each fault is followed by a heal of everything,
// so faults do not pile up and every fault starts from a whole network.
type Schedule struct {
	// Seed picks the sequence; log it so a failure can be replayed.
	Seed uint64
	// Hosts are the hosts faults may hit; required.
	Hosts []string
	// Faults is how many faults to draw; default 5.
	Faults int
	// MinGap and MaxGap bound the time between two events (a fault and its
	// heal, or a heal and the next fault); defaults 1s and 5s.
	MinGap, MaxGap time.Duration
	// Ops are the faults to draw from; default cut, isolate and degrade.
	Ops []Op
	// MaxDelay and MaxLoss bound a degrade; defaults 100ms and 0.2.
	MaxDelay time.Duration
	MaxLoss  float64
}

// Validate reports a schedule that cannot be drawn.
func (s Schedule) Validate() error {
	switch {
	case len(s.Hosts) == 0:
		return fmt.Errorf("netlab: Schedule.Hosts is empty")
	case s.MinGap < 0 || s.MaxGap < s.MinGap:
		return fmt.Errorf("netlab: Schedule.MinGap %v, MaxGap %v: want 0 ≤ MinGap ≤ MaxGap", s.MinGap, s.MaxGap)
	case s.MaxLoss < 0 || s.MaxLoss > 1:
		return fmt.Errorf("netlab: Schedule.MaxLoss %v: want 0..1", s.MaxLoss)
	}
	for _, op := range s.Ops {
		if op == OpCut && len(s.Hosts) < 2 {
			return fmt.Errorf("netlab: Schedule.Ops has cut but Schedule.Hosts has %d host", len(s.Hosts))
		}
		if op != OpCut && op != OpIsolate && op != OpDegrade {
			return fmt.Errorf("netlab: Schedule.Ops: %q is not a fault (cut, isolate, degrade)", op)
		}
	}
	return nil
}

func (s Schedule) withDefaults() Schedule {
	if s.Faults == 0 {
		s.Faults = 5
	}
	if s.MinGap == 0 && s.MaxGap == 0 {
		s.MinGap, s.MaxGap = time.Second, 5*time.Second
	}
	if len(s.Ops) == 0 {
		s.Ops = []Op{OpIsolate, OpDegrade}
		if len(s.Hosts) >= 2 {
			s.Ops = []Op{OpCut, OpIsolate, OpDegrade}
		}
	}
	if s.MaxDelay == 0 {
		s.MaxDelay = 100 * time.Millisecond
	}
	if s.MaxLoss == 0 {
		s.MaxLoss = 0.2
	}
	return s
}

// Events draws the sequence. Times are in milliseconds so that a printed
// schedule reads back exactly.
func (s Schedule) Events() ([]Event, error) {
	s = s.withDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x6e65746c6162)) // "netlab"
	gap := func() time.Duration {
		lo, hi := s.MinGap.Milliseconds(), s.MaxGap.Milliseconds()
		return time.Duration(lo+rng.Int64N(hi-lo+1)) * time.Millisecond
	}
	var evs []Event
	var at time.Duration
	for range s.Faults {
		at += gap()
		e := Event{At: at, Op: s.Ops[rng.IntN(len(s.Ops))], A: s.Hosts[rng.IntN(len(s.Hosts))]}
		switch e.Op {
		case OpCut:
			for e.B == "" || e.B == e.A {
				e.B = s.Hosts[rng.IntN(len(s.Hosts))]
			}
		case OpDegrade:
			e.Delay = time.Duration(rng.Int64N(s.MaxDelay.Milliseconds()+1)) * time.Millisecond
			e.Jitter = e.Delay / 10
			e.Loss = float64(rng.IntN(int(s.MaxLoss*1000)+1)) / 1000
		}
		evs = append(evs, e)
		at += gap()
		evs = append(evs, Event{At: at, Op: OpHeal})
	}
	return evs, nil
}

// SeedFromEnv returns STRATA_FAULT_SEED if set (to replay a logged run),
// else def.
func SeedFromEnv(def uint64) (uint64, error) {
	v := os.Getenv("STRATA_FAULT_SEED")
	if v == "" {
		return def, nil
	}
	s, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("netlab: STRATA_FAULT_SEED=%q: %w", v, err)
	}
	return s, nil
}

// Apply performs one event now.
func (l *Lab) Apply(e Event) error {
	switch e.Op {
	case OpCut:
		return l.Cut(e.A, e.B)
	case OpIsolate:
		return l.Isolate(e.A)
	case OpDegrade:
		return l.Degrade(e.A, e.Delay, e.Jitter, e.Loss)
	case OpHeal:
		var hs []string
		for _, h := range []string{e.A, e.B} {
			if h != "" {
				hs = append(hs, h)
			}
		}
		return l.Heal(hs...)
	}
	return fmt.Errorf("netlab: unknown op %q", e.Op)
}

// Play applies events at their times, measured from the call, logging each
// through the lab's test; it returns when the last is applied, when ctx
// ends (with ctx's error), or at the first event that fails. A degrade
// whose delay cannot be had here (ErrNoDelay) is applied as its loss alone
// and logged.
func (l *Lab) Play(ctx context.Context, events []Event) error {
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for _, e := range events {
		timer.Reset(time.Until(start.Add(e.At)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		note := ""
		err := l.Apply(e)
		if e.Op == OpDegrade && errors.Is(err, ErrNoDelay) {
			note = " (no way to delay here: the loss only)"
			err = l.Degrade(e.A, 0, 0, e.Loss)
		}
		if err != nil {
			return fmt.Errorf("netlab: %v: %w", e, err)
		}
		l.log("netlab: %v%s", e, note)
	}
	return nil
}
