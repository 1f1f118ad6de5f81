package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// The event proxy: HTTP hooks into the application's backend
// (docs/integration.md, "Event proxy").
//
// The node POSTs a JSON request to a hook's URL and reads a bounded JSON
// answer: {} allows, {"data": X} replaces a publication's data, {"user",
// "channels"} names a connect's user and permissions, {"error": {"code",
// "message"}} denies. Anything else (a non-200 status, bad JSON, an answer
// over proxyMaxAnswer, a timeout, no concurrency slot) is `unavailable`:
// the proxy fails closed.
//
// A call never runs on an epoll read turn: commands that need one are
// handed to the connection's proxy runner (proxyconn.go), so a slow
// backend delays only the connections waiting for it.

type hook uint8

const (
	hookConnect hook = iota
	hookRefresh
	hookSubscribe
	hookPublish
	numHooks
)

var hookNames = [numHooks]string{"connect", "refresh", "subscribe", "publish"}

// proxyMaxAnswer bounds a hook's answer body; a publish answer may carry
// data up to client.max_message_size on top of it.
const proxyMaxAnswer = 16 << 10

// proxyMaxWaiting bounds the calls waiting for a concurrency slot, in
// multiples of proxy.max_concurrency.
const proxyMaxWaiting = 4

// proxyMaxMessage bounds the message of a deny passed on to the client.
const proxyMaxMessage = 256

// Reasons a call failed (label "reason" of syncgate_proxy_errors_total).
const (
	pxErrTimeout     = "timeout"     // no answer within the hook's timeout
	pxErrUnreachable = "unreachable" // connection refused, reset, ...
	pxErrStatus      = "status"      // not 200
	pxErrBadJSON     = "bad_json"    // not a JSON object of the documented form
	pxErrTooLarge    = "too_large"   // answer over the bound
	pxErrBadData     = "bad_data"    // replacement data invalid or too large
	pxErrBusy        = "concurrency" // no slot within the timeout
	pxDenied         = "denied"      // the backend answered an error (not a failure of the call)
)

var pxReasons = []string{pxErrTimeout, pxErrUnreachable, pxErrStatus, pxErrBadJSON, pxErrTooLarge, pxErrBadData, pxErrBusy, pxDenied}

type eventProxy struct {
	hooks   [numHooks]ProxyHook
	remote  bool
	maxData int // client.max_message_size
	client  *http.Client
	sem     chan struct{}
	// waiting counts calls waiting for a slot; past proxyMaxWaiting x
	// proxy.max_concurrency a call fails at once, so a dead backend
	// cannot gather a goroutine per client for a whole timeout.
	waiting atomic.Int64
	// queued is the bytes of commands in all connections' proxy queues,
	// at most maxQueued (proxy.max_queued_bytes).
	queued    atomic.Int64
	maxQueued int64
	// capture lists the headers (lower case) and cookies any hook
	// forwards: kept per connection from its upgrade request.
	headers []string
	cookies []string

	dur       *prometheus.HistogramVec // by hook
	errs      *prometheus.CounterVec   // by hook, reason
	queueFull prometheus.Counter
}

func newEventProxy(cfg Config, reg *prometheus.Registry) *eventProxy {
	pc := cfg.Proxy
	p := &eventProxy{
		hooks:     [numHooks]ProxyHook{pc.Connect, pc.Refresh, pc.Subscribe, pc.Publish},
		remote:    pc.RemoteAddr,
		maxData:   cfg.Client.MaxMessageSize,
		sem:       make(chan struct{}, pc.MaxConcurrency),
		maxQueued: int64(pc.MaxQueuedBytes),
	}
	on := false
	for _, h := range p.hooks {
		if !h.On() {
			continue
		}
		on = true
		for _, n := range h.Headers {
			if n = strings.ToLower(n); !contains(p.headers, n) {
				p.headers = append(p.headers, n)
			}
		}
		for _, n := range h.Cookies {
			if !contains(p.cookies, n) {
				p.cookies = append(p.cookies, n)
			}
		}
	}
	if !on {
		return nil
	}
	// One client, its connections reused across calls and hooks; bounded
	// like everything else (the per-call timeout is the request context).
	tr := &http.Transport{
		Proxy:                  nil, // the backend is addressed directly
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:           pc.MaxConcurrency,
		MaxIdleConnsPerHost:    pc.MaxConcurrency,
		MaxConnsPerHost:        pc.MaxConcurrency,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		ForceAttemptHTTP2:      true,
	}
	p.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "syncgate_proxy_duration_seconds",
		Help: "Event proxy calls by hook: time from asking for a concurrency slot to the answer read.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"hook"})
	p.errs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_proxy_errors_total",
		Help: "Event proxy calls that did not allow, by hook and reason (denied = the backend answered an error; every other reason made the client's command unavailable)."}, []string{"hook", "reason"})
	p.queueFull = prometheus.NewCounter(prometheus.CounterOpts{Name: "syncgate_proxy_queue_full_total",
		Help: "Commands answered unavailable because this node's proxy queues held proxy.max_queued_bytes."})
	reg.MustRegister(p.dur, p.errs, p.queueFull,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_proxy_calls_in_flight", Help: "Event proxy calls holding a slot (at most proxy.max_concurrency)."},
			func() float64 { return float64(len(p.sem)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_proxy_calls_waiting", Help: "Event proxy calls waiting for a slot (at most 4 x proxy.max_concurrency)."},
			func() float64 { return float64(p.waiting.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syncgate_proxy_queued_bytes", Help: "Bytes of commands waiting in connections' proxy queues (at most proxy.max_queued_bytes)."},
			func() float64 { return float64(p.queued.Load()) }))
	for i, h := range p.hooks {
		if h.On() {
			p.dur.WithLabelValues(hookNames[i])
			for _, r := range pxReasons {
				p.errs.WithLabelValues(hookNames[i], r)
			}
		}
	}
	return p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// on reports whether hook h is configured; p may be nil (no hook is).
func (p *eventProxy) on(h hook) bool { return p != nil && p.hooks[h].URL != "" }

// proxyRequest is the JSON body of a hook call.
type proxyRequest struct {
	Client    string            `json:"client"`
	User      string            `json:"user,omitempty"`
	Ch        string            `json:"ch,omitempty"`
	Data      json.RawMessage   `json:"data,omitempty"`
	Transport string            `json:"transport"`
	Remote    string            `json:"remote_addr,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Cookies   map[string]string `json:"cookies,omitempty"`
}

// proxyAnswer is what an allowing answer carries.
type proxyAnswer struct {
	data     []byte // replacement publication data (publish), compact; nil = keep
	user     string
	channels bool // the answer had "channels"
	sub, pub []string
}

// proxyErr is a call that did not allow: the code and message the client
// gets.
type proxyErr struct{ code, msg string }

func (e *proxyErr) Error() string { return e.code + ": " + e.msg }

// clientInfo is what a hook call says about the client beyond the command.
type clientInfo struct {
	client, user, transport, remote string
	fwd                             *forwarded
}

// forwarded holds the configured headers and cookies of a client's
// request (upgrade, SSE or POST /pub), kept from its handshake.
type forwarded struct {
	headers map[string]string // lower-case name
	cookies map[string]string
}

// capture picks the forwarded headers and cookies out of a request's
// headers; it returns nil when there are none.
func (p *eventProxy) capture(get func(name string) []string) *forwarded {
	if p == nil {
		return nil
	}
	f := &forwarded{}
	for _, n := range p.headers {
		if v := get(n); len(v) > 0 {
			if f.headers == nil {
				f.headers = make(map[string]string)
			}
			f.headers[n] = strings.Join(v, ", ")
		}
	}
	if len(p.cookies) > 0 {
		for _, line := range get("cookie") {
			cs, err := http.ParseCookie(line)
			if err != nil {
				continue
			}
			for _, ck := range cs {
				if contains(p.cookies, ck.Name) {
					if f.cookies == nil {
						f.cookies = make(map[string]string)
					}
					f.cookies[ck.Name] = ck.Value
				}
			}
		}
	}
	if f.headers == nil && f.cookies == nil {
		return nil
	}
	return f
}

// forwardsCookie reports whether a request carrying these cookie header
// lines would forward a cookie: then it must come from an allowed origin.
func (p *eventProxy) forwardsCookie(lines []string) bool {
	if p == nil || len(p.cookies) == 0 {
		return false
	}
	for _, line := range lines {
		cs, _ := http.ParseCookie(line)
		for _, ck := range cs {
			if contains(p.cookies, ck.Name) {
				return true
			}
		}
	}
	return false
}

// call asks hook h. The error is what the client gets: the backend's deny,
// or `unavailable` when the call failed (fail closed).
func (p *eventProxy) call(ctx context.Context, h hook, ci clientInfo, ch string, data []byte) (*proxyAnswer, *proxyErr) {
	hc := p.hooks[h]
	name := hookNames[h]
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	fail := func(reason string) (*proxyAnswer, *proxyErr) {
		p.errs.WithLabelValues(name, reason).Inc()
		return nil, &proxyErr{codeUnavailable, name + " proxy unavailable, try again"}
	}
	select {
	case p.sem <- struct{}{}:
	default:
		if p.waiting.Add(1) > int64(proxyMaxWaiting*cap(p.sem)) {
			p.waiting.Add(-1)
			return fail(pxErrBusy)
		}
		select {
		case p.sem <- struct{}{}:
			p.waiting.Add(-1)
		case <-ctx.Done():
			p.waiting.Add(-1)
			return fail(pxErrBusy)
		}
	}
	defer func() { <-p.sem }()
	defer func() { p.dur.WithLabelValues(name).Observe(time.Since(start).Seconds()) }()

	req := proxyRequest{Client: ci.client, User: ci.user, Ch: ch, Data: data, Transport: ci.transport}
	if p.remote {
		req.Remote = ci.remote
	}
	if ci.fwd != nil {
		req.Headers = pick(ci.fwd.headers, hc.Headers, true)
		req.Cookies = pick(ci.fwd.cookies, hc.Cookies, false)
	}
	body, err := json.Marshal(&req)
	if err != nil {
		return fail(pxErrBadJSON)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, hc.URL, bytes.NewReader(body))
	if err != nil {
		return fail(pxErrUnreachable)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return fail(pxErrTimeout)
		}
		return fail(pxErrUnreachable)
	}
	defer resp.Body.Close()
	limit := int64(proxyMaxAnswer)
	if h == hookPublish {
		limit += int64(p.maxData)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return fail(pxErrTimeout)
	case err != nil:
		return fail(pxErrUnreachable)
	case resp.StatusCode != http.StatusOK:
		return fail(pxErrStatus)
	case int64(len(raw)) > limit:
		return fail(pxErrTooLarge)
	}
	var ans struct {
		Data     json.RawMessage `json:"data"`
		User     *string         `json:"user"`
		Channels *struct {
			Sub []string `json:"sub"`
			Pub []string `json:"pub"`
		} `json:"channels"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &ans) != nil {
		return fail(pxErrBadJSON)
	}
	if ans.Error != nil {
		p.errs.WithLabelValues(name, pxDenied).Inc()
		return nil, &proxyErr{protocolCode(ans.Error.Code), sanitizeMessage(ans.Error.Message, name)}
	}
	out := &proxyAnswer{}
	if ans.User != nil {
		if *ans.User == "" || len(*ans.User) > maxUserLen || !utf8.ValidString(*ans.User) {
			return fail(pxErrBadJSON)
		}
		out.user = *ans.User
	}
	if ans.Channels != nil {
		out.channels = true
		out.sub, out.pub = nonEmpty(ans.Channels.Sub), nonEmpty(ans.Channels.Pub)
	}
	if ans.Data != nil && h == hookPublish {
		if len(ans.Data) > p.maxData || !validData(ans.Data) {
			return fail(pxErrBadData)
		}
		out.data = appendCompactJSON(nil, ans.Data)
		if len(out.data) > p.maxData {
			return fail(pxErrBadData)
		}
	}
	return out, nil
}

func pick(have map[string]string, names []string, lower bool) map[string]string {
	var out map[string]string
	for _, n := range names {
		k := n
		if lower {
			k = strings.ToLower(n)
		}
		if v, ok := have[k]; ok {
			if out == nil {
				out = make(map[string]string, len(names))
			}
			out[n] = v
		}
	}
	return out
}

func nonEmpty(list []string) []string {
	out := list[:0]
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// protocolCode passes a code of the protocol's set; any other becomes
// forbidden (the backend said no, in words the client cannot know).
func protocolCode(code string) string {
	switch code {
	case codeBadRequest, codeUnauthorized, codeForbidden, codeTooLarge, codeRateLimited, codeUnavailable, codeInternal:
		return code
	}
	return codeForbidden
}

// sanitizeMessage keeps a backend's message printable and short: control
// and format characters dropped, invalid UTF-8 replaced, at most
// proxyMaxMessage bytes (cut at a rune boundary).
func sanitizeMessage(msg, hookName string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(msg, "\uFFFD") {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > proxyMaxMessage {
			break
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return hookName + " denied by the application"
	}
	return b.String()
}
