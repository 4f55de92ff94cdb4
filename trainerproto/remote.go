package trainerproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrSpec reports a trainer spec that is not exec:CMD, unix:PATH or tcp:HOST:PORT.
var ErrSpec = errors.New("trainerproto: bad trainer spec")

// ErrConfig is wrapped by every other error about a Config.
var ErrConfig = errors.New("trainerproto: invalid configuration")

// Local is the local-training recipe sent with every Train request. Zero
// fields are sent as zero: the trainer applies its own defaults.
type Local struct {
	// Epochs is the passes over the client's examples; ≥ 0.
	Epochs int
	// Batch is the minibatch size, in examples; ≥ 0.
	Batch int
	// LR is the learning rate; finite and ≥ 0.
	LR float64
	// PersonalEpochs is the passes for the personal residual
	// (Config.Personal); ≥ 0.
	PersonalEpochs int
}

// Config configures a Remote. Zero fields take the defaults given with
// each.
type Config struct {
	// Spec says how to reach the trainer: "exec:CMD ARGS…" starts CMD
	// (split on spaces, no shell) and speaks over its stdin/stdout;
	// "unix:PATH" and "tcp:HOST:PORT" connect to a trainer already
	// listening. Required unless Command is set.
	Spec string
	// Command, instead of Spec, is the program to start and its arguments,
	// taken as they are (no shell, no splitting on spaces); the process
	// speaks over its stdin/stdout as with "exec:".
	Command []string
	// Agent names this agent in Hello (for the trainer's logs); default
	// empty.
	Agent string
	// Task names the task whose data DataDir holds (e.g.
	// "mnist-adapter"); default empty (the trainer's only task).
	Task string
	// Layout names the tensors θ packs, in order; required, every
	// dimension positive, at most MaxDim values in all.
	Layout []Tensor
	// Personal names tensors of Layout of which each client keeps a private
	// residual (personalisation; docs/trainer-protocol.md); default none.
	Personal []string
	// DataDir and StateDir are told to the trainer in Hello: where the
	// clients' data is and where it may keep state; default empty.
	DataDir  string
	StateDir string
	// Local is the training recipe sent with every call.
	Local Local
	// Seed is mixed with the client and round into each request's seed;
	// default 0.
	Seed uint64
	// Timeout bounds one call (connecting and hello included); default
	// 2m, ≥ 0.
	Timeout time.Duration
	// Procs is how many trainer processes (or connections) serve calls
	// concurrently; default 1, ≥ 0.
	Procs int
	// Stderr receives the trainer process's stderr; nil discards it (its
	// last lines still appear in errors).
	Stderr io.Writer
	// Logger receives the trainer's start-ups; nil is silent.
	Logger *slog.Logger
}

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c Config) Validate() error {
	switch {
	case len(c.Command) > 0 && c.Spec != "":
		return fmt.Errorf("%w: Config.Spec %q and Config.Command %q are both set: give one", ErrSpec, c.Spec, c.Command)
	case len(c.Command) > 0 && strings.TrimSpace(c.Command[0]) == "":
		return fmt.Errorf("%w: Config.Command %q: its first element must name the program", ErrSpec, c.Command)
	case len(c.Command) == 0:
		if _, _, err := parseSpec(c.Spec); err != nil {
			return err
		}
	}
	if len(c.Layout) == 0 {
		return fmt.Errorf("%w: Config.Layout is empty: name the tensors of θ", ErrConfig)
	}
	dim := 0
	for _, t := range c.Layout {
		n := 1
		for _, k := range t.Shape {
			if k <= 0 {
				return fmt.Errorf("%w: Config.Layout: tensor %q has shape %v: want every dimension positive", ErrConfig, t.Name, t.Shape)
			}
			if n *= min(k, MaxDim+1); n > MaxDim {
				break
			}
		}
		if dim += min(n, MaxDim+1); dim > MaxDim {
			return fmt.Errorf("%w: Config.Layout has more than the protocol's %d values (MaxDim)", ErrConfig, MaxDim)
		}
	}
	for _, p := range c.Personal {
		if !slices.ContainsFunc(c.Layout, func(t Tensor) bool { return t.Name == p }) {
			return fmt.Errorf("%w: Config.Personal: tensor %q is not in the layout", ErrConfig, p)
		}
	}
	switch l := c.Local; {
	case l.Epochs < 0:
		return fmt.Errorf("%w: Config.Local.Epochs %d: want ≥ 0", ErrConfig, l.Epochs)
	case l.Batch < 0:
		return fmt.Errorf("%w: Config.Local.Batch %d: want ≥ 0", ErrConfig, l.Batch)
	case !(l.LR >= 0) || math.IsInf(l.LR, 1):
		return fmt.Errorf("%w: Config.Local.LR %v: want finite and ≥ 0", ErrConfig, l.LR)
	case l.PersonalEpochs < 0:
		return fmt.Errorf("%w: Config.Local.PersonalEpochs %d: want ≥ 0", ErrConfig, l.PersonalEpochs)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Config.Timeout %v: want ≥ 0 (0 means 2m)", ErrConfig, c.Timeout)
	case c.Procs < 0:
		return fmt.Errorf("%w: Config.Procs %d: want ≥ 0 (0 means 1)", ErrConfig, c.Procs)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Procs == 0 {
		c.Procs = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Remote runs local training in an external trainer. It implements the
// edge agent's Trainer: each call takes a free session (starting the
// process or connecting on first use), and any failure — crash, timeout,
// protocol error, wrong shape, NaN — ends that session and fails only that
// call; the next call starts afresh.
type Remote struct {
	cfg    Config
	name   string // the spec, or "exec:" and the command, for errors
	dim    int
	slots  chan *session
	mu     sync.Mutex
	live   map[*session]bool
	closed bool
}

// NewRemote checks the configuration (Validate); it starts nothing until
// the first call.
func NewRemote(cfg Config) (*Remote, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Remote{cfg: cfg, name: cfg.Spec, slots: make(chan *session, cfg.Procs), live: map[*session]bool{}}
	if len(cfg.Command) > 0 {
		r.name = "exec:" + strings.Join(cfg.Command, " ")
	}
	for _, t := range cfg.Layout {
		r.dim += t.Size() // Validate bounded it
	}
	for range cfg.Procs {
		r.slots <- nil
	}
	return r, nil
}

func parseSpec(spec string) (kind, target string, err error) {
	kind, target, ok := strings.Cut(spec, ":")
	if !ok || strings.TrimSpace(target) == "" {
		return "", "", fmt.Errorf("%w: Config.Spec %q: want exec:CMD, unix:PATH or tcp:HOST:PORT", ErrSpec, spec)
	}
	switch kind {
	case "exec", "unix", "tcp":
		return kind, target, nil
	}
	return "", "", fmt.Errorf("%w: Config.Spec %q: unknown kind %q (want exec, unix or tcp)", ErrSpec, spec, kind)
}

// Dim returns the length of θ the layout describes.
func (r *Remote) Dim() int { return r.dim }

// Name is how errors name the trainer: its spec, or "exec:" and its
// command.
func (r *Remote) Name() string { return r.name }

// session is one trainer process or connection after a successful hello.
type session struct {
	conn   *Conn
	closer io.Closer
	cmd    *exec.Cmd
	stderr *tail
	ready  Ready
	proto  int // the revision the session speaks: the lower of the two sides'
	once   sync.Once
	exited chan struct{}
	err    error // the process's exit, once exited is closed
}

// kill ends the session: it kills the process or closes the connection,
// which unblocks any read in progress.
func (s *session) kill() {
	s.once.Do(func() {
		s.closer.Close()
		if s.cmd != nil {
			s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Pids returns the process ids of the running exec trainers, so that an
// operator (or a test) can see or signal them.
func (r *Remote) Pids() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for s := range r.live {
		if s.cmd != nil && s.cmd.Process != nil {
			out = append(out, s.cmd.Process.Pid)
		}
	}
	return out
}

func (r *Remote) start(ctx context.Context) (*session, error) {
	kind, target, argv := "exec", "", r.cfg.Command
	if len(argv) == 0 {
		kind, target, _ = parseSpec(r.cfg.Spec)
		argv = strings.Fields(target)
	}
	s := &session{stderr: &tail{max: 2048}, exited: make(chan struct{})}
	switch kind {
	case "exec":
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stderr = s.stderr
		if r.cfg.Stderr != nil {
			cmd.Stderr = io.MultiWriter(s.stderr, r.cfg.Stderr)
		}
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %q: %w", argv, err)
		}
		s.cmd, s.closer, s.conn = cmd, in, NewConn(out, in)
		go func() {
			// Owned by the session: it ends when the process does, and kill
			// waits for it.
			s.err = cmd.Wait()
			close(s.exited)
		}()
	default:
		var d net.Dialer
		nc, err := d.DialContext(ctx, kind, target)
		if err != nil {
			return nil, fmt.Errorf("connect to trainer: %w", err)
		}
		s.closer, s.conn = nc, NewConn(nc, nc)
	}
	r.mu.Lock()
	r.live[s] = true
	r.mu.Unlock()
	stop := context.AfterFunc(ctx, s.kill)
	defer stop()
	err := s.conn.Send(TypeHello, &Hello{Agent: r.cfg.Agent, Task: r.cfg.Task, Layout: r.cfg.Layout, Dim: r.dim,
		Personal: r.cfg.Personal, DataDir: r.cfg.DataDir, StateDir: r.cfg.StateDir, MaxChunk: MaxChunk, Protocol: Protocol})
	if err == nil {
		err = s.conn.Flush()
	}
	if err == nil {
		err = s.conn.Recv(TypeReady, &s.ready)
	}
	if err != nil {
		r.drop(s)
		return nil, fmt.Errorf("hello: %w", r.explain(ctx, s, err))
	}
	if len(r.cfg.Personal) > 0 && !s.ready.Personal {
		r.drop(s)
		return nil, fmt.Errorf("trainer %q does not keep personal tensors %v, which this job asks for", s.ready.Trainer, r.cfg.Personal)
	}
	s.proto = min(Protocol, Revision(s.ready.Protocol))
	r.cfg.Logger.Info("trainer ready", "trainer", s.ready.Trainer, "spec", r.name, "protocol", s.proto)
	return s, nil
}

func (r *Remote) drop(s *session) {
	s.kill()
	r.mu.Lock()
	delete(r.live, s)
	r.mu.Unlock()
}

// explain turns a failed exchange into an error that says what happened
// to the trainer: timed out, exited (with its status and last stderr), or
// sent something wrong.
func (r *Remote) explain(ctx context.Context, s *session, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("trainer timed out or was cancelled (%w); last stderr: %q", context.Cause(ctx), s.stderr.String())
	}
	if s.cmd != nil {
		select {
		case <-s.exited:
			return fmt.Errorf("trainer process exited (%v) during the exchange: %w; last stderr: %q", s.err, err, s.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// acquire takes a slot, starting a session in it if it has none.
func (r *Remote) acquire(ctx context.Context) (*session, error) {
	var s *session
	select {
	case s = <-r.slots:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		r.slots <- s
		return nil, errors.New("trainerproto: remote trainer closed")
	}
	if s != nil {
		return s, nil
	}
	s, err := r.start(ctx)
	if err != nil {
		r.slots <- nil
		return nil, err
	}
	return s, nil
}

// release returns a slot; a failed session is dropped so the next call
// starts a fresh one.
func (r *Remote) release(s *session, failed bool) {
	if failed {
		r.drop(s)
		s = nil
	}
	r.slots <- s
}

// Train implements the edge agent's Trainer: it sends θ to the trainer and
// writes the returned delta (the trained parameters minus θ, if the trainer
// returned parameters) into delta.
func (r *Remote) Train(ctx context.Context, client string, round uint64, theta, delta []float64) (int, error) {
	if len(theta) != r.dim || len(delta) != r.dim {
		return 0, fmt.Errorf("%w: θ has %d values, delta %d, layout %d", ErrShape, len(theta), len(delta), r.dim)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	s, err := r.acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("trainer %s: client %s round %d: %w", r.name, client, round, err)
	}
	res, err := r.train(ctx, s, client, round, theta, delta)
	r.release(s, err != nil && !errors.Is(err, ErrTrainer))
	if err != nil {
		return 0, fmt.Errorf("trainer %s: client %s round %d: %w", r.name, client, round, r.explain(ctx, s, err))
	}
	return res.Examples, nil
}

func (r *Remote) train(ctx context.Context, s *session, client string, round uint64, theta, delta []float64) (Result, error) {
	stop := context.AfterFunc(ctx, s.kill)
	defer stop()
	dl, _ := ctx.Deadline()
	req := Train{Client: client, Round: round, Dim: r.dim, Chunks: Chunks(r.dim),
		Epochs: r.cfg.Local.Epochs, Batch: r.cfg.Local.Batch, LR: r.cfg.Local.LR,
		Seed: r.cfg.Seed ^ round*0x9e3779b97f4a7c15 ^ fnv64(client), DeadlineMs: dl.UnixMilli(), PersonalEpochs: r.cfg.Local.PersonalEpochs}
	if err := s.conn.Send(TypeTrain, &req); err != nil {
		return Result{}, err
	}
	if err := s.conn.SendVector(theta); err != nil {
		return Result{}, err
	}
	if err := s.conn.Flush(); err != nil {
		return Result{}, err
	}
	var res Result
	if err := s.conn.Recv(TypeResult, &res); err != nil {
		return res, err
	}
	if res.Client != client || res.Round != round {
		return res, fmt.Errorf("%w: result for client %q round %d, asked for %q round %d", ErrMalformed, res.Client, res.Round, client, round)
	}
	if res.Dim != r.dim {
		return res, fmt.Errorf("%w: result has %d values, the layout %d", ErrShape, res.Dim, r.dim)
	}
	if res.Examples <= 0 {
		return res, fmt.Errorf("%w: result claims %d examples: must be positive", ErrMalformed, res.Examples)
	}
	if err := s.conn.RecvVector(delta, res.Chunks); err != nil {
		return res, err
	}
	switch res.Kind {
	case KindDelta:
	case KindParams:
		for i := range delta {
			delta[i] -= theta[i]
		}
	default:
		return res, fmt.Errorf("%w: result kind %q: want %q or %q", ErrMalformed, res.Kind, KindDelta, KindParams)
	}
	return res, nil
}

// Evaluate asks the trainer for the scores of θ, and of the client's
// personal model, on the client's own evaluation data.
func (r *Remote) Evaluate(ctx context.Context, client string, theta []float64) (Evaluation, error) {
	if client == "" {
		return Evaluation{}, fmt.Errorf("trainer %s: evaluate: no client named (EvaluateSet scores the job's held-out data)", r.name)
	}
	return r.evaluate(ctx, Evaluate{Client: client}, "client "+client, theta)
}

// EvaluateSet asks the trainer for the scores of θ on the job's held-out
// data: set is SetHeldOut (the per-round held-out set) or SetFinal (the
// whole held-out set). It needs a trainer of protocol 2; one of protocol 1
// is refused with ErrProtocol (its session is kept).
func (r *Remote) EvaluateSet(ctx context.Context, set string, theta []float64) (Evaluation, error) {
	if set != SetHeldOut && set != SetFinal {
		return Evaluation{}, fmt.Errorf("trainer %s: evaluate set %q: want %q or %q", r.name, set, SetHeldOut, SetFinal)
	}
	return r.evaluate(ctx, Evaluate{Set: set}, set+" set", theta)
}

// evaluate sends req with θ and reads the evaluation, checking that it
// answers req and that its metrics are well formed (Evaluation.Scores).
func (r *Remote) evaluate(ctx context.Context, req Evaluate, what string, theta []float64) (Evaluation, error) {
	if len(theta) != r.dim {
		return Evaluation{}, fmt.Errorf("%w: θ has %d values, layout %d", ErrShape, len(theta), r.dim)
	}
	req.Dim, req.Chunks = r.dim, Chunks(r.dim)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	s, err := r.acquire(ctx)
	if err != nil {
		return Evaluation{}, fmt.Errorf("trainer %s: evaluate %s: %w", r.name, what, err)
	}
	if req.Set != SetClient && s.proto < 2 {
		r.release(s, false)
		return Evaluation{}, fmt.Errorf("trainer %s: evaluate %s: %w: trainer %q speaks protocol %d, held-out evaluation needs 2 (update its strata_trainer.py)", r.name, what, ErrProtocol, s.ready.Trainer, s.proto)
	}
	ev, err := func() (Evaluation, error) {
		stop := context.AfterFunc(ctx, s.kill)
		defer stop()
		var ev Evaluation
		if err := s.conn.Send(TypeEvaluate, &req); err != nil {
			return ev, err
		}
		if err := s.conn.SendVector(theta); err != nil {
			return ev, err
		}
		if err := s.conn.Flush(); err != nil {
			return ev, err
		}
		if err := s.conn.Recv(TypeEvaluation, &ev); err != nil {
			return ev, err
		}
		if ev.Client != req.Client {
			return ev, fmt.Errorf("%w: evaluation for client %q, asked for %q", ErrMalformed, ev.Client, req.Client)
		}
		if _, err := ev.Scores(); err != nil {
			return ev, err
		}
		return ev, nil
	}()
	r.release(s, err != nil && !errors.Is(err, ErrTrainer))
	if err != nil {
		return ev, fmt.Errorf("trainer %s: evaluate %s: %w", r.name, what, r.explain(ctx, s, err))
	}
	return ev, nil
}

// Close asks every trainer to shut down and ends its session; calls after
// Close fail.
func (r *Remote) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	for range r.cfg.Procs {
		s := <-r.slots
		if s != nil {
			if s.conn.Send(TypeShutdown, &Shutdown{Reason: "agent closing"}) == nil && s.conn.Flush() == nil && s.cmd != nil {
				select {
				case <-s.exited:
				case <-time.After(2 * time.Second):
				}
			}
			r.drop(s)
		}
		defer func() { r.slots <- nil }()
	}
	return nil
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
