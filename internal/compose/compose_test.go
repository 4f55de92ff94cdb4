// Package compose holds the smoke test of the shipped docker-compose.yml: a
// real multi-container mesh (3 NATS servers, 3 global nodes on raft, 3
// regions, 3 edge fleets) run with docker-compose, one global node killed
// mid-job.
package compose

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
)

// smokeTopology is the built-in topology's shape (regions eu, us, ap, which
// the compose file names) with a job small enough for a few minutes on a
// 2-core machine, yet long enough to kill a node in the middle of it. It
// is signed (no security.unsigned), as the compose mesh runs every job.
const smokeTopology = `job: compose-smoke
seed: 3
regions:
  - {id: eu, clients: 40}
  - {id: us, clients: 40}
  - {id: ap, clients: 40}
privacy: {sampling_rate: 0.3, budget: 1000, min_regions: 2, noise: {regional: 1, global: 1}}
training: {rounds: 600}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, local_epochs: 1, public_examples: 2000, eval_examples: 300}
round: {timeout: 5s}
`

// rounds is long enough (about a minute on 2 cores: rounds of 120
// clients take ~0.1 s) that the operator's enrolment, which starts a
// container of its own, and the kill both land while the job runs.
const rounds = 600

// strataServices run the strata image and so read the topology.
var strataServices = []string{"init", "global1", "global2", "global3",
	"regional-eu", "regional-us", "regional-ap", "edge-eu", "edge-us", "edge-ap"}

// TestComposeSmoke builds the images FROM scratch around binaries built
// here (deploy/build-images.sh), starts the mesh of docker-compose.yml with
// a small job, SIGKILLs the raft leader's container once rounds are being
// committed, and checks that the job still completes: both surviving global
// nodes exit cleanly, write report.json with every planned round, and hold
// byte-identical ledgers; `strata ledger` and `strata audit verify` work on
// their volumes as docs/operating.md says.
func TestComposeSmoke(t *testing.T) {
	if os.Getenv("STRATA_COMPOSE_TEST") == "" {
		t.Skip("compose smoke test skipped: set STRATA_COMPOSE_TEST=1 to run it (needs docker and docker-compose; .ci/run does)")
	}
	start := time.Now()
	for _, bin := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("STRATA_COMPOSE_TEST is set but %s is not installed (Debian: apt-get install docker.io docker-compose)", bin)
		}
	}
	ensureDockerd(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	run(t, root, nil, "deploy/build-images.sh")
	t.Logf("images built after %v", time.Since(start).Round(time.Second))

	dir := t.TempDir()
	// The containers run as an unprivileged user: it must read the topology.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(smokeTopology), 0o644); err != nil {
		t.Fatal(err)
	}
	var override strings.Builder
	override.WriteString("services:\n")
	for _, s := range strataServices {
		fmt.Fprintf(&override, "  %s:\n    environment: {STRATA_TOPOLOGY: /etc/strata/topology.yaml}\n    volumes: [\"%s:/etc/strata/topology.yaml:ro\"]\n", s, topo)
	}
	overrideFile := filepath.Join(dir, "smoke.yml")
	if err := os.WriteFile(overrideFile, []byte(override.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 8)
	project := fmt.Sprintf("stratasmoke%d", os.Getpid())
	env := []string{fmt.Sprintf("STRATA_NATS_PORT=%d", ports[0]), fmt.Sprintf("STRATA_NATS_MONITOR_PORT=%d", ports[1])}
	dashboard := map[string]int{"g1": ports[2], "g2": ports[3], "g3": ports[4]}
	metricsPort := map[string]int{"g1": ports[5], "g2": ports[6], "g3": ports[7]}
	for i, g := range []string{"g1", "g2", "g3"} {
		suffix := ""
		if i > 0 {
			suffix = fmt.Sprint(i + 1)
		}
		env = append(env, fmt.Sprintf("STRATA_DASHBOARD_PORT%s=%d", suffix, dashboard[g]), fmt.Sprintf("STRATA_METRICS_PORT%s=%d", suffix, metricsPort[g]))
	}
	compose := func(args ...string) []string {
		return append([]string{"docker-compose", "-p", project, "-f", filepath.Join(root, "docker-compose.yml"), "-f", overrideFile}, args...)
	}
	run(t, root, env, compose("config", "-q")...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := command(root, env, compose("logs", "--no-color", "--tail", "40")...).CombinedOutput()
			t.Logf("docker-compose logs (last 40 lines per service):\n%s", out)
		}
		out, err := command(root, env, compose("down", "-v", "--remove-orphans", "-t", "2")...).CombinedOutput()
		if err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})
	// docker-compose up -d returns once the global nodes have started; on a
	// loaded machine that can be late in the job, so status is polled while
	// it runs.
	upAt := time.Now()
	upDone := make(chan error, 1)
	go func() {
		out, err := command(root, env, compose("up", "-d", "--no-build")...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("docker-compose up -d: %w\n%s", err, out)
		}
		upDone <- err
	}()
	id := func(service string) string { return containerID(t, project, service) }

	// The init service makes the secrets; the test takes a copy to talk to
	// the mesh as its operator, as docs/operating.md does from the host.
	secrets := initSecrets(t, project, filepath.Join(dir, "secrets"), upDone)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	nc := connectOperator(t, natsURL, secrets)
	defer nc.Close()
	checkSecured(t, natsURL, secrets)

	// Wait until a leader has committed a few rounds, enrol a client
	// through it, then kill the node that leads.
	var leader string
	var atKill global.Status
	deadline := time.Now().Add(10 * time.Minute)
	for leader == "" {
		if time.Now().After(deadline) {
			t.Fatal("no global node committed 10 rounds within 10 minutes")
		}
		select {
		case err := <-upDone:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("docker-compose up -d returned after %v (NATS cluster and regions healthy, global nodes started)", time.Since(upAt).Round(time.Second))
			upDone = nil
		case <-time.After(200 * time.Millisecond):
		}
		for _, g := range []string{"g1", "g2", "g3"} {
			if s, ok := status(nc, g); ok && s.Leader && s.Committed >= 10 {
				leader, atKill = g, s
				break
			}
		}
	}
	if atKill.Finished || atKill.Committed >= rounds {
		t.Fatalf("the job finished before the kill (%d rounds): make it longer", atKill.Committed)
	}
	// The published dashboard and metrics of the leader answer.
	for what, url := range map[string]string{
		"dashboard": fmt.Sprintf("http://127.0.0.1:%d/", dashboard[leader]),
		"metrics":   fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort[leader]),
	} {
		body, err := httpGet(url)
		if err != nil {
			t.Fatalf("%s of %s: %v", what, leader, err)
		}
		if what == "metrics" && !strings.Contains(body, "strata_rounds_opened_total") {
			t.Fatalf("metrics of %s lack strata_rounds_opened_total:\n%.2000s", leader, body)
		}
		t.Logf("%s of %s answers on %s (%d bytes)", what, leader, url, len(body))
	}
	secrets = enrolNewcomer(t, root, env, compose, project, natsURL, filepath.Join(dir, "secrets-enrolled"))

	// Leadership may have moved meanwhile on a loaded machine: kill the node
	// that leads now.
	for g, st := leaderStatus(nc, ""); ; g, st = leaderStatus(nc, "") {
		if g != "" {
			leader, atKill = g, st
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader to kill")
		}
		time.Sleep(50 * time.Millisecond)
	}
	victim := "global" + strings.TrimPrefix(leader, "g")
	run(t, root, nil, "docker", "kill", id(victim))
	killedAt := time.Now()
	t.Logf("killed %s (the raft leader) at %d/%d committed rounds, %v after up", victim, atKill.Committed, rounds, killedAt.Sub(upAt).Round(time.Second))
	if upDone != nil {
		if err := <-upDone; err != nil {
			t.Fatal(err)
		}
	}

	// A surviving node leads and commits the next round.
	for {
		if time.Since(killedAt) > 2*time.Minute {
			t.Fatal("no round committed under a new leader within 2 minutes of the kill")
		}
		if g, s := leaderStatus(nc, leader); g != "" && (s.Committed > atKill.Committed || s.Finished) {
			t.Logf("%s leads; kill → next committed round %v", g, time.Since(killedAt).Round(10*time.Millisecond))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	var survivors []string
	for _, s := range []string{"global1", "global2", "global3"} {
		if s != victim {
			survivors = append(survivors, s)
		}
	}
	// The survivors finish the job and exit 0.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	for _, s := range survivors {
		out, err := exec.CommandContext(ctx, "docker", "wait", id(s)).Output()
		if err != nil {
			t.Fatalf("docker wait %s: %v", s, err)
		}
		if code := strings.TrimSpace(string(out)); code != "0" {
			t.Fatalf("%s exited with %s, want 0", s, code)
		}
	}
	t.Logf("the job finished %v after the kill (%v after up)", time.Since(killedAt).Round(time.Second), time.Since(upAt).Round(time.Second))

	// The model bucket lives on three NATS servers.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(t.Context(), "OBJ_strata-models-compose-smoke")
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("model store has %d replicas, want 3", r)
	}
	if cl := info.CachedInfo().Cluster; cl == nil || len(cl.Replicas) != 2 {
		t.Errorf("model store cluster info %+v: want a leader and 2 replicas", cl)
	}

	key, err := seal.Load(filepath.Join(secrets, "strata.key"))
	if err != nil {
		t.Fatal(err)
	}
	public, err := identity.LoadPublic(secrets)
	if err != nil {
		t.Fatal(err)
	}
	var snaps [][]byte
	for _, s := range survivors {
		files := copyOut(t, id(s), "/data/report.json")
		var rep struct {
			RoundsCompleted    int            `json:"rounds_completed"`
			PlannedRounds      int            `json:"planned_rounds"`
			Finished           bool           `json:"finished"`
			AccuracyPretrained float64        `json:"accuracy_pretrained"`
			AccuracyFinal      float64        `json:"accuracy_final"`
			Epsilon            map[string]any `json:"epsilon"`
		}
		if err := json.Unmarshal(files["report.json"], &rep); err != nil {
			t.Fatalf("%s report.json: %v\n%s", s, err, files["report.json"])
		}
		if !rep.Finished || rep.RoundsCompleted != rounds || rep.PlannedRounds != rounds {
			t.Errorf("%s report.json: finished %v, %d/%d rounds, want %d/%d finished", s, rep.Finished, rep.RoundsCompleted, rep.PlannedRounds, rounds, rounds)
		}
		if eps, ok := rep.Epsilon["public"].(float64); !ok || eps <= 0 {
			t.Errorf("%s report.json: ε public %v, want a positive number", s, rep.Epsilon["public"])
		}
		t.Logf("%s report.json: %d/%d rounds, accuracy %.4f → %.4f, ε public %v", s, rep.RoundsCompleted, rep.PlannedRounds, rep.AccuracyPretrained, rep.AccuracyFinal, rep.Epsilon["public"])

		data := filepath.Join(dir, s)
		for name, b := range copyOut(t, id(s), "/data") {
			p := filepath.Join(data, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		l, err := global.ReadLedgerKey(data, key)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if !l.Finished || l.CommittedRounds() != rounds {
			t.Errorf("%s ledger: finished %v with %d committed rounds, want %d", s, l.Finished, l.CommittedRounds(), rounds)
		}
		if l.CommittedRounds() < atKill.Committed {
			t.Errorf("%s ledger: %d committed rounds, fewer than the %d before the kill", s, l.CommittedRounds(), atKill.Committed)
		}
		checkSignedLedger(t, s, l, public)
		if c, ok := l.Client("eu-newcomer"); !ok || c.Purpose != "compose smoke test" || c.Status != ledger.ClientWithdrawn {
			t.Errorf("%s ledger: the client enrolled during the job: %+v %v", s, c, ok)
		}
		l.Applied = 0 // replicas may have applied trailing no-op entries; compare the state
		b, err := l.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, b)

		// As docs/operating.md reads a stopped node's ledger and audit trail.
		out := run(t, root, env, compose("run", "--rm", "--no-deps", s, "ledger", "--data", "/data")...)
		if !bytes.Contains(out, []byte(fmt.Sprintf("%d rounds committed", rounds))) {
			t.Errorf("strata ledger on %s's volume:\n%s", s, out)
		}
		out = run(t, root, env, compose("run", "--rm", "--no-deps", s, "audit", "verify", "--data", "/data")...)
		if !bytes.Contains(out, []byte("chain intact")) {
			t.Errorf("strata audit verify on %s's volume:\n%s", s, out)
		}
	}
	// A second start of the init service (a second `up`) keeps every
	// secret, byte for byte, and re-renders the same NATS config.
	out := run(t, root, env, compose("run", "--rm", "--no-deps", "init")...)
	for _, want := range []string{"kept the secrets", "kept it", "up to date"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("init run again says %q, want %q", out, want)
		}
	}
	t.Logf("init run again: %s", bytes.TrimSpace(out))
	again := initSecrets(t, project, filepath.Join(dir, "secrets-again"), nil)
	if a, b := snapshotDir(t, secrets), snapshotDir(t, again); !maps.Equal(a, b) {
		t.Errorf("the secrets changed when init ran again (%d files, now %d)", len(a), len(b))
	} else {
		t.Logf("init run again kept all %d files of the secrets volume", len(a))
	}
	if !bytes.Equal(snaps[0], snaps[1]) {
		t.Errorf("the ledgers of %s and %s differ", survivors[0], survivors[1])
	} else {
		t.Logf("the ledgers of %s and %s are byte-identical (%d bytes)", survivors[0], survivors[1], len(snaps[0]))
	}
	t.Logf("compose smoke test: %v in all", time.Since(start).Round(time.Second))
}

// initSecrets waits for the init service to finish and copies the secrets
// volume out of its container into dir, modes kept (identity refuses keys
// others can read).
func initSecrets(t *testing.T, project, dir string, upDone chan error) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	var init string
	for {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+project, "--filter", "label=com.docker.compose.service=init").Output()
		if ids := strings.Fields(string(out)); len(ids) == 1 {
			st, err := exec.Command("docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", ids[0]).Output()
			if err == nil && strings.HasPrefix(string(st), "exited") {
				if code := strings.Fields(string(st))[1]; code != "0" {
					logs, _ := exec.Command("docker", "logs", ids[0]).CombinedOutput()
					t.Fatalf("the init service exited with %s:\n%s", code, logs)
				}
				init = ids[0]
				break
			}
		}
		if upDone != nil {
			select {
			case err := <-upDone:
				if err != nil {
					t.Fatal(err)
				}
				upDone <- nil // keep the outcome for the caller
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the init service did not finish within 10 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if upDone != nil {
		logs, _ := exec.Command("docker", "logs", init).CombinedOutput()
		t.Logf("init: %s", strings.TrimSpace(string(logs)))
	}
	out, err := exec.Command("docker", "cp", init+":/secrets", "-").Output()
	if err != nil {
		t.Fatalf("docker cp %s:/secrets: %v", init, err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		rel, err := filepath.Rel("secrets", h.Name)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("docker cp: unexpected entry %q", h.Name)
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, os.FileMode(h.Mode).Perm()); err != nil {
			t.Fatal(err)
		}
		if secret := strings.HasSuffix(h.Name, ".key") || strings.HasSuffix(h.Name, ".nk") || strings.HasSuffix(h.Name, ".keys"); secret && h.Mode&0o077 != 0 {
			t.Errorf("%s has mode %o in the secrets volume, want 0600", h.Name, h.Mode&0o777)
		}
		if h.Uid != 65532 {
			t.Errorf("%s belongs to uid %d in the secrets volume, want 65532 (the containers' user)", h.Name, h.Uid)
		}
	}
	return dir
}

// snapshotDir maps every file of dir to its mode and contents.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fi.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// enrolNewcomer enrols a client on the running mesh as docs/operating.md
// (section 3) does: its key is written into the secrets volume and
// enrolled through the leader, init renders the NATS config again, and the
// servers reload it on SIGHUP, after which the client connects; then it is
// withdrawn through the leader. It returns a fresh copy of the secrets
// volume.
func enrolNewcomer(t *testing.T, root string, env []string, compose func(...string) []string, project, url, dir string) string {
	t.Helper()
	out := run(t, root, env, compose("run", "--rm", "--no-deps", "init", "enroll", "--client", "eu-newcomer", "--region", "eu",
		"--nats", "nats://nats1:4222", "--secrets", "/secrets", "--purpose", "compose smoke test")...)
	t.Logf("enrol: %s", bytes.TrimSpace(out))
	out = run(t, root, env, compose("run", "--rm", "--no-deps", "init")...)
	if !bytes.Contains(out, []byte("wrote /secrets/nats.conf")) {
		t.Errorf("init after an enrolment says %q, want the NATS config written again", out)
	}
	run(t, root, env, compose("kill", "-s", "HUP", "nats1", "nats2", "nats3")...)
	secrets := initSecrets(t, project, dir, nil)
	keys, err := identity.LoadClients(secrets, "eu")
	if err != nil || keys["eu-newcomer"] == nil {
		t.Fatalf("the newcomer's key is not in the secrets volume: %v", err)
	}
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	d := mesh.Dialer{URL: url, TLS: tlsc, Key: keys["eu-newcomer"]}
	for deadline := time.Now().Add(time.Minute); ; {
		nc, err := d.Connect("newcomer")
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the enrolled client cannot connect after the reload: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, s := range []string{"nats1", "nats2", "nats3"} {
		logs, _ := exec.Command("docker", "logs", containerID(t, project, s)).CombinedOutput()
		if !bytes.Contains(logs, []byte("Reloaded: authorization nkey users")) {
			t.Errorf("%s did not reload its users:\n%.3000s", s, logs[max(0, len(logs)-3000):])
		}
	}
	// Nothing trains for the newcomer, and a sampled client that sends
	// nothing holds its region's round open until the timeout: withdraw it,
	// as section 3 withdraws a client.
	out = run(t, root, env, compose("exec", "-T", "global1", "/strata", "withdraw", "--client", "eu-newcomer",
		"--nats", "nats://nats1:4222", "--secrets", "/secrets")...)
	t.Logf("eu-newcomer enrolled, its NATS user loaded by nats1..3, it connects; withdrawn: %s", bytes.TrimSpace(out))
	return secrets
}

// connectOperator connects to the published NATS port as the mesh's
// operator, over TLS, retrying while the cluster starts.
func connectOperator(t *testing.T, url, secrets string) *nats.Conn {
	t.Helper()
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	op, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		t.Fatal(err)
	}
	d := mesh.Dialer{URL: url, TLS: tlsc, Key: op}
	for deadline := time.Now().Add(5 * time.Minute); ; {
		nc, err := d.Connect("compose-smoke")
		if err == nil {
			return nc
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect as the operator to %s: %v", url, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkSecured tries the published NATS port as an outsider would: in
// the clear, over TLS without credentials, with a key the mesh does not
// know; each must be refused. An enrolled client may not publish a
// region's partial.
func checkSecured(t *testing.T, url, secrets string) {
	t.Helper()
	plainRefused(t, url)
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := (mesh.Dialer{URL: url, TLS: tlsc}).Connect("anonymous"); err == nil {
		nc.Close()
		t.Error("an anonymous TLS connection was accepted")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("anonymous TLS connection: %v, want an authorization violation", err)
	} else {
		t.Logf("anonymous TLS refused: %v", err)
	}
	stranger, err := identity.New(identity.KindClient, "eu-c00000")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := (mesh.Dialer{URL: url, TLS: tlsc, Key: stranger}).Connect("stranger"); err == nil {
		nc.Close()
		t.Error("a connection with an unknown key was accepted")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("connection with an unknown key: %v, want an authorization violation", err)
	} else {
		t.Logf("unknown key refused: %v", err)
	}
	keys, err := identity.LoadClients(secrets, "eu")
	if err != nil || keys["eu-c00000"] == nil {
		t.Fatalf("client keys of region eu: %v", err)
	}
	errs := make(chan error, 4)
	nc, err := nats.Connect(url, nats.Secure(tlsc), nats.Nkey(keys["eu-c00000"].Public(), keys["eu-c00000"].SignNonce),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("client eu-c00000 connects with its key: %v", err)
	}
	defer nc.Close()
	partial, _ := mesh.PartialSubject("compose-smoke", "eu")
	nc.Publish(partial, []byte("forged"))
	nc.Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("client publishing a partial: %v, want a permissions violation", err)
		} else {
			t.Logf("client eu-c00000 publishing %s refused: %v", partial, err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a client published a region's partial")
	}
}

// plainRefused speaks the NATS protocol in the clear, as a client that
// ignores the server's demand for TLS would: the server must not answer
// its PING.
func plainRefused(t *testing.T, url string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	info, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("the server's INFO %q (%v) does not require TLS", info, err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Logf("plain text refused: write: %v", err)
		return
	}
	rest, err := io.ReadAll(c)
	if strings.Contains(string(rest), "PONG") {
		t.Errorf("the server answered a plain-text client: %q", rest)
		return
	}
	t.Logf("plain text refused: the server asks for TLS and answers the plain CONNECT with %q (%v)", rest, err)
}

// checkSignedLedger checks that the job ran signed: the ledger says so,
// holds every client's and node's public key as the secrets volume has
// it (enrolled through raft), and its committed rounds counted
// participants, whose updates regions accept only when signed.
func checkSignedLedger(t *testing.T, node string, l *ledger.Ledger, public []identity.Entry) {
	t.Helper()
	if l.Job == nil || !l.Job.Signed {
		t.Errorf("%s ledger: the job is not signed", node)
	}
	var clients, nodes int
	for _, e := range public {
		switch e.Kind {
		case identity.KindClient:
			c, ok := l.Client(e.ID)
			if !ok || c.PubKey != e.Public {
				t.Errorf("%s ledger: client %s enrolled %v with key %q, want %q", node, e.ID, ok, c.PubKey, e.Public)
			}
			clients++
		case identity.KindRegion, identity.KindGlobal:
			found := false
			for _, n := range l.Nodes {
				found = found || n.Kind == e.Kind && n.ID == e.ID && n.PubKey == e.Public
			}
			if !found {
				t.Errorf("%s ledger: %s %s not enrolled with its key", node, e.Kind, e.ID)
			}
			nodes++
		}
	}
	participants := 0
	for _, r := range l.Rounds {
		if r.Status == "committed" {
			participants += r.Participants
		}
	}
	if participants == 0 {
		t.Errorf("%s ledger: no signed update counted in any committed round", node)
	}
	t.Logf("%s ledger: signed job, %d client keys and %d node keys enrolled, %d signed updates in committed rounds", node, clients, nodes, participants)
}

// ensureDockerd starts dockerd when no daemon answers (a fresh CI machine
// where installing docker.io did not start it) and stops it at the end.
func ensureDockerd(t *testing.T) {
	t.Helper()
	if exec.Command("docker", "info").Run() == nil {
		return
	}
	path, err := exec.LookPath("dockerd")
	if err != nil {
		t.Fatal("no docker daemon answers and dockerd is not installed")
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logf.Close()
	})
	for range 120 {
		if exec.Command("docker", "info").Run() == nil {
			t.Log("started dockerd")
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	logf.Sync()
	b, _ := os.ReadFile(logf.Name())
	t.Fatalf("dockerd did not answer within 60 s:\n%s", b)
}

// containerID finds a compose service's container by the labels both
// docker-compose 1.x and docker compose 2.x set.
func containerID(t *testing.T, project, service string) string {
	t.Helper()
	out := run(t, "", nil, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+project, "--filter", "label=com.docker.compose.service="+service)
	ids := strings.Fields(string(out))
	if len(ids) != 1 {
		t.Fatalf("service %s of project %s: containers %q, want one", service, project, ids)
	}
	return ids[0]
}

func command(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// run runs a command and returns its stdout; it fails the test, with the
// output, when the command fails.
func run(t *testing.T, dir string, env []string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := command(dir, env, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// copyOut copies a file or folder out of a container (running or not) with
// `docker cp`, returning its regular files by path inside the copied
// folder (a copied file by its base name).
func copyOut(t *testing.T, container, path string) map[string][]byte {
	t.Helper()
	out, err := exec.Command("docker", "cp", container+":"+path, "-").Output()
	if err != nil {
		t.Fatalf("docker cp %s:%s: %v", container, path, err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(out))
	base := filepath.Base(path)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("docker cp %s:%s: %v", container, path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := h.Name
		if rel, err := filepath.Rel(base, name); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			name = rel
		}
		files[name] = b
	}
	return files
}

// httpGet fetches url and fails unless it answers 200.
func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return string(b), nil
}

// leaderStatus finds the leader among the global nodes other than except.
func leaderStatus(nc *nats.Conn, except string) (string, global.Status) {
	for _, g := range []string{"g1", "g2", "g3"} {
		if s, ok := status(nc, g); ok && g != except && s.Leader {
			return g, s
		}
	}
	return "", global.Status{}
}

func status(nc *nats.Conn, id string) (global.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s, err := global.RequestStatus(ctx, nc, id)
	return s, err == nil
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
