package trainerproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/internal/msgcheck"
)

// Type identifies a message. Values are part of the protocol: never reuse one.
type Type uint8

// Message types (docs/trainer-protocol.md has the table).
const (
	TypeHello      Type = 1 // agent → trainer, once per connection
	TypeReady      Type = 2 // trainer → agent, the answer to hello
	TypeTrain      Type = 3 // agent → trainer; θ follows in chunks
	TypeChunk      Type = 4 // both ways: a slice of a vector
	TypeResult     Type = 5 // trainer → agent; the vector follows in chunks
	TypeError      Type = 6 // trainer → agent, instead of result or evaluation
	TypeEvaluate   Type = 7 // agent → trainer; θ follows in chunks
	TypeEvaluation Type = 8 // trainer → agent
	TypeShutdown   Type = 9 // agent → trainer: exit cleanly
)

// Types lists every message type, in order.
var Types = []Type{TypeHello, TypeReady, TypeTrain, TypeChunk, TypeResult, TypeError, TypeEvaluate, TypeEvaluation, TypeShutdown}

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeReady:
		return "ready"
	case TypeTrain:
		return "train"
	case TypeChunk:
		return "chunk"
	case TypeResult:
		return "result"
	case TypeError:
		return "error"
	case TypeEvaluate:
		return "evaluate"
	case TypeEvaluation:
		return "evaluation"
	case TypeShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Version is the framing version every frame carries (length, type,
// version, msgpack body). It has not changed since the first protocol: a
// trainer that answers with another is refused.
const Version = 1

// Protocol is the revision of the messages this side speaks, negotiated in
// Hello and Ready: a session speaks the lower of the two sides' revisions
// (a trainer whose Ready names none speaks 1). Revision 2 added named
// metrics and the loss to Evaluation, and held-out evaluations (Evaluate.Set);
// everything else reads the same in both.
const Protocol = 2

// MaxFrame bounds the bytes after a frame's length prefix: a full chunk
// (MaxChunk float32s) plus room for its small header.
const MaxFrame = 4*MaxChunk + 1024

// MaxChunk is the most float32 values one chunk may carry (1 MiB of data);
// vectors longer than that stream as several chunks.
const MaxChunk = 1 << 18

// MaxDim bounds the length of a vector either side will accept (1 GiB of
// float32), so a claimed length cannot make a reader allocate more.
const MaxDim = 1 << 28

// Errors; callers test them with errors.Is.
var (
	ErrMalformed = errors.New("trainerproto: malformed frame")
	ErrType      = errors.New("trainerproto: unexpected message type")
	ErrVersion   = errors.New("trainerproto: unsupported protocol version")
	ErrTooLarge  = errors.New("trainerproto: frame too large")
	ErrShape     = errors.New("trainerproto: vector of the wrong shape")
	ErrNonFinite = errors.New("trainerproto: vector holds NaN or ±Inf")
	// ErrMetrics reports an Evaluation whose metrics are not a list of
	// distinct, well-named, finite values.
	ErrMetrics = errors.New("trainerproto: malformed evaluation metrics")
	// ErrProtocol reports a request the trainer's protocol revision
	// (Ready.Protocol) does not have.
	ErrProtocol = errors.New("trainerproto: the trainer's protocol revision lacks the request")
	// ErrTrainer wraps an error message the trainer sent.
	ErrTrainer = errors.New("trainerproto: trainer reported an error")
)

// Tensor names one tensor of the flat parameter vector; tensors are packed
// in the order listed, row-major.
type Tensor struct {
	Name  string `msgpack:"name"`
	Shape []int  `msgpack:"shape"`
}

// Size returns the number of values of t.
func (t Tensor) Size() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Hello opens a connection: it tells the trainer the task, the layout of
// θ, which tensors are private to each client, and where the clients' data
// is.
type Hello struct {
	Agent  string   `msgpack:"agent"`
	Task   string   `msgpack:"task"`
	Layout []Tensor `msgpack:"layout"`
	Dim    int      `msgpack:"dim"`
	// Personal names the tensors of which each client keeps a private
	// residual: the trainer returns the ordinary update, trained without
	// it, and separately trains the residual, which never leaves the client.
	Personal []string `msgpack:"personal"`
	// DataDir holds the clients' data and the frozen backbone; StateDir is
	// where the trainer may keep per-client state such as personal tensors.
	DataDir  string `msgpack:"data_dir"`
	StateDir string `msgpack:"state_dir"`
	MaxChunk int    `msgpack:"max_chunk"`
	// Protocol is the highest revision of the messages the agent speaks
	// (Protocol); absent (0) from agents that predate the negotiation,
	// which speak 1.
	Protocol int `msgpack:"protocol"`
}

// Ready answers Hello.
type Ready struct {
	Trainer string `msgpack:"trainer"`
	// Personal is true when the trainer keeps residuals of the Personal tensors.
	Personal bool `msgpack:"personal"`
	// Protocol is the highest revision the trainer speaks; absent (0) from
	// trainers that predate the negotiation, which speak 1.
	Protocol int `msgpack:"protocol"`
}

// Revision is the protocol revision a peer that sent p speaks: p, or 1 for
// a peer that predates the negotiation.
func Revision(p int) int { return max(p, 1) }

// Train asks for one client's local training from θ, which follows in
// Chunks chunks of Dim values in total.
type Train struct {
	Client       string  `msgpack:"client"`
	Round        uint64  `msgpack:"round"`
	ModelVersion uint64  `msgpack:"model_version"`
	Dim          int     `msgpack:"dim"`
	Chunks       int     `msgpack:"chunks"`
	Epochs       int     `msgpack:"epochs"`
	Batch        int     `msgpack:"batch"`
	LR           float64 `msgpack:"lr"`
	Seed         uint64  `msgpack:"seed"`
	DeadlineMs   int64   `msgpack:"deadline_ms"`
	// PersonalEpochs is the number of passes for training the personal
	// residual (when Hello named personal tensors).
	PersonalEpochs int `msgpack:"personal_epochs"`
}

// Chunk carries values [Offset, Offset+len) of the vector announced by the
// message before it, as little-endian float32.
type Chunk struct {
	Offset int    `msgpack:"offset"`
	Data   []byte `msgpack:"data"`
}

// Result kinds.
const (
	KindDelta  = "delta"  // the vector is trained − θ
	KindParams = "params" // the vector is the trained parameters
)

// Result answers Train; the vector follows in Chunks chunks.
type Result struct {
	Client   string  `msgpack:"client"`
	Round    uint64  `msgpack:"round"`
	Kind     string  `msgpack:"kind"`
	Examples int     `msgpack:"examples"`
	Dim      int     `msgpack:"dim"`
	Chunks   int     `msgpack:"chunks"`
	Loss     float64 `msgpack:"loss"`
}

// Error answers Train or Evaluate when the trainer could not do it; the
// connection stays usable.
type Error struct {
	Client  string `msgpack:"client"`
	Round   uint64 `msgpack:"round"`
	Code    string `msgpack:"code"`
	Message string `msgpack:"message"`
}

// Evaluation sets (Evaluate.Set).
const (
	// SetClient is the client's own evaluation data (Evaluate.Client).
	SetClient = ""
	// SetHeldOut is the job's per-round held-out set, which the global
	// tier's evaluation gate scores every candidate version on.
	SetHeldOut = "heldout"
	// SetFinal is the job's whole held-out set, for reports.
	SetFinal = "final"
)

// Evaluate asks for the scores of θ, which follows in chunks: with Set
// empty, of θ (and of the client's personal model) on the client's own
// evaluation data; with Set SetHeldOut or SetFinal (protocol 2), of θ on
// the job's held-out data, Client empty.
type Evaluate struct {
	Client string `msgpack:"client"`
	Dim    int    `msgpack:"dim"`
	Chunks int    `msgpack:"chunks"`
	Set    string `msgpack:"set"`
}

// Limits on an Evaluation's metrics: they are recorded in the replicated
// ledger and exported as metric labels.
const (
	MaxMetrics    = 32 // metrics in one Evaluation
	MaxMetricName = 64 // bytes of a metric's name
)

// Metric is one named score of an Evaluation.
type Metric struct {
	Name           string  `msgpack:"name"`
	Value          float64 `msgpack:"value"`
	HigherIsBetter bool    `msgpack:"higher_is_better"`
}

// Evaluation answers Evaluate. Metrics names the trainer's scores, the
// first of which is the one a gate compares (protocol 2); a trainer that
// sends none is read as reporting Accuracy alone (Scores).
// PersonalAccuracy is meaningful only when Personal is true (the client
// has trained personal tensors).
type Evaluation struct {
	Client           string  `msgpack:"client"`
	Examples         int     `msgpack:"examples"`
	Accuracy         float64 `msgpack:"accuracy"`
	Personal         bool    `msgpack:"personal"`
	PersonalAccuracy float64 `msgpack:"personal_accuracy"`
	// Loss is θ's loss on the data (0 from trainers of protocol 1).
	Loss    float64  `msgpack:"loss"`
	Metrics []Metric `msgpack:"metrics"`
}

// Scores returns the evaluation's metrics: Metrics when the trainer sent
// any, else Accuracy as the one metric "accuracy", higher is better (what
// trainers of protocol 1 report). It checks what the trainer sent: the
// loss and every value finite, at most MaxMetrics metrics, each named
// once with at most MaxMetricName bytes of letters, digits, '_', '-', '.'
// or '/'; the error wraps ErrMetrics and names the metric.
func (e Evaluation) Scores() ([]Metric, error) {
	if math.IsNaN(e.Loss) || math.IsInf(e.Loss, 0) {
		return nil, fmt.Errorf("%w: loss %v is not finite", ErrMetrics, e.Loss)
	}
	if len(e.Metrics) == 0 {
		if math.IsNaN(e.Accuracy) || math.IsInf(e.Accuracy, 0) {
			return nil, fmt.Errorf("%w: accuracy %v is not finite", ErrMetrics, e.Accuracy)
		}
		return []Metric{{Name: "accuracy", Value: e.Accuracy, HigherIsBetter: true}}, nil
	}
	if len(e.Metrics) > MaxMetrics {
		return nil, fmt.Errorf("%w: %d metrics, at most %d", ErrMetrics, len(e.Metrics), MaxMetrics)
	}
	seen := make(map[string]bool, len(e.Metrics))
	for i, m := range e.Metrics {
		if err := checkMetricName(m.Name); err != nil {
			return nil, fmt.Errorf("%w: metrics[%d]: %v", ErrMetrics, i, err)
		}
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			return nil, fmt.Errorf("%w: metrics[%d] %q = %v is not finite", ErrMetrics, i, m.Name, m.Value)
		}
		if seen[m.Name] {
			return nil, fmt.Errorf("%w: metrics[%d] %q is reported twice: name each metric once", ErrMetrics, i, m.Name)
		}
		seen[m.Name] = true
	}
	return append([]Metric(nil), e.Metrics...), nil
}

func checkMetricName(name string) error {
	switch {
	case name == "":
		return errors.New("no name")
	case len(name) > MaxMetricName:
		return fmt.Errorf("name of %d bytes, at most %d", len(name), MaxMetricName)
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || r == '.' || r == '/' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("name %q holds %q: use letters, digits, '_', '-', '.' and '/'", name, r)
		}
	}
	return nil
}

// Shutdown asks the trainer to exit.
type Shutdown struct {
	Reason string `msgpack:"reason"`
}

// AppendFrame appends one frame — a 4-byte big-endian length, the type,
// the version, the msgpack body of v — to dst.
func AppendFrame(dst []byte, t Type, v any) ([]byte, error) {
	body, err := msgpack.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("trainerproto: encode %v: %w", t, err)
	}
	if 2+len(body) > MaxFrame {
		return dst, fmt.Errorf("%w: %v of %d bytes > %d", ErrTooLarge, t, 2+len(body), MaxFrame)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(2+len(body)))
	dst = append(dst, byte(t), Version)
	return append(dst, body...), nil
}

// ReadFrame reads one frame from r into buf (grown as needed) and returns
// its type and body. It checks the length against MaxFrame before reading.
func ReadFrame(r io.Reader, buf []byte) (Type, []byte, []byte, error) {
	var hdr [6]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 2 {
		return 0, nil, buf, fmt.Errorf("%w: frame length %d is shorter than its header", ErrMalformed, n)
	}
	if n > MaxFrame {
		return 0, nil, buf, fmt.Errorf("%w: frame of %d bytes > %d", ErrTooLarge, n, MaxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, fmt.Errorf("%w: truncated frame: %w", ErrMalformed, err)
	}
	if buf[1] != Version {
		return Type(buf[0]), nil, buf, fmt.Errorf("%w: %v frame of version %d, this side speaks %d", ErrVersion, Type(buf[0]), buf[1], Version)
	}
	return Type(buf[0]), buf[2:], buf, nil
}

// DecodeBody decodes a frame body of type got into v, which must be the
// message for want.
func DecodeBody(got, want Type, body []byte, v any) error {
	if got != want {
		return fmt.Errorf("%w: got %v, want %v", ErrType, got, want)
	}
	if err := msgcheck.Validate(body); err != nil {
		return fmt.Errorf("%w: %v: %v", ErrMalformed, want, err)
	}
	if err := msgpack.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v: %v", ErrMalformed, want, err)
	}
	return nil
}

// NewMessage returns a pointer to the zero message of type t, or nil for an
// unknown type.
func NewMessage(t Type) any {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypeReady:
		return &Ready{}
	case TypeTrain:
		return &Train{}
	case TypeChunk:
		return &Chunk{}
	case TypeResult:
		return &Result{}
	case TypeError:
		return &Error{}
	case TypeEvaluate:
		return &Evaluate{}
	case TypeEvaluation:
		return &Evaluation{}
	case TypeShutdown:
		return &Shutdown{}
	}
	return nil
}

// Chunks returns how many chunks of at most MaxChunk values a vector of
// dim values takes (at least one, so an empty vector still ends).
func Chunks(dim int) int {
	return max(1, (dim+MaxChunk-1)/MaxChunk)
}

// Conn speaks the protocol over a byte stream (a pipe pair or a socket).
// It is not safe for concurrent use.
type Conn struct {
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte
	out []byte
}

// NewConn wraps a reader and a writer.
func NewConn(r io.Reader, w io.Writer) *Conn {
	return &Conn{r: bufio.NewReaderSize(r, 64<<10), w: bufio.NewWriterSize(w, 64<<10)}
}

// Send writes one message; Flush sends what is buffered.
func (c *Conn) Send(t Type, v any) error {
	var err error
	c.out, err = AppendFrame(c.out[:0], t, v)
	if err != nil {
		return err
	}
	_, err = c.w.Write(c.out)
	return err
}

// Flush writes buffered frames out.
func (c *Conn) Flush() error { return c.w.Flush() }

// Recv reads the next frame and decodes it as type want. A trainer's
// Error frame arriving instead is returned as an error wrapping ErrTrainer.
func (c *Conn) Recv(want Type, v any) error {
	t, body, buf, err := ReadFrame(c.r, c.buf)
	c.buf = buf
	if err != nil {
		return err
	}
	if t == TypeError && want != TypeError {
		var e Error
		if err := DecodeBody(t, TypeError, body, &e); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s: %s", ErrTrainer, e.Code, e.Message)
	}
	return DecodeBody(t, want, body, v)
}

// SendVector streams v (narrowed to float32) as Chunks(len(v)) chunks.
func (c *Conn) SendVector(v []float64) error {
	data := make([]byte, 0, 4*min(len(v), MaxChunk))
	for off := 0; off < len(v) || off == 0; off += MaxChunk {
		end := min(off+MaxChunk, len(v))
		data = data[:0]
		for _, x := range v[off:end] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(x)))
		}
		if err := c.Send(TypeChunk, &Chunk{Offset: off, Data: data}); err != nil {
			return err
		}
		if end == len(v) {
			break
		}
	}
	return nil
}

// RecvVector reads chunks holding exactly len(dst) values, in order, into
// dst, and checks that every value is finite.
func (c *Conn) RecvVector(dst []float64, chunks int) error {
	if chunks != Chunks(len(dst)) {
		return fmt.Errorf("%w: %d chunks announced for %d values, want %d", ErrShape, chunks, len(dst), Chunks(len(dst)))
	}
	next := 0
	for i := 0; i < chunks; i++ {
		var ch Chunk
		if err := c.Recv(TypeChunk, &ch); err != nil {
			return fmt.Errorf("chunk %d of %d: %w", i+1, chunks, err)
		}
		if err := PutChunk(dst, next, ch); err != nil {
			return err
		}
		next += len(ch.Data) / 4
	}
	if next != len(dst) {
		return fmt.Errorf("%w: chunks held %d values, want %d", ErrShape, next, len(dst))
	}
	return nil
}

// PutChunk checks ch against the next expected offset and dst's length and
// decodes its values into dst.
func PutChunk(dst []float64, next int, ch Chunk) error {
	if ch.Offset != next {
		return fmt.Errorf("%w: chunk at offset %d, want %d (chunks must come in order)", ErrShape, ch.Offset, next)
	}
	if len(ch.Data)%4 != 0 {
		return fmt.Errorf("%w: chunk of %d bytes is not a whole number of float32s", ErrMalformed, len(ch.Data))
	}
	n := len(ch.Data) / 4
	if n > len(dst)-next {
		return fmt.Errorf("%w: chunk at offset %d holds %d values, only %d fit in a vector of %d", ErrShape, next, n, len(dst)-next, len(dst))
	}
	for i := 0; i < n; i++ {
		x := math.Float32frombits(binary.LittleEndian.Uint32(ch.Data[4*i:]))
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%w: value %d is %v", ErrNonFinite, next+i, x)
		}
		dst[next+i] = float64(x)
	}
	return nil
}
