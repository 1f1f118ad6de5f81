package gateway

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/syncgate/syncgate/brokers"
)

// metrics are the node's Prometheus metrics, on a registry of its own (no
// global state), served at /metrics on the operational listener. Hot-path counters are plain
// prometheus counters (one atomic add); per-delivery counts are added once
// per fan-out, not once per subscriber.
type metrics struct {
	reg *prometheus.Registry

	subscriptions prometheus.Gauge
	commands      map[op]prometheus.Counter
	published     prometheus.Counter // client publishes accepted by the broker
	fanouts       prometheus.Counter // publications received from the broker
	deliveries    prometheus.Counter // frames queued to subscribers
	bytesOut      prometheus.Counter
	publishDur    prometheus.Histogram
	slowConsumers prometheus.Counter
	jwksCuts      prometheus.Counter
	httpEvictions prometheus.Counter
	rejections    *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	catchup       *prometheus.CounterVec
	// Payloads from the broker that failed validation (payload.go), by
	// kind: publication (live), history (catch-up), presence.
	brokerRejected  *prometheus.CounterVec
	brokerRewritten prometheus.Counter // valid but loose publications, re-encoded

	// Control messages (control.go): dropped by reason, applied by op.
	controlRejected *prometheus.CounterVec
	controlApplied  *prometheus.CounterVec

	historyReads     prometheus.Counter // history reads that took a slot
	historyReadsBusy prometheus.Counter // catch-ups refused: no slot within history.read_wait
	catchupPages     prometheus.Counter // pages sent by streamed catch-ups
	catchupStreams   prometheus.Gauge   // streamed catch-ups in progress

	queueBytes atomic.Int64 // sum of queued bytes, summed by the heartbeat sweep
	brokerUp   atomic.Bool  // last Ping result, refreshed every second
}

// Rejection kinds (label "kind" of syncgate_limit_rejections_total).
const (
	rejAcceptRate      = "accept_rate"
	rejMaxConnections  = "max_connections"
	rejHTTPConnections = "http_connections"
	rejUserConnections = "user_connections"
	rejPublishRate     = "publish_rate"
	rejSubscriptions   = "subscriptions"
	rejChannels        = "channels"
	rejMessageSize     = "message_size"
	rejOrigin          = "origin"
	rejHandshake       = "handshake_timeout"
	rejAuth            = "unauthorized"
	rejForbidden       = "forbidden"
	rejFrameTimeout    = "frame_timeout"
	rejPartialBytes    = "partial_bytes"
	rejControlRate     = "control_rate"
)

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_connections", Help: "Open WebSocket and SSE connections."},
		func() float64 { return float64(s.nconns.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_http_connections", Help: "Open plain HTTP connections (not upgraded to WebSocket or SSE), idle keep-alive included."},
		func() float64 { return float64(s.nhttp.Load()) }))
	m.subscriptions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "syncgate_subscriptions", Help: "Client subscriptions on this node."})
	f(m.subscriptions)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_channels", Help: "Channels this node is subscribed to on the broker."},
		func() float64 { return float64(s.hub.nchans.Load()) }))
	cmds := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_commands_total", Help: "Client commands received, by op."}, []string{"op"})
	f(cmds)
	m.commands = make(map[op]prometheus.Counter)
	for name, o := range opNames {
		m.commands[o] = cmds.WithLabelValues(name)
	}
	m.commands[opUnknown] = cmds.WithLabelValues("unknown")
	m.published = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_messages_in_total", Help: "Client publishes accepted by the broker."})
	m.fanouts = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_broker_messages_total", Help: "Publications received from the broker for local subscribers."})
	m.deliveries = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_messages_out_total", Help: "msg frames queued to local subscribers (one per subscriber per message)."})
	m.bytesOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_bytes_out_total", Help: "Bytes written to client sockets."})
	m.publishDur = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "syncgate_publish_duration_seconds", Help: "Time for the broker to accept a client publish.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)})
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_slow_consumer_disconnects_total", Help: "Clients disconnected because their outbound queue was full."})
	m.jwksCuts = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_jwks_key_removed_disconnects_total", Help: "Connections disconnected (token_revoked) because the JWKS key that verified their token was removed from the set."})
	m.httpEvictions = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_http_idle_evictions_total", Help: "Idle keep-alive HTTP connections closed to make room for a new connection at a connection cap."})
	m.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_limit_rejections_total", Help: "Requests refused by a limit or a check, by kind."}, []string{"kind"})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_disconnects_total", Help: "Connections closed by the server, by disconnect code."}, []string{"code"})
	m.catchup = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_catchup_total", Help: "Subscribes with since, by result (recovered, not_recovered, failed)."}, []string{"result"})
	m.brokerRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_broker_payload_rejected_total",
		Help: "Payloads from the broker dropped because they failed validation, by kind (publication, history, presence, snapshot)."}, []string{"kind"})
	m.brokerRewritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_broker_payload_rewritten_total",
		Help: "Publications from the broker that were valid but not compact (an older node's, or written by hand) and were re-encoded."})
	for _, k := range []string{payloadKindPublication, payloadKindHistory, payloadKindPresence, payloadKindSnapshot} {
		m.brokerRejected.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{m.published, m.fanouts, m.deliveries, m.bytesOut, m.publishDur, m.slowConsumers, m.jwksCuts, m.httpEvictions, m.rejections, m.disconnects, m.catchup, m.brokerRejected, m.brokerRewritten} {
		f(c)
	}
	for _, k := range []string{rejAcceptRate, rejMaxConnections, rejHTTPConnections, rejUserConnections, rejPublishRate, rejSubscriptions, rejChannels, rejMessageSize, rejOrigin, rejHandshake, rejAuth, rejForbidden, rejFrameTimeout, rejPartialBytes, rejControlRate} {
		m.rejections.WithLabelValues(k) // export zeros, so alerts can use rate()
	}
	m.historyReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_history_reads_total", Help: "History reads for catch-ups (sized to history.page_bytes)."})
	m.historyReadsBusy = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_history_reads_busy_total", Help: "Catch-ups answered unavailable: no history read slot within history.read_wait."})
	m.catchupPages = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_catchup_pages_total", Help: "History pages sent by streamed catch-ups after the first."})
	m.catchupStreams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "syncgate_catchup_streams", Help: "Streamed catch-ups in progress."})
	m.controlRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_control_rejected_total",
		Help: "Control messages from the broker dropped, by reason (signature, decode, stale, replay, size, queue_full)."}, []string{"reason"})
	m.controlApplied = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_control_applied_total",
		Help: "Control messages from other nodes applied, by op (disconnect, unsubscribe, revoke, summary)."}, []string{"op"})
	for _, r := range []string{ctlRejSize, ctlRejSignature, ctlRejDecode, ctlRejStale, ctlRejReplay, ctlRejQueue} {
		m.controlRejected.WithLabelValues(r)
	}
	for _, op := range []string{ctlDisconnect, ctlUnsubscribe, ctlRevoke, ctlHello, ctlRevocations, ctlSummary} {
		m.controlApplied.WithLabelValues(op) // zeros, for rate() in the dashboard
	}
	for _, c := range []prometheus.Collector{m.historyReads, m.historyReadsBusy, m.catchupPages, m.catchupStreams, m.controlRejected, m.controlApplied} {
		f(c)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_history_reads_in_flight", Help: "History reads running now (at most history.max_reads)."},
		func() float64 { return float64(len(s.reads)) }))
	for _, r := range []string{"recovered", "not_recovered", "failed", "too_large"} {
		m.catchup.WithLabelValues(r)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_queue_bytes", Help: "Bytes waiting in client outbound queues (sampled every second)."},
		func() float64 { return float64(m.queueBytes.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_partial_frame_bytes", Help: "Bytes held in unfinished client frames and fragmented messages (bounded by server.max_partial_bytes)."},
		func() float64 { return float64(s.partialBytes.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_broker_up", Help: "1 when the broker answered its last ping (every second)."},
		func() float64 {
			if m.brokerUp.Load() {
				return 1
			}
			return 0
		}))
	if o, ok := s.broker.(brokers.Outboxer); ok {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_outbox_messages", Help: "Publishes waiting for the broker to come back."},
			func() float64 { return float64(o.OutboxLen()) }))
	}
	if pr, ok := s.broker.(brokers.PendingReporter); ok {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_broker_pending_messages", Help: "Deliveries from the broker received and not yet handed to the hub."},
			func() float64 { return float64(pr.Pending().Msgs) }))
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_broker_pending_messages_limit", Help: "Deliveries the broker client buffers before it drops them (slow consumer)."},
			func() float64 { return float64(pr.Pending().MsgLimit) }))
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_broker_server_max_pending_bytes", Help: "Bytes the broker server lets wait for this node's connection before cutting it (0: unknown)."},
			func() float64 { return float64(pr.Pending().ServerBytesLimit) }))
	}
	return m
}

// brokerLoop keeps syncgate_broker_up current.
func (s *Server) brokerLoop() {
	p, ok := s.broker.(brokers.Pinger)
	if !ok {
		s.metrics.brokerUp.Store(true)
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(s.ctx, time.Second)
		s.metrics.brokerUp.Store(p.Ping(ctx) == nil)
		cancel()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) reject(kind string) { s.metrics.rejections.WithLabelValues(kind).Inc() }
