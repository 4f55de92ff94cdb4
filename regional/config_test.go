package regional

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	nc := &nats.Conn{} // never dialled: Validate only checks it is set
	ok := Config{Job: "j", Region: "eu", Conn: nc}
	tests := []struct {
		name      string
		mut       func(*Config)
		wantField string // "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"every field set", func(c *Config) {
			c.QueueSize, c.StreamSlots, c.StreamWindow = 10, 2, 3
			c.RegistryTimeout, c.RegistryAttempts = time.Second, 5
		}, ""},
		{"no connection", func(c *Config) { c.Conn = nil }, "Conn"},
		{"no job", func(c *Config) { c.Job = "" }, "Job"},
		{"job with a dot", func(c *Config) { c.Job = "a.b" }, "Job"},
		{"region with a wildcard", func(c *Config) { c.Region = "*" }, "Region"},
		{"negative queue", func(c *Config) { c.QueueSize = -1 }, "QueueSize"},
		{"negative slots", func(c *Config) { c.StreamSlots = -1 }, "StreamSlots"},
		{"negative window", func(c *Config) { c.StreamWindow = -2 }, "StreamWindow"},
		{"negative registry timeout", func(c *Config) { c.RegistryTimeout = -time.Second }, "RegistryTimeout"},
		{"negative registry attempts", func(c *Config) { c.RegistryAttempts = -1 }, "RegistryAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mut(&c)
			err := c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want a ConfigError matching ErrInvalidConfig", err)
			}
			if ce.Field != tt.wantField {
				t.Fatalf("got field %q (%v), want %q", ce.Field, err, tt.wantField)
			}
			if _, err := NewRunner(c); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewRunner: got %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestConfigDefaultsOnACopy: defaults fill the unset fields of a copy; the
// caller's Config is never changed, and set fields are kept.
func TestConfigDefaultsOnACopy(t *testing.T) {
	c := Config{Job: "j", Region: "eu", Conn: &nats.Conn{}, StreamWindow: 7}
	before := c
	d := c.withDefaults()
	if !reflect.DeepEqual(c, before) {
		t.Fatalf("withDefaults changed its receiver: %+v", c)
	}
	if _, err := NewRunner(c); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, before) {
		t.Fatalf("NewRunner changed the caller's Config: %+v", c)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"QueueSize", d.QueueSize, DefaultQueueSize},
		{"StreamWindow", d.StreamWindow, 7},
		{"StreamSlots", d.StreamSlots, 0}, // chosen per round from its dimension
		{"RegistryTimeout", d.RegistryTimeout, DefaultRegistryTimeout},
		{"RegistryAttempts", d.RegistryAttempts, DefaultRegistryAttempts},
		{"Logger set", d.Logger != nil, true},
	} {
		if f.got != f.want {
			t.Errorf("%s: got %v, want %v", f.name, f.got, f.want)
		}
	}
}

func TestLifecycleConfigValidateNamesTheField(t *testing.T) {
	for _, tt := range []struct {
		cfg  LifecycleConfig
		want string // "" means valid
	}{
		{LifecycleConfig{Job: "j", Region: "eu"}, ""},
		{LifecycleConfig{Region: "eu"}, "regional: LifecycleConfig.Job:"},
		{LifecycleConfig{Job: "j", Region: "e.u"}, "regional: LifecycleConfig.Region:"},
		{LifecycleConfig{Job: "j", Region: "eu", HoldMessages: -1}, "regional: LifecycleConfig.HoldMessages: -1 is negative"},
		{LifecycleConfig{Job: "j", Region: "eu", StreamWindow: -3}, "regional: LifecycleConfig.StreamWindow: -3 is negative"},
	} {
		_, err := NewLifecycle(tt.cfg)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: got %v, want nil", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig)):
			t.Errorf("%+v: got %v, want an ErrInvalidConfig starting %q", tt.cfg, err, tt.want)
		}
	}
}
