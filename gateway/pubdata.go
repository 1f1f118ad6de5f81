package gateway

import (
	"errors"

	"github.com/syncgate/syncgate/brokers"
)

// ErrBadPublication: a publication read from the broker is not one a
// gateway would fan out (see DecodePublication).
var ErrBadPublication = errors.New("gateway: malformed publication from the broker")

// DecodePublication checks a publication read from the broker (outside
// the gateway: the change feed) exactly as a node checks what it fans out
// (brokerPubData): epochs printable, payload at most maxMessageSize (the
// nodes' client.max_message_size; <= 0: the default 65536) plus the
// publisher's share, and the shape `"from":<string>,"data":<JSON>` that
// only a node writes. It returns the publisher and the data, compact JSON
// (re-encoded when valid but loose). data may alias p.Data. Anything else
// fails with ErrBadPublication.
func DecodePublication(p brokers.Publication, maxMessageSize int) (from string, data []byte, err error) {
	if maxMessageSize <= 0 {
		maxMessageSize = defaultMaxMessageSize
	}
	if !validEpoch(p.Epoch) || !validEpoch(p.Was.Epoch) || len(p.Data) > maxMessageSize+pubOverhead {
		return "", nil, ErrBadPublication
	}
	raw := p.Data
	switch checkPubData(raw) {
	case payloadInvalid:
		return "", nil, ErrBadPublication
	case payloadLoose:
		raw = appendCompactJSON(make([]byte, 0, len(raw)), raw)
	}
	user, end, err := readString(raw, len(pubFromKey))
	if err != nil {
		return "", nil, ErrBadPublication
	}
	return string(user), raw[end+len(pubDataKey):], nil
}

// defaultMaxMessageSize is client.max_message_size's default.
const defaultMaxMessageSize = 65536

// ValidChannel reports whether ch is a channel name a client may use
// (PROTOCOL.md: 1 to 255 bytes of A-Z a-z 0-9 _ - : . = @), so that a
// name read back from the broker (a key, a subject) is one a node wrote.
func ValidChannel(ch string) bool {
	if len(ch) == 0 || len(ch) > 255 {
		return false
	}
	for i := 0; i < len(ch); i++ {
		if !chanByte[ch[i]] {
			return false
		}
	}
	return true
}
