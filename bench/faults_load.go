//go:build linux

// faults_load.go: the campaign's load, recorded as a faults.History. One
// publisher per channel, on gateway node A or B in turn, publishes its
// channel's messages one at a time (so publish order is id order) at a
// fixed rate; every channel has subscribers on both nodes, each on a
// connection of its own, that record every message, Reset and Gap they
// receive with the time it arrived.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sgclient "github.com/syncgate/syncgate/client"

	"github.com/syncgate/syncgate/bench/internal/faults"
	"github.com/syncgate/syncgate/bench/internal/load"
)

// campaignLoad is one topology's publishers and subscribers.
type campaignLoad struct {
	urls        []string // the gateway nodes' WebSocket URLs
	prefix      string   // channel c is prefix + c
	channels    int
	subsPerNode int
	rate        float64 // messages per second per channel
	timeout     time.Duration

	clientsMu sync.Mutex
	clients   []*sgclient.Client

	pubs     [][]faults.Publication // by channel; its publisher's alone until pubWG is done
	pubWG    sync.WaitGroup
	stopPubs context.CancelFunc
	acked    atomic.Int64

	subs        []*faults.Subscriber // each its reader's alone until readers is done
	readers     sync.WaitGroup
	stopReaders context.CancelFunc
	distinct    atomic.Int64 // ids received at least once, over every subscriber
	reconnects  atomic.Int64
}

func (l *campaignLoad) channel(c int) string { return l.prefix + strconv.Itoa(c) }

func (l *campaignLoad) dial(ctx context.Context, url string) (*sgclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := sgclient.Dial(dctx, url, sgclient.Options{
		User:       "faults",
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second,
		OnState: func(s sgclient.State, _ error) {
			if s == sgclient.StateReconnecting {
				l.reconnects.Add(1)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	l.clientsMu.Lock()
	l.clients = append(l.clients, c)
	l.clientsMu.Unlock()
	return c, nil
}

// subscribe connects every subscriber and starts its reader.
func (l *campaignLoad) subscribe(ctx context.Context) error {
	readCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l.stopReaders = stop
	for c := range l.channels {
		for n, url := range l.urls {
			for k := range l.subsPerNode {
				cl, err := l.dial(ctx, url)
				if err != nil {
					return fmt.Errorf("subscriber on node %c: %w", 'A'+n, err)
				}
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				sub, err := cl.Subscribe(sctx, l.channel(c))
				cancel()
				if err != nil {
					return fmt.Errorf("subscribe %s on node %c: %w", l.channel(c), 'A'+n, err)
				}
				s := &faults.Subscriber{Name: fmt.Sprintf("%c/%s#%d", 'A'+n, l.channel(c), k), Channel: l.channel(c)}
				l.subs = append(l.subs, s)
				l.readers.Go(func() { l.read(readCtx, sub, s) })
			}
		}
	}
	return nil
}

// read records what sub receives until ctx ends.
func (l *campaignLoad) read(ctx context.Context, sub *sgclient.Subscription, s *faults.Subscriber) {
	seen := map[int]bool{}
	for {
		ev, err := sub.Next(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		switch ev.Type {
		case sgclient.Message:
			id, _, ok := load.ScanMsg(ev.Data)
			if !ok {
				id = -1 // not ours: the checker counts it as unknown
			}
			s.Events = append(s.Events, faults.Event{Type: faults.Delivery, At: now, ID: id})
			if ok && !seen[id] {
				seen[id] = true
				l.distinct.Add(1)
			}
		case sgclient.Reset:
			s.Events = append(s.Events, faults.Event{Type: faults.Reset, At: now})
		case sgclient.Gap:
			s.Events = append(s.Events, faults.Event{Type: faults.Gap, At: now})
		}
	}
}

// publish starts the publishers: channel c's on node c mod nodes.
func (l *campaignLoad) publish(ctx context.Context) error {
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l.stopPubs = stop
	l.pubs = make([][]faults.Publication, l.channels)
	clients := make([]*sgclient.Client, l.channels)
	for c := range l.channels {
		var err error
		if clients[c], err = l.dial(ctx, l.urls[c%len(l.urls)]); err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
	}
	interval := time.Duration(float64(time.Second) / l.rate)
	start := time.Now()
	for c := range l.channels {
		l.pubWG.Go(func() {
			name, buf := l.channel(c), make([]byte, 0, 48)
			next := start.Add(interval * time.Duration(c) / time.Duration(l.channels))
			for id := 0; ; id++ {
				if sleepCtx(pctx, time.Until(next)) != nil {
					return
				}
				sent := time.Now()
				tctx, cancel := context.WithTimeout(pctx, l.timeout)
				_, err := clients[c].Publish(tctx, name, json.RawMessage(load.AppendMsg(buf[:0], id, sent.UnixNano())))
				cancel()
				if pctx.Err() != nil && err != nil {
					return // stopped mid-publish: neither acked nor refused
				}
				l.pubs[c] = append(l.pubs[c], faults.Publication{Channel: name, ID: id, Sent: sent, Done: time.Now(), OK: err == nil})
				if err == nil {
					l.acked.Add(1)
				}
				if next = next.Add(interval); next.Before(time.Now()) {
					next = time.Now() // behind after a slow publish: no burst to catch up
				}
			}
		})
	}
	return nil
}

// stopPublishing stops the publishers and waits for them.
func (l *campaignLoad) stopPublishing() {
	if l.stopPubs != nil {
		l.stopPubs()
	}
	l.pubWG.Wait()
}

// drain waits up to timeout for every acked message to reach every
// subscriber (by count of distinct ids), then a second more for late
// duplicates, and stops the readers.
func (l *campaignLoad) drain(ctx context.Context, timeout time.Duration) (complete bool) {
	want := l.acked.Load() * int64(l.subsPerNode*len(l.urls))
	deadline := time.Now().Add(timeout)
	for l.distinct.Load() < want && time.Now().Before(deadline) {
		if sleepCtx(ctx, 100*time.Millisecond) != nil {
			break
		}
	}
	complete = l.distinct.Load() >= want
	_ = sleepCtx(ctx, time.Second)
	if l.stopReaders != nil {
		l.stopReaders()
	}
	l.readers.Wait()
	return complete
}

// close closes every client.
func (l *campaignLoad) close() {
	if l.stopReaders != nil {
		l.stopReaders()
	}
	l.stopPublishing()
	l.readers.Wait()
	l.clientsMu.Lock()
	defer l.clientsMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range l.clients {
		wg.Go(func() { _ = c.Close() })
	}
	wg.Wait()
}

// history is what was recorded, with the faults; call it after drain.
func (l *campaignLoad) history(fs []faults.Fault) faults.History {
	h := faults.History{Subs: l.subs, Faults: fs}
	for _, ps := range l.pubs {
		h.Pubs = append(h.Pubs, ps...)
	}
	return h
}
