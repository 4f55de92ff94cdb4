package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress draws one progress bar on a terminal stream (stderr): the
// scenario's name, a bar, steps done of the total, the current step's
// label and the time elapsed. A nil *Progress draws nothing, so scenarios
// call it unconditionally.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	name  string
	total int
	done  int
	label string
	start time.Time
}

// NewProgress starts a bar of total steps on w; a nil w gives a nil bar.
func NewProgress(w io.Writer, name string, total int) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{w: w, name: name, total: max(total, 1), start: time.Now()}
	p.draw()
	return p
}

// Label names the step now running.
func (p *Progress) Label(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label = fmt.Sprintf(format, args...)
	p.draw()
}

// Step marks one step done.
func (p *Progress) Step() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = min(p.done+1, p.total)
	p.draw()
}

// Done ends the bar's line.
func (p *Progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = p.total
	p.label = "done"
	p.draw()
	fmt.Fprintln(p.w)
}

func (p *Progress) draw() {
	const width = 24
	fill := width * p.done / p.total
	label := p.label
	if len(label) > 48 {
		label = label[:48]
	}
	fmt.Fprintf(p.w, "\r\033[K%-10s [%s%s] %d/%d %s (%s)", p.name, strings.Repeat("█", fill), strings.Repeat("·", width-fill),
		p.done, p.total, label, time.Since(p.start).Round(time.Second))
}

// Set marks n steps done (for scenarios that count rounds, not steps).
func (p *Progress) Set(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = min(max(n, 0), p.total)
	p.draw()
}
