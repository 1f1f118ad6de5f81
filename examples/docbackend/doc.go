// Package docbackend is a small example application backend for
// collaborative documents on syncgate (docs/integration.md,
// "Walkthrough: opening a document"):
//
//   - it follows the change feed (package feed) of the channels
//     "doc:<id>" and stores every accepted edit with its position in a
//     Store (memory or one JSON file), redeliveries recognised by seq;
//   - it serves a document's state at seq S (GET /doc/{id} ->
//     {state, seq, epoch}), from which a client subscribes `since` S;
//   - it is the publish-proxy target (POST /proxy/publish): it validates
//     an edit ({"set": {field: value}}), answers {"data": ...} with a
//     normalised one, or denies it with {"error": {...}}.
//
// The program in cmd/docbackend runs it against a JetStream or Redis
// Streams deployment. It is an example: one process, a file rewritten
// per edit; a real backend keeps the same shape with a database
// (persist the edit and the position in one transaction).
package docbackend
