package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/strata-fl/strata/"

// allowed lists, per package, the packages of ours it may import
// (DESIGN.md §5). Packages not listed (standalone, bench, cmd, internal,
// *test helpers) may import anything.
var allowed = map[string][]string{
	"internal/accum":    {},
	"internal/msgcheck": {},
	"internal/seal":     {},
	// The safetensors codec knows no model: exports hand it tensors.
	"internal/safetensors": {},
	"privacy":              {},
	"topology":             {},
	"secagg":               {},
	// The task interface imports nothing; a task may read the interface
	// alone; task/builtin is the one place that knows every task.
	"task":          {},
	"task/mnist":    {"task"},
	"task/lm":       {"task"},
	"task/builtin":  {"task", "task/lm", "task/mnist", "topology"},
	"empirical":     {},
	"trainerproto":  {"internal/msgcheck"},
	"mesh/wire":     {"internal/msgcheck"},
	"mesh":          {"mesh/wire", "topology", "internal/seal", "identity"},
	"global/ledger": {"privacy", "internal/msgcheck"},
	"identity":      {"internal/msgcheck"},
	"edge":          {"identity", "mesh", "mesh/wire", "privacy", "topology", "secagg"},
	"regional":      {"internal/accum", "identity", "mesh", "mesh/wire", "privacy", "topology", "secagg"},
	// global decodes operators' msgpack control requests (internal/msgcheck).
	"global": {"global/ledger", "global/round", "identity", "mesh", "mesh/wire", "privacy", "topology", "internal/seal", "internal/msgcheck", "empirical"},
	// The round machine is a pure core: no NATS (mesh), no raft, no clock.
	// It fixes each round's secagg session parameters (secagg.ChooseParams)
	// so that a region and its clients cannot diverge or pick weaker ones,
	// and records them write-ahead in the ledger.
	"global/round": {"global/ledger", "identity", "mesh/wire", "secagg", "topology"},
	// Observability sits above the tiers: it reads them, they never import it.
	"observe/report":    {"audit", "empirical", "global/ledger", "task", "topology"},
	"audit":             {"empirical", "global", "global/ledger", "internal/seal", "mesh", "mesh/wire", "task", "topology"},
	"observe/metrics":   {"global", "global/ledger", "mesh", "mesh/wire", "regional", "edge", "observe/report", "topology"},
	"observe/dashboard": {"global", "global/ledger", "observe/metrics", "observe/report"},
}

// modelPackages are the built-in tasks: only task/… may import them, so
// that no tier, no role and no command knows which model a job trains.
var modelPackages = []string{"task/lm", "task/mnist"}

func TestImportsPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/strata-fl/strata/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		for _, imp := range fields[1:] {
			for _, mp := range modelPackages {
				if imp == module+mp && !strings.HasPrefix(pkg, "task/") {
					t.Errorf("%s imports %s: only task/… may know a particular model (use the task interface, task/builtin chooses)", pkg, mp)
				}
			}
		}
		ok, restricted := allowed[pkg]
		if !restricted {
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			permitted := false
			for _, a := range ok {
				permitted = permitted || a == dep
			}
			if !permitted {
				t.Errorf("%s imports %s: not allowed by DESIGN.md §5 (allowed: %v)", pkg, dep, ok)
			}
		}
	}
}
