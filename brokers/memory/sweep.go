package memory

import (
	"time"
)

// sweeper runs from Start until Close: it expires presence members and
// forgets idle channels, every sweepInterval.
func (b *Broker) sweeper() {
	timer := time.NewTimer(b.sweepInterval())
	defer timer.Stop()
	var buf []*channel
	for {
		select {
		case <-b.stop:
			return
		case <-b.wake:
			timer.Reset(b.sweepInterval())
			continue
		case <-timer.C:
		}
		buf = b.sweep(buf)
		timer.Reset(b.sweepInterval())
	}
}

// sweepInterval is a third of the shortest TTL in use (so that expiry is
// noticed within a third of a TTL), between minSweep and maxSweep.
func (b *Broker) sweepInterval() time.Duration {
	d := b.historyTTL / 3
	if p := time.Duration(b.minPresenceTTL.Load()); p > 0 {
		d = min(d, p/3)
	}
	return min(max(d, minSweep), maxSweep)
}

// sweep visits every channel once. It holds a shard lock only to list or
// remove channels, never while calling the handler. buf is scratch space,
// returned for reuse.
func (b *Broker) sweep(buf []*channel) []*channel {
	for i := range b.shards {
		s := &b.shards[i]
		buf = buf[:0]
		s.mu.Lock()
		for _, c := range s.channels {
			buf = append(buf, c)
		}
		s.mu.Unlock()

		idle := 0
		for _, c := range buf {
			c.mu.Lock()
			if !c.dropped && b.state.Load() == stateRunning {
				now := b.clock()
				b.expireMembers(c, now)
				c.trim(now - b.historyTTL)
				if c.n == 0 {
					c.ring, c.head = nil, 0
				}
				if c.idle(now, b.historyTTL) {
					buf[idle] = c
					idle++
				}
			}
			c.mu.Unlock()
		}
		if idle == 0 {
			continue
		}
		s.mu.Lock()
		for _, c := range buf[:idle] {
			c.mu.Lock()
			// Re-check: a call may have used c since we looked.
			if !c.dropped && c.idle(b.clock(), b.historyTTL) {
				c.dropped = true
				delete(s.channels, c.name)
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
	clear(buf[:cap(buf)]) // do not keep forgotten channels alive
	return buf[:0]
}
