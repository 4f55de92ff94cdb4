// Package msgcheck checks a msgpack body before a decoder sees it: every
// length the body claims must fit in the bytes actually there. msgpack
// decoders allocate what a header claims, so without this a dozen hostile
// bytes could make a node allocate gigabytes.
package msgcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed reports a body that is not msgpack or claims more than it holds.
var ErrMalformed = errors.New("msgcheck: malformed msgpack")

// Validate walks a msgpack body and checks every length it claims (bytes of
// a str, bin or ext; items of an array or map) against the bytes that are
// actually left. It caps the number of items pending, so the walk is linear
// in the input.
func Validate(b []byte) error {
	pending := 1 // items still to read
	i := 0
	need := func(n uint64) error {
		if n > uint64(len(b)-i) {
			return fmt.Errorf("%w: a length claims %d bytes at offset %d, only %d remain", ErrMalformed, n, i, len(b)-i)
		}
		return nil
	}
	readN := func(size int) (uint64, error) {
		if err := need(uint64(size)); err != nil {
			return 0, err
		}
		var v uint64
		switch size {
		case 1:
			v = uint64(b[i])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b[i:]))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b[i:]))
		}
		i += size
		return v, nil
	}
	skip := func(n uint64) error {
		if err := need(n); err != nil {
			return err
		}
		i += int(n)
		return nil
	}
	items := func(n uint64) error {
		// Every item takes at least one byte.
		if n > uint64(len(b)-i) || uint64(pending)+n > uint64(len(b)-i)+1 {
			return fmt.Errorf("%w: %d items claimed at offset %d, only %d bytes remain", ErrMalformed, n, i, len(b)-i)
		}
		pending += int(n)
		return nil
	}
	for pending > 0 {
		pending--
		if i >= len(b) {
			return fmt.Errorf("%w: truncated body", ErrMalformed)
		}
		c := b[i]
		i++
		var err error
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			err = items(2 * uint64(c&0x0f))
		case c >= 0x90 && c <= 0x9f:
			err = items(uint64(c & 0x0f))
		case c >= 0xa0 && c <= 0xbf:
			err = skip(uint64(c & 0x1f))
		default:
			err = validateTyped(c, readN, skip, items)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func validateTyped(c byte, readN func(int) (uint64, error), skip func(uint64) error, items func(uint64) error) error {
	lenThen := func(size int, then func(uint64) error, extra uint64) error {
		n, err := readN(size)
		if err != nil {
			return err
		}
		return then(n + extra)
	}
	switch c {
	case 0xc4, 0xd9:
		return lenThen(1, skip, 0)
	case 0xc5, 0xda:
		return lenThen(2, skip, 0)
	case 0xc6, 0xdb:
		return lenThen(4, skip, 0)
	case 0xc7:
		return lenThen(1, skip, 1)
	case 0xc8:
		return lenThen(2, skip, 1)
	case 0xc9:
		return lenThen(4, skip, 1)
	case 0xca, 0xce, 0xd2:
		return skip(4)
	case 0xcb, 0xcf, 0xd3:
		return skip(8)
	case 0xcc, 0xd0:
		return skip(1)
	case 0xcd, 0xd1:
		return skip(2)
	case 0xd4:
		return skip(2)
	case 0xd5:
		return skip(3)
	case 0xd6:
		return skip(5)
	case 0xd7:
		return skip(9)
	case 0xd8:
		return skip(17)
	case 0xdc:
		return lenThen(2, items, 0)
	case 0xdd:
		return lenThen(4, items, 0)
	case 0xde:
		n, err := readN(2)
		if err != nil {
			return err
		}
		return items(2 * n)
	case 0xdf:
		n, err := readN(4)
		if err != nil {
			return err
		}
		return items(2 * n)
	}
	return fmt.Errorf("%w: byte 0x%02x is not msgpack", ErrMalformed, c)
}
