package gateway

import (
	"net/http"

	"github.com/syncgate/syncgate/web"
)

// routes registers the browser-facing HTTP endpoints (client library, demo
// page) on the node's HTTP mux, beside /healthz and /readyz.
func (s *Server) routes(mux *http.ServeMux) {
	mux.Handle("GET /client.js", web.ClientJS())
	mux.Handle("GET /yjs.js", web.YjsJS())
	mux.Handle("GET /{$}", web.Demo())
}
