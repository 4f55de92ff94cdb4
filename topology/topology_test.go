package topology

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultIsValidAndRoundTrips(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := d.YAML()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatalf("parse of the default's YAML: %v", err)
	}
	if p.Population() != d.Population() || !reflect.DeepEqual(p.Privacy, d.Privacy) || p.Train != d.Train {
		t.Fatalf("round trip changed the topology:\n%+v\n%+v", p, d)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	tests := []struct {
		name, yaml, field string
	}{
		{"no regions", "job: j\nregions: []\n", "regions"},
		{"bad job", "job: a.b\nregions: [{id: r, clients: 1}]\n", "job"},
		{"duplicate region", "job: j\nregions: [{id: r, clients: 1}, {id: r, clients: 1}]\n", "regions[1].id"},
		{"zero clients", "job: j\nregions: [{id: r, clients: 0}]\n", "regions[0].clients"},
		{"delta", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {delta: 2}\n", "privacy.delta"},
		{"q", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {sampling_rate: 1.5}\n", "privacy.sampling_rate"},
		{"negative noise", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {noise: {regional: -1}}\n", "privacy.noise.regional"},
		{"min regions", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {min_regions: 3}\n", "privacy.min_regions"},
		{"accountant", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {accountant: moments}\n", "privacy.accountant"},
		{"bad task name", "job: j\nregions: [{id: r, clients: 1}]\ntask: {name: a.b}\n", "task.name"},
		{"old data section", "job: j\nregions: [{id: r, clients: 1}]\ndata: {public_examples: 10}\n", "moved under `task:`"},
		{"old model setting", "job: j\nregions: [{id: r, clients: 1}]\ntraining: {hidden: 32}\n", "moved under `task:`"},
		{"unknown key", "job: j\nregions: [{id: r, clients: 1}]\nprivacy: {sigma: 1}\n", "sigma"},
		{"bad duration", "job: j\nregions: [{id: r, clients: 1}]\nround: {timeout: soon}\n", "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("got nil error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %q", err, tt.field)
			}
		})
	}
}

func TestDefaultsDoNotTouchSetFields(t *testing.T) {
	p, err := Parse([]byte("job: j\nregions: [{id: a, clients: 5}, {id: b, clients: 5}]\nprivacy: {sampling_rate: 0.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Privacy.SamplingRate != 0.2 || p.Privacy.Delta != 1e-5 || p.Privacy.MinRegions != 1 {
		t.Fatalf("got %+v", p.Privacy)
	}
}

func TestTaskOptionsRoundTrip(t *testing.T) {
	top, err := Parse([]byte("job: j\nregions: [{id: r, clients: 100}]\ntask: {name: mnist, partition: shards, hidden: 32}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if top.Task.Name != "mnist" || top.Task.Options["partition"] != "shards" || top.Task.Options["hidden"] != 32 {
		t.Fatalf("task %+v", top.Task)
	}
	c := top.Clone()
	c.Task.Options["hidden"] = 64
	if top.Task.Options["hidden"] != 32 {
		t.Fatal("Clone shares the task's options")
	}
	if d := Default(); d.Task.Name != "mnist" || len(d.Task.Options) != 0 {
		t.Fatalf("default task %+v: want mnist with its own defaults", d.Task)
	}
}

// TestExamplesValidate: every topology under examples/ parses and
// validates, so the README's commands run as written.
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example topologies found: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
