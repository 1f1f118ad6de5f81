// Package fault names deliberate faults that a test build can switch on,
// so the fault-injection check (faults_test.go) can prove that the tests
// standing for the guarantees in docs/ fail when a guarantee breaks.
//
// Code that can be broken asks On(name) at the place of the fault. In an
// ordinary build On is a constant false, inlined away: no cost and no
// behaviour. Built with the faultinject tag, On reports whether the
// environment variable Env names the fault. Nothing but tests sets it.
package fault

// Env is the environment variable that names the fault a faultinject
// build injects.
const Env = "FAULT_INJECT"

// The faults. Each is a way a guarantee stated in docs/ can break.
const (
	// NATSFlushNow: core NATS sends its outbox the moment it reconnects,
	// before the other nodes have resubscribed (brokers/nats).
	NATSFlushNow = "nats-flush-now"
	// NATSOutboxDropped: core NATS drops its outbox instead of sending it.
	NATSOutboxDropped = "nats-outbox-dropped"
	// JetStreamRefuseOutage: JetStream refuses a publish during an outage
	// instead of holding it in the outbox (brokers/jetstream).
	JetStreamRefuseOutage = "jetstream-refuse-outage"
	// JetStreamOutboxDropped: JetStream acks publishes into its outbox
	// and then drops them instead of storing them.
	JetStreamOutboxDropped = "jetstream-outbox-dropped"
	// RedisPresenceTTLLong: the Redis presence scripts keep members 1.8
	// times the TTL (brokers/internal/redisbase).
	RedisPresenceTTLLong = "redis-presence-ttl-long"
	// CatchUpGap: publications that reach a subscriber before it is live
	// are dropped instead of buffered: the gap of registering in the hub
	// after reading history (gateway).
	CatchUpGap = "catchup-gap"
	// MergeWatermarkOffByOne: the catch-up merge passes the buffered
	// publication at the history's last seq again (gateway).
	MergeWatermarkOffByOne = "merge-watermark-off-by-one"
	// LiveDedupeOff: the live path delivers a seq at or below the last one
	// delivered again (gateway).
	LiveDedupeOff = "live-dedupe-off"
	// LiveBeforeReply: a v1 catch-up makes the subscriber live (queues
	// the publications buffered during it) before its `subscribed` reply,
	// so a msg of the channel comes before the reply (gateway).
	LiveBeforeReply = "live-before-reply"
	// PresenceRefreshSkipped: the gateway never refreshes its members'
	// presence, so they expire while connected.
	PresenceRefreshSkipped = "presence-refresh-skipped"
)

// Names lists every fault, for the check that each one is caught.
func Names() []string {
	return []string{
		NATSFlushNow, NATSOutboxDropped, JetStreamRefuseOutage, JetStreamOutboxDropped,
		RedisPresenceTTLLong, CatchUpGap, MergeWatermarkOffByOne, LiveDedupeOff,
		LiveBeforeReply, PresenceRefreshSkipped,
	}
}
