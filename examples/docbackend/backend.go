package docbackend

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/feed"
)

// DefaultChannelPrefix: document id's channel is "doc:<id>".
const DefaultChannelPrefix = "doc:"

// maxBody bounds a request body (a publish-proxy call carries one edit
// and the client's details).
const maxBody = 256 << 10

// Backend is the example application backend.
type Backend struct {
	// Store holds the documents; required.
	Store *Store
	// ChannelPrefix maps a document to its channel; default
	// DefaultChannelPrefix.
	ChannelPrefix string
	// Log gets what the feed loop skips; nil discards.
	Log *slog.Logger

	applied, skipped, redelivered atomic.Uint64
}

func (b *Backend) prefix() string {
	if b.ChannelPrefix == "" {
		return DefaultChannelPrefix
	}
	return b.ChannelPrefix
}

func (b *Backend) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// Resume is where to open the feed.
func (b *Backend) Resume() feed.Resume { return b.Store.Resume(b.prefix()) }

// Pattern is the feed pattern of the documents' channels.
func (b *Backend) Pattern() string { return b.prefix() + "*" }

// Follow applies what f yields until ctx ends or f fails. Every
// publication is persisted with its position before the next is read, so
// after a crash the feed reopened at Resume redelivers at most what
// follows the last persisted one, which Apply recognises. An edit that
// does not parse (published before the publish proxy was in place) is
// skipped and counted.
func (b *Backend) Follow(ctx context.Context, f feed.Reader) error {
	for {
		p, err := f.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		id, ok := strings.CutPrefix(p.Ch, b.prefix())
		if !ok {
			continue
		}
		e, err := ParseEdit(p.Data)
		if err != nil {
			b.skipped.Add(1)
			b.log().Warn("docbackend: skipped an edit", "ch", p.Ch, "seq", p.Seq, "err", err)
			e = Edit{} // still advance the position
		}
		ok, err = b.Store.Apply(id, brokers.Position{Seq: p.Seq, Epoch: p.Epoch}, e, p.Token)
		if err != nil {
			return err
		}
		if ok {
			b.applied.Add(1)
		} else {
			b.redelivered.Add(1)
		}
	}
}

// Applied counts the feed's publications applied (malformed edits
// included: they advance the position), Skipped the malformed ones,
// Redelivered those at or before their document's position (the feed is
// at least once: what follows the last persisted position after a crash).
func (b *Backend) Applied() uint64     { return b.applied.Load() }
func (b *Backend) Skipped() uint64     { return b.skipped.Load() }
func (b *Backend) Redelivered() uint64 { return b.redelivered.Load() }

// Handler serves
//
//	GET  /doc/{id}       -> {"state": {...}, "seq": S, "epoch": E}: the
//	                        document at seq S; a client opens it with
//	                        sub {ch: "doc:<id>", since: {seq: S, epoch: E}}
//	POST /proxy/publish  -> the publish-proxy answer for an edit
//	                        (docs/integration.md, "Event proxy")
func (b *Backend) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /doc/{id}", b.getDoc)
	mux.HandleFunc("POST /proxy/publish", b.publishProxy)
	return mux
}

func (b *Backend) getDoc(w http.ResponseWriter, r *http.Request) {
	d, ok := b.Store.Doc(r.PathValue("id"))
	if !ok {
		// Nothing applied yet: the empty state before seq 1. A client
		// subscribing since seq 0 gets the whole history.
		d = Doc{State: map[string]json.RawMessage{}}
	}
	writeJSON(w, http.StatusOK, d)
}

// proxyRequest is what a node POSTs to the publish hook (the fields this
// backend uses).
type proxyRequest struct {
	Client string          `json:"client"`
	User   string          `json:"user"`
	Ch     string          `json:"ch"`
	Data   json.RawMessage `json:"data"`
}

type proxyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// publishProxy answers {} (allow as is), {"data": <normalised edit>}
// (publish this instead) or {"error": {...}} (deny: the client gets the
// code and message).
func (b *Backend) publishProxy(w http.ResponseWriter, r *http.Request) {
	var req proxyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": proxyError{"bad_request", "bad hook request"}})
		return
	}
	deny := func(code, msg string) {
		writeJSON(w, http.StatusOK, map[string]any{"error": proxyError{code, msg}})
	}
	if !strings.HasPrefix(req.Ch, b.prefix()) {
		deny("forbidden", "not a document channel")
		return
	}
	if req.User == "" {
		deny("forbidden", "sign in to edit")
		return
	}
	e, err := ParseEdit(req.Data)
	if err != nil {
		deny("bad_request", err.Error())
		return
	}
	out, changed := Normalize(req.Data, e)
	if !changed {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	writeJSON(w, http.StatusOK, map[string]json.RawMessage{"data": out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
