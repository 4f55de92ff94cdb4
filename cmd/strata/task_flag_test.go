package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpTaskFlag checks `strata up --task`: an unknown task and a task
// beside a topology file are usage errors that say what to do, and
// `strata topology default lm` prints the job examples/lm.yaml runs.
func TestUpTaskFlag(t *testing.T) {
	t.Setenv("STRATA_TOPOLOGY", "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--task", "resnet", "--data", t.TempDir()}, "want mnist or lm"},
		{[]string{"--task", "lm", "--topology", filepath.Join("..", "..", "examples", "lm.yaml"), "--data", t.TempDir()}, "drop --task"},
	} {
		var out, errb bytes.Buffer
		err := runUp(t.Context(), tt.args, &out, &errb)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("strata up %v: %v, want a usage error saying %q", tt.args, err, tt.want)
		}
	}
	var out, errb bytes.Buffer
	if err := runTopology(t.Context(), []string{"default", "lm"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"job: lm-finetune", "name: lm", "clip_norm: 0.5"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("strata topology default lm lacks %q:\n%s", want, out.String())
		}
	}
}
