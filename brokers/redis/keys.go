package redis

import (
	"strconv"
	"strings"
)

// Key layout. Every key and pub/sub channel of a channel ch carries the hash
// tag {ch}, so in a Redis Cluster they share one slot and one script can
// touch them all:
//
//	<prefix>{ch}        pub/sub channel: publications and presence events
//	<prefix>{ch}:h      stream: history, entry id <seq>-0, field d = data
//	<prefix>{ch}:m      hash: e = epoch, s = last seq, n:<node> = the node's
//	                    last applied publish counter (outbox dedupe)
//	<prefix>{ch}:p      hash: client -> user (presence)
//	<prefix>{ch}:x      sorted set: client -> expiry (ms, server time)
//
// Channel names never contain '{' or '}' (the protocol forbids them).

// chanKeys are the names derived from one channel.
type chanKeys struct {
	pubsub, history, meta, members, expiry string
}

func (b *Broker) keys(ch string) chanKeys {
	base := b.cfg.Prefix + "{" + ch + "}"
	return chanKeys{
		pubsub:  base,
		history: base + ":h",
		meta:    base + ":m",
		members: base + ":p",
		expiry:  base + ":x",
	}
}

// pubsubName is the pub/sub channel of ch.
func (b *Broker) pubsubName(ch string) string {
	return b.cfg.Prefix + "{" + ch + "}"
}

// channelOf returns the channel whose pub/sub channel is name.
func (b *Broker) channelOf(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, b.cfg.Prefix+"{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	return rest[:len(rest)-1], true
}

// probeName is the pub/sub channel this node probes shard tag with. The tag
// places it on the shard's slots in a cluster; elsewhere it is "".
func (b *Broker) probeName(tag string) string {
	return b.cfg.Prefix + "{" + tag + "}!probe." + b.nodeID
}

// msToArg renders milliseconds for a script argument.
func msToArg(ms int64) string { return strconv.FormatInt(ms, 10) }
