package mnist

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfigNamesTheField(t *testing.T) {
	tests := []struct {
		name    string
		options map[string]any
		clients int
		field   string
	}{
		{"too many clients", nil, 10000, "task.examples_per_client"},
		{"partition", map[string]any{"partition": "sorted"}, 1, "task.partition"},
		{"shards not a divisor", map[string]any{"partition": "shards", "examples_per_client": 9}, 1, "task.shards_per_client"},
		{"shards without partition", map[string]any{"shards_per_client": 2}, 1, "task.shards_per_client"},
		{"hidden", map[string]any{"hidden": -1}, 1, "task.hidden"},
		{"unknown key", map[string]any{"hiden": 32}, 1, "hiden"},
		{"shift", map[string]any{"shift": "rotate"}, 1, "task.shift"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(tt.options, tt.clients)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %v: want ErrConfig naming %q", err, tt.field)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig(map[string]any{"partition": "shards", "examples_per_client": 500, "hidden": 32}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if c.ShardsPerClient != 2 || c.Hidden != 32 || c.PublicExamples != 10000 || c.Shift != "invert" {
		t.Fatalf("defaults %+v", c)
	}
	if o := c.Options(); o["hidden"] != 32 || o["shards_per_client"] != 2 {
		t.Fatalf("options %v do not round-trip", o)
	}
}
