package api

import "encoding/json"

// PublishRequest is the body of publish.
type PublishRequest struct {
	Ch   string          `json:"ch"`
	Data json.RawMessage `json:"data,omitempty"`
	// Bin, instead of Data, publishes bytes: a binary publication
	// (docs/protocol.md "Binary data"), base64 in the request's JSON.
	Bin []byte `json:"bin,omitempty"`
	// From is the publisher identity subscribers see in "from"; empty
	// when not set.
	From string `json:"from,omitempty"`
}

// PublishResult is the answer to publish: the position the message got.
type PublishResult struct {
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
}

// BroadcastRequest is the body of broadcast: the same data on each channel.
type BroadcastRequest struct {
	Chs  []string        `json:"chs"`
	Data json.RawMessage `json:"data,omitempty"`
	Bin  []byte          `json:"bin,omitempty"` // instead of Data: bytes (see PublishRequest)
	From string          `json:"from,omitempty"`
}

// BroadcastResult lists one result per channel, in the request's order.
type BroadcastResult struct {
	Results []ChannelResult `json:"results"`
}

// ChannelResult is one channel's outcome in a broadcast: its position, or
// the error that channel got.
type ChannelResult struct {
	Ch    string     `json:"ch"`
	Seq   uint64     `json:"seq,omitempty"`
	Epoch string     `json:"epoch,omitempty"`
	Error *ErrorBody `json:"error,omitempty"`
}

// ChannelRequest is the body of presence.
type ChannelRequest struct {
	Ch string `json:"ch"`
}

// PresenceResult lists the clients on a channel.
type PresenceResult struct {
	Users []Member `json:"users"`
}

// Member is one client on a channel's presence list.
type Member struct {
	User   string `json:"user"`
	Client string `json:"client"`
}

// HistoryRequest is the body of history: publications after Since, at most
// Limit (0: none, only the position; at most 1000).
type HistoryRequest struct {
	Ch    string `json:"ch"`
	Since uint64 `json:"since,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// HistoryResult holds the publications (oldest first) and the channel's
// latest position.
type HistoryResult struct {
	Pubs  []Publication `json:"pubs"`
	Seq   uint64        `json:"seq"`
	Epoch string        `json:"epoch"`
}

// Publication is one message of a channel's history, as clients receive
// it (the protocol's msg object).
type Publication struct {
	Op    string          `json:"op"`
	Ch    string          `json:"ch"`
	Seq   uint64          `json:"seq,omitempty"`
	Epoch string          `json:"epoch,omitempty"`
	Was   json.RawMessage `json:"was,omitempty"`
	From  string          `json:"from"`
	Data  json.RawMessage `json:"data,omitempty"`
	// Bin holds the bytes of a binary publication (then Data is empty).
	Bin []byte `json:"bin,omitempty"`
}

// SnapshotRequest is the body of snapshot. With At it stores a snapshot
// of Ch covering the messages up to At: Data (one JSON value) or Bin
// (bytes; an empty Bin cannot be told from none), under the rules of the
// `snap` op. Without At it reads Ch's snapshot.
type SnapshotRequest struct {
	Ch   string          `json:"ch"`
	At   *Position       `json:"at,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Bin  []byte          `json:"bin,omitempty"`
}

// Position is a place in a channel's history.
type Position struct {
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
}

// SnapshotResult answers snapshot. A store sets Stored (false: the
// channel keeps a snapshot at an equal or higher seq) and the position of
// the snapshot the channel keeps now. A read sets Found and, when found,
// the snapshot's position and its Data or (binary) Bin.
type SnapshotResult struct {
	Stored bool            `json:"stored"`
	Found  bool            `json:"found"`
	Seq    uint64          `json:"seq,omitempty"`
	Epoch  string          `json:"epoch,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Bin    []byte          `json:"bin,omitempty"`
}

// ChannelsRequest is the body of channels: Pattern ("*" any run of
// characters, e.g. "doc:*"), empty for every channel.
type ChannelsRequest struct {
	Pattern string `json:"pattern,omitempty"`
}

// ChannelsResult lists the channels with subscribers on any node known
// (see InfoResult), with their subscriber counts summed over the nodes,
// sorted by name.
type ChannelsResult struct {
	Channels []ChannelInfo `json:"channels"`
}

// ChannelInfo is a channel and its subscribers.
type ChannelInfo struct {
	Ch          string `json:"ch"`
	Subscribers int    `json:"subscribers"`
}

// InfoResult lists the nodes: the one answering (fresh) and every node
// whose summary it received within the last 6 seconds.
type InfoResult struct {
	Nodes []NodeInfo `json:"nodes"`
}

// NodeInfo is one node's summary.
type NodeInfo struct {
	Node        string `json:"node"`
	Version     string `json:"version"`
	Connections int    `json:"connections"`
	Channels    int    `json:"channels"`
	// Updated is when the node made the summary (unix milliseconds).
	Updated int64 `json:"updated"`
}

// DisconnectRequest is the body of disconnect. Reconnect tells the
// clients whether they may reconnect.
type DisconnectRequest struct {
	User      string `json:"user"`
	Reconnect bool   `json:"reconnect,omitempty"`
}

// UnsubscribeRequest is the body of unsubscribe.
type UnsubscribeRequest struct {
	User string `json:"user"`
	Ch   string `json:"ch"`
}

// RevokeRequest is the body of revoke: Before in unix seconds; the user's
// tokens issued (iat) before it are refused.
type RevokeRequest struct {
	User   string `json:"user"`
	Before int64  `json:"before"`
}

// ActionResult answers disconnect, unsubscribe and revoke: how many
// connections the answering node acted on, and whether the order went to
// the other nodes too (false on a node without api.cluster_secret).
type ActionResult struct {
	Local   int  `json:"local"`
	Cluster bool `json:"cluster"`
}

// ErrorBody is the "error" member of an error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorResponse is an error answer: {"error": {"code", "message"}}.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}
