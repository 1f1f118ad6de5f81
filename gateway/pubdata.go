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
// nodes' client.max_message_size; <= 0: the default 65536) of data (base64
// encoded when binary) plus the publisher's share, and the shape
// `"from":<string>,"data":<JSON>` or `"from":<string>,"bin":"<base64>"`
// that only a node writes. It returns the publisher and the data: for a
// JSON publication compact JSON (re-encoded when valid but loose; it may
// alias p.Data), for a binary one (binary true) the decoded bytes.
// Anything else fails with ErrBadPublication.
func DecodePublication(p brokers.Publication, maxMessageSize int) (from string, data []byte, binary bool, err error) {
	if maxMessageSize <= 0 {
		maxMessageSize = defaultMaxMessageSize
	}
	if !validEpoch(p.Epoch) || !validEpoch(p.Was.Epoch) || len(p.Data) > maxPubPayload(maxMessageSize) {
		return "", nil, false, ErrBadPublication
	}
	raw := p.Data
	switch checkPubData(raw) {
	case payloadInvalid:
		return "", nil, false, ErrBadPublication
	case payloadLoose:
		raw = appendCompactJSON(make([]byte, 0, len(raw)), raw)
	}
	user, end, err := readString(raw, len(pubFromKey))
	if err != nil {
		return "", nil, false, ErrBadPublication
	}
	if _, text, bin := splitPubBin(raw); bin {
		data, err := b64.DecodeString(string(text))
		if err != nil || len(data) > maxMessageSize {
			return "", nil, false, ErrBadPublication
		}
		return string(user), data, true, nil
	}
	return string(user), raw[end+len(pubDataKey):], false, nil
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
