package global

import (
	"fmt"
	"hash/crc32"

	"github.com/strata-fl/strata/mesh/wire"
)

// partialAssembly rebuilds one region's partial that arrived in chunks
// (partials larger than one NATS message). Chunks of one region arrive in
// order; anything out of order, oversized or failing the digest discards the
// assembly, and the region counts as not having reported.
type partialAssembly struct {
	head wire.PartialChunkHeader
	sum  []byte
	next int // next expected offset, in values
	crc  uint32
}

// add takes one chunk; it returns the complete partial after the last one.
func (a *partialAssembly) add(h wire.PartialChunkHeader, data []byte, dim int) (*wire.Partial, error) {
	switch {
	case h.Total != dim:
		return nil, fmt.Errorf("partial of %d values, the model has %d", h.Total, dim)
	case len(data)%8 != 0 || h.Offset != a.next || h.Offset+len(data)/8 > dim:
		return nil, fmt.Errorf("chunk at %d of %d bytes does not continue the partial at %d", h.Offset, len(data), a.next)
	}
	if a.sum == nil {
		a.head = h
		a.sum = make([]byte, 8*dim)
	}
	copy(a.sum[8*h.Offset:], data)
	a.crc = crc32.Update(a.crc, wire.Castagnoli, data)
	a.next += len(data) / 8
	if !h.Last {
		return nil, nil
	}
	if a.next != dim || h.Digest != a.crc {
		return nil, fmt.Errorf("partial ends at %d of %d values with digest %08x, computed %08x", a.next, dim, h.Digest, a.crc)
	}
	return &wire.Partial{Job: a.head.Job, Round: a.head.Round, Region: a.head.Region, Count: a.head.Count,
		Rejected: a.head.Rejected, BitSum: h.BitSum, Sum: a.sum, Sig: h.Sig}, nil
}
