package global

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// leadership turns raft's leadership notifications (Config.NotifyCh) into
// a condition any number of goroutines can wait on: Changed returns a
// channel closed at the next change. Raft blocks writing to NotifyCh, so
// one goroutine the node owns drains it at once.
type leadership struct {
	mu      sync.Mutex
	changed chan struct{}
	done    chan struct{}
}

func newLeadership(notify <-chan bool, stop <-chan struct{}) *leadership {
	l := &leadership{changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-stop:
				return
			case <-notify:
				l.mu.Lock()
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
			}
		}
	}()
	return l
}

// Changed is closed at the next leadership change of this node.
func (l *leadership) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// LeadershipChanged is closed the next time this node gains or loses the
// leadership: what the service waits on instead of polling.
func (n *Node) LeadershipChanged() <-chan struct{} { return n.lead.Changed() }

// waitLeading returns once this node leads, or ctx ends.
func (n *Node) waitLeading(ctx context.Context) bool {
	for {
		ch := n.LeadershipChanged()
		if n.IsLeader() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
}

// raftLog hands raft's own log lines (hclog) to the node's slog logger, at
// the level hclog wrote them with.
type raftLog struct{ l *slog.Logger }

func (w raftLog) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := string(line)
		level := slog.LevelInfo
		switch {
		case strings.Contains(s, "[ERROR]"):
			level = slog.LevelError
		case strings.Contains(s, "[WARN]"):
			level = slog.LevelWarn
		case strings.Contains(s, "[DEBUG]"), strings.Contains(s, "[TRACE]"):
			level = slog.LevelDebug
		}
		w.l.Log(context.Background(), level, "raft", "line", s)
	}
	return len(p), nil
}
