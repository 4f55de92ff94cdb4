package secagg

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
)

// ServerConfig configures the server's side of a session. Session and
// Params are required; the other fields take the defaults given with each.
type ServerConfig struct {
	// Session names the session; every message must carry it.
	Session SessionID
	// Params are the session's public parameters; they must pass
	// Params.Validate.
	Params Params
	// Rand relabels the graph's vertices. Nil means crypto/rand.Reader.
	Rand io.Reader
	// Workers is how many goroutines Finish uses to rebuild pairwise seeds
	// and expand masks over disjoint windows of the sum; 0 (default) or 1
	// means the caller's goroutine only, negative is an error. Finish
	// joins them before it returns, and the result does not depend on
	// Workers.
	Workers int
}

// Validate names the field that is wrong (ErrParams).
func (c ServerConfig) Validate() error {
	if err := c.Params.validate("ServerConfig.Params."); err != nil {
		return err
	}
	if c.Workers < 0 {
		return fmt.Errorf("%w: ServerConfig.Workers = %d, want >= 0", ErrParams, c.Workers)
	}
	return nil
}

// withDefaults returns a copy of c with Rand set.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c
}

type serverState uint8

const (
	serverAdvertise serverState = iota
	serverShareKeys
	serverMaskedInput
	serverUnmask
	serverDone
	serverFailed
)

var serverStateNames = [...]string{"advertise keys", "share keys", "masked input", "unmasking", "done", "failed"}

// Server is the server's side of a session: a state machine that collects
// each round's messages with a Handle method and closes the round with a
// Finish method (called by the runner when every expected client answered
// or the round's deadline passed), which returns the next round's messages.
// It does no I/O and reads no clock. The masked inputs are summed as they
// arrive, so the server holds O(d) ring elements whatever n. A message that
// fails validation is rejected without changing the state; a Finish that
// fails (too few survivors, a disconnected graph) ends the session and
// discards the masked sum. A Server is not safe for concurrent use.
type Server struct {
	cfg   ServerConfig
	rand  io.Reader
	state serverState
	deg   int

	keys    []*PublicKeys    // by ID: advertised keys (U1)
	nbr     [][]ID           // by ID: sorted graph neighbours within U1
	shares  []*ShareKeys     // by ID: share messages (U2 before pruning)
	inU2    []bool           // by ID: shares forwarded (U2 after pruning)
	inU3    []bool           // by ID: masked input received (U3)
	asked   []*UnmaskRequest // by ID: unmask request sent
	got     []bool           // by ID: unmask response received
	holders [][]ID           // by owner: who revealed a share
	values  [][][]uint64     // by owner: the revealed shares
	sum     []uint32
	n1, n2  int
	n3      int
}

// Result is a finished session's output.
type Result struct {
	// Sum is Σ x_u mod 2^b over the survivors.
	Sum []uint32
	// Survivors are the clients whose inputs are in Sum (U3), sorted.
	Survivors []ID
	// Dropped are clients that shared keys but sent no masked input
	// (U2 \ U3): their pairwise masks were rebuilt and removed.
	Dropped []ID
	// Degree is the degree of the graph actually used.
	Degree int
	// Expansions counts the server's PRG vector expansions: |U3| self masks
	// plus one per edge from a dropped client to a survivor. The server's
	// work is about (Expansions + |U3|)·d.
	Expansions int
}

// NewServer validates cfg (Validate) and returns a server collecting
// AdvertiseKeys.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := cfg.Rand
	n := cfg.Params.Clients + 1
	return &Server{cfg: cfg, rand: r,
		keys: make([]*PublicKeys, n), nbr: make([][]ID, n), shares: make([]*ShareKeys, n),
		inU2: make([]bool, n), inU3: make([]bool, n), asked: make([]*UnmaskRequest, n), got: make([]bool, n),
	}, nil
}

func (s *Server) want(st serverState, step string) error {
	if s.state != st {
		return fmt.Errorf("%w: server: %s in state %s", ErrWrongState, step, serverStateNames[s.state])
	}
	return nil
}

func (s *Server) checkHeader(v uint8, sess SessionID, from ID, what string) error {
	switch {
	case v != Version:
		return fmt.Errorf("%w: server: %s version %d, want %d", ErrProtocol, what, v, Version)
	case sess != s.cfg.Session:
		return fmt.Errorf("%w: server: %s for another session", ErrProtocol, what)
	case from == 0 || int(from) > s.cfg.Params.Clients:
		return fmt.Errorf("%w: server: %s from unknown client %d", ErrProtocol, what, from)
	}
	return nil
}

func (s *Server) fail(err error) error {
	s.state = serverFailed
	s.sum, s.values, s.shares = nil, nil, nil
	return err
}

// HandleAdvertiseKeys records a client's public keys (round 0).
func (s *Server) HandleAdvertiseKeys(m *AdvertiseKeys) error {
	if err := s.want(serverAdvertise, "AdvertiseKeys"); err != nil {
		return err
	}
	if err := s.checkHeader(m.Version, m.Session, m.From, "advertise keys"); err != nil {
		return err
	}
	if s.keys[m.From] != nil {
		return fmt.Errorf("%w: server: client %d advertised twice", ErrProtocol, m.From)
	}
	if bytes.Equal(m.EncKey[:], m.MaskKey[:]) {
		return fmt.Errorf("%w: server: client %d advertised one key twice", ErrProtocol, m.From)
	}
	s.keys[m.From] = &PublicKeys{ID: m.From, EncKey: m.EncKey, MaskKey: m.MaskKey}
	s.n1++
	return nil
}

// FinishAdvertiseKeys closes round 0: it builds the graph on the clients
// that advertised (U1) — a Harary graph H(k, |U1|) on a random relabelling —
// and returns each one its neighbours' keys.
func (s *Server) FinishAdvertiseKeys() ([]*NeighbourKeys, error) {
	if err := s.want(serverAdvertise, "FinishAdvertiseKeys"); err != nil {
		return nil, err
	}
	p := s.cfg.Params
	if s.n1 < p.MinSurvivors {
		return nil, s.fail(&SurvivorError{Stage: "advertise keys", Have: s.n1, Need: p.MinSurvivors})
	}
	live := make([]ID, 0, s.n1)
	for id := 1; id <= p.Clients; id++ {
		if s.keys[id] != nil {
			live = append(live, ID(id))
		}
	}
	s.deg = p.degree(len(live))
	if s.deg < p.Threshold {
		return nil, s.fail(&SurvivorError{Stage: "advertise keys", Have: len(live), Need: p.Threshold + 1})
	}
	if err := shuffle(s.rand, live); err != nil {
		return nil, err
	}
	m := len(live)
	for i, u := range live {
		var nb []ID
		if s.deg == m-1 {
			nb = make([]ID, 0, m-1)
			for _, v := range live {
				if v != u {
					nb = append(nb, v)
				}
			}
		} else {
			nb = make([]ID, 0, s.deg)
			for j := 1; j <= s.deg/2; j++ {
				nb = append(nb, live[(i+j)%m], live[(i-j+m)%m])
			}
		}
		slices.Sort(nb)
		s.nbr[u] = nb
	}
	slices.Sort(live)
	out := make([]*NeighbourKeys, 0, m)
	for _, u := range live {
		msg := &NeighbourKeys{Version: Version, Session: s.cfg.Session, To: u, Neighbours: make([]PublicKeys, len(s.nbr[u]))}
		for i, v := range s.nbr[u] {
			msg.Neighbours[i] = *s.keys[v]
		}
		out = append(out, msg)
	}
	s.state = serverShareKeys
	return out, nil
}

// shuffle permutes ids uniformly (Fisher–Yates) with randomness from r.
func shuffle(r io.Reader, ids []ID) error {
	var b [8]byte
	for i := len(ids) - 1; i > 0; i-- {
		// Uniform j in [0, i] by rejection.
		n := uint64(i + 1)
		limit := ^uint64(0) - ^uint64(0)%n
		var v uint64
		for {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return fmt.Errorf("secagg: reading randomness: %w", err)
			}
			if v = binary.LittleEndian.Uint64(b[:]); v < limit {
				break
			}
		}
		j := v % n
		ids[i], ids[j] = ids[j], ids[i]
	}
	return nil
}

// HandleShareKeys records a client's encrypted shares (round 1). The client
// must address exactly its graph neighbours.
func (s *Server) HandleShareKeys(m *ShareKeys) error {
	if err := s.want(serverShareKeys, "ShareKeys"); err != nil {
		return err
	}
	if err := s.checkHeader(m.Version, m.Session, m.From, "share keys"); err != nil {
		return err
	}
	if s.keys[m.From] == nil {
		return fmt.Errorf("%w: server: share keys from client %d, which did not advertise", ErrProtocol, m.From)
	}
	if s.shares[m.From] != nil {
		return fmt.Errorf("%w: server: client %d shared keys twice", ErrProtocol, m.From)
	}
	nb := s.nbr[m.From]
	if len(m.Shares) != len(nb) {
		return fmt.Errorf("%w: server: client %d sent %d shares for %d neighbours", ErrProtocol, m.From, len(m.Shares), len(nb))
	}
	sorted := slices.Clone(m.Shares)
	slices.SortFunc(sorted, func(a, b Ciphertext) int { return int(a.Peer) - int(b.Peer) })
	for i, c := range sorted {
		if c.Peer != nb[i] {
			return fmt.Errorf("%w: server: client %d sent shares to non-neighbours or twice", ErrProtocol, m.From)
		}
		if len(c.Data) != sharePlainSize+16 {
			return fmt.Errorf("%w: server: client %d sent a %d-byte share, want %d", ErrProtocol, m.From, len(c.Data), sharePlainSize+16)
		}
	}
	cp := *m
	cp.Shares = sorted
	s.shares[m.From] = &cp
	return nil
}

// FinishShareKeys closes round 1. The clients that shared keys form U2,
// less any client left with fewer than t neighbours in U2 (it could not be
// unmasked; pruned before anyone masks against it, it costs nothing). It
// returns each client of U2 the ciphertexts its neighbours in U2 addressed
// to it.
func (s *Server) FinishShareKeys() ([]*ShareBundle, error) {
	if err := s.want(serverShareKeys, "FinishShareKeys"); err != nil {
		return nil, err
	}
	p := s.cfg.Params
	for id := 1; id <= p.Clients; id++ {
		s.inU2[id] = s.shares[id] != nil
	}
	for changed := true; changed; {
		changed = false
		for id := 1; id <= p.Clients; id++ {
			if s.inU2[id] && s.liveNeighbours(ID(id), s.inU2) < p.Threshold {
				s.inU2[id], changed = false, true
			}
		}
	}
	var out []*ShareBundle
	for id := 1; id <= p.Clients; id++ {
		if !s.inU2[id] {
			continue
		}
		v := ID(id)
		b := &ShareBundle{Version: Version, Session: s.cfg.Session, To: v}
		for _, u := range s.nbr[v] {
			if !s.inU2[u] {
				continue
			}
			i, _ := slices.BinarySearch(s.nbr[u], v)
			b.Shares = append(b.Shares, Ciphertext{Peer: u, Data: s.shares[u].Shares[i].Data})
		}
		out = append(out, b)
	}
	s.n2 = len(out)
	if s.n2 < p.MinSurvivors {
		return nil, s.fail(&SurvivorError{Stage: "share keys", Have: s.n2, Need: p.MinSurvivors})
	}
	s.sum = make([]uint32, p.Dim)
	s.state = serverMaskedInput
	return out, nil
}

func (s *Server) liveNeighbours(u ID, live []bool) int {
	n := 0
	for _, v := range s.nbr[u] {
		if live[v] {
			n++
		}
	}
	return n
}

// HandleMaskedInput adds a client's masked input to the running sum
// (round 2).
func (s *Server) HandleMaskedInput(m *MaskedInput) error {
	if err := s.want(serverMaskedInput, "MaskedInput"); err != nil {
		return err
	}
	if err := s.checkHeader(m.Version, m.Session, m.From, "masked input"); err != nil {
		return err
	}
	p := s.cfg.Params
	switch {
	case !s.inU2[m.From]:
		return fmt.Errorf("%w: server: masked input from client %d, which is not in the share-keys set", ErrProtocol, m.From)
	case s.inU3[m.From]:
		return fmt.Errorf("%w: server: client %d sent masked input twice", ErrProtocol, m.From)
	case int(m.Bits) != p.Bits:
		return fmt.Errorf("%w: server: client %d masked in Z_2^%d, want %d bits", ErrProtocol, m.From, m.Bits, p.Bits)
	case len(m.Vector) != p.Dim:
		return fmt.Errorf("%w: server: client %d sent %d elements, want Dim = %d", ErrProtocol, m.From, len(m.Vector), p.Dim)
	}
	var over uint32
	for _, v := range m.Vector {
		over |= v
	}
	if over&^p.mask() != 0 {
		return fmt.Errorf("%w: server: client %d sent an element outside Z_2^%d", ErrProtocol, m.From, p.Bits)
	}
	sum := s.sum[:len(m.Vector)]
	for i, v := range m.Vector {
		sum[i] += v
	}
	s.inU3[m.From] = true
	s.n3++
	return nil
}

// FinishMaskedInput closes round 2. The senders form U3. Before anything is
// revealed it checks that U3 holds at least MinSurvivors clients, that every
// client of U2 keeps t neighbours in U3 (so its seed or key can be rebuilt)
// and that U3's graph is connected (else unmasking would reveal the sum of
// each piece); any failure ends the session with nothing revealed. It
// returns each survivor its unmasking request.
func (s *Server) FinishMaskedInput() ([]*UnmaskRequest, error) {
	if err := s.want(serverMaskedInput, "FinishMaskedInput"); err != nil {
		return nil, err
	}
	p := s.cfg.Params
	if s.n3 < p.MinSurvivors {
		return nil, s.fail(&SurvivorError{Stage: "masked input", Have: s.n3, Need: p.MinSurvivors})
	}
	for id := 1; id <= p.Clients; id++ {
		if s.inU2[id] {
			if h := s.liveNeighbours(ID(id), s.inU3); h < p.Threshold {
				return nil, s.fail(&SurvivorError{Stage: "masked input", Client: ID(id), Have: h, Need: p.Threshold})
			}
		}
	}
	if !s.connected(s.inU3, s.n3) {
		return nil, s.fail(fmt.Errorf("%w: %d survivors on a degree-%d graph", ErrDisconnected, s.n3, s.deg))
	}
	var out []*UnmaskRequest
	for id := 1; id <= p.Clients; id++ {
		if !s.inU3[id] {
			continue
		}
		r := &UnmaskRequest{Version: Version, Session: s.cfg.Session, To: ID(id), Total: uint32(s.n3)}
		for _, v := range s.nbr[id] {
			switch {
			case s.inU3[v]:
				r.Survivors = append(r.Survivors, v)
			case s.inU2[v]:
				r.Dropped = append(r.Dropped, v)
			}
		}
		s.asked[id] = r
		out = append(out, r)
	}
	s.holders = make([][]ID, p.Clients+1)
	s.values = make([][][]uint64, p.Clients+1)
	s.state = serverUnmask
	return out, nil
}

// connected reports whether the graph induced on live (count vertices) is
// connected.
func (s *Server) connected(live []bool, count int) bool {
	start := 0
	for id := 1; id < len(live); id++ {
		if live[id] {
			start = id
			break
		}
	}
	if start == 0 {
		return count == 0
	}
	seen := make([]bool, len(live))
	seen[start] = true
	stack, reached := []ID{ID(start)}, 1
	for len(stack) > 0 {
		u := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, v := range s.nbr[u] {
			if live[v] && !seen[v] {
				seen[v] = true
				reached++
				stack = append(stack, v)
			}
		}
	}
	return reached == count
}

// HandleUnmaskResponse records a survivor's revealed shares (round 3). They
// must answer the request exactly.
func (s *Server) HandleUnmaskResponse(m *UnmaskResponse) error {
	if err := s.want(serverUnmask, "UnmaskResponse"); err != nil {
		return err
	}
	if err := s.checkHeader(m.Version, m.Session, m.From, "unmask response"); err != nil {
		return err
	}
	req := s.asked[m.From]
	switch {
	case req == nil:
		return fmt.Errorf("%w: server: unmask response from client %d, which was not asked", ErrProtocol, m.From)
	case s.got[m.From]:
		return fmt.Errorf("%w: server: client %d answered twice", ErrProtocol, m.From)
	case len(m.Shares) != len(req.Survivors)+len(req.Dropped):
		return fmt.Errorf("%w: server: client %d revealed %d shares, asked for %d", ErrProtocol, m.From, len(m.Shares), len(req.Survivors)+len(req.Dropped))
	}
	seen := make(map[ID]bool, len(m.Shares))
	for _, sh := range m.Shares {
		want := uint8(0)
		if _, ok := slices.BinarySearch(req.Survivors, sh.Owner); ok {
			want = KindSeed
		} else if _, ok := slices.BinarySearch(req.Dropped, sh.Owner); ok {
			want = KindMaskKey
		}
		if want == 0 || sh.Kind != want || seen[sh.Owner] || len(sh.Elems) != kindElems(want) {
			return fmt.Errorf("%w: server: client %d revealed an unrequested share of client %d", ErrProtocol, m.From, sh.Owner)
		}
		for _, e := range sh.Elems {
			if e >= prime {
				return fmt.Errorf("%w: server: client %d revealed a share outside the field", ErrProtocol, m.From)
			}
		}
		seen[sh.Owner] = true
	}
	for _, sh := range m.Shares {
		s.holders[sh.Owner] = append(s.holders[sh.Owner], m.From)
		s.values[sh.Owner] = append(s.values[sh.Owner], slices.Clone(sh.Elems))
	}
	s.got[m.From] = true
	return nil
}

// Finish closes the unmasking round: it rebuilds every survivor's self-mask
// seed and every dropped client's mask secret key from t shares each,
// checks them against the seed commitment and the advertised public key,
// removes the self masks and the dropped clients' pairwise masks from the
// sum, and returns it. If any secret has fewer than t shares it fails with
// ErrTooFewSurvivors and discards the sum.
func (s *Server) Finish() (*Result, error) {
	if err := s.want(serverUnmask, "Finish"); err != nil {
		return nil, err
	}
	p := s.cfg.Params
	t := p.Threshold
	res := &Result{Degree: s.deg}
	type dropped struct {
		id   ID
		priv []byte
	}
	var seeds []*[SeedSize]byte
	var drops []dropped
	for id := 1; id <= p.Clients; id++ {
		if !s.inU2[id] {
			continue
		}
		u := ID(id)
		if len(s.holders[u]) < t {
			return nil, s.fail(&SurvivorError{Stage: "unmasking", Client: u, Have: len(s.holders[u]), Need: t})
		}
		elems := shamirCombine(s.holders[u][:t], s.values[u][:t])
		if s.inU3[u] {
			seed, err := fieldToSecret(elems, SeedSize)
			if err == nil && seedCommit(s.cfg.Session, u, seed) != s.shares[u].Commit {
				err = fmt.Errorf("%w: rebuilt seed of client %d does not match its commitment", ErrProtocol, u)
			}
			if err != nil {
				return nil, s.fail(err)
			}
			seeds = append(seeds, (*[SeedSize]byte)(seed))
			res.Survivors = append(res.Survivors, u)
			continue
		}
		key, err := fieldToSecret(elems, KeySize)
		if err == nil {
			pk, perr := newPrivateKey(bytes.NewReader(key))
			if perr != nil || !bytes.Equal(pk.PublicKey().Bytes(), s.keys[u].MaskKey[:]) {
				err = fmt.Errorf("%w: rebuilt mask key of client %d does not match its public key", ErrProtocol, u)
			}
		}
		if err != nil {
			return nil, s.fail(err)
		}
		drops = append(drops, dropped{u, key})
		res.Dropped = append(res.Dropped, u)
	}
	// Every stream to take off the sum: the survivors' self masks, then for
	// each dropped client u and survivor neighbour v the PRG(s_{u,v}) that v
	// added (+ when v < u) and that u's absence left uncancelled.
	streams := make([]stream, 0, len(seeds))
	for _, seed := range seeds {
		streams = append(streams, stream{seed: seed, neg: true})
	}
	var edges []edge
	for _, d := range drops {
		for _, v := range s.nbr[d.id] {
			if s.inU3[v] {
				edges = append(edges, edge{u: d.id, v: v, priv: d.priv})
			}
		}
	}
	pair := make([]stream, len(edges))
	errs := make([]error, len(edges))
	workers := max(1, s.cfg.Workers)
	parallel(workers, len(edges), func(lo, hi int) {
		var priv *ecdh.PrivateKey
		var last []byte
		for i := lo; i < hi; i++ {
			e := edges[i]
			if priv == nil || !bytes.Equal(last, e.priv) {
				priv, _ = newPrivateKey(bytes.NewReader(e.priv))
				last = e.priv
			}
			seed, err := maskSeed(priv, s.keys[e.v].MaskKey[:], s.cfg.Session, e.u, e.v)
			pair[i], errs[i] = stream{seed: seed, neg: e.v < e.u}, err
		}
	})
	for _, err := range errs {
		if err != nil {
			return nil, s.fail(err)
		}
	}
	streams = append(streams, pair...)
	res.Expansions = len(streams)
	sum := s.sum
	mask := p.mask()
	// Windows of whole 4 KiB key-stream blocks, one per worker.
	parallel(workers, (len(sum)+prgBlock/4-1)/(prgBlock/4), func(lo, hi int) {
		a, b := lo*prgBlock/4, min(len(sum), hi*prgBlock/4)
		if a >= b {
			return
		}
		w := sum[a:b]
		for _, st := range streams {
			addPRGAt(w, st.seed, st.neg, a)
		}
		for i := range w {
			w[i] &= mask
		}
	})
	res.Sum = sum
	s.sum, s.values = nil, nil
	s.state = serverDone
	return res, nil
}

// stream is one mask to take off the sum.
type stream struct {
	seed *[SeedSize]byte
	neg  bool
}

// edge is a dropped client u's mask with its surviving neighbour v.
type edge struct {
	u, v ID
	priv []byte // u's rebuilt mask secret key
}

// parallel splits [0, n) into at most workers contiguous ranges and runs f
// on each, in the caller's goroutine when there is one range; it returns
// when all are done.
func parallel(workers, n int, f func(lo, hi int)) {
	if workers <= 1 || n <= 1 {
		f(0, n)
		return
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}
