package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

func TestReportCommand(t *testing.T) {
	top, err := topology.Parse([]byte("job: rep\nregions:\n  - {id: a, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := top.Hash()
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	n, err := global.OpenNode(global.NodeConfig{DataDir: filepath.Join(data, "global")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := n.Apply(ctx, &ledger.StartJob{Job: ledger.Job{Name: "rep", ConfigHash: hash, Delta: 1e-5, Budget: 4, Population: 2, PlannedRounds: 1, Accountant: "rdp", Orders: privacy.Orders()}}); err != nil || res.Err != nil {
		t.Fatal(err, res.Err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := saveTopology(data, top); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	if err := run(ctx, []string{"report", "--data", data}, &out, &errw); err != nil {
		t.Fatalf("strata report: %v (%s)", err, errw.String())
	}
	path := filepath.Join(data, "report", "report.html")
	if !strings.Contains(out.String(), path) {
		t.Errorf("output %q does not name %s", out.String(), path)
	}
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(html), "job: rep") {
		t.Error("the report lacks the saved topology")
	}
	other := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(other, []byte("job: other\nregions:\n  - {id: a, clients: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, []string{"report", "--data", data, "--topology", other}, &out, &errw)
	if err == nil || !strings.Contains(err.Error(), "config hash") {
		t.Errorf("another job's topology: got %v, want an error naming the config hash", err)
	}
	if err := run(ctx, []string{"report", "--data", t.TempDir()}, &out, &errw); err == nil || !strings.Contains(err.Error(), "--data of a strata up") {
		t.Errorf("empty dir: got %v", err)
	}
}
