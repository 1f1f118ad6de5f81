// Node test of client.js when the server ends a subscription (server API
// unsubscribe: `unsubscribed` without an id). Run by `go test ./web/`
// (unsubscribed_test.go), which passes CLIENT_JS, WS_URL and CH, waits for
// this client on the channel's presence and then unsubscribes it through
// the server API. Prints one JSON line and exits non-zero on failure.
import assert from "node:assert/strict";

const { SyncGate } = await import(process.env.CLIENT_JS);
const ch = process.env.CH;
const sg = new SyncGate({ url: process.env.WS_URL, user: "js", transport: "websocket" });
let timer;
const ended = new Promise((resolve, reject) => {
  sg.on("unsubscribed", resolve);
  timer = setTimeout(() => reject(new Error("no unsubscribed event after 20s")), 20000);
});
try {
  await sg.subscribe(ch);
  const e = await ended;
  assert.equal(e.ch, ch);
  assert.equal(e.byServer, true);
  assert.ok(!sg.channels.has(ch), "still subscribed");
  console.log(JSON.stringify(e));
} finally {
  clearTimeout(timer);
  sg.close();
}
