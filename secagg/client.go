package secagg

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
)

// ClientConfig configures one client's side of a session. Every field but
// Rand is required.
type ClientConfig struct {
	// ID is the client's ID in the session, 1..Params.Clients.
	ID ID
	// Session names the session; every message must carry it.
	Session SessionID
	// Params are the session's public parameters, the same at every party;
	// they must pass Params.Validate.
	Params Params
	// Rand is the source of keys, seeds and share polynomials. Nil means
	// crypto/rand.Reader; tests pass a seeded math/rand/v2 ChaCha8.
	Rand io.Reader
}

// Validate names the field that is wrong (ErrParams).
func (c ClientConfig) Validate() error {
	if err := c.Params.validate("ClientConfig.Params."); err != nil {
		return err
	}
	if c.ID == 0 || int(c.ID) > c.Params.Clients {
		return fmt.Errorf("%w: ClientConfig.ID = %d, want 1..%d", ErrParams, c.ID, c.Params.Clients)
	}
	return nil
}

// withDefaults returns a copy of c with Rand set.
func (c ClientConfig) withDefaults() ClientConfig {
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c
}

type clientState uint8

const (
	clientNew clientState = iota
	clientAdvertised
	clientShared
	clientMasked
	clientDone
	clientFailed
)

var clientStateNames = [...]string{"new", "advertised", "shared", "masked", "done", "failed"}

// Client is one client's side of a session: a state machine with one method
// per round, each taking the server's message and returning the reply. It
// does no I/O and reads no clock. A method called out of turn returns
// ErrWrongState; a message that fails validation is rejected without
// changing the state, except that a shortfall of survivors
// (ErrTooFewSurvivors) aborts the client for good. A Client is not safe for
// concurrent use.
type Client struct {
	cfg   ClientConfig
	rand  io.Reader
	state clientState

	encPriv  *ecdh.PrivateKey
	maskPriv *ecdh.PrivateKey
	seed     [SeedSize]byte

	neighbours map[ID]PublicKeys  // round 1: the graph neighbours
	aeads      map[ID]cipher.AEAD // round 1: one share key per neighbour
	held       map[ID]heldShare   // round 2: shares received, by owner
}

type heldShare struct{ key, seed []uint64 }

// NewClient validates cfg (Validate) and returns a client ready for
// AdvertiseKeys.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Client{cfg: cfg, rand: cfg.Rand}, nil
}

func (c *Client) want(s clientState, step string) error {
	if c.state != s {
		return fmt.Errorf("%w: client %d: %s in state %s", ErrWrongState, c.cfg.ID, step, clientStateNames[c.state])
	}
	return nil
}

func (c *Client) checkHeader(v uint8, s SessionID, to ID, what string) error {
	switch {
	case v != Version:
		return fmt.Errorf("%w: client %d: %s version %d, want %d", ErrProtocol, c.cfg.ID, what, v, Version)
	case s != c.cfg.Session:
		return fmt.Errorf("%w: client %d: %s for another session", ErrProtocol, c.cfg.ID, what)
	case to != c.cfg.ID:
		return fmt.Errorf("%w: client %d: %s addressed to client %d", ErrProtocol, c.cfg.ID, what, to)
	}
	return nil
}

func (c *Client) abort(err error) error {
	c.state = clientFailed
	c.forget()
	return err
}

// forget drops every secret the client holds.
func (c *Client) forget() {
	c.encPriv, c.maskPriv, c.aeads, c.held = nil, nil, nil, nil
	clear(c.seed[:])
}

// AdvertiseKeys (round 0) draws the client's two key pairs and returns their
// public halves for the server.
func (c *Client) AdvertiseKeys() (*AdvertiseKeys, error) {
	if err := c.want(clientNew, "AdvertiseKeys"); err != nil {
		return nil, err
	}
	var err error
	if c.encPriv, err = newPrivateKey(c.rand); err != nil {
		return nil, err
	}
	if c.maskPriv, err = newPrivateKey(c.rand); err != nil {
		return nil, err
	}
	m := &AdvertiseKeys{Version: Version, Session: c.cfg.Session, From: c.cfg.ID}
	copy(m.EncKey[:], c.encPriv.PublicKey().Bytes())
	copy(m.MaskKey[:], c.maskPriv.PublicKey().Bytes())
	c.state = clientAdvertised
	return m, nil
}

// ShareKeys (round 1) takes the client's neighbours and their keys, draws
// the self-mask seed, splits the mask secret key and the seed t-of-|N| among
// the neighbours, and returns the shares encrypted to each neighbour.
func (c *Client) ShareKeys(m *NeighbourKeys) (*ShareKeys, error) {
	if err := c.want(clientAdvertised, "ShareKeys"); err != nil {
		return nil, err
	}
	if err := c.checkHeader(m.Version, m.Session, m.To, "neighbour keys"); err != nil {
		return nil, err
	}
	p := c.cfg.Params
	if len(m.Neighbours) > p.Degree {
		return nil, fmt.Errorf("%w: client %d: %d neighbours, more than the degree %d", ErrProtocol, c.cfg.ID, len(m.Neighbours), p.Degree)
	}
	xs := make([]ID, len(m.Neighbours))
	nb := make(map[ID]PublicKeys, len(m.Neighbours))
	for i, pk := range m.Neighbours {
		if pk.ID == 0 || int(pk.ID) > p.Clients || pk.ID == c.cfg.ID {
			return nil, fmt.Errorf("%w: client %d: neighbour ID %d", ErrProtocol, c.cfg.ID, pk.ID)
		}
		if _, dup := nb[pk.ID]; dup {
			return nil, fmt.Errorf("%w: client %d: neighbour %d listed twice", ErrProtocol, c.cfg.ID, pk.ID)
		}
		nb[pk.ID], xs[i] = pk, pk.ID
	}
	if len(xs) < p.Threshold {
		return nil, c.abort(&SurvivorError{Stage: "share keys", Client: c.cfg.ID, Have: len(xs), Need: p.Threshold})
	}
	aeads := make(map[ID]cipher.AEAD, len(xs))
	for _, v := range xs {
		pk := nb[v]
		a, err := shareAEAD(c.encPriv, pk.EncKey[:], c.cfg.Session, c.cfg.ID, v)
		if err != nil {
			return nil, err
		}
		aeads[v] = a
	}
	if _, err := io.ReadFull(c.rand, c.seed[:]); err != nil {
		return nil, fmt.Errorf("secagg: reading randomness: %w", err)
	}
	keyShares, err := shamirSplit(c.rand, secretToField(c.maskPriv.Bytes()), p.Threshold, xs)
	if err != nil {
		return nil, err
	}
	seedShares, err := shamirSplit(c.rand, secretToField(c.seed[:]), p.Threshold, xs)
	if err != nil {
		return nil, err
	}
	out := &ShareKeys{Version: Version, Session: c.cfg.Session, From: c.cfg.ID,
		Commit: seedCommit(c.cfg.Session, c.cfg.ID, c.seed[:]), Shares: make([]Ciphertext, len(xs))}
	for i, v := range xs {
		out.Shares[i] = Ciphertext{Peer: v, Data: sealShare(aeads[v], c.cfg.Session, c.cfg.ID, v, keyShares[i], seedShares[i])}
	}
	c.neighbours, c.aeads = nb, aeads
	c.state = clientShared
	return out, nil
}

// MaskInput (round 2) takes the shares the client's live neighbours sent it
// and the quantized input x (len Params.Dim, each element in Z_{2^b}), and
// returns y = x + PRG(seed) + Σ_{v live neighbour} ±PRG(s_{u,v}) mod 2^b,
// with + when the client's ID is below v's. The client then forgets its mask
// secrets: from here on only its neighbours' shares can rebuild them.
func (c *Client) MaskInput(m *ShareBundle, x []uint32) (*MaskedInput, error) {
	if err := c.want(clientShared, "MaskInput"); err != nil {
		return nil, err
	}
	p := c.cfg.Params
	if len(x) != p.Dim {
		return nil, fmt.Errorf("%w: client %d: input of length %d, want Dim = %d", ErrParams, c.cfg.ID, len(x), p.Dim)
	}
	var over uint32
	for _, v := range x {
		over |= v &^ p.mask()
	}
	if over != 0 {
		return nil, fmt.Errorf("%w: client %d: input element outside Z_2^%d", ErrParams, c.cfg.ID, p.Bits)
	}
	if err := c.acceptShares(m); err != nil {
		return nil, err
	}
	y := slices.Clone(x)
	addPRG(y, &c.seed, false)
	for _, v := range c.heldIDs() {
		pk := c.neighbours[v]
		s, err := maskSeed(c.maskPriv, pk.MaskKey[:], c.cfg.Session, c.cfg.ID, v)
		if err != nil {
			return nil, c.abort(err)
		}
		addPRG(y, s, c.cfg.ID > v)
	}
	for i := range y {
		y[i] &= p.mask()
	}
	c.maskPriv = nil
	clear(c.seed[:])
	c.state = clientMasked
	return &MaskedInput{Version: Version, Session: c.cfg.Session, From: c.cfg.ID, Bits: uint8(p.Bits), Vector: y}, nil
}

// acceptShares decrypts and stores the bundle's shares.
func (c *Client) acceptShares(m *ShareBundle) error {
	if err := c.checkHeader(m.Version, m.Session, m.To, "share bundle"); err != nil {
		return err
	}
	held := make(map[ID]heldShare, len(m.Shares))
	for _, ct := range m.Shares {
		a, ok := c.aeads[ct.Peer]
		if !ok {
			return fmt.Errorf("%w: client %d: share from non-neighbour %d", ErrProtocol, c.cfg.ID, ct.Peer)
		}
		if _, dup := held[ct.Peer]; dup {
			return fmt.Errorf("%w: client %d: two shares from client %d", ErrProtocol, c.cfg.ID, ct.Peer)
		}
		k, s, err := openShare(a, c.cfg.Session, ct.Peer, c.cfg.ID, ct.Data)
		if err != nil {
			return err
		}
		held[ct.Peer] = heldShare{key: k, seed: s}
	}
	if len(held) < c.cfg.Params.Threshold {
		return c.abort(&SurvivorError{Stage: "masked input", Client: c.cfg.ID, Have: len(held), Need: c.cfg.Params.Threshold})
	}
	c.held = held
	c.aeads = nil
	return nil
}

func (c *Client) heldIDs() []ID {
	ids := make([]ID, 0, len(c.held))
	for v := range c.held {
		ids = append(ids, v)
	}
	slices.Sort(ids)
	return ids
}

// Unmask (round 3) answers the server's unmasking request once: for each
// neighbour that survived, the share of its self-mask seed; for each that
// dropped, the share of its mask secret key. Never both for one neighbour:
// the request must split exactly the neighbours whose shares the client
// holds, and the client answers only one request. Below Params.MinSurvivors
// survivors the client refuses (ErrTooFewSurvivors) and reveals nothing.
func (c *Client) Unmask(m *UnmaskRequest) (*UnmaskResponse, error) {
	if err := c.want(clientMasked, "Unmask"); err != nil {
		return nil, err
	}
	if err := c.checkHeader(m.Version, m.Session, m.To, "unmask request"); err != nil {
		return nil, err
	}
	if int(m.Total) < c.cfg.Params.MinSurvivors {
		return nil, c.abort(&SurvivorError{Stage: "unmasking", Have: int(m.Total), Need: c.cfg.Params.MinSurvivors})
	}
	if len(m.Survivors)+len(m.Dropped) != len(c.held) || len(m.Survivors) >= int(m.Total) {
		return nil, fmt.Errorf("%w: client %d: unmask request names %d+%d neighbours of %d total survivors, client holds shares of %d",
			ErrProtocol, c.cfg.ID, len(m.Survivors), len(m.Dropped), m.Total, len(c.held))
	}
	out := &UnmaskResponse{Version: Version, Session: c.cfg.Session, From: c.cfg.ID, Shares: make([]RevealedShare, 0, len(c.held))}
	seen := make(map[ID]bool, len(c.held))
	for i, list := range [][]ID{m.Survivors, m.Dropped} {
		for _, v := range list {
			h, ok := c.held[v]
			if !ok || seen[v] {
				return nil, fmt.Errorf("%w: client %d: unmask request names client %d wrongly", ErrProtocol, c.cfg.ID, v)
			}
			seen[v] = true
			if i == 0 {
				out.Shares = append(out.Shares, RevealedShare{Owner: v, Kind: KindSeed, Elems: h.seed})
			} else {
				out.Shares = append(out.Shares, RevealedShare{Owner: v, Kind: KindMaskKey, Elems: h.key})
			}
		}
	}
	c.state = clientDone
	c.forget()
	return out, nil
}
