package privacy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The reference vectors (testdata/dp_vectors.json, copied from the shared
// conformance set) are decoded into these types. A JSON null means +Inf.

type vecPart struct {
	Q     float64 `json:"q"`
	Sigma float64 `json:"sigma"`
	Steps int     `json:"steps"`
}

type vecResult struct {
	Epsilon      *float64 `json:"epsilon"`
	OptimalOrder *float64 `json:"optimal_order"`
	VDI          float64  `json:"value_discretization_interval"`
	Reliable     *bool    `json:"reliable"`
	Lower        *float64 `json:"lower_estimate_epsilon"`
}

type vecCase struct {
	ID        string `json:"id"`
	Group     string `json:"group"`
	Mechanism struct {
		Parts []vecPart `json:"parts"`
	} `json:"mechanism"`
	Delta   float64              `json:"delta"`
	Results map[string]vecResult `json:"results"`
}

type vecRDP1 struct {
	ID    string              `json:"id"`
	Q     float64             `json:"q"`
	Sigma float64             `json:"sigma"`
	Alpha float64             `json:"alpha"`
	RDP   map[string]*float64 `json:"rdp"`
}

type vecCalib struct {
	ID      string  `json:"id"`
	Target  float64 `json:"target_epsilon"`
	Delta   float64 `json:"delta"`
	Q       float64 `json:"q"`
	Steps   int     `json:"steps"`
	Results map[string]struct {
		Sigma float64 `json:"sigma"`
		VDI   float64 `json:"value_discretization_interval"`
	} `json:"results"`
}

type vectors struct {
	Definitions struct {
		Orders map[string][]float64 `json:"orders"`
	} `json:"definitions"`
	Cases       []vecCase  `json:"cases"`
	RDPSingle   []vecRDP1  `json:"rdp_single_step"`
	Calibration []vecCalib `json:"calibration"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dp_vectors.json"))
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding vectors: %v", err)
	}
	if len(v.Cases) == 0 || len(v.RDPSingle) == 0 || len(v.Calibration) == 0 {
		t.Fatalf("vectors file has %d cases, %d single-step values, %d calibration cases: want all non-empty",
			len(v.Cases), len(v.RDPSingle), len(v.Calibration))
	}
	return &v
}

func (c vecCase) parts() []Part {
	ps := make([]Part, len(c.Mechanism.Parts))
	for i, p := range c.Mechanism.Parts {
		ps[i] = Part{Q: p.Q, Sigma: p.Sigma, Steps: p.Steps}
	}
	return ps
}

// allQ1 reports whether every part of the case is unsampled (q = 1).
func (c vecCase) allQ1() bool {
	for _, p := range c.Mechanism.Parts {
		if p.Q != 1 {
			return false
		}
	}
	return true
}
