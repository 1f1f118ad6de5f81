package serverapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("serverapi: server closed")

// Config configures the server API. The zero value of every field but Keys
// picks its default.
type Config struct {
	// Keys are the accepted API keys, at least one, each at least 16
	// bytes (config api.keys).
	Keys []string
	// MaxBodyBytes bounds a request body; larger ones get 413. 0: 1 MiB.
	MaxBodyBytes int64
	// Timeout bounds reading a request (head and body) and each call's
	// work on the broker. 0: 10 s.
	Timeout time.Duration
	// MaxBroadcast bounds the channels of one broadcast. 0: 1000.
	MaxBroadcast int
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if len(c.Keys) == 0 {
		return errors.New("serverapi: Keys (api.keys): want at least one API key")
	}
	for i, k := range c.Keys {
		if len(k) < 16 {
			return fmt.Errorf("serverapi: Keys[%d] (api.keys): want at least 16 bytes, got %d", i, len(k))
		}
	}
	if c.MaxBodyBytes < 0 || c.Timeout < 0 || c.MaxBroadcast < 0 {
		return errors.New("serverapi: MaxBodyBytes, Timeout and MaxBroadcast must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxBroadcast == 0 {
		c.MaxBroadcast = 1000
	}
	return c
}

// Error codes of the API, each with its HTTP status.
const (
	codeBadRequest   = "bad_request"        // 400
	codeUnauthorized = "unauthorized"       // 401
	codeNotFound     = "not_found"          // 404
	codeBadVerb      = "method_not_allowed" // 405
	codeTooLarge     = "too_large"          // 413
	codeInternal     = "internal"           // 500
	codeNotSupported = "not_supported"      // 501
	codeUnavailable  = "unavailable"        // 503
)

// Server serves the server API of one node.
type Server struct {
	cfg     Config
	gw      *gateway.Server
	log     *slog.Logger
	keys    [][sha256.Size]byte // sha256 of each key: compared in constant time, whatever the length
	http    *http.Server
	methods map[string]method
	m       apiMetrics
}

// method runs one API method on a decoded request. It returns the result
// to marshal, or an error (apiError or a gateway error).
type method struct {
	newReq func() any // nil: the method takes no arguments
	run    func(ctx context.Context, req any) (any, error)
}

type apiMetrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the server API on gw; its metrics go to gw's registry.
func New(cfg Config, gw *gateway.Server, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg.withDefaults(), gw: gw, log: log}
	for _, k := range cfg.Keys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	s.methods = s.table()
	s.m = apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_api_requests_total", Help: "Server API requests, by method (unknown for a method that does not exist)."}, []string{"method"}),
		errors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syncgate_api_errors_total", Help: "Server API error answers, by method and error code."}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "syncgate_api_request_duration_seconds", Help: "Server API request duration, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"method"}),
	}
	reg := gw.MetricsRegisterer()
	for _, c := range []prometheus.Collector{s.m.requests, s.m.errors, s.m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("serverapi: metrics: %w", err)
		}
	}
	for name := range s.methods {
		s.m.requests.WithLabelValues(name)
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: min(5*time.Second, s.cfg.Timeout),
		ReadTimeout:       s.cfg.Timeout,
		WriteTimeout:      s.cfg.Timeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Serve serves the API on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		s.log.Warn("the server API is served beyond this host over plain HTTP: API keys cross the network in clear; bind api.listen to loopback or a private network, or put TLS in front", "addr", ln.Addr().String())
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting and waits for requests in progress (until ctx).
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// apiError is an error answer.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func badRequest(msg string) error { return &apiError{http.StatusBadRequest, codeBadRequest, msg} }

// toAPIError maps a gateway error onto the API's codes.
func toAPIError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, gateway.ErrBadInput):
		return &apiError{http.StatusBadRequest, codeBadRequest, strings.TrimPrefix(err.Error(), gateway.ErrBadInput.Error()+": ")}
	case errors.Is(err, gateway.ErrTooLarge):
		return &apiError{http.StatusRequestEntityTooLarge, codeTooLarge, strings.TrimPrefix(err.Error(), gateway.ErrTooLarge.Error()+": ")}
	case errors.Is(err, gateway.ErrNotSupported):
		return &apiError{http.StatusNotImplemented, codeNotSupported, err.Error()}
	case errors.Is(err, gateway.ErrUnavailable):
		return &apiError{http.StatusServiceUnavailable, codeUnavailable, err.Error()}
	}
	return &apiError{http.StatusInternalServerError, codeInternal, "internal error"}
}

// authorized checks "Authorization: apikey <key>" against every key, in
// constant time (the sha256 of each is compared, so a key's length does
// not leak either).
func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "apikey ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	match := 0
	for i := range s.keys {
		match |= subtle.ConstantTimeCompare(sum[:], s.keys[i][:])
	}
	return match == 1
}

// ServeHTTP serves POST /api/<method>.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name, ok := strings.CutPrefix(r.URL.Path, "/api/")
	m, known := s.methods[name]
	label := name
	if !ok || !known {
		label = "unknown"
	}
	s.m.requests.WithLabelValues(label).Inc()
	res, err := s.serve(w, r, name, ok && known, m)
	if err != nil {
		ae := toAPIError(err)
		if ae.code == codeInternal {
			s.log.Error("server API call failed", "method", label, "err", err)
		}
		s.m.errors.WithLabelValues(label, ae.code).Inc()
		if ae.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `apikey realm="syncgate api"`)
		}
		if ae.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		writeJSON(w, ae.status, api.ErrorResponse{Error: api.ErrorBody{Code: ae.code, Message: ae.msg}})
	} else {
		writeJSON(w, http.StatusOK, res)
	}
	s.m.latency.WithLabelValues(label).Observe(time.Since(start).Seconds())
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, name string, known bool, m method) (any, error) {
	// The key first: nothing of the body is read for a caller without one.
	if !s.authorized(r) {
		return nil, &apiError{http.StatusUnauthorized, codeUnauthorized, `want "Authorization: apikey <key>" with a key of api.keys`}
	}
	if !known {
		return nil, &apiError{http.StatusNotFound, codeNotFound, "no such method " + strconvQuote(name) + "; want POST /api/<method>, method one of " + strings.Join(s.methodNames(), ", ")}
	}
	if r.Method != http.MethodPost {
		return nil, &apiError{http.StatusMethodNotAllowed, codeBadVerb, "want POST"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &apiError{http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body over %d bytes", s.cfg.MaxBodyBytes)}
		}
		return nil, badRequest("reading the body: " + err.Error())
	}
	var req any
	if m.newReq != nil {
		req = m.newReq()
	} else {
		req = &struct{}{}
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(req); err != nil {
			return nil, badRequest("body: " + err.Error())
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, badRequest("body: want one JSON object and nothing after it")
		}
	} else if m.newReq != nil {
		return nil, badRequest("body: want a JSON object")
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	return m.run(ctx, req)
}

func (s *Server) methodNames() []string {
	names := make([]string, 0, len(s.methods))
	for n := range s.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func strconvQuote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// matchPattern matches a channel against a channels pattern: "*" any run
// of characters ('/', the only byte path.Match treats specially beside
// "*?[\\", is not allowed in channel names, nor are those).
func matchPattern(pattern, ch string) bool {
	ok, _ := path.Match(pattern, ch)
	return ok
}
