package redis

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// encodeEvent is the Go twin of what the Lua scripts publish, for tests.
func encodeEvent(e event) string {
	switch e.kind {
	case 'p':
		if e.was.Epoch != "" {
			return "w" + e.epoch + ":" + strconv.FormatUint(e.seq, 10) + ":" + encodeWas(e.was) + e.data
		}
		return "p" + e.epoch + ":" + strconv.FormatUint(e.seq, 10) + ":" + e.data
	case 'j':
		return "j" + strconv.FormatInt(e.ttlMS, 10) + ":" + strconv.Itoa(len(e.cl)) + ":" + e.cl + e.user
	case 'l':
		return "l" + strconv.Itoa(len(e.cl)) + ":" + e.cl + e.user
	}
	return "x" + e.data
}

func TestDecodeEvent(t *testing.T) {
	for _, e := range []event{
		{kind: 'p', epoch: "abc12", seq: 1, data: ""},
		{kind: 'p', epoch: "abc12", seq: 18446744073709551615, data: "a:b:c\n\x00"},
		{kind: 'p', epoch: "abc12", seq: 7, was: brokers.Position{Seq: 3, Epoch: "~n1.6.abc12"}, data: "5:x:y"},
		{kind: 'j', ttlMS: 60000, cl: "node-1", user: "alice:with:colons"},
		{kind: 'j', ttlMS: 0, cl: "", user: ""},
		{kind: 'l', cl: "c:1", user: "12:x"},
		{kind: 'x', data: "42"},
	} {
		s := encodeEvent(e)
		got, err := decodeEvent(s)
		if err != nil || got != e {
			t.Errorf("decode(%q) = %+v, %v; want %+v", s, got, err, e)
		}
	}
	for _, bad := range []string{"", "p", "p:1:x", "pe:0:x", "pe:x:y", "pe", "j1:5:ab", "jx:1:a", "l", "l-1:x", "q", "j-5:0:",
		"we:1:", "we:1:0:1:~x", "we:1:2:9:~x", "we:1:2:0:", "we:1:2:x:~"} {
		if e, err := decodeEvent(bad); err == nil {
			t.Errorf("decode(%q) = %+v, want an error", bad, e)
		}
	}
}

// FuzzDecodeEvent: decoding never panics, and what decodes encodes back
// to the same event.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{"pabc:1:data", "j1000:3:abcuser", "l1:xy", "x7", "p:1:", "j1:9:a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := decodeEvent(s)
		if err != nil {
			return
		}
		again, err := decodeEvent(encodeEvent(e))
		if err != nil || again != e {
			t.Fatalf("%q decoded to %+v, which re-decodes to %+v, %v", s, e, again, err)
		}
	})
}

func TestKeySlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT.
	for key, want := range map[string]uint16{
		"foo":                  12182,
		"somekey":              11058,
		"{user1000}.following": keySlot("user1000"),
		"{}foo":                keySlot("{}foo"),
		"sg{doc:1}:m":          slotOf("doc:1"),
		"sg{doc:1}":            slotOf("doc:1"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if keySlot("{}foo") == keySlot("foo") {
		t.Errorf("an empty hash tag must not count")
	}
}

// TestJumpHashMoves: adding a fourth shard moves about a quarter of the
// channels, all of them to the new shard.
func TestJumpHashMoves(t *testing.T) {
	const n = 20000
	moved := 0
	counts := make([]int, 4)
	for i := range n {
		key := redisbase.HashString(fmt.Sprintf("doc:%d", i))
		a, b := redisbase.JumpHash(key, 3), redisbase.JumpHash(key, 4)
		counts[b]++
		if a != b {
			moved++
			if b != 3 {
				t.Fatalf("doc:%d moved from shard %d to %d, not to the new shard", i, a, b)
			}
		}
	}
	if moved < n/5 || moved > n*3/10 {
		t.Errorf("%d of %d channels moved, want about a quarter", moved, n)
	}
	for s, c := range counts {
		if c < n/5 || c > n*3/10 {
			t.Errorf("shard %d holds %d of %d channels: uneven %v", s, c, n, counts)
		}
	}
}
