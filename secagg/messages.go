package secagg

import (
	"encoding/binary"
	"fmt"
)

// Wire format. Every message is a 20-byte header — the magic "SA", a
// version byte, a type byte and the 16-byte session — then its body, all
// integers little-endian, every list preceded by a uint32 count. Ring vectors
// are packed uint32s (the int32/bin form of DESIGN.md §6). Decoding is
// strict and canonical: unknown versions or types, counts that do not fit the
// remaining bytes, out-of-range values and trailing bytes are errors
// (ErrDecode), so decode∘encode is the identity on every accepted input. The
// structs carry no behaviour; a transport may also wrap them (e.g. msgpack in
// mesh/wire) as long as it keeps the version.

// Version is the wire version this package writes and accepts.
const Version uint8 = 1

// KeySize is the size of an X25519 public key.
const KeySize = 32

// SessionID names one aggregation session (one region's round). Every key,
// nonce and seed derivation binds it, so nothing carries over between
// sessions.
type SessionID [16]byte

// Message types.
const (
	typeAdvertiseKeys  = 1
	typeNeighbourKeys  = 2
	typeShareKeys      = 3
	typeShareBundle    = 4
	typeMaskedInput    = 5
	typeUnmaskRequest  = 6
	typeUnmaskResponse = 7
)

const headerSize = 2 + 1 + 1 + 16

// Message is implemented by every message type.
type Message interface {
	// AppendBinary appends the encoding to b.
	AppendBinary(b []byte) ([]byte, error)
	// MarshalBinary returns the encoding.
	MarshalBinary() ([]byte, error)
	msgType() byte
}

// AdvertiseKeys (client → server, round 0) carries a client's two fresh
// X25519 public keys: one to agree share-encryption keys, one to agree mask
// seeds.
type AdvertiseKeys struct {
	Version uint8
	Session SessionID
	From    ID
	EncKey  [KeySize]byte
	MaskKey [KeySize]byte
}

// PublicKeys are one client's advertised keys.
type PublicKeys struct {
	ID      ID
	EncKey  [KeySize]byte
	MaskKey [KeySize]byte
}

// NeighbourKeys (server → client, round 1) gives a client its neighbours in
// the session graph and their public keys, sorted by ID.
type NeighbourKeys struct {
	Version    uint8
	Session    SessionID
	To         ID
	Neighbours []PublicKeys
}

// Ciphertext is one encrypted share pair. In ShareKeys, Peer is the
// recipient; in ShareBundle, Peer is the sender.
type Ciphertext struct {
	Peer ID
	Data []byte
}

// ShareKeys (client → server, round 1) carries the client's shares of its
// mask key and self-mask seed, one ciphertext per neighbour, and a
// commitment to the seed.
type ShareKeys struct {
	Version uint8
	Session SessionID
	From    ID
	// Commit is SHA-256 over the session, the client's ID and its self-mask
	// seed: the server checks the seed it rebuilds against it.
	Commit [32]byte
	Shares []Ciphertext
}

// ShareBundle (server → client, round 2) forwards to a client the
// ciphertexts its neighbours addressed to it. Their senders are the
// neighbours the client masks against.
type ShareBundle struct {
	Version uint8
	Session SessionID
	To      ID
	Shares  []Ciphertext
}

// MaskedInput (client → server, round 2) is the client's input plus its
// masks in Z_{2^Bits}.
type MaskedInput struct {
	Version uint8
	Session SessionID
	From    ID
	Bits    uint8
	Vector  []uint32
}

// UnmaskRequest (server → client, round 3) tells a surviving client which of
// its share-holding neighbours survived (their self-mask seed shares are
// asked for) and which dropped (their mask-key shares are asked for), and how
// many clients survived in all.
type UnmaskRequest struct {
	Version   uint8
	Session   SessionID
	To        ID
	Total     uint32
	Survivors []ID
	Dropped   []ID
}

// Share kinds in an UnmaskResponse.
const (
	// KindSeed is a share of a survivor's self-mask seed.
	KindSeed uint8 = 1
	// KindMaskKey is a share of a dropped client's mask secret key.
	KindMaskKey uint8 = 2
)

// RevealedShare is one share a client reveals in the unmasking round.
type RevealedShare struct {
	Owner ID
	Kind  uint8
	Elems []uint64 // field elements, each < 2^61-1; 3 for KindSeed, 5 for KindMaskKey
}

// UnmaskResponse (client → server, round 3) reveals the shares asked for.
type UnmaskResponse struct {
	Version uint8
	Session SessionID
	From    ID
	Shares  []RevealedShare
}

func kindElems(kind uint8) int {
	switch kind {
	case KindSeed:
		return chunks(SeedSize)
	case KindMaskKey:
		return chunks(KeySize)
	}
	return 0
}

func (*AdvertiseKeys) msgType() byte  { return typeAdvertiseKeys }
func (*NeighbourKeys) msgType() byte  { return typeNeighbourKeys }
func (*ShareKeys) msgType() byte      { return typeShareKeys }
func (*ShareBundle) msgType() byte    { return typeShareBundle }
func (*MaskedInput) msgType() byte    { return typeMaskedInput }
func (*UnmaskRequest) msgType() byte  { return typeUnmaskRequest }
func (*UnmaskResponse) msgType() byte { return typeUnmaskResponse }

// ---- encoding ----

func appendHeader(b []byte, v uint8, t byte, s SessionID) ([]byte, error) {
	if v != Version {
		return b, fmt.Errorf("%w: cannot encode version %d, want %d", ErrDecode, v, Version)
	}
	b = append(b, 'S', 'A', v, t)
	return append(b, s[:]...), nil
}

func appendU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

func appendCiphertexts(b []byte, cs []Ciphertext) ([]byte, error) {
	b = appendU32(b, uint32(len(cs)))
	for _, c := range cs {
		if len(c.Data) > 0xffff {
			return b, fmt.Errorf("%w: ciphertext of %d bytes", ErrDecode, len(c.Data))
		}
		b = appendU32(b, uint32(c.Peer))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(c.Data)))
		b = append(b, c.Data...)
	}
	return b, nil
}

func appendIDs(b []byte, ids []ID) []byte {
	b = appendU32(b, uint32(len(ids)))
	for _, id := range ids {
		b = appendU32(b, uint32(id))
	}
	return b
}

// AppendBinary implements Message.
func (m *AdvertiseKeys) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.From))
	b = append(b, m.EncKey[:]...)
	return append(b, m.MaskKey[:]...), nil
}

// AppendBinary implements Message.
func (m *NeighbourKeys) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.To))
	b = appendU32(b, uint32(len(m.Neighbours)))
	for _, n := range m.Neighbours {
		b = appendU32(b, uint32(n.ID))
		b = append(b, n.EncKey[:]...)
		b = append(b, n.MaskKey[:]...)
	}
	return b, nil
}

// AppendBinary implements Message.
func (m *ShareKeys) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.From))
	b = append(b, m.Commit[:]...)
	return appendCiphertexts(b, m.Shares)
}

// AppendBinary implements Message.
func (m *ShareBundle) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.To))
	return appendCiphertexts(b, m.Shares)
}

// AppendBinary implements Message.
func (m *MaskedInput) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.From))
	b = append(b, m.Bits)
	b = appendU32(b, uint32(len(m.Vector)))
	b = append(b, make([]byte, 4*len(m.Vector))...)
	out := b[len(b)-4*len(m.Vector):]
	for i, v := range m.Vector {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return b, nil
}

// AppendBinary implements Message.
func (m *UnmaskRequest) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.To))
	b = appendU32(b, m.Total)
	b = appendIDs(b, m.Survivors)
	return appendIDs(b, m.Dropped), nil
}

// AppendBinary implements Message.
func (m *UnmaskResponse) AppendBinary(b []byte) ([]byte, error) {
	b, err := appendHeader(b, m.Version, m.msgType(), m.Session)
	if err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.From))
	b = appendU32(b, uint32(len(m.Shares)))
	for _, s := range m.Shares {
		if n := kindElems(s.Kind); n == 0 || n != len(s.Elems) {
			return b, fmt.Errorf("%w: share of kind %d with %d elements", ErrDecode, s.Kind, len(s.Elems))
		}
		b = appendU32(b, uint32(s.Owner))
		b = append(b, s.Kind)
		for _, e := range s.Elems {
			b = binary.LittleEndian.AppendUint64(b, e)
		}
	}
	return b, nil
}

func (m *AdvertiseKeys) MarshalBinary() ([]byte, error)  { return m.AppendBinary(nil) }
func (m *NeighbourKeys) MarshalBinary() ([]byte, error)  { return m.AppendBinary(nil) }
func (m *ShareKeys) MarshalBinary() ([]byte, error)      { return m.AppendBinary(nil) }
func (m *ShareBundle) MarshalBinary() ([]byte, error)    { return m.AppendBinary(nil) }
func (m *MaskedInput) MarshalBinary() ([]byte, error)    { return m.AppendBinary(nil) }
func (m *UnmaskRequest) MarshalBinary() ([]byte, error)  { return m.AppendBinary(nil) }
func (m *UnmaskResponse) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// ---- decoding ----

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("truncated: need %d bytes, have %d", n, len(d.b))
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8() uint8 {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) u16() uint16 {
	b := d.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (d *decoder) u32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (d *decoder) id() ID {
	v := d.u32()
	if d.err == nil && (v == 0 || v > MaxClients) {
		d.fail("client ID %d out of range 1..%d", v, MaxClients)
	}
	return ID(v)
}

// count reads a list length and checks that many elements of at least
// minSize bytes fit in what is left, so no allocation exceeds the input.
func (d *decoder) count(minSize int) int {
	n := d.u32()
	if d.err == nil && uint64(n)*uint64(minSize) > uint64(len(d.b)) {
		d.fail("count %d does not fit in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) key(dst *[KeySize]byte) { copy(dst[:], d.take(KeySize)) }

func (d *decoder) ids() []ID {
	n := d.count(4)
	if n == 0 {
		return nil
	}
	out := make([]ID, n)
	for i := range out {
		out[i] = d.id()
	}
	return out
}

func (d *decoder) ciphertexts() []Ciphertext {
	n := d.count(6)
	if n == 0 {
		return nil
	}
	out := make([]Ciphertext, n)
	for i := range out {
		out[i].Peer = d.id()
		l := int(d.u16())
		out[i].Data = append([]byte(nil), d.take(l)...)
	}
	return out
}

func (d *decoder) header(t byte) (uint8, SessionID) {
	var s SessionID
	h := d.take(headerSize)
	if h == nil {
		return 0, s
	}
	switch {
	case h[0] != 'S' || h[1] != 'A':
		d.fail("bad magic %q", h[:2])
	case h[2] != Version:
		d.fail("unsupported version %d, want %d", h[2], Version)
	case h[3] != t:
		d.fail("message type %d, want %d", h[3], t)
	}
	copy(s[:], h[4:])
	return h[2], s
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// UnmarshalBinary decodes data into m.
func (m *AdvertiseKeys) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out AdvertiseKeys
	out.Version, out.Session = d.header(typeAdvertiseKeys)
	out.From = d.id()
	d.key(&out.EncKey)
	d.key(&out.MaskKey)
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m.
func (m *NeighbourKeys) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out NeighbourKeys
	out.Version, out.Session = d.header(typeNeighbourKeys)
	out.To = d.id()
	if n := d.count(4 + 2*KeySize); n > 0 {
		out.Neighbours = make([]PublicKeys, n)
		for i := range out.Neighbours {
			out.Neighbours[i].ID = d.id()
			d.key(&out.Neighbours[i].EncKey)
			d.key(&out.Neighbours[i].MaskKey)
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m.
func (m *ShareKeys) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out ShareKeys
	out.Version, out.Session = d.header(typeShareKeys)
	out.From = d.id()
	copy(out.Commit[:], d.take(32))
	out.Shares = d.ciphertexts()
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m.
func (m *ShareBundle) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out ShareBundle
	out.Version, out.Session = d.header(typeShareBundle)
	out.To = d.id()
	out.Shares = d.ciphertexts()
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m. Every element must lie in
// Z_{2^Bits}.
func (m *MaskedInput) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out MaskedInput
	out.Version, out.Session = d.header(typeMaskedInput)
	out.From = d.id()
	out.Bits = d.u8()
	if d.err == nil && (out.Bits < 1 || out.Bits > 32) {
		d.fail("bits %d out of range 1..32", out.Bits)
	}
	n := d.count(4)
	if d.err == nil && n > MaxDim {
		d.fail("vector of %d elements exceeds %d", n, MaxDim)
	}
	if raw := d.take(4 * n); raw != nil && n > 0 {
		out.Vector = make([]uint32, n)
		mask := uint32(1<<out.Bits - 1)
		var bad uint32
		for i := range out.Vector {
			v := binary.LittleEndian.Uint32(raw[4*i:])
			bad |= v &^ mask
			out.Vector[i] = v
		}
		if bad != 0 {
			d.fail("vector element outside Z_2^%d", out.Bits)
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m.
func (m *UnmaskRequest) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out UnmaskRequest
	out.Version, out.Session = d.header(typeUnmaskRequest)
	out.To = d.id()
	out.Total = d.u32()
	out.Survivors = d.ids()
	out.Dropped = d.ids()
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// UnmarshalBinary decodes data into m.
func (m *UnmaskResponse) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var out UnmaskResponse
	out.Version, out.Session = d.header(typeUnmaskResponse)
	out.From = d.id()
	if n := d.count(5 + 8*chunks(SeedSize)); n > 0 {
		out.Shares = make([]RevealedShare, n)
		for i := range out.Shares {
			s := &out.Shares[i]
			s.Owner = d.id()
			s.Kind = d.u8()
			k := kindElems(s.Kind)
			if d.err == nil && k == 0 {
				d.fail("share kind %d", s.Kind)
			}
			if raw := d.take(8 * k); raw != nil {
				s.Elems = make([]uint64, k)
				for j := range s.Elems {
					s.Elems[j] = binary.LittleEndian.Uint64(raw[8*j:])
					if s.Elems[j] >= prime {
						d.fail("field element %d not below 2^61-1", s.Elems[j])
					}
				}
			}
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	*m = out
	return nil
}

// Decode decodes any message by its type byte.
func Decode(data []byte) (Message, error) {
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrDecode, len(data), headerSize)
	}
	var m interface {
		Message
		UnmarshalBinary([]byte) error
	}
	switch data[3] {
	case typeAdvertiseKeys:
		m = new(AdvertiseKeys)
	case typeNeighbourKeys:
		m = new(NeighbourKeys)
	case typeShareKeys:
		m = new(ShareKeys)
	case typeShareBundle:
		m = new(ShareBundle)
	case typeMaskedInput:
		m = new(MaskedInput)
	case typeUnmaskRequest:
		m = new(UnmaskRequest)
	case typeUnmaskResponse:
		m = new(UnmaskResponse)
	default:
		return nil, fmt.Errorf("%w: unknown message type %d", ErrDecode, data[3])
	}
	if err := m.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	return m, nil
}
