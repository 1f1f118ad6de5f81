package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Error is an error answer from the server API.
type Error struct {
	Status  int    // HTTP status
	Code    string // bad_request, unauthorized, not_found, ...
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("api: %s (%d): %s", e.Code, e.Status, e.Message)
}

// IsCode reports whether err is an [*Error] with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// maxResponse bounds what the client reads of one answer.
const maxResponse = 64 << 20

// Client calls one node's server API.
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// Options configure a Client.
type Options struct {
	// HTTPClient makes the requests; nil: one with a 30 s timeout.
	HTTPClient *http.Client
}

// New returns a client of the server API at base (e.g.
// "http://127.0.0.1:9091") with API key key.
func New(base, key string, opts Options) *Client {
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), key: key, hc: hc}
}

// Call calls method with body in (marshalled as JSON) and decodes the
// result into out (when not nil). The typed methods use it.
func (c *Client) Call(ctx context.Context, method string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("api: %s: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/"+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("api: %s: %w", method, err)
	}
	req.Header.Set("Authorization", "apikey "+c.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("api: %s: %w", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("api: %s: %w", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
			return &Error{Status: resp.StatusCode, Code: "internal", Message: strings.TrimSpace(string(data[:min(len(data), 200)]))}
		}
		return &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("api: %s: decode answer: %w", method, err)
	}
	return nil
}

// jsonData marshals v unless it is JSON already ([]byte or
// json.RawMessage).
func jsonData(v any) (json.RawMessage, error) {
	switch d := v.(type) {
	case json.RawMessage:
		return d, nil
	case []byte:
		return d, nil
	}
	return json.Marshal(v)
}

// Publish publishes data (a value to marshal, or JSON as []byte or
// json.RawMessage) on ch as from (empty: none) and returns the position
// the message got.
func (c *Client) Publish(ctx context.Context, ch string, data any, from string) (PublishResult, error) {
	raw, err := jsonData(data)
	if err != nil {
		return PublishResult{}, fmt.Errorf("api: publish: %w", err)
	}
	var r PublishResult
	err = c.Call(ctx, "publish", PublishRequest{Ch: ch, Data: raw, From: from}, &r)
	return r, err
}

// PublishBinary publishes bytes on ch as from: a binary publication,
// which binary WebSocket clients receive as bytes and JSON clients as
// base64 under "bin" (docs/protocol.md "Binary data").
func (c *Client) PublishBinary(ctx context.Context, ch string, data []byte, from string) (PublishResult, error) {
	var r PublishResult
	err := c.Call(ctx, "publish", PublishRequest{Ch: ch, Bin: data, From: from}, &r)
	return r, err
}

// StoreSnapshot stores ch's snapshot covering the messages up to at: data
// is a value to marshal, JSON as json.RawMessage, or bytes as []byte (a
// binary snapshot). The result says whether it was kept and the position
// of the snapshot the channel has now.
func (c *Client) StoreSnapshot(ctx context.Context, ch string, at Position, data any) (SnapshotResult, error) {
	req := SnapshotRequest{Ch: ch, At: &at}
	switch d := data.(type) {
	case []byte:
		req.Bin = d
	default:
		raw, err := jsonData(data)
		if err != nil {
			return SnapshotResult{}, fmt.Errorf("api: snapshot: %w", err)
		}
		req.Data = raw
	}
	var r SnapshotResult
	err := c.Call(ctx, "snapshot", req, &r)
	return r, err
}

// Snapshot reads ch's snapshot (Found false: none).
func (c *Client) Snapshot(ctx context.Context, ch string) (SnapshotResult, error) {
	var r SnapshotResult
	err := c.Call(ctx, "snapshot", SnapshotRequest{Ch: ch}, &r)
	return r, err
}

// Broadcast publishes the same data on each of chs; each channel's result
// (position or error) is in the answer, in chs order.
func (c *Client) Broadcast(ctx context.Context, chs []string, data any, from string) ([]ChannelResult, error) {
	raw, err := jsonData(data)
	if err != nil {
		return nil, fmt.Errorf("api: broadcast: %w", err)
	}
	var r BroadcastResult
	err = c.Call(ctx, "broadcast", BroadcastRequest{Chs: chs, Data: raw, From: from}, &r)
	return r.Results, err
}

// Presence lists the clients on ch.
func (c *Client) Presence(ctx context.Context, ch string) ([]Member, error) {
	var r PresenceResult
	err := c.Call(ctx, "presence", ChannelRequest{Ch: ch}, &r)
	return r.Users, err
}

// History returns up to limit publications of ch after since, and the
// channel's latest position.
func (c *Client) History(ctx context.Context, ch string, since uint64, limit int) (HistoryResult, error) {
	var r HistoryResult
	err := c.Call(ctx, "history", HistoryRequest{Ch: ch, Since: since, Limit: limit}, &r)
	return r, err
}

// Channels lists the channels with subscribers in the cluster matching
// pattern ("" for all).
func (c *Client) Channels(ctx context.Context, pattern string) ([]ChannelInfo, error) {
	var r ChannelsResult
	err := c.Call(ctx, "channels", ChannelsRequest{Pattern: pattern}, &r)
	return r.Channels, err
}

// Info lists the nodes of the cluster.
func (c *Client) Info(ctx context.Context) ([]NodeInfo, error) {
	var r InfoResult
	err := c.Call(ctx, "info", struct{}{}, &r)
	return r.Nodes, err
}

// Disconnect closes user's connections on every node.
func (c *Client) Disconnect(ctx context.Context, user string, reconnect bool) (ActionResult, error) {
	var r ActionResult
	err := c.Call(ctx, "disconnect", DisconnectRequest{User: user, Reconnect: reconnect}, &r)
	return r, err
}

// Unsubscribe ends user's subscriptions to ch on every node.
func (c *Client) Unsubscribe(ctx context.Context, user, ch string) (ActionResult, error) {
	var r ActionResult
	err := c.Call(ctx, "unsubscribe", UnsubscribeRequest{User: user, Ch: ch}, &r)
	return r, err
}

// Revoke makes every node refuse user's tokens issued before before, and
// disconnect the connections holding one.
func (c *Client) Revoke(ctx context.Context, user string, before time.Time) (ActionResult, error) {
	var r ActionResult
	err := c.Call(ctx, "revoke", RevokeRequest{User: user, Before: before.Unix()}, &r)
	return r, err
}
