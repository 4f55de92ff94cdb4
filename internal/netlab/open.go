package netlab

import (
	"fmt"
	"os"
)

// Open makes a lab outside a test — for the bench's chaos scenario, which
// partitions a mesh of processes — with the named hosts numbered as New
// numbers them. The caller must Close it. logf receives what New would log
// to its test (nil: nothing). Unlike New it returns an error (ErrUnavailable
// when the environment cannot make namespaces) and Host returns nil for an
// unknown name.
func Open(logf func(format string, args ...any), hosts ...string) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 || len(hosts) > 250 {
		return nil, fmt.Errorf("netlab: %d hosts, want 1..250", len(hosts))
	}
	sweepStale()
	prefix := fmt.Sprintf("nl%d-%d", os.Getpid(), labSeq.Add(1))
	l := &Lab{logf: logf, prefix: prefix, sw: prefix + "-sw", hosts: map[string]*Host{},
		cuts: map[[2]string]bool{}, isol: map[string]bool{}, loss: map[string]float64{}}
	if err := l.build(hosts); err != nil {
		l.remove()
		return nil, err
	}
	return l, nil
}

// Close removes a lab made by Open: its namespaces, and with them their
// links. Processes still running in them keep running, unreachable: stop
// them first.
func (l *Lab) Close() { l.remove() }

// log sends to the lab's test, or to Open's logger.
func (l *Lab) log(format string, args ...any) {
	switch {
	case l.t != nil:
		l.t.Logf(format, args...)
	case l.logf != nil:
		l.logf(format, args...)
	}
}
