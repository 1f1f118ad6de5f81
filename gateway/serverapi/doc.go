// Package serverapi serves syncgate's server API: an HTTP JSON API for the
// application backend, on a listener of its own (config api.listen), never
// on the public one. See docs/integration.md, "Server API", for the
// methods and errors; package client/api is its Go client and holds the
// wire types.
//
// Every method is POST /api/<method> with a JSON object body (at most
// Config.MaxBodyBytes, read within Config.Timeout, unknown fields
// refused), authenticated with "Authorization: apikey <key>" against
// Config.Keys (constant-time). The answer is the method's JSON result with
// 200, or {"error":{"code","message"}} with the matching HTTP status.
//
// The work is done by the node (*gateway.Server): the input rules are the
// client protocol's, and disconnect, unsubscribe and revoke reach the other
// nodes as signed control messages through the broker (gateway/control.go).
//
// Lifecycle: New -> Serve(ln) -> Shutdown(ctx), before the node's own
// Shutdown. A Server is safe for concurrent use; metrics
// (syncgate_api_requests_total, syncgate_api_errors_total,
// syncgate_api_request_duration_seconds) go to the node's registry.
package serverapi
