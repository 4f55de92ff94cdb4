// Package safetensors writes and reads the safetensors format (Hugging
// Face): an 8-byte little-endian header length N, N bytes of a JSON
// header, then the tensors' raw bytes. The header maps each tensor's name
// to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
// the byte buffer after the header) and may hold "__metadata__", a map of
// strings to strings. The header is padded with spaces so that the byte
// buffer starts on an 8-byte boundary, as the reference implementation
// does; tensors are stored little-endian, row-major, contiguously, in the
// order given, with no holes.
//
// Only F32 is written (Strata's models are float32); the reader accepts
// F32 and rejects any other dtype by name, so that a file is never read
// as something it is not.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("safetensors: malformed file")

// ErrTensor is wrapped by every error about a tensor given to Write.
var ErrTensor = errors.New("safetensors: invalid tensor")

// MaxHeader bounds the JSON header a reader accepts (the reference
// implementation's limit is 100 MB).
const MaxHeader = 100 << 20

// Tensor is one named float32 tensor, row-major.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// elements is the product of shape, or -1 when a dimension is negative or
// the product overflows.
func elements(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return -1
		}
		n *= d
	}
	return n
}

// Encode returns the file holding tensors (in that order) and metadata
// (nil: none).
func Encode(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	first := true
	field := func(name string, v any) error {
		k, err := json.Marshal(name)
		if err != nil {
			return err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if !first {
			hdr.WriteByte(',')
		}
		first = false
		hdr.Write(k)
		hdr.WriteByte(':')
		hdr.Write(b)
		return nil
	}
	if len(metadata) > 0 {
		if err := field("__metadata__", metadata); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	off := 0
	for _, t := range tensors {
		switch n := elements(t.Shape); {
		case t.Name == "" || t.Name == "__metadata__":
			return nil, fmt.Errorf("%w: name %q: give each tensor a name other than \"\" and __metadata__", ErrTensor, t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("%w: %s: two tensors have this name", ErrTensor, t.Name)
		case n < 0 || n != len(t.Data):
			return nil, fmt.Errorf("%w: %s: shape %v holds %d values, data has %d", ErrTensor, t.Name, t.Shape, n, len(t.Data))
		}
		seen[t.Name] = true
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + 4*len(t.Data)
		if err := field(t.Name, header{DType: "F32", Shape: shape, Offsets: [2]int{off, end}}); err != nil {
			return nil, err
		}
		off = end
	}
	hdr.WriteByte('}')
	for (8+hdr.Len())%8 != 0 {
		hdr.WriteByte(' ')
	}
	out := make([]byte, 8, 8+hdr.Len()+off)
	binary.LittleEndian.PutUint64(out, uint64(hdr.Len()))
	out = append(out, hdr.Bytes()...)
	for _, t := range tensors {
		for _, v := range t.Data {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out, nil
}

// Write writes the file Encode returns.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	b, err := Encode(tensors, metadata)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// WriteFile writes the file atomically (a temporary file renamed).
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	b, err := Encode(tensors, metadata)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".safetensors-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

type header struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

// File is a decoded file: its tensors in storage order and its metadata.
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Tensor returns the tensor named name, or nil.
func (f *File) Tensor(name string) *Tensor {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i]
		}
	}
	return nil
}

// Decode parses a file. It checks what the reference reader checks: the
// header's length and JSON, that it starts with '{', dtypes, that every
// shape matches its byte range, and that the ranges tile the buffer
// exactly (no holes, no overlaps, nothing after the last).
func Decode(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: %d bytes: shorter than the 8-byte header length", ErrFormat, len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeader || n > uint64(len(b)-8) {
		return nil, fmt.Errorf("%w: header length %d: the file has %d bytes after it (limit %d)", ErrFormat, n, len(b)-8, MaxHeader)
	}
	raw := b[8 : 8+n]
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: the header does not start with '{'", ErrFormat)
	}
	entries, err := parseHeader(raw)
	if err != nil {
		return nil, err
	}
	buf := b[8+n:]
	f := &File{}
	type placed struct {
		name string
		h    header
	}
	var ts []placed
	for _, e := range entries {
		if e.name == "__metadata__" {
			if f.Metadata != nil {
				return nil, fmt.Errorf("%w: two __metadata__ entries", ErrFormat)
			}
			f.Metadata = map[string]string{}
			if err := json.Unmarshal(e.raw, &f.Metadata); err != nil {
				return nil, fmt.Errorf("%w: __metadata__: %v (want a map of strings to strings)", ErrFormat, err)
			}
			continue
		}
		var h header
		dec := json.NewDecoder(bytes.NewReader(e.raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&h); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, e.name, err)
		}
		if h.DType != "F32" {
			return nil, fmt.Errorf("%w: tensor %q: dtype %q: only F32 is read", ErrFormat, e.name, h.DType)
		}
		ne := elements(h.Shape)
		if ne < 0 || h.Offsets[0] < 0 || h.Offsets[1] < h.Offsets[0] || h.Offsets[1]-h.Offsets[0] != 4*ne {
			return nil, fmt.Errorf("%w: tensor %q: shape %v does not fill data_offsets %v", ErrFormat, e.name, h.Shape, h.Offsets)
		}
		ts = append(ts, placed{e.name, h})
	}
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].h.Offsets[0] < ts[j].h.Offsets[0] })
	off := 0
	for _, t := range ts {
		if t.h.Offsets[0] != off {
			return nil, fmt.Errorf("%w: tensor %q starts at %d, the previous one ends at %d (holes and overlaps are invalid)", ErrFormat, t.name, t.h.Offsets[0], off)
		}
		off = t.h.Offsets[1]
		if off > len(buf) {
			return nil, fmt.Errorf("%w: tensor %q ends at %d, past the %d data bytes", ErrFormat, t.name, off, len(buf))
		}
		data := make([]float32, (t.h.Offsets[1]-t.h.Offsets[0])/4)
		for i := range data {
			data[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[t.h.Offsets[0]+4*i:]))
		}
		f.Tensors = append(f.Tensors, Tensor{Name: t.name, Shape: t.h.Shape, Data: data})
	}
	if off != len(buf) {
		return nil, fmt.Errorf("%w: %d data bytes follow the last tensor", ErrFormat, len(buf)-off)
	}
	return f, nil
}

// ReadFile decodes the file at path.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

type entry struct {
	name string
	raw  json.RawMessage
}

// parseHeader reads the header's top-level object in order, rejecting
// duplicate names (which encoding/json would silently merge).
func parseHeader(raw []byte) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: the header is not a JSON object", ErrFormat)
	}
	var out []entry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: header: key %v is not a string", ErrFormat, tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: header: %s appears twice", ErrFormat, strconv.Quote(name))
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: header: %s: %v", ErrFormat, name, err)
		}
		out = append(out, entry{name, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if len(bytes.TrimRight(raw[dec.InputOffset():], " ")) != 0 {
		return nil, fmt.Errorf("%w: header: bytes other than space padding follow the JSON object", ErrFormat)
	}
	return out, nil
}
