package serverapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
)

// table is the API's methods.
func (s *Server) table() map[string]method {
	return map[string]method{
		"publish":     {func() any { return new(api.PublishRequest) }, s.publish},
		"broadcast":   {func() any { return new(api.BroadcastRequest) }, s.broadcast},
		"presence":    {func() any { return new(api.ChannelRequest) }, s.presence},
		"history":     {func() any { return new(api.HistoryRequest) }, s.history},
		"channels":    {func() any { return new(api.ChannelsRequest) }, s.channels},
		"info":        {nil, s.info},
		"disconnect":  {func() any { return new(api.DisconnectRequest) }, s.disconnect},
		"unsubscribe": {func() any { return new(api.UnsubscribeRequest) }, s.unsubscribe},
		"revoke":      {func() any { return new(api.RevokeRequest) }, s.revoke},
		"snapshot":    {func() any { return new(api.SnapshotRequest) }, s.snapshot},
	}
}

func missing(field string) error { return badRequest(`missing "` + field + `"`) }

func (s *Server) publish(ctx context.Context, in any) (any, error) {
	req := in.(*api.PublishRequest)
	if req.Ch == "" {
		return nil, missing("ch")
	}
	pos, err := s.publishOne(ctx, req.Ch, req.From, req.Data, req.Bin)
	if err != nil {
		return nil, err
	}
	return api.PublishResult{Seq: pos.Seq, Epoch: pos.Epoch}, nil
}

// checkData: exactly one of data and bin (bin: bytes, docs/protocol.md
// "Binary data").
func checkData(data json.RawMessage, bin []byte) error {
	switch {
	case data != nil && bin != nil:
		return badRequest(`"data" and "bin" exclude each other`)
	case data == nil && bin == nil:
		return missing(`data" (or "bin`)
	}
	return nil
}

func (s *Server) publishOne(ctx context.Context, ch, from string, data json.RawMessage, bin []byte) (brokers.Position, error) {
	if err := checkData(data, bin); err != nil {
		return brokers.Position{}, err
	}
	if bin != nil {
		return s.gw.PublishBinaryFromServer(ctx, ch, from, bin)
	}
	return s.gw.PublishFromServer(ctx, ch, from, data)
}

// snapshot stores (with "at") or reads a channel's snapshot.
func (s *Server) snapshot(ctx context.Context, in any) (any, error) {
	req := in.(*api.SnapshotRequest)
	if req.Ch == "" {
		return nil, missing("ch")
	}
	if req.At == nil {
		if req.Data != nil || req.Bin != nil {
			return nil, badRequest(`storing a snapshot needs "at": {"seq": N, "epoch": "E"}, the position it covers`)
		}
		pos, data, bin, found, err := s.gw.SnapshotFromServer(ctx, req.Ch)
		if err != nil || !found {
			return api.SnapshotResult{}, err
		}
		out := api.SnapshotResult{Found: true, Seq: pos.Seq, Epoch: pos.Epoch}
		if bin {
			out.Bin = data
			if out.Bin == nil {
				out.Bin = []byte{}
			}
		} else {
			out.Data = data
		}
		return out, nil
	}
	if err := checkData(req.Data, req.Bin); err != nil {
		return nil, err
	}
	data := []byte(req.Data)
	if req.Bin != nil {
		data = req.Bin
	}
	kept, now, err := s.gw.StoreSnapshotFromServer(ctx, req.Ch, brokers.Position{Seq: req.At.Seq, Epoch: req.At.Epoch}, data, req.Bin != nil)
	if err != nil {
		return nil, err
	}
	return api.SnapshotResult{Stored: kept, Seq: now.Seq, Epoch: now.Epoch}, nil
}

// broadcast checks every channel and the data first (any bad one fails the
// whole call with 400, nothing published), then publishes on each in
// order; a channel the broker fails on gets its error in its result.
func (s *Server) broadcast(ctx context.Context, in any) (any, error) {
	req := in.(*api.BroadcastRequest)
	if len(req.Chs) == 0 {
		return nil, missing("chs")
	}
	if len(req.Chs) > s.cfg.MaxBroadcast {
		return nil, badRequest("at most " + strconv.Itoa(s.cfg.MaxBroadcast) + " channels in one broadcast")
	}
	if err := checkData(req.Data, req.Bin); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(req.Chs))
	for _, ch := range req.Chs {
		if seen[ch] {
			return nil, badRequest("channel " + strconvQuote(ch) + " listed twice")
		}
		seen[ch] = true
		check, data := s.gw.CheckPublish, []byte(req.Data)
		if req.Bin != nil {
			check, data = s.gw.CheckPublishBinary, req.Bin
		}
		if err := check(ch, req.From, data); err != nil {
			return nil, err
		}
	}
	res := api.BroadcastResult{Results: make([]api.ChannelResult, 0, len(req.Chs))}
	for _, ch := range req.Chs {
		pos, err := s.publishOne(ctx, ch, req.From, req.Data, req.Bin)
		if err != nil {
			ae := toAPIError(err)
			res.Results = append(res.Results, api.ChannelResult{Ch: ch, Error: &api.ErrorBody{Code: ae.code, Message: ae.msg}})
			continue
		}
		res.Results = append(res.Results, api.ChannelResult{Ch: ch, Seq: pos.Seq, Epoch: pos.Epoch})
	}
	return res, nil
}

func (s *Server) presence(ctx context.Context, in any) (any, error) {
	req := in.(*api.ChannelRequest)
	if req.Ch == "" {
		return nil, missing("ch")
	}
	ms, err := s.gw.PresenceFromServer(ctx, req.Ch)
	if err != nil {
		return nil, err
	}
	out := api.PresenceResult{Users: make([]api.Member, 0, len(ms))}
	for _, m := range ms {
		out.Users = append(out.Users, api.Member{User: m.User, Client: m.Client})
	}
	return out, nil
}

// historyAnswer is api.HistoryResult with each publication as the
// gateway encoded it (the protocol's msg object), passed through unparsed.
type historyAnswer struct {
	Pubs  []json.RawMessage `json:"pubs"`
	Seq   uint64            `json:"seq"`
	Epoch string            `json:"epoch"`
}

func (s *Server) history(ctx context.Context, in any) (any, error) {
	req := in.(*api.HistoryRequest)
	if req.Ch == "" {
		return nil, missing("ch")
	}
	pubs, pos, err := s.gw.HistoryFromServer(ctx, req.Ch, req.Since, req.Limit)
	if err != nil {
		return nil, err
	}
	out := historyAnswer{Pubs: make([]json.RawMessage, len(pubs)), Seq: pos.Seq, Epoch: pos.Epoch}
	for i, p := range pubs {
		out.Pubs[i] = p
	}
	return out, nil
}

// validPattern: channel-name bytes and '*', at most 255 bytes.
func validPattern(p string) bool {
	if len(p) > 255 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-:.=@*", c) >= 0) {
			return false
		}
	}
	return true
}

func (s *Server) channels(ctx context.Context, in any) (any, error) {
	req := in.(*api.ChannelsRequest)
	if !validPattern(req.Pattern) {
		return nil, badRequest(`"pattern" must be channel-name characters and "*", at most 255 bytes`)
	}
	counts := map[string]int{}
	for _, n := range s.gw.Nodes() {
		for _, c := range n.Channels {
			if req.Pattern == "" || matchPattern(req.Pattern, c.Ch) {
				counts[c.Ch] += c.Subscribers
			}
		}
	}
	out := api.ChannelsResult{Channels: make([]api.ChannelInfo, 0, len(counts))}
	for ch, n := range counts {
		out.Channels = append(out.Channels, api.ChannelInfo{Ch: ch, Subscribers: n})
	}
	sort.Slice(out.Channels, func(i, j int) bool { return out.Channels[i].Ch < out.Channels[j].Ch })
	return out, nil
}

func (s *Server) info(ctx context.Context, _ any) (any, error) {
	nodes := s.gw.Nodes()
	out := api.InfoResult{Nodes: make([]api.NodeInfo, 0, len(nodes))}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, api.NodeInfo{Node: n.Node, Version: n.Version, Connections: n.Connections, Channels: len(n.Channels), Updated: n.Updated})
	}
	return out, nil
}

// actionResult answers a cross-node action: the local count, and whether
// the other nodes were told. A broker failure to tell them is a 503 (this
// node acted all the same: the message says so).
func actionResult(n int, err error) (any, error) {
	switch {
	case err == nil:
		return api.ActionResult{Local: n, Cluster: true}, nil
	case errors.Is(err, gateway.ErrControlOff):
		return api.ActionResult{Local: n, Cluster: false}, nil
	case errors.Is(err, gateway.ErrUnavailable):
		return nil, &apiError{http.StatusServiceUnavailable, codeUnavailable,
			"done on this node (" + strconv.Itoa(n) + " connections); the other nodes could not be told: " + err.Error()}
	}
	return nil, err
}

func (s *Server) disconnect(ctx context.Context, in any) (any, error) {
	req := in.(*api.DisconnectRequest)
	if req.User == "" {
		return nil, missing("user")
	}
	n, err := s.gw.DisconnectUser(ctx, req.User, req.Reconnect)
	if errors.Is(err, gateway.ErrBadInput) {
		return nil, err
	}
	return actionResult(n, err)
}

func (s *Server) unsubscribe(ctx context.Context, in any) (any, error) {
	req := in.(*api.UnsubscribeRequest)
	if req.User == "" {
		return nil, missing("user")
	}
	if req.Ch == "" {
		return nil, missing("ch")
	}
	n, err := s.gw.UnsubscribeUser(ctx, req.User, req.Ch)
	if errors.Is(err, gateway.ErrBadInput) {
		return nil, err
	}
	return actionResult(n, err)
}

func (s *Server) revoke(ctx context.Context, in any) (any, error) {
	req := in.(*api.RevokeRequest)
	if req.User == "" {
		return nil, missing("user")
	}
	if req.Before <= 0 {
		return nil, badRequest(`"before" must be unix seconds (> 0)`)
	}
	n, err := s.gw.RevokeUser(ctx, req.User, time.Unix(req.Before, 0))
	if errors.Is(err, gateway.ErrBadInput) {
		return nil, err
	}
	if errors.Is(err, gateway.ErrRevokedFull) {
		return nil, &apiError{http.StatusServiceUnavailable, codeUnavailable, err.Error()}
	}
	return actionResult(n, err)
}
