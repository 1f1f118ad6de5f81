package redis

// Stats are counters of a Broker since Start, for metrics and tests.
type Stats struct {
	// Published counts publications Redis applied through this node.
	Published uint64
	// Pipelines counts the publish pipelines sent: Published/Pipelines is
	// the average batch (auto-batching under load).
	Pipelines uint64
	// Outbox is how many publications wait for Redis now.
	Outbox int
	// Reconnects counts shard reconnections after an outage.
	Reconnects uint64
	// Fills counts history reads that filled a gap in delivery.
	Fills uint64
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Published:  b.stats.published.Load(),
		Pipelines:  b.stats.pipelines.Load(),
		Outbox:     int(b.outboxLen.Load()),
		Reconnects: b.stats.reconnects.Load(),
		Fills:      b.stats.fills.Load(),
	}
}
