package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/mnist"
	"github.com/strata-fl/strata/topology"
	"github.com/strata-fl/strata/trainerproto"
)

// pythonWith returns a Python interpreter that can import the modules
// (numpy and msgpack, plus torch for the PyTorch example): $STRATA_PYTHON,
// else python3 on PATH, else the system's /usr/bin/python3 (where the
// distribution's packages live). It returns "" if none can.
func pythonWith(modules string) string {
	cands := []string{os.Getenv("STRATA_PYTHON"), "python3", "/usr/bin/python3"}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if exec.Command(c, "-c", "import "+modules).Run() == nil {
			return c
		}
	}
	return ""
}

// torchPython returns a Python with torch, numpy and msgpack, or skips
// the test — and fails it when STRATA_REQUIRE_TORCH=1, which .ci/run sets
// so that a missing torch fails CI rather than skipping.
func torchPython(t *testing.T) string {
	t.Helper()
	py := pythonWith("numpy, msgpack, torch")
	if py == "" {
		msg := "no Python with torch, numpy and msgpack (install python3-torch python3-numpy python3-msgpack or set STRATA_PYTHON)"
		if os.Getenv("STRATA_REQUIRE_TORCH") == "1" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPED: " + msg)
	}
	return py
}

// trainerScript returns the path of an example trainer in clients/python.
func trainerScript(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "clients", "python", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func trainerTopology(t *testing.T, personal bool) *topology.Topology {
	t.Helper()
	top, err := topology.Parse([]byte(`
job: ext
seed: 5
regions:
  - {id: a, clients: 10}
  - {id: b, clients: 10}
privacy:
  sampling_rate: 0.5
  budget: 100000
  min_regions: 2
  noise: {regional: 0.02, global: 0.02}
training: {rounds: 5}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, public_examples: 2000, eval_examples: 500, examples_per_client: 40}
round: {timeout: 15s}
`))
	if err != nil {
		t.Fatal(err)
	}
	setTask(top, "personal_head", personal)
	return top
}

// router sends some clients to an external trainer and the rest to the
// built-in one, as a deployment mixing both would.
type router struct {
	builtin, external task.Trainer
	ext               func(client string) bool
	mu                sync.Mutex
	calls             map[string]int // external calls per outcome
	onExternal        func(client string, round uint64) func(error)
}

func (r *router) Train(ctx context.Context, client string, round uint64, theta, delta []float64) (int, error) {
	if !r.ext(client) {
		return r.builtin.Train(ctx, client, round, theta, delta)
	}
	done := func(error) {}
	if r.onExternal != nil {
		done = r.onExternal(client, round)
	}
	n, err := r.external.Train(ctx, client, round, theta, delta)
	done(err)
	r.mu.Lock()
	if err != nil {
		r.calls["failed"]++
	} else {
		r.calls["ok"]++
	}
	r.mu.Unlock()
	return n, err
}

func newRemote(t *testing.T, m *roles.Up, spec string, ids []string) *trainerproto.Remote {
	t.Helper()
	dir := t.TempDir()
	if err := trainerOf(t, m).Export(dir, ids); err != nil {
		t.Fatal(err)
	}
	var personal []string
	if mnistOf(t, m).Config.Personal {
		personal = mnistOf(t, m).Model.PersonalTensors()
	}
	layout := mnistOf(t, m).Model.Layout()
	tensors := make([]trainerproto.Tensor, len(layout))
	for i, l := range layout {
		tensors[i] = trainerproto.Tensor{Name: l.Name, Shape: l.Shape}
	}
	lc := mnistOf(t, m).Config.Local.WithDefaults()
	r, err := trainerproto.NewRemote(trainerproto.Config{Spec: spec, Agent: "e2e", Task: "mnist-adapter", Layout: tensors,
		Personal: personal, DataDir: dir, StateDir: filepath.Join(dir, "state"), Seed: mnistOf(t, m).Config.Seed,
		Local: trainerproto.Local{Epochs: lc.Epochs, Batch: lc.Batch, LR: lc.LR, PersonalEpochs: mnistOf(t, m).Config.PersonalEpochs}, Timeout: time.Minute, Stderr: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func clientIDs(top *topology.Topology, region string) []string {
	var ids []string
	for _, r := range top.Regions {
		for i := 0; i < r.Clients; i++ {
			if region == "" || r.ID == region {
				ids = append(ids, topology.ClientID(r.ID, i))
			}
		}
	}
	return ids
}

// TestMixedTrainersOverNATS runs a job over real NATS where the odd
// clients train in an external numpy process (clients/python) and the
// others in the built-in Go trainer. The model must improve, and killing
// the trainer process in the middle of one client's round must drop that
// client's update only: every other update is accepted, every round
// commits, and later external rounds run in a fresh process.
func TestMixedTrainersOverNATS(t *testing.T) {
	// Not under -short: it starts Python trainer processes.
	if testing.Short() {
		t.Skip("whole-mesh test with a Python trainer")
	}
	py := pythonWith("numpy, msgpack")
	if py == "" {
		t.Skip("SKIPPED: no Python with numpy and msgpack (install python3-numpy python3-msgpack or set STRATA_PYTHON)")
	}
	top := trainerTopology(t, false)
	var killed struct {
		sync.Mutex
		client string
		round  uint64
		err    error
		pid    int
	}
	var rt *router
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, WrapTrainer: func(b task.Trainer) task.Trainer {
		rt = &router{builtin: b, calls: map[string]int{}, ext: func(c string) bool {
			var i int
			fmt.Sscanf(c[strings.LastIndex(c, "c")+1:], "%d", &i)
			return i%2 == 1
		}}
		return rt
	}})
	defer m.Close()
	// The trainer sleeps half a second before each answer, so a kill 100 ms
	// into a call lands while that client's round is in the trainer.
	rt.external = newRemote(t, m, "exec:"+py+" "+trainerScript(t, "numpy_trainer.py")+" --delay 0.5", clientIDs(top, ""))
	remote := rt.external.(*trainerproto.Remote)
	rt.onExternal = func(client string, round uint64) func(error) {
		killed.Lock()
		defer killed.Unlock()
		if round < 2 || killed.client != "" || len(remote.Pids()) != 1 {
			return func(error) {}
		}
		killed.client, killed.round, killed.pid = client, round, remote.Pids()[0]
		timer := time.AfterFunc(100*time.Millisecond, func() { syscall.Kill(killed.pid, syscall.SIGKILL) })
		return func(err error) {
			timer.Stop()
			killed.Lock()
			killed.err = err
			killed.Unlock()
		}
	}
	pre, _, _ := mnistOf(t, m).Model.Evaluate(mnistOf(t, m).Theta0, mnistOf(t, m).Test)
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	final, _, _ := mnistOf(t, m).Model.Evaluate(serving(t, m), mnistOf(t, m).Test)
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for id, r := range m.Regions {
		st := r.Runner().Stats()
		accepted += st.Accepted
		if len(st.Rejected) != 0 {
			t.Errorf("region %s rejected updates: %v", id, st.Rejected)
		}
	}
	fs := m.Edge.Fleet().Stats()
	t.Logf("accuracy pre-trained %.4f, fine-tuned %.4f; rounds %d; external calls %v; fleet %+v; accepted %d",
		pre, final, l.CommittedRounds(), rt.calls, fs, accepted)
	t.Logf("killed trainer pid %d during client %s round %d: %v", killed.pid, killed.client, killed.round, killed.err)
	if killed.client == "" {
		t.Fatal("no external call in round ≥ 2 to kill the trainer in")
	}
	if killed.err == nil || !strings.Contains(killed.err.Error(), "trainer process exited") {
		t.Fatalf("the killed call returned %v, want an error saying the trainer process exited", killed.err)
	}
	if fs.Failed != 1 || rt.calls["failed"] != 1 {
		t.Fatalf("%d failed client rounds (%d external), want exactly 1: the killed one", fs.Failed, rt.calls["failed"])
	}
	if rt.calls["ok"] == 0 {
		t.Fatal("no external training succeeded")
	}
	if accepted != fs.Published {
		t.Fatalf("regions accepted %d updates, fleet published %d", accepted, fs.Published)
	}
	if l.CommittedRounds() != top.Train.Rounds {
		t.Fatalf("%d rounds committed, want %d", l.CommittedRounds(), top.Train.Rounds)
	}
	if final < pre+0.1 {
		t.Fatalf("accuracy %.4f after fine-tuning from %.4f: want an improvement of at least 0.1", final, pre)
	}
}

// TestPyTorchTrainerPersonalised runs the PyTorch example trainer for
// every client of region b (the built-in trainer for region a) with
// personal heads: region b accepts the PyTorch clients' updates and the
// trainer reports each client's personal accuracy. .ci/run sets STRATA_REQUIRE_TORCH=1 so that a
// missing torch fails CI rather than skipping.
func TestPyTorchTrainerPersonalised(t *testing.T) {
	// Not under -short: it starts a PyTorch trainer process.
	if testing.Short() {
		t.Skip("whole-mesh test with a PyTorch trainer")
	}
	py := torchPython(t)
	top := trainerTopology(t, true)
	// Ten PyTorch clients train one after another (two passes each with
	// personal heads): give a loaded machine time before a round closes.
	top.Round.Timeout.Duration = 90 * time.Second
	var rt *router
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, WrapTrainer: func(b task.Trainer) task.Trainer {
		rt = &router{builtin: b, calls: map[string]int{}, ext: func(c string) bool { return strings.HasPrefix(c, "b-") }}
		return rt
	}})
	defer m.Close()
	bIDs := clientIDs(top, "b")
	rt.external = newRemote(t, m, "exec:"+py+" "+trainerScript(t, "torch_trainer.py"), bIDs)
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Regions["b"].Runner().Stats()
	fs := m.Edge.Fleet().Stats()
	t.Logf("region b: %+v; external calls %v; fleet %+v", st, rt.calls, fs)
	if st.Accepted == 0 || st.Accepted != rt.calls["ok"] || len(st.Rejected) != 0 || fs.Failed != 0 {
		t.Fatalf("region b accepted %d updates (rejected %v) from %d PyTorch trainings, %d failed: want all accepted",
			st.Accepted, st.Rejected, rt.calls["ok"], fs.Failed)
	}
	remote := rt.external.(*trainerproto.Remote)
	theta := serving(t, m)
	var personalised int
	var sumG, sumP float64
	for _, id := range bIDs {
		ev, err := remote.Evaluate(ctx, id, theta)
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Personal {
			continue
		}
		personalised++
		sumG += ev.Accuracy
		sumP += ev.PersonalAccuracy
		t.Logf("client %s: global %.3f, personal %.3f on its own %d examples", id, ev.Accuracy, ev.PersonalAccuracy, ev.Examples)
	}
	if personalised == 0 {
		t.Fatal("no PyTorch client holds a personal head")
	}
	t.Logf("PyTorch clients, mean over %d personalised: global %.4f, personal %.4f", personalised, sumG/float64(personalised), sumP/float64(personalised))
	builtin, err := trainerOf(t, m).PersonalReport(theta)
	if err != nil {
		t.Fatal(err)
	}
	if len(builtin) == 0 {
		t.Fatal("no built-in client holds a personal head")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test context expired")
	}
}

// TestEdgeProcessWithExternalTrainer runs the mesh as separate strata
// processes; region b's `strata edge --trainer exec:…` drives the numpy
// example trainer, region a's uses the built-in one, and `strata global`
// evaluates through the same example as its external evaluator
// (task.evaluator). The job must finish, region b's aggregator must accept
// its clients' updates, and the global's report must carry the
// evaluator's metrics (balanced_accuracy, which the built-in evaluation
// does not report).
func TestEdgeProcessWithExternalTrainer(t *testing.T) {
	// Not under -short: it builds the strata binary and runs the mesh as
	// separate processes, one driving a Python trainer.
	if testing.Short() {
		t.Skip("test with real processes and a Python trainer")
	}
	py := pythonWith("numpy, msgpack")
	if py == "" {
		t.Skip("SKIPPED: no Python with numpy and msgpack (install python3-numpy python3-msgpack or set STRATA_PYTHON)")
	}
	bin := buildStrata(t)
	dir := t.TempDir()
	top := trainerTopology(t, false)
	top.Task.Evaluator = &topology.Evaluator{Command: []string{py, trainerScript(t, "numpy_trainer.py")}}
	top.ApplyDefaults()
	b, err := top.YAML()
	if err != nil {
		t.Fatal(err)
	}
	topo := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(topo, b, 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dir, "secrets")
	if out, err := exec.Command(bin, "certs", "--dir", secrets, "--topology", topo, "--globals", "g1").CombinedOutput(); err != nil {
		t.Fatalf("strata certs: %v\n%s", err, out)
	}
	srv, _ := startSecureServer(t, filepath.Join(dir, "nats"), secrets, top.Job)
	defer srv.Shutdown()
	url := srv.ClientURL()
	procs := []*proc{
		{name: "regional-a", args: []string{"regional", "--region", "a", "--nats", url, "--topology", topo, "--secrets", secrets}},
		{name: "regional-b", args: []string{"regional", "--region", "b", "--nats", url, "--topology", topo, "--secrets", secrets}},
		{name: "edge-a", args: []string{"edge", "--region", "a", "--nats", url, "--topology", topo, "--secrets", secrets, "--data", filepath.Join(dir, "edge-a")}},
		{name: "edge-b", args: []string{"edge", "--region", "b", "--nats", url, "--topology", topo, "--secrets", secrets, "--data", filepath.Join(dir, "edge-b"),
			"--trainer", "exec:" + py + " " + trainerScript(t, "numpy_trainer.py")}},
	}
	for _, p := range procs {
		p.start(t, bin, dir)
		defer p.kill()
	}
	// Start the global tier once both fleets have subscribed every client.
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range []string{"edge-a", "edge-b"} {
		for {
			out, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			if strings.Contains(string(out), "every client connected and subscribed") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready: %s", name, out)
			}
			time.Sleep(100 * time.Millisecond) // the poll's interval
		}
	}
	port := freePorts(t, 1)[0]
	g := &proc{name: "global", args: []string{"global", "--id", "g1", "--raft-bind", fmt.Sprintf("127.0.0.1:%d", port),
		"--peers", fmt.Sprintf("g1=127.0.0.1:%d", port), "--data", filepath.Join(dir, "g1"), "--nats", url, "--topology", topo, "--secrets", secrets}}
	g.start(t, bin, dir)
	defer g.kill()
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			out, _ := os.ReadFile(filepath.Join(dir, "global.log"))
			t.Fatalf("global exited: %v\n%s", err, out)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("job did not finish in 3 minutes")
	}
	for _, p := range procs {
		p.cmd.Wait()
	}
	logs := map[string]string{}
	for _, name := range []string{"global", "regional-b", "edge-b"} {
		out, _ := os.ReadFile(filepath.Join(dir, name+".log"))
		logs[name] = string(out)
	}
	t.Logf("global: %s", lastLines(logs["global"], 2))
	t.Logf("regional-b: %s", lastLines(logs["regional-b"], 1))
	t.Logf("edge-b: %s", lastLines(logs["edge-b"], 1))
	if !strings.Contains(logs["global"], fmt.Sprintf("job finished with %d rounds committed", top.Train.Rounds)) {
		t.Fatalf("global did not commit %d rounds:\n%s", top.Train.Rounds, logs["global"])
	}
	var accepted int
	var rejected string
	if _, err := fmt.Sscanf(lastLines(logs["regional-b"], 1), "regional b: done: %d updates accepted, %d partials, rejected %s", &accepted, new(int), &rejected); err != nil || accepted == 0 || rejected != "map[]" {
		t.Fatalf("regional b: %d accepted, rejected %s (%v): want updates from the external trainer accepted\n%s", accepted, rejected, err, logs["regional-b"])
	}
	if !strings.Contains(logs["edge-b"], "0 failed") {
		t.Fatalf("edge b had failed rounds:\n%s", logs["edge-b"])
	}
	if !strings.Contains(logs["global"], "balanced_accuracy, fine-tuned") {
		t.Fatalf("the global's report does not carry the external evaluator's metrics:\n%s", logs["global"])
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestSocketTrainer connects to a trainer that is already listening on a
// unix socket (the numpy example with --socket), rather than starting it,
// and checks that a training call and an evaluation come back sane.
func TestSocketTrainer(t *testing.T) {
	// Not under -short: it starts a Python trainer process.
	if testing.Short() {
		t.Skip("needs MNIST and a Python trainer")
	}
	py := pythonWith("numpy, msgpack")
	if py == "" {
		t.Skip("SKIPPED: no Python with numpy and msgpack (install python3-numpy python3-msgpack or set STRATA_PYTHON)")
	}
	top := trainerTopology(t, true)
	m, ctx := startMesh(t, roles.UpConfig{Topology: top})
	defer m.Close()
	sock := filepath.Join(t.TempDir(), "trainer.sock")
	cmd := exec.Command(py, trainerScript(t, "numpy_trainer.py"), "--socket", sock)
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("trainer did not open its socket in 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := newRemote(t, m, "unix:"+sock, []string{"a-c00001"})
	theta := mnistOf(t, m).Theta0
	delta := make([]float64, len(theta))
	n, err := r.Train(ctx, "a-c00001", 1, theta, delta)
	if err != nil {
		t.Fatal(err)
	}
	norm := 0.0
	for _, x := range delta {
		norm += x * x
	}
	if n != mnistOf(t, m).Config.ExamplesPerClient || norm == 0 {
		t.Fatalf("examples %d (want %d), ‖Δ‖² %v (want > 0)", n, mnistOf(t, m).Config.ExamplesPerClient, norm)
	}
	ev, err := r.Evaluate(ctx, "a-c00001", theta)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Personal || ev.Examples != mnist.PersonalEvalExamples {
		t.Fatalf("evaluation %+v: want a personal model scored on %d examples", ev, mnist.PersonalEvalExamples)
	}
	// The same client unknown to the trainer's data: an error, not a crash,
	// and the connection keeps serving.
	if _, err := r.Train(ctx, "a-c00002", 1, theta, delta); !errors.Is(err, trainerproto.ErrTrainer) {
		t.Fatalf("client without a shard: got %v, want ErrTrainer", err)
	}
	if _, err := r.Train(ctx, "a-c00001", 2, theta, delta); err != nil {
		t.Fatalf("after a trainer error: %v", err)
	}
}
