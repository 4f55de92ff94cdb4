package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/history"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// consortiumTopology is small enough for a minute or two on 2 cores and
// long enough to cut a site's link in the middle: with min_regions 2 the
// rounds go on from the other two sites while one is cut off.
const consortiumTopology = `job: consortium
seed: 5
regions:
  - {id: eu, clients: 20}
  - {id: us, clients: 20}
  - {id: ap, clients: 20}
privacy: {sampling_rate: 0.5, budget: 1000, min_regions: 2, noise: {regional: 1, global: 1}}
training: {rounds: 150}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 4s}
`

const consortiumRounds = 150

var consortiumSites = []string{"eu", "us", "ap"}

// TestConsortiumCompose runs deploy/consortium/docker-compose.yml — three
// sites, each a NATS leaf node with its region and edge fleet on a network
// of its own, the hub NATS and three global nodes on another — with a
// small job, and cuts site eu's link (its leaf node disconnected from the
// hub's network) while rounds are committed, then restores it. It records,
// from each site's own NATS (outside the system under test), every round
// invitation, client update and partial, and checks: rounds go on from
// the two other sites while eu is cut off, and rounds opened then do not
// count eu; eu takes part again after the restore; the job completes on
// all three global nodes with byte-identical ledgers; no round counts more
// participants than it sampled; and the history checker finds no
// violation (each client's update counted at most once, everything on the
// wire covered by a committed charge).
func TestConsortiumCompose(t *testing.T) {
	if os.Getenv("STRATA_COMPOSE_TEST") == "" {
		t.Skip("consortium compose test skipped: set STRATA_COMPOSE_TEST=1 to run it (needs docker and docker-compose; .ci/run does)")
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
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(consortiumTopology), 0o644); err != nil {
		t.Fatal(err)
	}
	services := []string{"init", "hub", "global1", "global2", "global3"}
	for _, s := range consortiumSites {
		services = append(services, "leaf-"+s, "regional-"+s, "edge-"+s)
	}
	var override strings.Builder
	override.WriteString("services:\n")
	for _, s := range services {
		fmt.Fprintf(&override, "  %s:\n    environment: {STRATA_TOPOLOGY: /etc/strata/topology.yaml}\n    volumes: [\"%s:/etc/strata/topology.yaml:ro\"]\n", s, topo)
	}
	overrideFile := filepath.Join(dir, "consortium.yml")
	if err := os.WriteFile(overrideFile, []byte(override.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	env := []string{fmt.Sprintf("STRATA_NATS_PORT=%d", ports[0]), fmt.Sprintf("STRATA_DASHBOARD_PORT=%d", ports[1]),
		fmt.Sprintf("STRATA_DASHBOARD_PORT2=%d", ports[2]), fmt.Sprintf("STRATA_DASHBOARD_PORT3=%d", ports[3])}
	project := fmt.Sprintf("strataconsortium%d", os.Getpid())
	compose := func(args ...string) []string {
		return append([]string{"docker-compose", "-p", project, "-f", filepath.Join(root, "deploy/consortium/docker-compose.yml"), "-f", overrideFile}, args...)
	}
	run(t, root, env, compose("config", "-q")...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := command(root, env, compose("logs", "--no-color", "--tail", "30")...).CombinedOutput()
			t.Logf("docker-compose logs (last 30 lines per service):\n%s", out)
		}
		out, err := command(root, env, compose("down", "-v", "--remove-orphans", "-t", "2")...).CombinedOutput()
		if err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})

	// The sites and the hub first, without the global nodes: the test's
	// observers are on every site's NATS before the first round.
	siteServices := []string{"hub"}
	for _, s := range consortiumSites {
		siteServices = append(siteServices, "leaf-"+s, "regional-"+s, "edge-"+s)
	}
	upAt := time.Now()
	run(t, root, env, compose(append([]string{"up", "-d", "--no-build"}, siteServices...)...)...)
	secrets := initSecrets(t, project, filepath.Join(dir, "secrets"), nil)
	hubURL := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	hubc := connectOperator(t, hubURL, secrets)
	defer hubc.Close()
	checkLeafLink(t, hubURL, secrets)

	var rec history.Recorder
	for _, s := range consortiumSites {
		nc := connectSite(t, project, s, secrets)
		defer nc.Close()
		observeSite(t, nc, &rec, s)
	}
	t.Logf("observers on the three sites' leaf nodes %v after up", time.Since(upAt).Round(time.Second))

	upDone := make(chan error, 1)
	go func() {
		out, err := command(root, env, compose("up", "-d", "--no-build")...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("docker-compose up -d: %w\n%s", err, out)
		}
		upDone <- err
	}()
	leaderAt := func(min int) (string, global.Status) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no global node committed %d rounds within 10 minutes", min)
			}
			if upDone != nil {
				select {
				case err := <-upDone:
					if err != nil {
						t.Fatal(err)
					}
					upDone = nil
				default:
				}
			}
			if g, s := leaderStatus(hubc, ""); g != "" && (s.Committed >= min || s.Finished) {
				return g, s
			}
		}
	}
	_, before := leaderAt(10)
	if before.Finished || before.Committed > consortiumRounds-40 {
		t.Fatalf("the job is at %d/%d rounds before the cut: make it longer", before.Committed, consortiumRounds)
	}

	// Cut site eu: its leaf node leaves the hub's network.
	leafEU := containerID(t, project, "leaf-eu")
	hubNet := project + "_hub"
	run(t, root, nil, "docker", "network", "disconnect", hubNet, leafEU)
	cutAt := time.Now()
	t.Logf("cut site eu's link at %d/%d committed rounds, %v after up", before.Committed, consortiumRounds, cutAt.Sub(upAt).Round(time.Second))
	_, during := leaderAt(before.Committed + 8)
	if during.Finished {
		t.Fatalf("the job finished while site eu was cut off: make it longer")
	}
	run(t, root, nil, "docker", "network", "connect", hubNet, leafEU)
	restoredAt := time.Now()
	t.Logf("restored site eu's link %v later, at %d committed rounds (8 committed without eu's link)", restoredAt.Sub(cutAt).Round(100*time.Millisecond), during.Committed)
	if upDone != nil {
		if err := <-upDone; err != nil {
			t.Fatal(err)
		}
	}

	// Every global node finishes the job and exits 0.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	globals := []string{"global1", "global2", "global3"}
	for _, s := range globals {
		out, err := exec.CommandContext(ctx, "docker", "wait", containerID(t, project, s)).Output()
		if err != nil {
			t.Fatalf("docker wait %s: %v", s, err)
		}
		if code := strings.TrimSpace(string(out)); code != "0" {
			t.Fatalf("%s exited with %s, want 0", s, code)
		}
	}
	t.Logf("the job finished %v after the restore (%v after up)", time.Since(restoredAt).Round(time.Second), time.Since(upAt).Round(time.Second))

	key, err := seal.Load(filepath.Join(secrets, "strata.key"))
	if err != nil {
		t.Fatal(err)
	}
	public, err := identity.LoadPublic(secrets)
	if err != nil {
		t.Fatal(err)
	}
	var snaps [][]byte
	var l *ledger.Ledger
	for i, s := range globals {
		files := copyOut(t, containerID(t, project, s), "/data/report.json")
		var rep struct {
			RoundsCompleted int  `json:"rounds_completed"`
			Finished        bool `json:"finished"`
		}
		if err := json.Unmarshal(files["report.json"], &rep); err != nil {
			t.Fatalf("%s report.json: %v", s, err)
		}
		if !rep.Finished || rep.RoundsCompleted != consortiumRounds {
			t.Errorf("%s report.json: finished %v, %d rounds, want %d finished", s, rep.Finished, rep.RoundsCompleted, consortiumRounds)
		}
		data := filepath.Join(dir, s)
		for name, b := range copyOut(t, containerID(t, project, s), "/data") {
			p := filepath.Join(data, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := rec.DataDir(fmt.Sprintf("g%d", i+1), data, key); err != nil {
			t.Fatal(err)
		}
		if l, err = global.ReadLedgerKey(data, key); err != nil {
			t.Fatal(err)
		}
		checkSignedLedger(t, s, l, public)
		l.Applied = 0
		b, err := l.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, b)
	}
	for i := 1; i < len(snaps); i++ {
		if string(snaps[i]) != string(snaps[0]) {
			t.Errorf("the ledgers of %s and %s differ", globals[0], globals[i])
		}
	}

	// What the cut did to the rounds, from the ledger the three agree on.
	// Rounds numbered after before.Rounds+1 opened after the cut (one more
	// may have opened between the status read and the disconnect), and
	// those before during.Rounds had ended when the link was restored:
	// their pings went out while eu's link was down, so none may count eu.
	var cutRounds, cutWithEU, afterWithEU int
	for _, r := range l.Rounds {
		if r.Participants > r.Sampled {
			t.Errorf("round %d counts %d participants of %d sampled", r.Round, r.Participants, r.Sampled)
		}
		hasEU := slices.Contains(r.Regions, "eu")
		switch {
		case r.Round > uint64(before.Rounds+1) && r.Round < uint64(during.Rounds):
			cutRounds++
			if hasEU {
				cutWithEU++
				t.Errorf("round %d (%s), opened and ended while site eu was cut off, counts region eu: regions %v", r.Round, r.Status, r.Regions)
			}
		case time.UnixMilli(r.OpenedUnixMs).After(restoredAt) && hasEU && r.Status == "committed":
			afterWithEU++
		}
	}
	t.Logf("rounds %d..%d opened and ended while eu was cut off: %d, %d of them with eu; committed with eu after the restore: %d",
		before.Rounds+2, during.Rounds-1, cutRounds, cutWithEU, afterWithEU)
	if cutRounds < 3 {
		t.Errorf("only %d rounds opened and ended while site eu was cut off, want ≥ 3: the mesh did not go on without it", cutRounds)
	}
	if afterWithEU == 0 {
		t.Error("no round committed after the restore counts region eu: the site did not come back")
	}

	evs := rec.Events()
	if err := history.Check(evs); err != nil {
		t.Errorf("history checker: %v", err)
	} else {
		counts := map[history.Kind]int{}
		for _, e := range evs {
			counts[e.Kind]++
		}
		t.Logf("history checker: no violation in %d events (%d invitations, %d updates, %d partials seen at the sites; %d ledger rounds of 3 nodes)",
			len(evs), counts[history.Announce], counts[history.Update], counts[history.Partial], counts[history.Round])
	}
	t.Logf("consortium compose test: %v in all", time.Since(start).Round(time.Second))
}

// checkLeafLink checks the hub's leafnode port as an outsider would: the
// hub's client port does not take a site's leaf key (a leaf key opens
// leaf connections only).
func checkLeafLink(t *testing.T, url, secrets string) {
	t.Helper()
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	k, err := identity.LoadKey(secrets, identity.KindLeaf, "eu")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := (mesh.Dialer{URL: url, TLS: tlsc, Key: k}).Connect("leaf-key-as-client"); err == nil {
		nc.Close()
		t.Error("site eu's leaf key connected to the hub as a client")
	} else {
		t.Logf("site eu's leaf key refused on the hub's client port: %v", err)
	}
}

// connectSite connects as the operator to a site's leaf node, at its
// address on the site's own network (which the host reaches; the cut
// leaves it), verifying the leaf's certificate by the site's leaf name.
func connectSite(t *testing.T, project, site, secrets string) *nats.Conn {
	t.Helper()
	id := containerID(t, project, "leaf-"+site)
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	tlsc.ServerName = identity.LeafHost(site)
	op, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		out, err := exec.Command("docker", "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks "%s_site-%s").IPAddress}}`, project, site), id).Output()
		ip := strings.TrimSpace(string(out))
		if err == nil && ip != "" && ip != "<no value>" {
			nc, err := (mesh.Dialer{URL: "nats://" + ip + ":4222", TLS: tlsc, Key: op}).Connect("observer-" + site)
			if err == nil {
				return nc
			}
			if time.Now().After(deadline) {
				t.Fatalf("connect to site %s's leaf node at %s: %v", site, ip, err)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("site %s's leaf node has no address on its network: %v %q", site, err, out)
		}
	}
}

// observeSite records, on a site's own NATS, every invitation of the
// region's clients, every update they send and every partial the region
// sends.
func observeSite(t *testing.T, nc *nats.Conn, rec *history.Recorder, region string) {
	t.Helper()
	const job = "consortium"
	sub := func(subj string, fn func(*nats.Msg)) {
		if _, err := nc.Subscribe(subj, fn); err != nil {
			t.Fatal(err)
		}
	}
	invite, _ := mesh.InviteWildcard(job, region)
	sub(invite, func(msg *nats.Msg) {
		var o wire.RoundOpen
		if wire.Decode(msg.Data, wire.TypeRoundOpen, &o) == nil {
			client := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
			rec.Add(history.Event{Kind: history.Announce, Round: o.Round, Region: o.Region, Clients: []string{client}, ModelVersion: o.ModelVersion})
		}
	})
	upd, _ := mesh.UpdateWildcard(job, region)
	sub(upd, func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypeUpdate:
			var u wire.Update
			if wire.Decode(msg.Data, wire.TypeUpdate, &u) == nil {
				rec.Add(history.Event{Kind: history.Update, Round: u.Round, Region: u.Region, Client: u.Client})
			}
		case wire.TypeStreamOpen:
			var s wire.StreamOpen
			if wire.Decode(msg.Data, wire.TypeStreamOpen, &s) == nil {
				rec.Add(history.Event{Kind: history.Update, Round: s.Round, Region: s.Region, Client: s.Client})
			}
		}
	})
	part, _ := mesh.PartialSubject(job, region)
	sub(part, func(msg *nats.Msg) {
		typ, err := wire.Peek(msg.Data)
		if err != nil {
			return
		}
		switch typ {
		case wire.TypePartial:
			var p wire.Partial
			if wire.Decode(msg.Data, wire.TypePartial, &p) == nil {
				rec.Add(history.Event{Kind: history.Partial, Round: p.Round, Region: p.Region, Count: p.Count})
			}
		case wire.TypePartialChunk:
			if h, _, err := wire.DecodePartialChunk(msg.Data); err == nil && h.Last {
				rec.Add(history.Event{Kind: history.Partial, Round: h.Round, Region: h.Region, Count: h.Count})
			}
		}
	})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
