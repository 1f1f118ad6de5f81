package gateway_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/gateway"
)

// TestDecodePublication: what the change feed accepts from the broker is
// what a node fans out; hostile payloads fail.
func TestDecodePublication(t *testing.T) {
	ok := []struct{ in, from, data string }{
		{`"from":"ann","data":{"a":1}`, "ann", `{"a":1}`},
		{`"from":"a\"b","data":[1, 2]`, `a"b`, `[1,2]`},
		{`"from":"","data":"x"`, "", `"x"`},
	}
	for _, c := range ok {
		from, data, bin, err := gateway.DecodePublication(brokers.Publication{Seq: 1, Epoch: "e", Data: []byte(c.in)}, 0)
		if err != nil || from != c.from || string(data) != c.data || bin {
			t.Errorf("%s: got %q %q %v %v, want %q %q", c.in, from, data, bin, err, c.from, c.data)
		}
	}
	// Binary publications (docs/protocol.md "Binary data"): the bytes
	// come back decoded and flagged.
	binOK := []struct{ in, from, data string }{
		{`"from":"ann","bin":"AAEC/w=="`, "ann", "\x00\x01\x02\xff"},
		{`"from":"","bin":""`, "", ""},
		{`"from":"b","bin":"aGk="`, "b", "hi"},
	}
	for _, c := range binOK {
		from, data, bin, err := gateway.DecodePublication(brokers.Publication{Seq: 1, Epoch: "e", Data: []byte(c.in)}, 0)
		if err != nil || from != c.from || string(data) != c.data || !bin {
			t.Errorf("%s: got %q %q %v %v, want %q %q binary", c.in, from, data, bin, err, c.from, c.data)
		}
	}
	bad := []brokers.Publication{
		{Epoch: "e", Data: []byte(`{"a":1}`)},
		{Epoch: "e", Data: []byte(`"from":"x","data":{"a":1}} , {"op":"msg"`)},
		{Epoch: "e", Data: []byte(`"from":"x","data":`)},
		{Epoch: "e", Data: []byte("\"from\":\"x\xff\",\"data\":1")},
		{Epoch: "bad\nepoch", Data: []byte(`"from":"x","data":1`)},
		{Epoch: "e", Data: []byte(`"from":"x","data":"` + strings.Repeat("a", 3000) + `"`)}, // over 10 + the publisher's share
		{Epoch: "e", Data: []byte(`"from":"x","bin":"aGk"`)},                                // not whole quads
		{Epoch: "e", Data: []byte(`"from":"x","bin":"a\nk="`)},                              // not the alphabet
		{Epoch: "e", Data: []byte(`"from":"x","bin":"a=k="`)},                               // padding inside
		{Epoch: "e", Data: []byte(`"from":"x","bin":"aGk=","data":1`)},                      // anything after
		{Epoch: "e", Data: []byte(`"from":"x","bin":aGk=`)},                                 // not a string
		{Epoch: "e", Data: []byte(`"from":"x","bin":"` + strings.Repeat("A", 2100) + `"`)},  // decodes to over 10
	}
	for i, p := range bad {
		if _, _, _, err := gateway.DecodePublication(p, 10); !errors.Is(err, gateway.ErrBadPublication) {
			t.Errorf("%d: %q accepted (%v)", i, p.Data, err)
		}
	}
}

// FuzzDecodePublication: whatever the feed's decoder accepts from the
// broker is a valid publisher string and one compact JSON value with no
// raw newline, within the size bound.
func FuzzDecodePublication(f *testing.F) {
	for _, s := range []string{
		`"from":"ann","data":{"a":1}`, `"from":"","data":[1, 2]`,
		`"from":"x","data":1}` + "\n" + `{"op":"msg"`, `"from":"\u2028","data":"\u2028"`,
		`"from":"ann","bin":"AAEC/w=="`, `"from":"x","bin":"aGk"`, `"from":"x","bin":"aGk=","data":1`,
		"\"from\":\"x\",\"data\":\"\xe2\x80\xa8\"", `"from":"x","data":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		from, data, bin, err := gateway.DecodePublication(brokers.Publication{Seq: 1, Epoch: "e", Data: b}, 1024)
		if err != nil {
			return
		}
		if bin {
			// Bytes: within the limit, and only from the one shape.
			if len(data) > 1024 || !utf8.ValidString(from) || !bytes.HasSuffix(b, []byte(`"`)) || !bytes.Contains(b, []byte(`,"bin":"`)) {
				t.Fatalf("accepted binary %q: from %q data %q", b, from, data)
			}
			return
		}
		if len(b) > 1024+2048 || !utf8.ValidString(from) || !json.Valid(data) ||
			bytes.ContainsAny(data, "\n\r\t") || bytes.Contains(data, []byte("\u2028")) {
			t.Fatalf("accepted %q: from %q data %q", b, from, data)
		}
	})
}
