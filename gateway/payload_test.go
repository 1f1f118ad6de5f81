package gateway

import (
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

func TestAppendCompactJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{" { \"a\" :\n[ 1 ,\t2 ] }\r\n", `{"a":[1,2]}`},
		{"\"keep  spaces\\n and \\\" quotes \"", "\"keep  spaces\\n and \\\" quotes \""},
		{"\"\u2028\u2029\"", `"\u2028\u2029"`},
		{`"\\"`, `"\\"`},
		{"[\"\\\\\", \"x\u2028\"]", `["\\","x\u2028"]`},
		{"\"é😀\"", "\"é😀\""},
	} {
		if got := string(appendCompactJSON(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("appendCompactJSON(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if isCompactJSON([]byte(tc.in)) != (tc.in == tc.want) {
			t.Errorf("isCompactJSON(%q) = %v", tc.in, !(tc.in == tc.want))
		}
	}
}

func TestCheckPubData(t *testing.T) {
	for _, tc := range []struct {
		p    string
		want payloadVerdict
	}{
		{`"from":"ann","data":{"a":1}`, payloadOK},
		{`"from":"a\"n\\n","data":"x\u2028"`, payloadOK},
		{"\"from\":\"ann\",\"data\": 1", payloadLoose},
		{"\"from\":\"a\u2028\",\"data\":1", payloadLoose},
		{`"from":"ann","data":1,"op":"join"`, payloadInvalid},
		{`"from":"ann","data":1}`, payloadInvalid},
		{"\"from\":\"ann\",\"data\":\"\xff\"", payloadInvalid},
		{"\"from\":\"a\nn\",\"data\":1", payloadInvalid},
		{`"from": "ann","data":1`, payloadInvalid},
		{`"from":"ann","data":`, payloadInvalid},
		{`"from":"ann"`, payloadInvalid},
		{`{"from":"ann","data":1}`, payloadInvalid},
		{``, payloadInvalid},
	} {
		if got := checkPubData([]byte(tc.p)); got != tc.want {
			t.Errorf("checkPubData(%q) = %d, want %d", tc.p, got, tc.want)
		}
	}
}

func TestValidEpoch(t *testing.T) {
	for e, want := range map[string]bool{
		"": true, "h2c9v1k0": true, "~k3v0q9ab.41.h2c9v1k0": true,
		"a\nb": false, "a b": false, "é": false, string(make([]byte, 256)): false,
	} {
		if validEpoch(e) != want {
			t.Errorf("validEpoch(%q) = %v", e, !want)
		}
	}
}

func TestValidMember(t *testing.T) {
	for _, tc := range []struct {
		m    brokers.Member
		want bool
	}{
		{brokers.Member{User: "ann", Client: "k3x9qa-1"}, true},
		{brokers.Member{User: "anon-k3x9qa-1", Client: "k3x9qa-1z"}, true},
		{brokers.Member{User: "", Client: "k3x9qa-1"}, false},
		{brokers.Member{User: "\xff", Client: "k3x9qa-1"}, false},
		{brokers.Member{User: string(make([]byte, 256)), Client: "k3x9qa-1"}, false},
		{brokers.Member{User: "ann", Client: "K3X"}, false},
		{brokers.Member{User: "ann", Client: "a\n{}"}, false},
		{brokers.Member{User: "ann", Client: ""}, false},
	} {
		if got := validMember(tc.m); got != tc.want {
			t.Errorf("validMember(%+v) = %v", tc.m, got)
		}
	}
}

// BenchmarkBrokerPubData is the per-publication, per-node validation of a
// payload from the broker (HandlePublication): our own payloads pass
// without allocating.
func BenchmarkBrokerPubData(b *testing.B) {
	p := []byte(`"from":"bench","data":{"text":"hello, world \"quoted\" é","pos":12345,"ops":[{"i":"x","at":7},{"d":3}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if checkPubData(p) != payloadOK {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkAppendPubData is the publish path's once-per-publication
// re-encoding of a client's data.
func BenchmarkAppendPubData(b *testing.B) {
	data := []byte("{ \"text\": \"hello, world \\\"quoted\\\" é\",\n  \"pos\": 12345,\n  \"ops\": [ {\"i\": \"x\", \"at\": 7}, {\"d\": 3} ] }")
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		dst = appendPubData(dst[:0], "bench", data)
	}
}

// BenchmarkBrokerPubDataBinary is BenchmarkBrokerPubData for a binary
// publication (a 25-byte update as base64), with the split the hub makes
// to build the binary frame: no allocation either.
func BenchmarkBrokerPubDataBinary(b *testing.B) {
	p := []byte(`"from":"bench","bin":"AQHR5qPFCAAEAQR0ZXh0AWEAAAAAAAAAAA=="`)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if checkPubData(p) != payloadOK {
			b.Fatal("rejected")
		}
		if _, _, bin := splitPubBin(p); !bin {
			b.Fatal("not binary")
		}
	}
}
