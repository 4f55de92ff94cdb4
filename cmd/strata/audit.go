package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
)

// runAudit verifies and exports the tamper-evident audit trail.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "privacy" {
		return runAuditPrivacy(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "secrets" {
		return runAuditSecrets(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "verify" && args[0] != "export") {
		return fmt.Errorf("%w: strata audit verify [--data DIR | --file FILE.jsonl] | export [--data DIR] [--out FILE] | privacy [--data DIR] | secrets [--data DIR]", errUsage)
	}
	op := args[0]
	fs := flag.NewFlagSet("audit "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up (a global node's dir holds raft/ directly)")
	file := fs.String("file", "", "verify: an exported JSON-lines trail instead of a data dir")
	out := fs.String("out", "", "export: write here instead of standard output")
	if err := fs.Parse(args[1:]); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	dir := nodeDir(*data)
	if op == "export" {
		key, err := dataKey()
		if err != nil {
			return err
		}
		l, err := global.ReadLedgerKey(dir, key)
		if err != nil {
			return err
		}
		w := stdout
		if *out != "" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		enc := json.NewEncoder(w)
		for _, r := range l.Audit {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		if *out != "" {
			fmt.Fprintf(stdout, "%d audit records written to %s; head %s\n", len(l.Audit), *out, l.AuditHead())
		}
		return nil
	}
	if *file != "" {
		recs, err := readAuditFile(*file)
		if err != nil {
			return err
		}
		if err := ledger.VerifyAudit(recs); err != nil {
			return err
		}
		head := ""
		if len(recs) > 0 {
			head = recs[len(recs)-1].Hash
		}
		fmt.Fprintf(stdout, "%s: %d records, chain intact; head %s\n", *file, len(recs), head)
		return nil
	}
	key, err := dataKey()
	if err != nil {
		return err
	}
	rep, err := global.VerifyAuditDir(dir, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d records, chain intact, %d checked against the log on disk; head %s\n", dir, rep.Records, rep.Checked, rep.Head)
	return nil
}

// nodeDir accepts either a strata up data dir (ledger under global/) or a
// global node's own data dir.
func nodeDir(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "global", "raft")); err == nil {
		return filepath.Join(dir, "global")
	}
	return dir
}

func readAuditFile(path string) ([]ledger.AuditRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := ledger.ReadAuditJSON(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}
