package natsbase

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream API calls the brokers make without the jetstream package's
// helpers: they need leader reads (STREAM.MSG.GET) even on streams that
// allow direct gets, and batched direct gets.

// Errors of the JetStream helpers.
var (
	// ErrNotFound: no message matched.
	ErrNotFound = errors.New("natsbase: no message")
	// ErrConflict: Nats-Expected-Last-Subject-Sequence did not match.
	ErrConflict = errors.New("natsbase: wrong last sequence")
	// ErrDuplicate: the stream holds a message with the same Nats-Msg-Id
	// already (within its duplicate window) and stored nothing; Publish
	// and ParseAck return that message's stream seq with it.
	ErrDuplicate = errors.New("natsbase: duplicate message id")
)

// StoredMsg is one message read back from a stream.
type StoredMsg struct {
	Subject string
	Seq     uint64 // stream sequence
	Header  nats.Header
	Data    []byte
	Time    time.Time
}

// APIError is an error answer of the JetStream API.
type APIError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("jetstream: %s (code %d, error %d)", e.Description, e.Code, e.ErrCode)
}

// JetStream API error codes the brokers react to.
const (
	errCodeWrongLastSeq         = 10071
	errCodeWrongLastSeqConstant = 10164
	errCodeDuplicateInProcess   = 10158 // a write with the same Nats-Msg-Id is in flight
	errCodeStreamNotFound       = 10059
	errCodeNoMessage            = 10037
)

// IsStreamNotFound reports an API error saying the stream does not exist
// (either this package's APIError or the jetstream package's).
func IsStreamNotFound(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) && ae.ErrCode == errCodeStreamNotFound {
		return true
	}
	var je *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.As(err, &je) && je.ErrorCode == errCodeStreamNotFound
}

// IsUnavailable reports a JetStream API answer that the stream cannot
// take writes for now: JetStream temporarily unavailable (10008: a stream
// that lost its quorum or has no leader yet) or a new leader not ready to
// check an expected last sequence (10163). The write it answers may still
// be stored later (a leader without quorum may have proposed it before it
// stepped down), so its outcome is unknown, and the stream is in an outage
// until the quorum is back. Other 503 answers (insufficient resources)
// stay refusals.
func IsUnavailable(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == 503 && (ae.ErrCode == 10008 || ae.ErrCode == 10163)
}

// IsOutage reports an error the node cannot serve through until the server
// side is back: the connection (IsConnErr) or a missing stream, which the
// node re-creates. No responders is both: with JetStream on, a publish to a
// subject no stream holds has none.
func IsOutage(err error) bool {
	return IsConnErr(err) || IsStreamNotFound(err)
}

type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
	UpToSeq uint64 `json:"up_to_seq,omitempty"`
}

type msgGetResponse struct {
	Error   *APIError `json:"error,omitempty"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs,omitempty"`
		Data    []byte    `json:"data,omitempty"`
		Time    time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// GetLast reads the last message of subject from the stream leader. A
// subject with no message gives ErrNotFound.
func GetLast(ctx context.Context, nc *nats.Conn, stream, subject string) (*StoredMsg, error) {
	return leaderGet(ctx, nc, stream, msgGetRequest{LastFor: subject})
}

// GetNext reads, from the stream leader, the first message of subject with
// a stream sequence >= seq; ErrNotFound when there is none.
func GetNext(ctx context.Context, nc *nats.Conn, stream, subject string, seq uint64) (*StoredMsg, error) {
	return leaderGet(ctx, nc, stream, msgGetRequest{Seq: max(seq, 1), NextFor: subject})
}

func leaderGet(ctx context.Context, nc *nats.Conn, stream string, req msgGetRequest) (*StoredMsg, error) {
	body, _ := json.Marshal(req)
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, cause(ctx, err)
	}
	return parseMsgGet(reply.Data)
}

// parseMsgGet reads a STREAM.MSG.GET answer.
func parseMsgGet(data []byte) (*StoredMsg, error) {
	var resp msgGetResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("jetstream: bad message get answer: %w", err)
	}
	if resp.Error != nil {
		// A missing stream is a 404 too, but not "no message": the node
		// must notice it (and re-create the stream), not read it as an
		// empty channel.
		if resp.Error.ErrCode != errCodeStreamNotFound && (resp.Error.Code == 404 || resp.Error.ErrCode == errCodeNoMessage) {
			return nil, ErrNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, ErrNotFound
	}
	m := &StoredMsg{Subject: resp.Message.Subject, Seq: resp.Message.Seq, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, fmt.Errorf("jetstream: bad stored headers: %w", err)
		}
		m.Header = h
	}
	return m, nil
}

// GetLastMany reads the last message of each subject from the stream
// leader, pipelined. A subject without message gives a nil entry.
func GetLastMany(ctx context.Context, nc *nats.Conn, stream string, subjects []string) ([]*StoredMsg, error) {
	msgs := make([]*nats.Msg, len(subjects))
	for i, subj := range subjects {
		body, _ := json.Marshal(msgGetRequest{LastFor: subj})
		msgs[i] = &nats.Msg{Subject: "$JS.API.STREAM.MSG.GET." + stream, Data: body}
	}
	replies, errs := RequestMany(ctx, nc, msgs)
	out := make([]*StoredMsg, len(subjects))
	for i := range subjects {
		if errs[i] != nil {
			return nil, errs[i]
		}
		sm, err := parseMsgGet(replies[i].Data)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[i] = sm
	}
	return out, nil
}

// Subjects lists, from the stream leader, the subjects matching filter that
// hold messages.
func Subjects(ctx context.Context, nc *nats.Conn, stream, filter string) ([]string, error) {
	var out []string
	for {
		body, _ := json.Marshal(struct {
			Offset int    `json:"offset,omitempty"`
			Filter string `json:"subjects_filter"`
		}{len(out), filter})
		reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+stream, body)
		if err != nil {
			return nil, cause(ctx, err)
		}
		var resp struct {
			Error *APIError `json:"error,omitempty"`
			Total int       `json:"total"`
			State struct {
				Subjects map[string]uint64 `json:"subjects"`
			} `json:"state"`
		}
		if err := json.Unmarshal(reply.Data, &resp); err != nil {
			return nil, fmt.Errorf("jetstream: bad stream info answer: %w", err)
		}
		if resp.Error != nil {
			return nil, resp.Error
		}
		for subj := range resp.State.Subjects {
			out = append(out, subj)
		}
		if len(resp.State.Subjects) == 0 || len(out) >= resp.Total {
			return out, nil
		}
	}
}

// DirectBatch reads up to batch messages of subject (wildcards allowed) with
// stream sequences >= seq (and <= upTo when upTo > 0), oldest first, with a
// direct get, which any replica may answer. A replica may lag behind the
// leader: callers that need the newest messages check what they got.
func DirectBatch(ctx context.Context, nc *nats.Conn, stream, subject string, seq uint64, batch int, upTo uint64) ([]*StoredMsg, error) {
	if batch <= 0 {
		return nil, nil
	}
	body, _ := json.Marshal(msgGetRequest{Seq: max(seq, 1), NextFor: subject, Batch: batch, UpToSeq: upTo})
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, batch+1)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return nil, err
	}
	var out []*StoredMsg
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, cause(ctx, ctx.Err())
		}
		if status := m.Header.Get("Status"); status != "" {
			switch status {
			case "204": // end of batch
				return out, nil
			case "404":
				return out, nil
			case "503":
				return nil, nats.ErrNoResponders
			}
			return nil, fmt.Errorf("jetstream: direct get: status %s %s", status, m.Header.Get("Description"))
		}
		sm, err := storedFromDirect(m)
		if err != nil {
			return nil, err
		}
		out = append(out, sm)
		if len(out) == batch {
			// The end-of-batch marker follows; the deferred Unsubscribe
			// drops it.
			return out, nil
		}
	}
}

// storedFromDirect reads a direct get answer.
func storedFromDirect(m *nats.Msg) (*StoredMsg, error) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("jetstream: direct get answer without sequence")
	}
	sm := &StoredMsg{Subject: m.Header.Get("Nats-Subject"), Seq: seq, Header: m.Header, Data: m.Data}
	if ts := m.Header.Get("Nats-Time-Stamp"); ts != "" {
		sm.Time, _ = time.Parse(time.RFC3339Nano, ts)
	}
	return sm, nil
}

type pubAck struct {
	Error     *APIError `json:"error,omitempty"`
	Stream    string    `json:"stream"`
	Seq       uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate,omitempty"`
}

// Publish sends m to JetStream and waits for its ack, returning the stream
// sequence it got. A failed Nats-Expected-Last-Subject-Sequence check gives
// an error wrapping ErrConflict, as does a write refused because another
// with its Nats-Msg-Id is in flight (nothing was stored: it may be tried
// again); a Nats-Msg-Id stored already gives ErrDuplicate with that
// message's seq; no responders gives nats.ErrNoResponders.
func Publish(ctx context.Context, nc *nats.Conn, m *nats.Msg) (uint64, error) {
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, cause(ctx, err)
	}
	return ParseAck(reply.Data)
}

// ParseAck reads a publish ack. The usual answer,
// {"stream":"NAME","seq":N} (and perhaps "domain"), is read without
// encoding/json; anything else goes through it.
func ParseAck(data []byte) (uint64, error) {
	if seq, ok := fastAck(data); ok {
		return seq, nil
	}
	var ack pubAck
	if err := json.Unmarshal(data, &ack); err != nil {
		return 0, fmt.Errorf("jetstream: bad publish ack: %w", err)
	}
	if ack.Error != nil {
		switch ack.Error.ErrCode {
		case errCodeWrongLastSeq, errCodeWrongLastSeqConstant, errCodeDuplicateInProcess:
			return 0, fmt.Errorf("%w: %w", ErrConflict, ack.Error)
		}
		return 0, ack.Error
	}
	if ack.Seq == 0 {
		return 0, errors.New("jetstream: publish ack without sequence")
	}
	if ack.Duplicate {
		return ack.Seq, ErrDuplicate
	}
	return ack.Seq, nil
}

// fastAck reads the seq of a plain success ack: no "error", no
// "duplicate", one "seq" holding a decimal number.
func fastAck(data []byte) (uint64, bool) {
	if bytes.Contains(data, []byte(`"error"`)) || bytes.Contains(data, []byte(`"duplicate"`)) {
		return 0, false
	}
	i := bytes.Index(data, []byte(`"seq":`))
	if i < 0 || bytes.Count(data, []byte(`"seq"`)) != 1 {
		return 0, false
	}
	var seq uint64
	n := 0
	for _, c := range data[i+len(`"seq":`):] {
		if c < '0' || c > '9' {
			break
		}
		if seq > (1<<64-1-9)/10 {
			return 0, false
		}
		seq = seq*10 + uint64(c-'0')
		n++
	}
	return seq, n > 0 && seq > 0
}
