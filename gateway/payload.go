package gateway

import (
	"bytes"
	"unicode/utf8"

	"github.com/syncgate/syncgate/brokers"
)

// The trust boundary of what clients receive.
//
// A frame may carry several objects separated by '\n' (PROTOCOL.md), and
// clients split on it (client.js, the SSE wire format), so a raw newline
// inside an object would let a publisher forge whole messages for every
// subscriber. Every byte a client receives comes from our encoders, which
// escape what they write; the one thing they splice in verbatim is a
// publication's payload (appendPubData), so:
//
//   - on the publish path (WebSocket pub, POST /pub) the client's data is
//     validated and re-encoded compactly once: no whitespace outside
//     strings, and U+2028/U+2029 escaped (they end a line in JavaScript
//     source and some parsers);
//   - what comes back from the broker (live, history, presence) is
//     untrusted: anyone who can write to Redis or NATS can put bytes there.
//     checkPubData accepts exactly the shape appendPubData writes; a valid
//     but loose payload (an older node's, or whitespace written by hand) is
//     re-encoded, anything else is dropped and counted. This runs once per
//     publication per node, before the frame is built, never per delivery.

// appendCompactJSON appends the JSON text v with the whitespace outside
// strings removed and U+2028/U+2029 inside strings escaped. v must be valid
// JSON tokens (checked by skipValue or scanString): the function only tracks
// whether it is inside a string.
func appendCompactJSON(dst, v []byte) []byte {
	inString := false
	start := 0
	for i := 0; i < len(v); {
		c := v[i]
		if inString {
			switch {
			case c == '\\':
				i += 2 // the escaped byte is ASCII: '"', '\\', 'u', ...
				continue
			case c == '"':
				inString = false
			case c == 0xe2 && i+2 < len(v) && v[i+1] == 0x80 && (v[i+2] == 0xa8 || v[i+2] == 0xa9):
				dst = append(dst, v[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', "89"[v[i+2]-0xa8])
				i += 3
				start = i
				continue
			}
			i++
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			dst = append(dst, v[start:i]...)
			i++
			start = i
			continue
		case '"':
			inString = true
		}
		i++
	}
	return append(dst, v[start:]...)
}

// isCompactJSON reports whether appendCompactJSON would leave v unchanged.
func isCompactJSON(v []byte) bool {
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			switch {
			case c == '\\':
				i++
			case c == '"':
				inString = false
			case c == 0xe2 && i+2 < len(v) && v[i+1] == 0x80 && (v[i+2] == 0xa8 || v[i+2] == 0xa9):
				return false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			return false
		case '"':
			inString = true
		}
	}
	return true
}

// validData validates a client's data: exactly one JSON value (whitespace
// around it allowed), nested at most maxDepth deep, strings valid UTF-8.
func validData(v []byte) bool {
	i := skipWS(v, 0)
	end, err := skipValue(v, i, 0)
	return err == nil && skipWS(v, end) == len(v)
}

const (
	pubFromKey = `"from":`
	pubDataKey = `,"data":`
)

// payloadVerdict is what checkPubData makes of a broker payload.
type payloadVerdict uint8

const (
	payloadOK      payloadVerdict = iota // exactly what appendPubData writes
	payloadLoose                         // valid, but must be re-encoded (appendCompactJSON)
	payloadInvalid                       // drop it
)

// checkPubData checks a publication payload that came from the broker
// against the shape appendPubData writes: `"from":<string>,"data":<value>`
// (or appendPubBin's `"from":<string>,"bin":"<base64>"`) and nothing else, the string and value valid JSON (UTF-8, escapes,
// depth). It never allocates.
func checkPubData(p []byte) payloadVerdict {
	if !bytes.HasPrefix(p, []byte(pubFromKey)) {
		return payloadInvalid
	}
	i := len(pubFromKey)
	end, _, err := scanString(p, i)
	if err != nil || end-i-2 > 6*maxUserLen {
		return payloadInvalid
	}
	if bytes.HasPrefix(p[end:], []byte(pubBinKey)) {
		// Binary data (binary.go): exactly one base64 string, which is
		// compact by construction.
		if _, ok := binValue(p[end+len(pubBinKey):]); !ok {
			return payloadInvalid
		}
		if !isCompactJSON(p[:end]) {
			return payloadLoose
		}
		return payloadOK
	}
	if !bytes.HasPrefix(p[end:], []byte(pubDataKey)) {
		return payloadInvalid
	}
	i = end + len(pubDataKey)
	if i >= len(p) || !validData(p[i:]) {
		return payloadInvalid
	}
	if !isCompactJSON(p) {
		return payloadLoose
	}
	return payloadOK
}

// validEpoch checks an epoch from the broker: empty (no history), or up to
// 255 bytes of printable ASCII without space, as every backend makes them
// (random ids; provisional "~id.seq.epoch"). SSE writes it raw into the
// event's id: line, so a newline there would cut the stream.
func validEpoch(e string) bool {
	if len(e) > 255 {
		return false
	}
	for i := 0; i < len(e); i++ {
		if e[i] < 0x21 || e[i] > 0x7e {
			return false
		}
	}
	return true
}

// validMember checks a presence member that came from the broker: a user
// name as connect or a token allows (at most 255 bytes, valid UTF-8) and a
// client id as nextClientID makes (node id, '-', base 36).
func validMember(m brokers.Member) bool {
	if len(m.User) == 0 || len(m.User) > maxUserLen || !utf8.ValidString(m.User) {
		return false
	}
	if len(m.Client) == 0 || len(m.Client) > 64 {
		return false
	}
	for i := 0; i < len(m.Client); i++ {
		c := m.Client[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// salvageID reads the "id" of a command that failed to decode, so its error
// reply can carry it (PROTOCOL.md: a reply carries the command's id). It
// walks the object starting at b[start] as far as it is well-formed JSON and
// returns the id if one was found before that point, a positive integer,
// and not contradicted by another "id" key; 0 otherwise.
func salvageID(b []byte, start int) uint64 {
	i := skipWS(b, start)
	if i >= len(b) || b[i] != '{' {
		return 0
	}
	var id uint64
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != '}' {
		key, kend, err := readString(b, i)
		if err != nil {
			return id
		}
		i = skipWS(b, kend)
		if i >= len(b) || b[i] != ':' {
			return id
		}
		i = skipWS(b, i+1)
		vend, err := skipValue(b, i, 0)
		if err != nil {
			return id
		}
		if string(key) == "id" {
			n, ok := uintValue(b[i:vend])
			if !ok || n == 0 || (id != 0 && n != id) {
				return 0
			}
			id = n
		}
		i = skipWS(b, vend)
		if i >= len(b) || b[i] != ',' {
			return id
		}
		i = skipWS(b, i+1)
	}
	return id
}

// Kinds of broker payload (label "kind" of
// syncgate_broker_payload_rejected_total).
const (
	payloadKindPublication = "publication"
	payloadKindHistory     = "history"
	payloadKindPresence    = "presence"
)

// brokerPubData returns the payload of a publication from the broker ready
// to splice into a msg (appendMsg), or ok false when it must be dropped
// (counted and logged). kind says where it came from. Our own nodes'
// payloads pass unchanged and without allocation.
func (s *Server) brokerPubData(ch string, p *brokers.Publication, kind string) ([]byte, bool) {
	verdict := payloadInvalid
	switch {
	case !validEpoch(p.Epoch) || !validEpoch(p.Was.Epoch):
		// an epoch is written raw into SSE's id: line
	case len(p.Data) > maxPubPayload(s.cfg.Client.MaxMessageSize):
		// No node writes it (data is at most client.max_message_size):
		// one would fill every subscriber's queue.
	default:
		verdict = checkPubData(p.Data)
	}
	switch verdict {
	case payloadOK:
		return p.Data, true
	case payloadLoose:
		s.metrics.brokerRewritten.Inc()
		return appendCompactJSON(make([]byte, 0, len(p.Data)), p.Data), true
	}
	s.metrics.brokerRejected.WithLabelValues(kind).Inc()
	if s.payloadLog.Allow() {
		const show = 64
		head := p.Data[:min(len(p.Data), show)]
		s.log.Warn("dropped a malformed publication from the broker (someone with write access to it, or a bug)",
			"kind", kind, "channel", ch, "seq", p.Seq, "epoch", p.Epoch, "bytes", len(p.Data), "head", string(head))
	}
	return nil, false
}

// brokerMembers filters presence members from the broker in place,
// dropping (counting, logging) invalid ones.
func (s *Server) brokerMembers(ch string, ms []brokers.Member) []brokers.Member {
	out := ms[:0]
	for _, m := range ms {
		if validMember(m) {
			out = append(out, m)
			continue
		}
		s.metrics.brokerRejected.WithLabelValues(payloadKindPresence).Inc()
		if s.payloadLog.Allow() {
			s.log.Warn("dropped a malformed presence member from the broker",
				"channel", ch, "user_bytes", len(m.User), "client_bytes", len(m.Client))
		}
	}
	return out
}
