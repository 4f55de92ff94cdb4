package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func runPrivacyArgs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := runPrivacy(context.Background(), args, &out, &errOut)
	return out.String(), err
}

func TestPrivacyEpsilonJSON(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantAcc string
		wantEps float64 // NaN: just check it is a number; Inf: "inf"
		tol     float64
	}{
		// Opacus gives 2.10137 (RDP); Strata's wider orders can only lower it.
		{"rdp", []string{"epsilon", "--q", "0.01", "--sigma", "1", "--steps", "1000", "--delta", "1e-5", "--json"}, "rdp", 2.1014, 1e-3},
		// dp_accounting PLD: 1.828243645616618
		{"pld", []string{"epsilon", "--q", "0.01", "--sigma", "1", "--steps", "1000", "--delta", "1e-5", "--accountant", "pld", "--json"}, "pld", 1.8282, 1e-3},
		// Opacus 3.27125 for the heterogeneous schedule
		{"schedule", []string{"epsilon", "--schedule", "0.05:1:50,0.05:2:50", "--delta", "1e-5", "--json"}, "rdp", 3.2712, 1e-3},
		{"unprotected", []string{"epsilon", "--q", "0.1", "--sigma", "0", "--steps", "10", "--delta", "1e-5", "--json"}, "rdp", math.Inf(1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runPrivacyArgs(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output %q is not JSON: %v", out, err)
			}
			if got["accountant"] != tt.wantAcc || got["delta"] != 1e-5 {
				t.Errorf("got %v, want accountant %s and delta 1e-5", got, tt.wantAcc)
			}
			if math.IsInf(tt.wantEps, 1) {
				if got["epsilon"] != "inf" {
					t.Errorf("epsilon = %v, want \"inf\"", got["epsilon"])
				}
				return
			}
			eps, ok := got["epsilon"].(float64)
			if !ok || math.Abs(eps-tt.wantEps) > tt.tol {
				t.Errorf("epsilon = %v, want %v ± %v", got["epsilon"], tt.wantEps, tt.tol)
			}
		})
	}
}

func TestPrivacyCalibrateAndSteps(t *testing.T) {
	out, err := runPrivacyArgs(t, "calibrate", "--epsilon", "3", "--delta", "1e-5", "--q", "0.01", "--steps", "1000", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Sigma      float64 `json:"sigma"`
		Epsilon    float64 `json:"epsilon"`
		Delta      float64 `json:"delta"`
		Accountant string  `json:"accountant"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	// Reference (Opacus RDP, 0.001 grid): 0.865.
	if math.Abs(got.Sigma-0.865) > 0.001 || got.Epsilon > 3 || got.Accountant != "rdp" || got.Delta != 1e-5 {
		t.Errorf("calibrate: got %+v, want σ ≈ 0.865 with ε ≤ 3 under rdp", got)
	}
	text, err := runPrivacyArgs(t, "calibrate", "--epsilon", "3", "--delta", "1e-5", "--q", "0.01", "--steps", "1000")
	if err != nil || !strings.Contains(text, "sigma 0.86") || !strings.Contains(text, "accountant rdp") {
		t.Errorf("calibrate text: got %q, %v", text, err)
	}
	text, err = runPrivacyArgs(t, "steps", "--epsilon", "3", "--delta", "1e-5", "--q", "0.01", "--sigma", "1")
	if err != nil || !strings.Contains(text, "steps at q 0.01") {
		t.Errorf("steps: got %q, %v", text, err)
	}
}

func TestPrivacyUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown subcommand", []string{"spend"}, `"spend"`},
		{"missing delta", []string{"epsilon", "--q", "0.1", "--sigma", "1", "--steps", "10"}, "--delta is required"},
		{"missing sigma", []string{"epsilon", "--q", "0.1", "--steps", "10", "--delta", "1e-5"}, "--sigma is required"},
		{"NaN delta", []string{"epsilon", "--q", "0.1", "--sigma", "1", "--steps", "10", "--delta", "NaN"}, "delta = NaN"},
		{"q out of range", []string{"epsilon", "--q", "2", "--sigma", "1", "--steps", "10", "--delta", "1e-5"}, "q = 2"},
		{"bad accountant", []string{"epsilon", "--q", "0.1", "--sigma", "1", "--steps", "10", "--delta", "1e-5", "--accountant", "moments"}, `"moments"`},
		{"schedule and q", []string{"epsilon", "--schedule", "0.1:1:10", "--q", "0.1", "--delta", "1e-5"}, "--q cannot be combined"},
		{"bad schedule", []string{"epsilon", "--schedule", "0.1:1", "--delta", "1e-5"}, "want q:sigma:steps"},
		{"bad flag", []string{"epsilon", "--bogus"}, "bogus"},
		{"calibrate missing steps", []string{"calibrate", "--epsilon", "1", "--delta", "1e-5", "--q", "0.1"}, "--steps is required"},
		{"calibrate bad epsilon", []string{"calibrate", "--epsilon", "-1", "--delta", "1e-5", "--q", "0.1", "--steps", "10"}, "epsilon = -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runPrivacyArgs(t, tt.args...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a usage error containing %q", err, tt.want)
			}
		})
	}
	if out, err := runPrivacyArgs(t); err != nil || !strings.Contains(out, "calibrate") {
		t.Errorf("no arguments: got %q, %v; want the usage text", out, err)
	}
}
