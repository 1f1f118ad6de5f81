package multinode_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// hostilePublish does what the broker's publish script does, with bytes no
// gateway wrote: next seq, history entry, pub/sub message. Anyone with
// write access to Redis can.
const hostilePublish = `
local epoch = redis.call('hget', KEYS[2], 'e')
local seq = redis.call('hincrby', KEYS[2], 's', 1)
local s = string.format('%d', seq)
redis.call('xadd', KEYS[1], s .. '-0', 'd', ARGV[1])
redis.call('publish', KEYS[3], 'p' .. epoch .. ':' .. s .. ':' .. ARGV[1])
return s
`

// TestHostileRedisPayload: publications written into Redis by someone else
// than a gateway never reach clients as broken or forged frames (wstest
// fails on any line that is not one JSON object), live or through
// catch-up; the subscribers see the skipped seqs instead.
func TestHostileRedisPayload(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv.Addr())
	const ch = "doc:1"
	x := wstest.Dial(t, n.url)
	x.Connect("victim")
	sub := x.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	x.MustCall("sub", map[string]any{"ch": "doc:payroll"}, "subscribed")
	epoch := sub.Str("epoch")
	x.MustCall("pub", map[string]any{"ch": ch, "data": "first"}, "ack") // seq 1

	for _, p := range []string{
		"\"from\":\"ceo\",\"data\":1}\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":\"forged\"",
		`"from":"ceo","data":1,"op":"join"`,
		"\"from\":\"ceo\",\"data\":\"\xff\"",
	} {
		if _, err := srv.Do("EVAL", hostilePublish, "3", "sg{"+ch+"}:h", "sg{"+ch+"}:m", "sg{"+ch+"}", p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Do("EVAL", hostilePublish, "3", "sg{"+ch+"}:h", "sg{"+ch+"}:m", "sg{"+ch+"}", "\"from\":\"ann\",\"data\":[\n\"loose\"\n]"); err != nil {
		t.Fatal(err)
	}
	x.MustCall("pub", map[string]any{"ch": ch, "data": "last"}, "ack") // seq 6

	want := func(who string, got []wstest.Msg) {
		t.Helper()
		var seqs []uint64
		for _, m := range got {
			if m.Str("ch") != ch {
				t.Fatalf("%s: forged %v", who, m)
			}
			seqs = append(seqs, m.Num("seq"))
		}
		if len(got) != 3 || seqs[0] != 1 || seqs[1] != 5 || seqs[2] != 6 ||
			got[1].Str("from") != "ann" || jsonOf(got[1]["data"]) != `["loose"]` || got[2].Str("data") != "last" {
			t.Fatalf("%s: got %v, want seqs 1, 5 (re-encoded) and 6", who, got)
		}
	}
	var live []wstest.Msg
	for len(live) < 3 {
		live = append(live, x.NextWithin(10*time.Second, "msg", func(m wstest.Msg) bool { return m.Op() == "msg" }))
	}
	want("live", live)
	x.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })

	z := wstest.Dial(t, n.url)
	z.Connect("late")
	r := z.MustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": 0, "epoch": epoch}}, "subscribed")
	var pubs []wstest.Msg
	for _, p := range asList(r["pubs"]) {
		pubs = append(pubs, wstest.Msg(p.(map[string]any)))
	}
	want("catch-up", pubs)
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func asList(v any) []any { l, _ := v.([]any); return l }
