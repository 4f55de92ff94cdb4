package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress draws one progress bar on a terminal stream (stderr), or plain
// lines where the stream is not a terminal: the
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
	// plain writes one line per change instead of redrawing a bar: w is
	// not a terminal (a log file, CI), where escape codes are noise.
	plain bool
	last  string
}

// isTerminal reports whether w is a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewProgress starts a bar of total steps on w; a nil w gives a nil bar.
func NewProgress(w io.Writer, name string, total int) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{w: w, name: name, total: max(total, 1), start: time.Now(), plain: !isTerminal(w)}
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
	if !p.plain {
		fmt.Fprintln(p.w)
	}
}

func (p *Progress) draw() {
	const width = 24
	fill := width * p.done / p.total
	label := p.label
	if len(label) > 48 {
		label = label[:48]
	}
	if p.plain {
		line := fmt.Sprintf("%s: %d/%d %s", p.name, p.done, p.total, p.label)
		if line != p.last {
			p.last = line
			fmt.Fprintf(p.w, "%s (%s)\n", line, time.Since(p.start).Round(time.Second))
		}
		return
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
