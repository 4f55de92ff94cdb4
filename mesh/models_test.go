package mesh

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
