package gateway

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/syncgate/syncgate/brokers"
)

// op is a decoded client command name.
type op uint8

const (
	opUnknown op = iota
	opConnect
	opSub
	opUnsub
	opPub
	opPresence
	opPing
	opRefresh // extension: renew the token of an authenticated connection
	opSnap    // extension: store a channel snapshot (snapshot.go)
)

var opNames = map[string]op{
	"connect":  opConnect,
	"sub":      opSub,
	"unsub":    opUnsub,
	"pub":      opPub,
	"presence": opPresence,
	"ping":     opPing,
	"refresh":  opRefresh,
	"snap":     opSnap,
}

// Error codes of PROTOCOL.md.
const (
	codeBadRequest   = "bad_request"
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
	codeTooLarge     = "too_large"
	codeRateLimited  = "rate_limited"
	codeUnavailable  = "unavailable"
	codeInternal     = "internal"
)

// command is one decoded client object. Byte slices alias the frame buffer
// and are valid only until the command has been handled.
type command struct {
	op     op
	opName []byte // as sent, for error messages about unknown ops
	id     uint64
	ch     []byte
	data   []byte // raw JSON value, validated
	token  []byte
	user   []byte

	hasSince   bool
	sinceSeq   uint64
	sinceEpoch []byte
	// stream: the client takes a catch-up in pages (`"stream": true` on
	// sub, extension; docs/protocol.md).
	stream bool
	// snapshot: the client takes the channel's snapshot and the messages
	// after it when history cannot serve its sub (`"snapshot": true`,
	// extension; snapshot.go).
	snapshot bool
	// Binary data (binary.go): hasBin when the command carries bytes,
	// as base64 in a JSON "bin" (bin, validated) or as the tail of a
	// binary message (raw). binary: the connection takes binary
	// messages (`"binary": true` on connect).
	hasBin bool
	bin    []byte
	raw    []byte
	binary bool
}

func (c *command) reset() { *c = command{} }

// errDecode is a bad_request whose message is safe to show to the client.
type errDecode struct{ msg string }

func (e *errDecode) Error() string { return e.msg }

func decodeErr(msg string) error { return &errDecode{msg} }

var (
	errNotObject   = decodeErr("a message must be a JSON object")
	errBadJSON     = decodeErr("invalid JSON")
	errDepth       = decodeErr("JSON nested too deeply")
	errTrailing    = decodeErr("unexpected data after the JSON object")
	errNoOp        = decodeErr(`missing "op"`)
	errOpType      = decodeErr(`"op" must be a string`)
	errIDType      = decodeErr(`"id" must be a positive integer`)
	errChType      = decodeErr(`"ch" must be a string`)
	errTokenType   = decodeErr(`"token" must be a string`)
	errUserType    = decodeErr(`"user" must be a string`)
	errSinceType   = decodeErr(`"since" must be an object {"seq": N, "epoch": "E"}`)
	errSinceSeq    = decodeErr(`"since.seq" must be a non-negative integer`)
	errSinceEpoch  = decodeErr(`"since.epoch" must be a string`)
	errStreamType  = decodeErr(`"stream" must be true or false`)
	errSnapType    = decodeErr(`"snapshot" must be true or false`)
	errDuplicateKy = decodeErr("duplicate key in object")
)

const maxDepth = 64

// decodeCommand parses b, exactly one JSON object, into cmd.
func decodeCommand(b []byte, cmd *command) error {
	end, err := decodeObject(b, 0, cmd)
	if err != nil {
		return err
	}
	if skipWS(b, end) != len(b) {
		return errTrailing
	}
	return nil
}

// decodeObject parses the JSON object starting at b[start] (after optional
// whitespace) into cmd and returns the index after it, so a frame holding
// several objects is parsed in one pass. It accepts any key order and
// ignores unknown keys, so clients may extend their messages. It allocates
// only for strings that contain escapes.
func decodeObject(b []byte, start int, cmd *command) (int, error) {
	cmd.reset()
	i := skipWS(b, start)
	if i >= len(b) || b[i] != '{' {
		return 0, errNotObject
	}
	var seen uint16
	i = skipWS(b, i+1)
	empty := i < len(b) && b[i] == '}'
	if empty {
		i++
	}
	for !empty {
		key, next, err := readString(b, i)
		if err != nil {
			return 0, err
		}
		i = skipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return 0, errBadJSON
		}
		i = skipWS(b, i+1)
		vstart := i
		end, err := skipValue(b, i, 0)
		if err != nil {
			return 0, err
		}
		val := b[vstart:end]
		i = end
		var bit uint16
		switch string(key) {
		case "op":
			bit = 1
			s, ok := stringValue(val)
			if !ok {
				return 0, errOpType
			}
			cmd.opName = s
			cmd.op = opNames[string(s)]
		case "id":
			bit = 2
			n, ok := uintValue(val)
			if !ok || n == 0 {
				return 0, errIDType
			}
			cmd.id = n
		case "ch":
			bit = 4
			s, ok := stringValue(val)
			if !ok {
				return 0, errChType
			}
			cmd.ch = s
		case "data":
			bit = 8
			cmd.data = val
		case "token":
			bit = 16
			s, ok := stringValue(val)
			if !ok {
				return 0, errTokenType
			}
			cmd.token = s
		case "user":
			bit = 32
			s, ok := stringValue(val)
			if !ok {
				return 0, errUserType
			}
			cmd.user = s
		case "since", "at": // "at" names the position of a snap
			bit = 64
			if err := decodeSince(val, cmd); err != nil {
				return 0, err
			}
		case "stream":
			bit = 128
			switch string(val) {
			case "true":
				cmd.stream = true
			case "false":
			default:
				return 0, errStreamType
			}
		case "snapshot":
			bit = 256
			switch string(val) {
			case "true":
				cmd.snapshot = true
			case "false":
			default:
				return 0, errSnapType
			}
		case "bin":
			bit = 512
			s, ok := binValue(val)
			if !ok {
				return 0, errBinType
			}
			cmd.bin, cmd.hasBin = s, true
		case "binary":
			bit = 1024
			switch string(val) {
			case "true":
				cmd.binary = true
			case "false":
			default:
				return 0, errBinaryFlag
			}
		}
		if bit != 0 {
			if seen&bit != 0 {
				return 0, errDuplicateKy
			}
			seen |= bit
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, errBadJSON
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return 0, errBadJSON
		}
		i = skipWS(b, i+1)
	}
	if seen&1 == 0 {
		return 0, errNoOp
	}
	if seen&(8|512) == 8|512 {
		return 0, errDataAndBin
	}
	return i, nil
}

func decodeSince(b []byte, cmd *command) error {
	if len(b) == 0 || b[0] != '{' {
		if string(b) == "null" {
			return nil
		}
		return errSinceType
	}
	cmd.hasSince = true
	i := 1
	first := true
	for {
		i = skipWS(b, i)
		if b[i] == '}' {
			return nil
		}
		if !first {
			i = skipWS(b, i+1) // ',' (validated by skipValue)
		}
		first = false
		key, next, err := readString(b, i)
		if err != nil {
			return err
		}
		i = skipWS(b, next)
		i = skipWS(b, i+1) // ':'
		vstart := i
		end, _ := skipValue(b, i, 0)
		val := b[vstart:end]
		i = end
		switch string(key) {
		case "seq":
			n, ok := uintValue(val)
			if !ok {
				return errSinceSeq
			}
			cmd.sinceSeq = n
		case "epoch":
			s, ok := stringValue(val)
			if !ok {
				return errSinceEpoch
			}
			cmd.sinceEpoch = s
		}
	}
}

// stringValue returns the contents of a JSON string value, unescaped.
func stringValue(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	s, _, err := readString(v, 0)
	return s, err == nil
}

// uintValue parses a JSON number that is a non-negative integer.
func uintValue(v []byte) (uint64, bool) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// readString reads the JSON string starting at b[i] (which must be '"').
// It returns the unescaped contents (aliasing b when there are no escapes)
// and the index after the closing quote.
func readString(b []byte, i int) ([]byte, int, error) {
	end, escaped, err := scanString(b, i)
	if err != nil {
		return nil, 0, err
	}
	if !escaped {
		return b[i+1 : end-1], end, nil
	}
	// Rare path: let encoding/json unescape.
	var s string
	if err := json.Unmarshal(b[i:end], &s); err != nil {
		return nil, 0, errBadJSON
	}
	return []byte(s), end, nil
}

// scanString validates the JSON string starting at b[i] (which must be
// '"') without unescaping it: escapes well-formed, no raw control
// character, valid UTF-8. It returns the index after the closing quote and
// whether the string holds escapes. It never allocates.
func scanString(b []byte, i int) (int, bool, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, errBadJSON
	}
	escaped := false
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, escaped, nil
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				return 0, false, errBadJSON
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex4(b[j+2:j+6]) {
					return 0, false, errBadJSON
				}
				j += 6
			default:
				return 0, false, errBadJSON
			}
		case c < 0x20:
			return 0, false, errBadJSON
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, errBadJSON
			}
			j += size
		}
	}
	return 0, false, errBadJSON
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// skipValue validates the JSON value at b[i] and returns the index after it.
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, errDepth
	}
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch c := b[i]; {
	case c == '"':
		next, _, err := scanString(b, i)
		return next, err
	case c == '{':
		i++
		first := true
		for {
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, errBadJSON
			}
			if b[i] == '}' {
				if !first {
					return 0, errBadJSON
				}
				return i + 1, nil
			}
			if !first {
				if b[i] != ',' {
					return 0, errBadJSON
				}
				i = skipWS(b, i+1)
			}
			first = false
			next, _, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, next)
			if i >= len(b) || b[i] != ':' {
				return 0, errBadJSON
			}
			i, err = skipValue(b, skipWS(b, i+1), depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i < len(b) && b[i] == '}' {
				return i + 1, nil
			}
		}
	case c == '[':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			i, err = skipValue(b, skipWS(b, i), depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, errBadJSON
			}
			if b[i] == ']' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errBadJSON
			}
			i++
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return 0, errBadJSON
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errBadJSON
	}
	return i + len(lit), nil
}

func skipNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch {
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return 0, errBadJSON
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, errBadJSON
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, errBadJSON
		}
	}
	return i, nil
}

// ---- encoders: Append-style, no allocation beyond growing dst ----

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		switch v := any(s).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v[i:])
		case []byte:
			r, size = utf8.DecodeRune(v[i:])
		default:
			r, size = utf8.DecodeRuneInString(string(s[i:]))
		}
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendUint(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }

func appendID(dst []byte, id uint64) []byte {
	if id == 0 {
		return dst
	}
	dst = append(dst, `,"id":`...)
	return appendUint(dst, id)
}

// appendPubData builds the opaque broker payload of a publication: the
// JSON members `"from":"<user>","data":<data>` that end every msg object.
// Encoding it once at publish time means a delivery only concatenates.
// data must be valid JSON (validData); it is re-encoded compactly here, once
// per publication, so no raw newline or U+2028/U+2029 reaches a client
// (payload.go).
func appendPubData(dst []byte, from string, data []byte) []byte {
	dst = append(dst, pubFromKey...)
	dst = appendString(dst, from)
	dst = append(dst, pubDataKey...)
	return appendCompactJSON(dst, data)
}

// appendMsg appends a msg object. pubData is what appendPubData produced.
// was, when set, is the provisional position the message had before
// (protocol extension, see docs/protocol.md).
func appendMsg(dst []byte, ch string, seq uint64, epoch string, was brokers.Position, pubData []byte) []byte {
	dst = appendMsgHead(dst, ch, seq, epoch, was)
	dst = append(dst, ',')
	dst = append(dst, pubData...)
	return append(dst, '}')
}

func appendError(dst []byte, id uint64, code, msg string) []byte {
	dst = append(dst, `{"op":"error"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"code":`...)
	dst = appendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

func appendDisconnect(dst []byte, code, reason string, reconnect bool) []byte {
	dst = append(dst, `{"op":"disconnect","code":`...)
	dst = appendString(dst, code)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, reason)
	dst = append(dst, `,"reconnect":`...)
	dst = strconv.AppendBool(dst, reconnect)
	return append(dst, '}')
}

func appendPresenceEvent(dst []byte, join bool, ch, user, client string) []byte {
	if join {
		dst = append(dst, `{"op":"join","ch":`...)
	} else {
		dst = append(dst, `{"op":"leave","ch":`...)
	}
	dst = appendString(dst, ch)
	dst = append(dst, `,"user":`...)
	dst = appendString(dst, user)
	dst = append(dst, `,"client":`...)
	dst = appendString(dst, client)
	return append(dst, '}')
}

// appendSimple appends {"op":"<op>","id":N[,"ch":"<ch>"]}.
func appendSimple(dst []byte, opName string, id uint64, ch string, withCh bool) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, opName...)
	dst = append(dst, '"')
	dst = appendID(dst, id)
	if withCh {
		dst = append(dst, `,"ch":`...)
		dst = appendString(dst, ch)
	}
	return append(dst, '}')
}

func appendPresence(dst []byte, id uint64, ch string, members []brokers.Member) []byte {
	dst = append(dst, `{"op":"presence"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"ch":`...)
	dst = appendString(dst, ch)
	dst = append(dst, `,"users":[`...)
	for i, m := range members {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"user":`...)
		dst = appendString(dst, m.User)
		dst = append(dst, `,"client":`...)
		dst = appendString(dst, m.Client)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// appendAck appends an ack. epoch (an extension) is the epoch the seq
// belongs to: during a broker outage a node may ack under a node-local
// epoch, which the client can tell from the channel's.
func appendAck(dst []byte, id uint64, ch string, seq uint64, epoch string) []byte {
	dst = append(dst, `{"op":"ack"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"ch":`...)
	dst = appendString(dst, ch)
	dst = append(dst, `,"seq":`...)
	dst = appendUint(dst, seq)
	if epoch != "" {
		dst = append(dst, `,"epoch":`...)
		dst = appendString(dst, epoch)
	}
	return append(dst, '}')
}

// validChannel reports whether ch follows PROTOCOL.md's channel name rules:
// 1 to 255 bytes of A-Z a-z 0-9 _ - : . = @.
func validChannel(ch []byte) bool {
	if len(ch) == 0 || len(ch) > 255 {
		return false
	}
	for _, c := range ch {
		if !chanByte[c] {
			return false
		}
	}
	return true
}

var chanByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-:.=@" {
		t[c] = true
	}
	return t
}()

var errChannelName = errors.New(`bad channel name: want 1 to 255 bytes of A-Z a-z 0-9 _ - : . = @`)
