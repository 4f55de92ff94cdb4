package secagg

import (
	"fmt"
	"io"
)

// Stage is the point at which a simulated client stops answering.
type Stage uint8

const (
	// Stay means the client never drops.
	Stay Stage = iota
	// DropBeforeAdvertise: the client never shows up.
	DropBeforeAdvertise
	// DropBeforeShareKeys: the client advertised keys, then vanished.
	DropBeforeShareKeys
	// DropBeforeMaskedInput: the client shared keys but sent no masked
	// input; its pairwise masks must be rebuilt and removed.
	DropBeforeMaskedInput
	// DropBeforeUnmask: the client sent its masked input (which is summed)
	// but does not answer the unmasking request.
	DropBeforeUnmask
)

// Simulation describes a session run in memory by Simulate: every client
// and the server in one goroutine, messages handed over directly (or, with
// Encode, through their wire encoding).
type Simulation struct {
	Session SessionID
	Params  Params
	// Inputs[i] is the quantized input of client i+1.
	Inputs [][]uint32
	// Drop maps a client to the stage at which it drops; absent means Stay.
	Drop map[ID]Stage
	// Rand feeds every party's randomness, in a fixed order, so a seeded
	// reader reproduces the session. Nil means crypto/rand.Reader.
	Rand io.Reader
	// Encode round-trips every message through MarshalBinary and Decode.
	Encode bool
	// Workers is the server's ServerConfig.Workers.
	Workers int
}

// Traffic counts the bytes a simulated session moved, when Encode is set.
type Traffic struct {
	Up, Down int // client → server, server → client
}

// Simulate runs a whole session and returns the server's result. It is the
// in-memory driver for tests and benchmarks; a mesh runner does the same
// steps over the network with deadlines.
func Simulate(sim Simulation) (*Result, Traffic, error) {
	var tr Traffic
	p := sim.Params
	if len(sim.Inputs) != p.Clients {
		return nil, tr, fmt.Errorf("%w: %d inputs for %d clients", ErrParams, len(sim.Inputs), p.Clients)
	}
	srv, err := NewServer(ServerConfig{Session: sim.Session, Params: p, Rand: sim.Rand, Workers: sim.Workers})
	if err != nil {
		return nil, tr, err
	}
	clients := make([]*Client, p.Clients+1)
	for i := 1; i <= p.Clients; i++ {
		if clients[i], err = NewClient(ClientConfig{ID: ID(i), Session: sim.Session, Params: p, Rand: sim.Rand}); err != nil {
			return nil, tr, err
		}
	}
	alive := func(id ID, st Stage) bool {
		d := sim.Drop[id]
		return d == Stay || d > st
	}
	// wire carries one message, through its encoding when asked.
	wire := func(m Message, up bool) (Message, error) {
		if !sim.Encode {
			return m, nil
		}
		b, err := m.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if up {
			tr.Up += len(b)
		} else {
			tr.Down += len(b)
		}
		return Decode(b)
	}

	// Round 0: advertise keys.
	for i := 1; i <= p.Clients; i++ {
		if !alive(ID(i), DropBeforeAdvertise) {
			continue
		}
		m, err := clients[i].AdvertiseKeys()
		if err != nil {
			return nil, tr, err
		}
		w, err := wire(m, true)
		if err != nil {
			return nil, tr, err
		}
		if err := srv.HandleAdvertiseKeys(w.(*AdvertiseKeys)); err != nil {
			return nil, tr, err
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		return nil, tr, err
	}

	// Round 1: share keys.
	for _, nk := range nks {
		if !alive(nk.To, DropBeforeShareKeys) {
			continue
		}
		w, err := wire(nk, false)
		if err != nil {
			return nil, tr, err
		}
		m, err := clients[nk.To].ShareKeys(w.(*NeighbourKeys))
		if err != nil {
			return nil, tr, err
		}
		if w, err = wire(m, true); err != nil {
			return nil, tr, err
		}
		if err := srv.HandleShareKeys(w.(*ShareKeys)); err != nil {
			return nil, tr, err
		}
	}
	bundles, err := srv.FinishShareKeys()
	if err != nil {
		return nil, tr, err
	}

	// Round 2: masked input.
	for _, b := range bundles {
		if !alive(b.To, DropBeforeMaskedInput) {
			continue
		}
		w, err := wire(b, false)
		if err != nil {
			return nil, tr, err
		}
		m, err := clients[b.To].MaskInput(w.(*ShareBundle), sim.Inputs[b.To-1])
		if err != nil {
			return nil, tr, err
		}
		if w, err = wire(m, true); err != nil {
			return nil, tr, err
		}
		if err := srv.HandleMaskedInput(w.(*MaskedInput)); err != nil {
			return nil, tr, err
		}
	}
	reqs, err := srv.FinishMaskedInput()
	if err != nil {
		return nil, tr, err
	}

	// Round 3: unmasking.
	for _, r := range reqs {
		if !alive(r.To, DropBeforeUnmask) {
			continue
		}
		w, err := wire(r, false)
		if err != nil {
			return nil, tr, err
		}
		m, err := clients[r.To].Unmask(w.(*UnmaskRequest))
		if err != nil {
			return nil, tr, err
		}
		if w, err = wire(m, true); err != nil {
			return nil, tr, err
		}
		if err := srv.HandleUnmaskResponse(w.(*UnmaskResponse)); err != nil {
			return nil, tr, err
		}
	}
	res, err := srv.Finish()
	return res, tr, err
}
