// Node test of client.js's streamed catch-up (docs/protocol.md, `sub` with
// "stream": true). Run by `go test ./web/` (catchup_test.go), which starts
// a node whose per-client queue is far smaller than the channel's history
// and passes:
//   CLIENT_JS  path of a copy of client.js (as .mjs)
//   WS_URL     ws://127.0.0.1:PORT/ws
//   CH, EPOCH  the channel and its epoch
//   N          messages in its history (seqs 1..N)
// Node 20 needs --experimental-websocket. Prints one JSON line and exits
// non-zero on failure.
import assert from "node:assert/strict";

const { SyncGate } = await import(process.env.CLIENT_JS);
const ch = process.env.CH, n = Number(process.env.N);
const sg = new SyncGate({ url: process.env.WS_URL, user: "js", transport: "websocket" });
const seqs = [];
const errors = [];
sg.on("msg", (m) => {
  if (m.ch === ch) seqs.push(m.seq);
});
sg.on("error", (e) => errors.push(e));
let timer;
const end = new Promise((resolve, reject) => {
  sg.on("recovered", resolve);
  sg.on("reset", (e) => reject(new Error("reset: " + JSON.stringify(e))));
  timer = setTimeout(() => reject(new Error("no recovered event after 30s; got " + seqs.length + " msgs")), 30000);
});
const states = [];
sg.on("state", (s) => states.push(s));
try {
  await sg.subscribe(ch, { since: { seq: 0, epoch: process.env.EPOCH } });
  const r = await end;
  assert.equal(r.missed, n, "missed");
  assert.equal(r.seq, n, "recovered seq");
  assert.equal(seqs.length, n, "msgs");
  seqs.forEach((s, i) => assert.equal(s, i + 1, "msg " + i));
  assert.deepEqual(errors, []);
  assert.ok(!states.includes("reconnecting"), "reconnected: " + states.join(","));
  console.log(JSON.stringify({ missed: r.missed, msgs: seqs.length, states }));
} finally {
  clearTimeout(timer);
  sg.close();
}
