package wire

import (
	"runtime"
	"testing"
)

// TestClaimedLengthsDoNotAllocate: a few bytes that claim a 4 GiB vector or
// a billion-entry map must be rejected without allocating what they claim.
func TestClaimedLengthsDoNotAllocate(t *testing.T) {
	for name, b := range map[string][]byte{
		"bin32 of 4 GiB":   []byte("\x02\x01\x81\xa3vec\xc6\xff\xff\xff\xff"),
		"map32 of 800M":    []byte("\x03\x01\x81\xa8rejected\xdf\x30\x30\x30\x30"),
		"array32 of 4G":    []byte("\x01\x01\x81\xa7sampled\xdd\xff\xff\xff\xff"),
		"fuzzer's partial": []byte("\x03\x01\xdf0000\xc6\xc8\xc8\xc8\xc8\xc8\xc8\xc8"),
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var u Update
		var p Partial
		var r RoundOpen
		Decode(b, TypeUpdate, &u)
		Decode(b, TypePartial, &p)
		Decode(b, TypeRoundOpen, &r)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Errorf("%s: decoding allocated %d MiB", name, grew>>20)
		}
	}
}
