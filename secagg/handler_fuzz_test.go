package secagg

import (
	"errors"
	"slices"
	"testing"
)

// sentinel reports whether err wraps one of the package's sentinels.
func sentinel(err error) bool {
	for _, s := range []error{ErrParams, ErrHeadroom, ErrTooFewSurvivors, ErrDisconnected, ErrWrongState, ErrProtocol, ErrDecode} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// deliver hands m to the party it is for: the server for client → server
// types, the addressed client otherwise (with input x for a bundle).
func deliver(srv *Server, cs []*Client, m Message, x []uint32) error {
	client := func(to ID) *Client {
		if to == 0 || int(to) >= len(cs) {
			return nil
		}
		return cs[to]
	}
	var err error
	switch v := m.(type) {
	case *AdvertiseKeys:
		err = srv.HandleAdvertiseKeys(v)
	case *ShareKeys:
		err = srv.HandleShareKeys(v)
	case *MaskedInput:
		err = srv.HandleMaskedInput(v)
	case *UnmaskResponse:
		err = srv.HandleUnmaskResponse(v)
	case *NeighbourKeys:
		if c := client(v.To); c != nil {
			_, err = c.ShareKeys(v)
		}
	case *ShareBundle:
		if c := client(v.To); c != nil {
			_, err = c.MaskInput(v, x)
		}
	case *UnmaskRequest:
		if c := client(v.To); c != nil {
			_, err = c.Unmask(v)
		}
	}
	return err
}

// FuzzHandlers injects one arbitrary message into a live session before the
// given round (0-3) and checks the handlers: no panic, every error wraps a
// sentinel, and a message the handler rejected leaves the party's state
// unchanged (except a client told of too few survivors, which aborts by
// design), so the session still ends with exactly the plain sum of its
// survivors' inputs (DESIGN.md invariant 5). A message the handler accepted
// is a forgery this layer cannot see (the mesh signs messages); then the
// session may fail, with a sentinel error, or sum the forgery.
func FuzzHandlers(f *testing.F) {
	for _, ms := range sampleMessages(f) {
		for _, m := range ms[:1] {
			b, _ := m.MarshalBinary()
			for stage := range uint8(4) {
				f.Add(stage, b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, stage uint8, data []byte) {
		inj, err := Decode(data)
		if err != nil {
			return // FuzzDecode covers this
		}
		stage %= 4
		p := Params{Clients: 6, Degree: 4, Threshold: 2, MinSurvivors: 4, Bits: 8, Dim: 5}
		r := seeded(5)
		sess := SessionID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		srv, _ := NewServer(ServerConfig{Session: sess, Params: p, Rand: r})
		cs := make([]*Client, p.Clients+1)
		inputs := make([][]uint32, p.Clients)
		for i := range inputs {
			inputs[i] = []uint32{uint32(i), 1, 2, 254, 255}
		}
		accepted := false
		inject := func(at uint8) {
			if at != stage {
				return
			}
			err := deliver(srv, cs, inj, inputs[0])
			if err != nil && !sentinel(err) {
				t.Fatalf("handler error %v wraps no sentinel", err)
			}
			// A client that is told of too few survivors aborts for good:
			// that rejection changes state by design.
			accepted = err == nil || errors.Is(err, ErrTooFewSurvivors)
		}
		check := func(err error) bool {
			if err == nil {
				return true
			}
			if !sentinel(err) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			if !accepted {
				t.Fatalf("session failed after a rejected injection: %v", err)
			}
			return false
		}
		for i := 1; i <= p.Clients; i++ {
			cs[i], _ = NewClient(ClientConfig{ID: ID(i), Session: sess, Params: p, Rand: r})
		}
		inject(0)
		for i := 1; i <= p.Clients; i++ {
			if m, err := cs[i].AdvertiseKeys(); err == nil {
				srv.HandleAdvertiseKeys(m)
			}
		}
		nks, err := srv.FinishAdvertiseKeys()
		if !check(err) {
			return
		}
		inject(1)
		for _, nk := range nks {
			if m, err := cs[nk.To].ShareKeys(nk); err == nil {
				srv.HandleShareKeys(m)
			}
		}
		bundles, err := srv.FinishShareKeys()
		if !check(err) {
			return
		}
		inject(2)
		for _, b := range bundles {
			if m, err := cs[b.To].MaskInput(b, inputs[b.To-1]); err == nil {
				srv.HandleMaskedInput(m)
			}
		}
		reqs, err := srv.FinishMaskedInput()
		if !check(err) {
			return
		}
		inject(3)
		for _, rq := range reqs {
			if m, err := cs[rq.To].Unmask(rq); err == nil {
				srv.HandleUnmaskResponse(m)
			}
		}
		res, err := srv.Finish()
		if !check(err) {
			return
		}
		if !accepted {
			if want := plainSum(inputs, res.Survivors, p.Bits); !slices.Equal(res.Sum, want) {
				t.Fatalf("sum %v, want %v after a rejected injection", res.Sum, want)
			}
			if len(res.Survivors) != p.Clients {
				t.Fatalf("%d survivors after a rejected injection, want %d", len(res.Survivors), p.Clients)
			}
		}
	})
}
