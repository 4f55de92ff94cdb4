package privacy

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestChecks(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name    string
		err     error
		wantErr string // substring; "" means no error
	}{
		{"epsilon ok", CheckEpsilon(1), ""},
		{"epsilon zero", CheckEpsilon(0), "epsilon = 0: must be in (0, +Inf)"},
		{"epsilon NaN", CheckEpsilon(nan), "epsilon = NaN"},
		{"epsilon Inf", CheckEpsilon(inf), "epsilon = +Inf"},
		{"delta ok", CheckDelta(1e-5), ""},
		{"delta NaN", CheckDelta(nan), "privacy: delta = NaN: must be in (0, 1)"},
		{"delta zero", CheckDelta(0), "delta = 0"},
		{"delta one", CheckDelta(1), "delta = 1"},
		{"q ok 0", CheckQ(0), ""},
		{"q ok 1", CheckQ(1), ""},
		{"q negative", CheckQ(-0.1), "q = -0.1: must be in [0, 1]"},
		{"q above one", CheckQ(1.5), "q = 1.5"},
		{"q -Inf", CheckQ(math.Inf(-1)), "q = -Inf"},
		{"sigma ok 0", CheckSigma(0), ""},
		{"sigma negative", CheckSigma(-1), "sigma = -1: must be in [0, +Inf)"},
		{"sigma Inf", CheckSigma(inf), "sigma = +Inf"},
		{"steps ok", CheckSteps(0), ""},
		{"steps negative", CheckSteps(-3), "steps = -3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantErr == "" {
				if tt.err != nil {
					t.Fatalf("got %v, want nil", tt.err)
				}
				return
			}
			if tt.err == nil || !strings.Contains(tt.err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", tt.err, tt.wantErr)
			}
			if !errors.Is(tt.err, ErrInvalidParameter) {
				t.Fatalf("got %v, want it to match ErrInvalidParameter", tt.err)
			}
		})
	}
}

func TestAccountantRejectsBadSchedules(t *testing.T) {
	tests := []struct {
		name    string
		parts   []Part
		delta   float64
		wantErr string
	}{
		{"bad delta", []Part{{0.1, 1, 10}}, math.NaN(), "delta = NaN"},
		{"bad q", []Part{{0.1, 1, 10}, {2, 1, 10}}, 1e-5, "parts[1].q = 2"},
		{"bad sigma", []Part{{0.1, math.NaN(), 10}}, 1e-5, "parts[0].sigma = NaN"},
		{"bad steps", []Part{{0.1, 1, -1}}, 1e-5, "parts[0].steps = -1"},
	}
	for _, name := range []string{"rdp", "pld"} {
		acc, err := AccountantByName(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			_, err := acc.Epsilon(tt.parts, tt.delta)
			if err == nil || !errors.Is(err, ErrInvalidParameter) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s/%s: got %v, want ErrInvalidParameter containing %q", name, tt.name, err, tt.wantErr)
			}
		}
	}
}

func TestAccountantEdgeCases(t *testing.T) {
	for _, acc := range []Accountant{NewRDP(), NewPLD()} {
		testEdgeCases(t, acc)
	}
}

func testEdgeCases(t *testing.T, acc Accountant) {
	tests := []struct {
		name  string
		parts []Part
		want  float64
	}{
		{"empty schedule", nil, 0},
		{"zero steps", []Part{{0.1, 1, 0}}, 0},
		{"never sampled", []Part{{0, 0, 100}}, 0},
		{"unprotected", []Part{{0.1, 1, 10}, {0.01, 0, 1}}, math.Inf(1)},
	}
	for _, tt := range tests {
		got, err := acc.Epsilon(tt.parts, 1e-5)
		if err != nil || got != tt.want {
			t.Errorf("%s/%s: got (%v, %v), want (%v, nil)", acc.Name(), tt.name, got, err, tt.want)
		}
	}
}

func TestAccountantByName(t *testing.T) {
	for _, name := range []string{"rdp", "PLD"} {
		if acc, err := AccountantByName(name); err != nil || acc.Name() != strings.ToLower(name) {
			t.Errorf("AccountantByName(%s) = %v, %v", name, acc, err)
		}
	}
	_, err := AccountantByName("moments")
	if !errors.Is(err, ErrInvalidParameter) || !strings.Contains(err.Error(), `"moments"`) {
		t.Errorf("AccountantByName(moments): got %v, want an error naming the value", err)
	}
}

func TestEpsilonFromRDPGuards(t *testing.T) {
	n := len(Orders())
	if _, _, err := EpsilonFromRDP(make([]float64, n-1), 1e-5); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("short curve: got %v, want ErrInvalidParameter", err)
	}
	zero := make([]float64, n)
	if eps, _, err := EpsilonFromRDP(zero, 1e-5); err != nil || eps != 0 {
		t.Errorf("zero curve: got %v, %v; want 0", eps, err)
	}
	inf := make([]float64, n)
	for i := range inf {
		inf[i] = math.Inf(1)
	}
	if eps, _, err := EpsilonFromRDP(inf, 1e-5); err != nil || !math.IsInf(eps, 1) {
		t.Errorf("infinite curve: got %v, %v; want +Inf", eps, err)
	}
	bad := make([]float64, n)
	bad[3] = -1
	if _, _, err := EpsilonFromRDP(bad, 1e-5); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("negative rdp: got %v, want ErrInvalidParameter", err)
	}
}

func TestPLDConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     PLDConfig
		wantErr string
	}{
		{PLDConfig{}, ""},
		{PLDConfig{Interval: 1e-3}, ""},
		{PLDConfig{Interval: -1}, "PLDConfig.Interval = -1"},
		{PLDConfig{Interval: math.NaN()}, "PLDConfig.Interval = NaN"},
		{PLDConfig{TailMass: 0.5}, "PLDConfig.TailMass = 0.5"},
		{PLDConfig{MaxPoints: 10}, "PLDConfig.MaxPoints = 10"},
	}
	for _, tt := range tests {
		_, err := NewPLDWithConfig(tt.cfg)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidParameter)) {
			t.Errorf("%+v: got %v, want %q", tt.cfg, err, tt.wantErr)
		}
	}
	if got := NewPLD().(*PLD).Config().Interval; got != 1e-4 {
		t.Errorf("default interval %v, want 1e-4", got)
	}
}
