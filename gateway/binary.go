package gateway

import (
	"encoding/base64"

	"github.com/gobwas/ws"

	"github.com/syncgate/syncgate/brokers"
)

// Binary data (extension, docs/protocol.md "Binary data").
//
// A publication's data is either a JSON value (`data`) or raw bytes. Raw
// bytes travel three ways:
//
//   - from a client, in a binary WebSocket message: a JSON header object
//     (the command without its data: `{"op":"pub","id":3,"ch":"doc:1"}`),
//     one '\n', then the bytes, unencoded (parseBinaryMessage); or, from
//     any JSON-only sender (a text `pub`/`snap`, POST /pub, the server
//     API), base64 under the key `bin` instead of `data`;
//   - in the broker, as the payload `"from":<string>,"bin":"<base64>"`
//     (appendPubBin): the JSON form every JSON path (msg, `pubs` of a
//     catch-up, SSE, the server API's history, the change feed) splices
//     as it splices a JSON payload, so nobody gets bytes they cannot
//     parse and nothing else has to change;
//   - to a connection that sent `"binary": true` in `connect`, a live
//     binary publication (and a binary snapshot) comes as a binary
//     WebSocket message of the same shape as the client's: the msg object
//     without data, '\n', the bytes. The hub builds that frame once per
//     publication per node, only when a binary subscriber is there, and
//     shares it like the text frame.
//
// Base64 costs a third more bytes and CPU in the broker and for JSON
// clients; a binary client pays neither on the wire. Snapshots are kept
// in the broker raw (binSnapMark), since only one place reads them back.

const (
	pubBinKey = `,"bin":`
	// binSnapMark starts a stored snapshot whose data is bytes: no JSON
	// text starts with a NUL, so the two cannot be confused.
	binSnapMark = 0x00
)

var b64 = base64.StdEncoding

// maxPubPayload bounds a publication's broker payload: data of at most
// maxMessage bytes, base64 encoded when binary, plus the publisher.
func maxPubPayload(maxMessage int) int {
	return b64.EncodedLen(maxMessage) + pubOverhead
}

// appendPubBin builds the broker payload of a binary publication (see
// appendPubData for JSON data).
func appendPubBin(dst []byte, from string, raw []byte) []byte {
	dst = append(dst, pubFromKey...)
	dst = appendString(dst, from)
	dst = append(dst, pubBinKey...)
	return appendB64String(dst, raw)
}

// appendB64String appends raw as a JSON string of standard base64.
func appendB64String(dst, raw []byte) []byte {
	dst = append(dst, '"')
	dst = b64.AppendEncode(dst, raw)
	return append(dst, '"')
}

// validB64 reports whether v is standard base64 with padding, as
// appendB64String writes it: only the alphabet, whole quads, '=' only at
// the end. (Non-zero trailing bits are let through: harmless, and Go's
// decoder accepts them too.) It never allocates.
func validB64(v []byte) bool {
	if len(v)%4 != 0 {
		return false
	}
	for i, c := range v {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
		case c == '=' && (i == len(v)-1 || i == len(v)-2 && v[len(v)-1] == '='):
		default:
			return false
		}
	}
	return true
}

// binValue returns the base64 text of a JSON `bin` value (a string of
// validB64), or ok false.
func binValue(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || !validB64(v[1:len(v)-1]) {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// splitPubBin splits a payload that passed checkPubData into the JSON
// string of its publisher and, for a binary publication, the base64 text
// of its data. binary false: a JSON publication.
func splitPubBin(p []byte) (from, b64text []byte, binary bool) {
	end, _, err := scanString(p, len(pubFromKey))
	if err != nil {
		return nil, nil, false
	}
	from = p[len(pubFromKey):end]
	rest := p[end:]
	if len(rest) < len(pubBinKey)+2 || string(rest[:len(pubBinKey)]) != pubBinKey {
		return from, nil, false
	}
	return from, rest[len(pubBinKey)+1 : len(rest)-1], true
}

// binFrame builds the binary message a binary client receives for a
// binary publication: head (a JSON object without its closing brace, e.g.
// `{"op":"msg","ch":...,"epoch":"E"`) + `,"from":<from>}` + '\n' + the
// bytes b64text decodes to. One allocation: the frame.
func binFrame(head, from, b64text []byte) []byte {
	fb := newFrameBuilder(len(head) + len(from) + 16 + b64.DecodedLen(len(b64text)))
	fb.b = append(fb.b, head...)
	if from != nil {
		fb.b = append(fb.b, `,"from":`...)
		fb.b = append(fb.b, from...)
	}
	fb.b = append(fb.b, '}', '\n')
	n, err := b64.Decode(fb.b[len(fb.b):cap(fb.b)], b64text)
	if err != nil {
		return nil // checked by validB64 before; cannot happen
	}
	fb.b = fb.b[:len(fb.b)+n]
	return fb.finish(ws.OpBinary)
}

// appendMsgHead appends a msg object up to its data: appendMsg without
// the payload and the closing brace.
func appendMsgHead(dst []byte, ch string, seq uint64, epoch string, was brokers.Position) []byte {
	dst = append(dst, `{"op":"msg","ch":`...)
	dst = appendString(dst, ch)
	if seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = appendUint(dst, seq)
	}
	if epoch != "" {
		dst = append(dst, `,"epoch":`...)
		dst = appendString(dst, epoch)
	}
	if was.Epoch != "" {
		dst = append(dst, `,"was":{"seq":`...)
		dst = appendUint(dst, was.Seq)
		dst = append(dst, `,"epoch":`...)
		dst = appendString(dst, was.Epoch)
		dst = append(dst, '}')
	}
	return dst
}

// errBinaryFrame is the answer to a binary message without the shape of
// parseBinaryMessage.
var (
	errBinaryShape = decodeErr("a binary message is a JSON header object, a newline, then the data")
	errBinaryOp    = decodeErr(`a binary message carries "pub" or "snap"`)
	errBinaryData  = decodeErr(`a binary message's header has no "data" or "bin": the bytes after the newline are the data`)
	errBinType     = decodeErr(`"bin" must be a string of standard base64 (with padding)`)
	errBinaryFlag  = decodeErr(`"binary" must be true or false`)
	errDataAndBin  = decodeErr(`"data" and "bin" exclude each other`)
)

// parseBinaryMessage decodes a client's binary message into cmd: the
// header object up to the first '\n' (UTF-8 JSON, a pub or snap without
// data) and the raw bytes after it, which cmd.raw aliases. On error, id is
// the header's id when it can be read.
func parseBinaryMessage(msg []byte, cmd *command) (id uint64, err error) {
	nl := indexByte(msg, '\n')
	if nl < 0 {
		cmd.reset()
		return salvageID(msg, 0), errBinaryShape
	}
	head := msg[:nl]
	if err := decodeCommand(head, cmd); err != nil {
		return salvageID(head, 0), err
	}
	switch {
	case cmd.op != opPub && cmd.op != opSnap:
		return cmd.id, errBinaryOp
	case cmd.data != nil || cmd.hasBin:
		return cmd.id, errBinaryData
	}
	cmd.raw = msg[nl+1:]
	cmd.hasBin = true
	return cmd.id, nil
}

// binaryData returns the raw bytes of a command's binary data (a binary
// message's tail, or its `bin` decoded: a fresh slice). ok is false when
// the command has none.
func (cmd *command) binaryData() ([]byte, bool) {
	if !cmd.hasBin {
		return nil, false
	}
	if cmd.raw != nil {
		return cmd.raw, true
	}
	raw, err := b64.DecodeString(string(cmd.bin))
	if err != nil {
		return nil, false // validB64 passed: cannot happen
	}
	return raw, true
}
