package memory

import (
	"crypto/rand"
	"strings"
	"sync"
	"time"
)

// channel is the state of one channel. All fields are guarded by mu.
type channel struct {
	mu sync.Mutex

	name  string // a private copy of the channel name
	epoch string
	seq   uint64 // seq of the last publication, 0 before the first

	subscribed bool
	// dropped is set when the state leaves its shard map (forgotten by the
	// sweeper, or Close). A caller that looked the channel up before must
	// look again.
	dropped bool
	// lastPub is the time of the last publication, or of creation.
	lastPub time.Duration

	// History ring: n entries starting at head, oldest first; the newest
	// has seq == c.seq and seqs are contiguous. The ring grows up to the
	// history size, then the newest entry overwrites the oldest.
	ring []entry
	head int
	n    int

	members map[string]member // by Member.Client
}

// entry is one stored publication. Its seq is implied by its place in the
// ring.
type entry struct {
	at   time.Duration
	data []byte
}

func newChannel(name string, now time.Duration) *channel {
	return &channel{
		name:    strings.Clone(name),
		epoch:   newEpoch(),
		lastPub: now,
	}
}

// push appends e, overwriting the oldest entry when size entries are kept.
func (c *channel) push(e entry, size int) {
	if c.n == len(c.ring) {
		if c.n >= size {
			c.ring[c.head] = e
			if c.head++; c.head == len(c.ring) {
				c.head = 0
			}
			return
		}
		grown := make([]entry, min(size, max(8, 2*len(c.ring))))
		k := copy(grown, c.ring[c.head:])
		copy(grown[k:], c.ring[:c.head])
		c.ring, c.head = grown, 0
	}
	c.ring[(c.head+c.n)%len(c.ring)] = e
	c.n++
}

// trim drops the entries stored at or before cutoff.
func (c *channel) trim(cutoff time.Duration) {
	for c.n > 0 && c.ring[c.head].at <= cutoff {
		c.ring[c.head] = entry{} // let the data be collected
		if c.head++; c.head == len(c.ring) {
			c.head = 0
		}
		c.n--
	}
}

// idle reports whether c can be forgotten: nothing published for ttl, not
// subscribed, nobody present. Its history is then empty too.
func (c *channel) idle(now, ttl time.Duration) bool {
	return !c.subscribed && len(c.members) == 0 && now-c.lastPub >= ttl
}

// newEpoch returns 8 random characters of lower-case base32hex (40 bits).
func newEpoch() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	var raw [5]byte
	_, _ = rand.Read(raw[:]) // never fails; it crashes the program instead
	v := uint64(raw[0])<<32 | uint64(raw[1])<<24 | uint64(raw[2])<<16 | uint64(raw[3])<<8 | uint64(raw[4])
	var out [8]byte
	for i := range out {
		out[i] = alphabet[v&31]
		v >>= 5
	}
	return string(out[:])
}
