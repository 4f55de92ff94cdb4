package topology

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const evalBase = "job: j\nregions: [{id: r, clients: 1}]\n"

// TestEvaluatorSection reads task.evaluator beside the task's own
// settings, defaults its timeout, deep-copies it in Clone, and hashes it:
// a topology without one hashes as before.
func TestEvaluatorSection(t *testing.T) {
	top, err := Parse([]byte(evalBase + "task: {name: mnist, hidden: 32, evaluator: {command: [python3, 'my evaluator.py', --flag]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := top.Task.Evaluator
	if e == nil || !reflect.DeepEqual(e.Command, []string{"python3", "my evaluator.py", "--flag"}) || e.Timeout.Duration != 2*time.Minute {
		t.Fatalf("evaluator %+v: want the command as written and the 2m default", e)
	}
	if _, ok := top.Task.Options["evaluator"]; ok || top.Task.Options["hidden"] != 32 {
		t.Fatalf("task options %v: want hidden only (the evaluator is not the task's setting)", top.Task.Options)
	}
	c := top.Clone()
	c.Task.Evaluator.Command[0] = "python4"
	if e.Command[0] != "python3" {
		t.Fatal("Clone shares the evaluator's command")
	}
	plain, err := Parse([]byte(evalBase + "task: {name: mnist, hidden: 32}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := plain.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "evaluator") {
		t.Fatalf("a topology without an evaluator renders one:\n%s", b)
	}
	h1, _ := plain.Hash()
	h2, _ := top.Hash()
	withTimeout, err := Parse([]byte(evalBase + "task: {name: mnist, hidden: 32, evaluator: {command: [python3, 'my evaluator.py', --flag], timeout: 30s}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h3, _ := withTimeout.Hash()
	other, err := Parse([]byte(evalBase + "task: {name: mnist, hidden: 32, evaluator: {command: [python3, 'other.py', --flag]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h4, _ := other.Hash()
	if h1 == h2 || h2 == h4 {
		t.Fatal("the config hash does not cover the evaluator's command")
	}
	if h2 != h3 {
		t.Fatal("the config hash covers the evaluator's timeout")
	}
	if top.Task.Evaluator.Timeout.Duration != 2*time.Minute {
		t.Fatal("Hash changed the topology")
	}
	rb, err := top.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(rb)
	if err != nil || !reflect.DeepEqual(back.Task.Evaluator, top.Task.Evaluator) {
		t.Fatalf("round trip: %+v, %v; want %+v", back.Task.Evaluator, err, top.Task.Evaluator)
	}
}

func TestEvaluatorValidationNamesTheField(t *testing.T) {
	tests := []struct{ name, yaml, field string }{
		{"no command", "task: {evaluator: {timeout: 1m}}\n", "task.evaluator.command: empty"},
		{"empty program", "task: {evaluator: {command: ['', x]}}\n", "task.evaluator.command[0]"},
		{"negative timeout", "task: {evaluator: {command: [x], timeout: -1s}}\n", "task.evaluator.timeout"},
		{"unknown key", "task: {evaluator: {cmd: [x]}}\n", "cmd"},
		{"bad timeout", "task: {evaluator: {command: [x], timeout: soon}}\n", "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(evalBase + tt.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("got %v, want ErrInvalid naming %q", err, tt.field)
			}
		})
	}
}
