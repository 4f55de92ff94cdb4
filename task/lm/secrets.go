package lm

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"

	"github.com/strata-fl/strata/task"
)

// NextLogProber implements task.LanguageModel: version θ as a scorer of
// next bytes (Model.NextLogProbs), for the Secret-Sharer audit.
func (t *Task) NextLogProber(theta []float64) (task.NextLogProber, error) {
	return t.Model(theta)
}

// InsertText implements task.TextHolder: the client's shard gets text
// inserted repeats times, each at the start of a line (a position just
// after a newline, or the start) drawn from the task seed and the client,
// so that every process preparing the task plants the same text. The
// shard is copied, never modified in place: shards share the corpus's
// memory.
func (t *Task) InsertText(client string, text []byte, repeats int) error {
	i, ok := t.index[client]
	if !ok {
		return fmt.Errorf("lm: insert text: unknown client %q", client)
	}
	if repeats < 1 {
		return fmt.Errorf("lm: insert text into %s: repeats %d: want ≥ 1", client, repeats)
	}
	old := t.Split.Shards[i].Text
	starts := []int{0}
	for j, b := range old {
		if b == '\n' && j+1 < len(old) {
			starts = append(starts, j+1)
		}
	}
	h := fnv.New64a()
	h.Write([]byte(client))
	rng := rand.New(rand.NewPCG(t.Seed, h.Sum64()^0x5ec2e7))
	at := make([]int, repeats)
	for k := range at {
		at[k] = starts[rng.IntN(len(starts))]
	}
	sort.Ints(at)
	var b bytes.Buffer
	b.Grow(len(old) + repeats*len(text))
	prev := 0
	for _, p := range at {
		b.Write(old[prev:p])
		b.Write(text)
		prev = p
	}
	b.Write(old[prev:])
	t.Split.Shards[i].Text = b.Bytes()
	return nil
}
