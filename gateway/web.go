package gateway

import "net/http"

// routes registers the browser-facing HTTP endpoints (client library, demo
// page) on the node's HTTP mux, beside /healthz, /readyz and /metrics.
func (s *Server) routes(mux *http.ServeMux) {}
