package mesh

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/identity"
)

// TestRetryable: what the model store tries again (a clustered
// JetStream electing a leader, a replica catching up) and what it reports
// at once.
func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"a try's deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"a request timeout", nats.ErrTimeout, true},
		{"no stream answered", jetstream.ErrNoStreamResponse, true},
		{"a chunk's ack timed out", jetstream.ErrAsyncPublishTimeout, true},
		{"no responders", nats.ErrNoResponders, true},
		{"JetStream unavailable (API error 503)", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"JetStream unavailable (a direct get's status, as text)", errors.New("nats: JetStream system temporarily unavailable"), true},
		{"a replica catching up", fmt.Errorf("%w (%w)", jetstream.ErrObjectNotFound, errCatchingUp), true},
		{"JetStream not enabled", jetstream.ErrJetStreamNotEnabled, false},
		{"not found", jetstream.ErrObjectNotFound, false},
		{"bad request", &jetstream.APIError{Code: 400, Description: "bad request"}, false},
		{"the caller's cancel", context.Canceled, false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("%s (%v): retryable %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestModelStorePutsLeaveNoGoroutines: the global tier puts a model
// version every round for as long as a job runs, on a connection that
// lives as long as the node, so a put must not leave anything running
// behind it. (The JetStream client before v1.56 could leave one goroutine
// blocked for ever on a nil channel after an object put, when its
// clean-up ran before that goroutine first did; TestServiceControlRequests
// caught it on a loaded machine.)
func TestModelStorePutsLeaveNoGoroutines(t *testing.T) {
	_, dial := secureMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, _ := conn(t, dial(identity.KindGlobal, "g1"), "g1")
	store, err := OpenModelStore(ctx, g, "j", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, "model", 0, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	const puts = 40
	for v := uint64(1); v <= puts; v++ {
		if _, err := store.Put(ctx, "model", v, []byte("weights")); err != nil {
			t.Fatalf("put v%d: %v", v, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after %d puts, %d before:\n%s", runtime.NumGoroutine(), puts, before, buf[:runtime.Stack(buf, true)])
		}
	}
}
