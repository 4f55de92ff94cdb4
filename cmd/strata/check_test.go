package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPassesDefaultAndNamesBrokenRule(t *testing.T) {
	var out bytes.Buffer
	if err := runCheck(context.Background(), nil, &out, &out); err != nil {
		t.Fatalf("default plan: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "policy: ok") {
		t.Fatalf("default plan output lacks the verdict:\n%s", out.String())
	}
	plan := filepath.Join(t.TempDir(), "plan.yaml")
	os.WriteFile(plan, []byte(`job: x
regions: [{id: a, clients: 100}, {id: b, clients: 100}]
privacy: {noise: {global: 1.0}, budget: 100}
policy: {require_noise_against: [global_operator]}
`), 0o600)
	out.Reset()
	err := runCheck(context.Background(), []string{"--topology", plan}, &out, &out)
	if !errors.Is(err, errPolicy) || !strings.Contains(err.Error(), "require_noise_against") {
		t.Fatalf("got %v, want a policy error naming require_noise_against\n%s", err, out.String())
	}
}

func TestUpRefusesPlanOverBudget(t *testing.T) {
	plan := filepath.Join(t.TempDir(), "plan.yaml")
	os.WriteFile(plan, []byte(`job: x
regions: [{id: a, clients: 100}]
privacy: {noise: {global: 0.5}, budget: 1}
`), 0o600)
	var out bytes.Buffer
	err := runUp(context.Background(), []string{"--topology", plan, "--data", t.TempDir()}, &out, &out)
	if !errors.Is(err, errPolicy) || !strings.Contains(out.String(), "privacy.budget") {
		t.Fatalf("got %v, want the budget rule named\n%s", err, out.String())
	}
}

func TestCheckRequireSecAgg(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		secagg string
		ok     bool
	}{{"", false}, {"secagg: {on: true}\n", true}} {
		plan := filepath.Join(dir, "plan.yaml")
		os.WriteFile(plan, []byte(`job: x
regions: [{id: a, clients: 100}, {id: b, clients: 100}]
privacy: {noise: {regional: 0.8, global: 0.8}, budget: 100}
policy: {require_secagg: true}
`+tc.secagg), 0o600)
		var out bytes.Buffer
		err := runCheck(context.Background(), []string{"--topology", plan}, &out, &out)
		if tc.ok && err != nil {
			t.Fatalf("plan with secagg on: %v\n%s", err, out.String())
		}
		if !tc.ok && (!errors.Is(err, errPolicy) || !strings.Contains(err.Error(), "require_secagg") || !strings.Contains(out.String(), "secagg.on: true")) {
			t.Fatalf("plan without secagg: got %v, want a policy error naming require_secagg and the fix\n%s", err, out.String())
		}
	}
}
