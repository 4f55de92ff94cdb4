package lm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// ErrNoCorpus reports that the Go distribution's source tree, the task's
// data, could not be found.
var ErrNoCorpus = errors.New("lm: the Go distribution's source tree (the LM task's corpus) was not found")

// opticks is the file every Go distribution ships that anchors the prose
// half of the corpus.
const opticks = "src/testdata/Isaac.Newton-Opticks.txt"

// LocateGoroot returns the Go tree the corpus is read from: dir if set,
// else $GOROOT, else `go env GOROOT`, else the tree this binary was built
// from. The tree must hold src/testdata/Isaac.Newton-Opticks.txt.
func LocateGoroot(dir string) (string, error) {
	var tried []string
	try := func(d string) bool {
		if d == "" {
			return false
		}
		tried = append(tried, d)
		_, err := os.Stat(filepath.Join(d, opticks))
		return err == nil
	}
	if dir != "" {
		if try(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w: task.goroot %q has no %s: set it to a Go installation's root (`go env GOROOT`)", ErrNoCorpus, dir, opticks)
	}
	if try(os.Getenv("GOROOT")) {
		return os.Getenv("GOROOT"), nil
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); try(d) {
			return d, nil
		}
	}
	//lint:ignore SA1019 the last resort, where no go command is on PATH.
	if d := runtime.GOROOT(); try(d) {
		return d, nil
	}
	return "", fmt.Errorf("%w (tried %v): install Go (its tree carries the text), or set GOROOT or the topology's task.goroot to its root", ErrNoCorpus, tried)
}

// Corpus is the Go distribution's text, split into the task's two
// domains. Prose is the pre-training domain: src/testdata's Opticks and
// the doc/*.html and doc/*.md files, each cut 90/10 into training and
// held-out text. Code is the clients' domain: the .go files under src/
// (outside testdata and vendor directories), grouped by directory.
type Corpus struct {
	Root string
	// Version is the tree's VERSION line (the corpus differs between Go
	// releases; the checkpoint cache is keyed by it).
	Version               string
	ProseTrain, ProseHeld []byte
	// Dirs are the code directories (relative to src/, sorted) and their
	// .go files concatenated in name order.
	Dirs []string
	Code [][]byte
}

var corpora sync.Map // root → *corpusOnce

type corpusOnce struct {
	once sync.Once
	c    *Corpus
	err  error
}

// LoadCorpus reads the corpus from the Go tree at root, once per process:
// it is never modified, so every task of a process shares it.
func LoadCorpus(root string) (*Corpus, error) {
	v, _ := corpora.LoadOrStore(root, &corpusOnce{})
	co := v.(*corpusOnce)
	co.once.Do(func() { co.c, co.err = loadCorpus(root) })
	return co.c, co.err
}

func loadCorpus(root string) (*Corpus, error) {
	c := &Corpus{Root: root}
	if b, err := os.ReadFile(filepath.Join(root, "VERSION")); err == nil {
		c.Version, _, _ = strings.Cut(string(b), "\n")
	}
	prose := []string{filepath.Join(root, opticks)}
	for _, pat := range []string{"doc/*.html", "doc/*.md"} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		sort.Strings(m)
		prose = append(prose, m...)
	}
	for _, p := range prose {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoCorpus, err)
		}
		cut := len(b) * 9 / 10
		c.ProseTrain = append(c.ProseTrain, b[:cut]...)
		c.ProseHeld = append(c.ProseHeld, b[cut:]...)
	}
	src := filepath.Join(root, "src")
	byDir := map[string][]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || n == "vendor" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && d.Type().IsRegular() {
			rel, _ := filepath.Rel(src, filepath.Dir(p))
			byDir[filepath.ToSlash(rel)] = append(byDir[filepath.ToSlash(rel)], p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCorpus, err)
	}
	for d := range byDir {
		c.Dirs = append(c.Dirs, d)
	}
	sort.Strings(c.Dirs)
	for _, d := range c.Dirs {
		files := byDir[d]
		sort.Strings(files)
		var buf bytes.Buffer
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrNoCorpus, err)
			}
			buf.Write(b)
		}
		c.Code = append(c.Code, buf.Bytes())
	}
	if len(c.Dirs) < 10 {
		return nil, fmt.Errorf("%w: %s holds .go files in only %d directories: want a full Go distribution", ErrNoCorpus, src, len(c.Dirs))
	}
	return c, nil
}

// Split is the clients' side of the corpus: the held-out directories,
// whose text no client trains on, and the client shards.
type Split struct {
	// HeldDirs are the held-out directories; Held their text.
	HeldDirs []string
	Held     []byte
	// Shards are the client shards in dealing order: client i holds
	// Shards[i].
	Shards []Shard
}

// Shard is one client's text: a piece of one directory's files.
type Shard struct {
	Dir  string
	Text []byte
}

// SplitCode deals the code: the directories are shuffled by the seed, the
// first heldDirs of them are held out, and every other directory's text is
// cut into pieces of shardBytes (a shorter last piece of at least
// shardBytes/4 is kept, a shorter one dropped); the pieces are shuffled by
// the seed and the first clients of them dealt, one per client. It fails,
// naming the settings, when there are fewer pieces than clients.
func (c *Corpus) SplitCode(clients, heldDirs, shardBytes int, seed uint64) (*Split, error) {
	if heldDirs < 1 || heldDirs >= len(c.Dirs) {
		return nil, fmt.Errorf("%w: task.heldout_dirs %d: want 1..%d", ErrConfig, heldDirs, len(c.Dirs)-1)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c6d2d73706c6974))
	order := rng.Perm(len(c.Dirs))
	s := &Split{}
	held := append([]int(nil), order[:heldDirs]...)
	sort.Ints(held)
	for _, i := range held {
		s.HeldDirs = append(s.HeldDirs, c.Dirs[i])
		s.Held = append(s.Held, c.Code[i]...)
	}
	rest := append([]int(nil), order[heldDirs:]...)
	sort.Ints(rest)
	var all []Shard
	for _, i := range rest {
		t := c.Code[i]
		for off := 0; off < len(t); off += shardBytes {
			end := min(off+shardBytes, len(t))
			if end-off < shardBytes/4 {
				break
			}
			all = append(all, Shard{Dir: c.Dirs[i], Text: t[off:end]})
		}
	}
	if clients > len(all) {
		return nil, fmt.Errorf("%w: %d clients, but the Go tree's code gives only %d shards of task.shard_bytes %d: lower shard_bytes or the regions' clients", ErrConfig, clients, len(all), shardBytes)
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	s.Shards = all[:clients]
	return s, nil
}

// Windows cuts n windows of length bytes from text at positions drawn
// from rng (with replacement); text must be longer than length.
func Windows(text []byte, n, length int, rng *rand.Rand) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		off := rng.IntN(len(text) - length + 1)
		out[i] = text[off : off+length]
	}
	return out
}

// Tiles cuts text into consecutive non-overlapping windows of length
// bytes (the tail that does not fill one is dropped).
func Tiles(text []byte, length int) [][]byte {
	var out [][]byte
	for off := 0; off+length <= len(text); off += length {
		out = append(out, text[off:off+length])
	}
	return out
}

// spread returns n windows of length bytes evenly spaced over text (a
// fixed evaluation set).
func spread(text []byte, n, length int) [][]byte {
	if len(text) < length {
		return nil
	}
	out := make([][]byte, n)
	span := len(text) - length
	for i := range out {
		off := int(int64(span) * int64(i) / int64(max(n, 1)))
		out[i] = text[off : off+length]
	}
	return out
}
