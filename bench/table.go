package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Table is a terminal table: a header and rows of already formatted cells.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
}

// Add appends a row; each value is formatted with %v, floats with 4
// significant digits.
func (t *Table) Add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		switch v := c.(type) {
		case float64:
			row[i] = fmt.Sprintf("%.4g", v)
		case string:
			row[i] = v
		default:
			row[i] = fmt.Sprint(v)
		}
	}
	t.Rows = append(t.Rows, row)
}

// Write prints the table, columns aligned right.
func (t *Table) Write(w io.Writer) error {
	if t.Title != "" {
		fmt.Fprintf(w, "\n%s\n", t.Title)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(t.Header, "\t")+"\t")
	for _, r := range t.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	return tw.Flush()
}
