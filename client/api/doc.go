// Package api is a Go client for syncgate's server API: the HTTP JSON API
// an application backend uses to publish, read history and presence, list
// channels and nodes, and disconnect, unsubscribe or revoke users on every
// node (docs/integration.md, "Server API").
//
// Every method is POST /api/<method> with a JSON body, authenticated with
// "Authorization: apikey <key>". A [Client] is safe for concurrent use and
// reuses connections (its http.Client's). Every method takes a context
// first: cancel it to give up on the call.
//
// An error answer from the node is an [*Error] with the API's code
// (bad_request, unauthorized, not_found, method_not_allowed, too_large,
// not_supported, unavailable, internal) and the HTTP status; compare
// codes with [IsCode].
//
// The request and response types here are the API's wire format; the
// server (package gateway/serverapi) uses them too.
package api
