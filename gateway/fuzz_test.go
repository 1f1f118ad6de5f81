package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/syncgate/syncgate/brokers"
)

// FuzzDecode checks the hand-written command decoder against encoding/json:
// whatever it accepts is valid JSON, and the fields it extracts are the ones
// encoding/json sees.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"connect","id":1,"user":"alice","token":"t"}`,
		`{"op":"sub","id":2,"ch":"doc:1","since":{"seq":5,"epoch":"abc"}}`,
		`{"op":"pub","ch":"doc:1","data":{"a":[1,2,{"b":null}],"c":"\u00e9\n"}}`,
		`{"op":"pub","ch":"d\u006fc","data":-1.5e-3}`,
		`{ "op" : "ping" , "x" : [true,false] }`,
		`{"op":"ping",}`, `{"op":"ping"} x`, `{"id":1}`, `[]`, `{"op":"\ud800"}`,
		`{"op":"sub","ch":"a","since":null}`, `{"op":"pub","data":01}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var cmd command
		err := decodeCommand(b, &cmd)
		id := salvageID(b, 0)
		if err != nil {
			return
		}
		if id != cmd.id {
			t.Fatalf("salvageID %d, decoded id %d in %q", id, cmd.id, b)
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		// Reference: encoding/json into a map (exact key match, as the
		// protocol's keys are case-sensitive).
		var ref map[string]json.RawMessage
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatalf("accepted %q, encoding/json says %v", b, err)
		}
		str := func(k string) (string, bool) {
			raw, ok := ref[k]
			if !ok {
				return "", false
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s accepted as string but is %s", k, raw)
			}
			return v, true
		}
		if op, _ := str("op"); op != string(cmd.opName) {
			t.Fatalf("op: %q vs %q", cmd.opName, op)
		}
		if ch, ok := str("ch"); ok && ch != string(cmd.ch) {
			t.Fatalf("ch: %q vs %q", cmd.ch, ch)
		}
		if u, ok := str("user"); ok && u != string(cmd.user) {
			t.Fatalf("user: %q vs %q", cmd.user, u)
		}
		if raw, ok := ref["id"]; ok && string(raw) != string(appendUint(nil, cmd.id)) {
			t.Fatalf("id: %d vs %s", cmd.id, raw)
		}
		if raw, ok := ref["data"]; ok && !bytes.Equal(compact(cmd.data), compact(raw)) {
			t.Fatalf("data: %q vs %q", cmd.data, raw)
		}
		if raw, ok := ref["since"]; ok && string(raw) != "null" {
			var sv map[string]json.RawMessage
			if err := json.Unmarshal(raw, &sv); err != nil {
				t.Fatal(err)
			}
			var seq uint64
			var epoch string
			if r, ok := sv["seq"]; ok {
				_ = json.Unmarshal(r, &seq)
			}
			if r, ok := sv["epoch"]; ok {
				_ = json.Unmarshal(r, &epoch)
			}
			if !cmd.hasSince || seq != cmd.sinceSeq || epoch != string(cmd.sinceEpoch) {
				t.Fatalf("since: %d/%q vs %s", cmd.sinceSeq, cmd.sinceEpoch, raw)
			}
		}
	})
}

// FuzzPubData checks the publish path's encoding: for any data a client may
// publish and any user name, the broker payload is exactly what
// checkPubData accepts unchanged, the msg built from it is one JSON object
// with nothing a client splits on (no raw newline, CR, U+2028, U+2029), and
// its data equals the published value as JSON.
func FuzzPubData(f *testing.F) {
	for _, s := range []struct{ user, data string }{
		{"alice", "[\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":{\"text\":\"forged\"}}\n]"},
		{"b\u2028b", "\"a\u2028b\u2029c\""},
		{"c", " { \"k\" :\t[ 1 , -2.5e3 , \"\\n\\u2028\\\"\" ] } "},
		{"d", "\r\n\"\\\\\"\r\n"},
		{"\xff", "null"},
		{"e", `{"a":{"b":{"c":[[[[]]]]}}}`},
	} {
		f.Add(s.user, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, user string, data []byte) {
		if !validData(data) || len(user) > maxUserLen {
			return // connect, tokens and POST /pub refuse longer user names
		}
		p := appendPubData(nil, user, data)
		if v := checkPubData(p); v != payloadOK {
			t.Fatalf("payload %q of data %q: verdict %d", p, data, v)
		}
		msg := appendMsg(nil, "doc:1", 7, "ep", brokers.Position{}, p)
		checkMsgObject(t, msg)
		var m struct {
			From string
			Data json.RawMessage
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatal(err)
		}
		if !jsonValuesEqual(m.Data, data) {
			t.Fatalf("data %q arrived as %q", data, m.Data)
		}
		if utf8.ValidString(user) && m.From != user {
			t.Fatalf("from %q arrived as %q", user, m.From)
		}
	})
}

// FuzzBrokerPayload feeds arbitrary bytes as a publication from the broker:
// what is not dropped becomes a msg that is one JSON object with exactly the
// keys of a msg, and nothing a client splits on.
func FuzzBrokerPayload(f *testing.F) {
	for _, s := range []string{
		`"from":"ann","data":{"a":1}`,
		"\"from\":\"ann\",\"data\":[1,\n2]",
		"\"from\":\"ceo\",\"data\":1}\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":2",
		`"from":"ceo","data":1,"op":"join"`,
		"\"from\":\"a\u2028\",\"data\":\"\u2029\"",
		"\"from\":\"a\",\"data\":\"\xff\"",
		`"from":"a","data":"\u0000"`,
		``, `{}`, `"from":"a","data":`,
		`"from":"ann","bin":"AAEC/w=="`, `"from":"ann","bin":""`, `"from":"a","bin":"aGk"`,
		"\"from\":\"a\",\"bin\":\"aGk=\"}\n{\"op\":\"msg\"", `"from":"a","bin":"aGk=","data":1`,
		`"from":"a","bin":"a=k="`, "\"from\":\"a\u2028\",\"bin\":\"aGk=\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		defer func() {
			// A binary publication's binary frame: one header object
			// line (the msg without data, from included), then bytes.
			if v := checkPubData(p); v == payloadInvalid {
				return
			}
			data := appendCompactJSON(nil, p)
			from, text, bin := splitPubBin(data)
			if !bin {
				return
			}
			frame := binFrame(appendMsgHead(nil, "doc:1", 7, "ep", brokers.Position{}), from, text)
			payload := framePayload(frame)
			head, raw, ok := bytes.Cut(payload, []byte("\n"))
			var m map[string]any
			if frame[0] != 0x82 || !ok || json.Unmarshal(head, &m) != nil || m["op"] != "msg" || m["from"] == nil || m["data"] != nil {
				t.Fatalf("binary frame %q of %q", payload, p)
			}
			if want, err := base64.StdEncoding.DecodeString(string(text)); err != nil || !bytes.Equal(raw, want) {
				t.Fatalf("binary frame bytes %q, want %q (%v)", raw, want, err)
			}
		}()
		data := p
		switch checkPubData(p) {
		case payloadInvalid:
			return
		case payloadLoose:
			data = appendCompactJSON(nil, p)
			if v := checkPubData(data); v != payloadOK {
				t.Fatalf("re-encoded %q as %q: verdict %d", p, data, v)
			}
		}
		checkMsgObject(t, appendMsg(nil, "doc:1", 7, "ep", brokers.Position{}, data))
	})
}

// checkMsgObject asserts msg is one JSON object, valid UTF-8, without a raw
// newline, CR, U+2028 or U+2029, whose keys are exactly a msg's, once each.
func checkMsgObject(t *testing.T, msg []byte) {
	t.Helper()
	if !utf8.Valid(msg) || bytes.ContainsAny(msg, "\r\n\u2028\u2029") {
		t.Fatalf("msg holds a byte clients split on, or invalid UTF-8: %q", msg)
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("msg %q is not an object", msg)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("msg %q: %v", msg, err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("msg %q: %v", msg, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("msg %q: %v", msg, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("msg %q: data after the object", msg)
	}
	if k := strings.Join(keys, ","); k != "op,ch,seq,epoch,from,data" && k != "op,ch,seq,epoch,from,bin" {
		t.Fatalf("msg %q has keys %v", msg, keys)
	}
}

// jsonValuesEqual compares two JSON texts as values, numbers as written.
func jsonValuesEqual(a, b []byte) bool {
	dec := func(b []byte) (any, bool) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		return v, d.Decode(&v) == nil
	}
	va, oka := dec(a)
	vb, okb := dec(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	_ = json.Compact(&out, b)
	return out.Bytes()
}

// FuzzBinaryMessage feeds arbitrary bytes as a client's binary message:
// it is a pub or snap whose data is exactly the bytes after the first
// newline, with a header that decodes as a command; or it is refused with
// the header's id when that can be read (never a panic).
func FuzzBinaryMessage(f *testing.F) {
	for _, s := range []string{
		"{\"op\":\"pub\",\"id\":3,\"ch\":\"doc:1\"}\n\x00\xff\n",
		"{\"op\":\"snap\",\"id\":4,\"ch\":\"d\",\"at\":{\"seq\":1,\"epoch\":\"e\"}}\n",
		"{\"op\":\"pub\",\"id\":5,\"ch\":\"d\",\"data\":1}\nx", "{\"op\":\"pub\",\"bin\":\"\"}\nx",
		"{\"op\":\"ping\",\"id\":6}\n", "{\"op\":\"pub\"", "\n", "", "{\"op\":\"pub\",\"id\":7,\"ch\":\"\xff\"}\n",
		"{\"op\":\"pub\",\"id\":8} {\"op\":\"pub\"}\nx",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var cmd command
		id, err := parseBinaryMessage(msg, &cmd)
		if err != nil {
			if _, ok := err.(*errDecode); !ok {
				t.Fatalf("%q: error %v is not a bad_request", msg, err)
			}
			return
		}
		nl := bytes.IndexByte(msg, '\n')
		if nl < 0 || !bytes.Equal(cmd.raw, msg[nl+1:]) || !cmd.hasBin || cmd.data != nil || cmd.bin != nil {
			t.Fatalf("%q: accepted with raw %q", msg, cmd.raw)
		}
		if cmd.op != opPub && cmd.op != opSnap || id != cmd.id {
			t.Fatalf("%q: op %d id %d/%d", msg, cmd.op, id, cmd.id)
		}
		var head map[string]any
		if json.Unmarshal(msg[:nl], &head) != nil {
			t.Fatalf("%q: accepted a header encoding/json refuses", msg)
		}
	})
}

// FuzzFrameHeader compares our client frame header parser with gobwas/ws.
func FuzzFrameHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4})
	f.Add([]byte{0x01, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok, err := parseHeader(b)
		ref, rerr := ws.ReadHeader(bytes.NewReader(b))
		if err != nil {
			if rerr == nil {
				t.Fatalf("we reject, gobwas accepts %x: %v", b, err)
			}
			return
		}
		if !ok {
			if rerr == nil {
				t.Fatalf("we need more bytes, gobwas parsed %x", b)
			}
			return
		}
		if rerr != nil {
			t.Fatalf("we parse, gobwas fails %x: %v", b, rerr)
		}
		if h.Header != ref {
			t.Fatalf("header %x: ours %+v, gobwas %+v", b, h, ref)
		}
	})
}

// FuzzCatchupMerge drives the subscribe-then-history merge through arbitrary
// interleavings. Messages 1..n are published; the subscription is registered
// after message a; history is read after message hist (>= a); the client
// asks for messages after since; the buffer received messages a+1..buffered
// before the merge ran and the rest arrive live afterwards, possibly with
// redeliveries. The client must see exactly since+1..n (or, when the history
// window did not reach back far enough, recovered=false and then exactly
// the messages after the reported position).
func FuzzCatchupMerge(f *testing.F) {
	f.Add(uint8(10), uint8(3), uint8(5), uint8(2), uint8(7), uint8(100), uint8(1))
	f.Add(uint8(50), uint8(0), uint8(0), uint8(0), uint8(0), uint8(5), uint8(0))
	f.Add(uint8(20), uint8(20), uint8(20), uint8(20), uint8(20), uint8(3), uint8(3))
	f.Fuzz(func(t *testing.T, n, a, hist, since, buffered, window, redeliver uint8) {
		N := uint64(n)
		A := uint64(a) % (N + 1)
		H := A + uint64(hist)%(N-A+1)
		S := uint64(since) % (H + 1)
		B := A + uint64(buffered)%(N-A+1)
		W := uint64(window) + 1 // history size

		// History as the broker returns it: S+1..H, keeping only the last W
		// messages of the channel, at most W of them.
		var pubs []brokers.Publication
		for seq := max(S+1, H-min(H, W)+1); seq <= H && uint64(len(pubs)) < W; seq++ {
			pubs = append(pubs, brokers.Publication{Seq: seq, Epoch: "e"})
		}
		pos := brokers.Position{Seq: H, Epoch: "e"}
		recovered := recoverable(S, "e", pubs, pos)

		var got []uint64
		if recovered {
			for _, p := range pubs {
				got = append(got, p.Seq)
			}
		}
		var buf []bufferedPub
		for seq := A + 1; seq <= B; seq++ {
			buf = append(buf, bufferedPub{seq: seq, epoch: "e"})
		}
		m := mergeState{epoch: "e", last: H}
		for _, bp := range mergeBuffered(buf, &m) {
			got = append(got, bp.seq)
		}
		s := &sub{lastSeq: m.last}
		for seq := B + 1; seq <= N; seq++ {
			if s.accept(seq, false) {
				got = append(got, seq)
			}
			if redeliver > 0 && seq > 1 && seq%uint64(redeliver) == 0 && s.accept(seq-1, false) {
				got = append(got, seq-1) // a late duplicate must be dropped
			}
		}
		from := S
		if !recovered {
			from = H
		}
		if uint64(len(got)) != N-from {
			t.Fatalf("recovered=%v: got %v, want %d..%d", recovered, got, from+1, N)
		}
		for i, seq := range got {
			if seq != from+1+uint64(i) {
				t.Fatalf("recovered=%v: got %v, want %d..%d", recovered, got, from+1, N)
			}
		}
		if recovered != (H-S <= W) {
			t.Fatalf("recovered=%v with since %d, head %d, window %d", recovered, S, H, W)
		}
	})
}
