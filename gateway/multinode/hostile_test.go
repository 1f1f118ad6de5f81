package multinode_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestHostileNATSPayload: whoever can publish on the NATS server writes
// bytes no gateway wrote onto a channel's subject. Subscribers never get a
// broken or forged frame (wstest reads every frame line by line and fails
// on a line that is not one JSON object): malformed payloads are dropped and
// counted, loose but valid ones arrive re-encoded.
func TestHostileNATSPayload(t *testing.T) {
	srv := natstest.RunServer(t)
	n := startNode(t, nats.New(nats.Config{URL: srv.URL()}), edit("nats"))
	const ch = "doc:1"
	sub := dial(t, n, "sub")
	sub.Connect("victim")
	sub.Sub(ch)
	sub.Sub("doc:payroll")

	nc, err := natsgo.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subject := "sg.c." + natsname.Token(ch)
	for _, p := range []string{
		"\"from\":\"ceo\",\"data\":1}\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":\"forged\"",
		`"from":"ceo","data":1,"op":"join"`,
		"\"from\":\"ceo\",\"data\":\"\xff\"",
		`{"op":"msg","ch":"doc:payroll","from":"ceo","data":"forged"}`,
		"\"from\":\"ann\",\"data\":[\n\"loose\"\n]",
	} {
		if err := nc.Publish(subject, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, n, "pub")
	pub.Connect("bob")
	pub.Pub(ch, "end")

	var got []wstest.Msg
	for len(got) < 2 {
		m := sub.NextWithin(wait, "msg", func(m wstest.Msg) bool { return m.Op() == "msg" })
		if m == nil {
			t.FailNow()
		}
		got = append(got, m)
	}
	if got[0].Str("ch") != ch || got[0].Str("from") != "ann" || jsonOf(got[0]["data"]) != `["loose"]` ||
		got[1].Str("from") != "bob" || got[1].Str("data") != "end" {
		t.Fatalf("got %v", got)
	}
	sub.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	_, body := httpGetBody(t, "http://"+n.metricsAddr+"/metrics")
	if !strings.Contains(body, `syncgate_broker_payload_rejected_total{kind="publication"} 4`) ||
		!strings.Contains(body, `syncgate_broker_payload_rewritten_total 1`) {
		t.Fatalf("metrics:\n%s", grepLines(body, "syncgate_broker_payload"))
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func httpGetBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
