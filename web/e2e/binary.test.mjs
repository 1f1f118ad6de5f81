// Node test of client.js's binary data (docs/protocol.md, Binary data):
// run by `go test ./web/` (binary_test.go); env CLIENT_JS, WS_URL, CH, and
// PEER (the base64 a Go client published on CH before we subscribe, which
// we get in the catch-up as "bin"). A publishes bytes, B (subscribed) gets
// a Uint8Array; a JSON value still arrives as JSON; a binary snapshot
// stored by A reaches a late subscriber C as a Uint8Array. Prints one
// JSON line and exits non-zero on failure.
import assert from "node:assert/strict";

const { SyncGate } = await import(process.env.CLIENT_JS);
const ch = process.env.CH;
const url = process.env.WS_URL;
const peer = Uint8Array.from(Buffer.from(process.env.PEER, "base64"));
const a = new SyncGate({ url, user: "a", transport: "websocket" });
const b = new SyncGate({ url, user: "b", transport: "websocket" });
const c = new SyncGate({ url, user: "c", transport: "websocket" });
const got = [];
let wake = () => {};
b.on("msg", (m) => { if (m.ch === ch) { got.push(m); wake(); } });
const waitFor = async (n) => {
  const until = Date.now() + 5000;
  while (got.length < n) {
    if (Date.now() > until) throw new Error("timed out: " + got.length + " of " + n);
    await new Promise((r) => { wake = r; setTimeout(r, 100); });
  }
};
try {
  // B catches up from seq 0: the peer's binary message comes as "bin" in
  // subscribed's pubs and is handed over as bytes.
  await b.subscribe(ch, { since: { seq: 0, epoch: process.env.EPOCH } });
  await a.subscribe(ch);
  await waitFor(1);
  assert.ok(got[0].data instanceof Uint8Array, "catch-up data is bytes");
  assert.deepEqual([...got[0].data], [...peer], "catch-up bytes");

  const update = new Uint8Array([0, 10, 255, 34, 92, 1, 2, 3]);
  const ack = await a.publish(ch, update);
  await waitFor(2);
  assert.ok(got[1].data instanceof Uint8Array, "live data is bytes");
  assert.deepEqual([...got[1].data], [...update], "live bytes");
  assert.equal(got[1].from, "a");
  assert.equal(got[1].seq, ack.seq);

  await a.publish(ch, { text: "json stays json" });
  await waitFor(3);
  assert.deepEqual(got[2].data, { text: "json stays json" });

  const state = new Uint8Array([9, 8, 7, 0, 10]);
  const r = await a.snapshot(ch, ack.seq, ack.epoch, state);
  assert.equal(r.stored, true, "snapped");
  let snap = null;
  c.on("snapshot", (m) => { snap = m; });
  await c.subscribe(ch, { snapshot: true, since: { seq: 0, epoch: "gone" } });
  assert.ok(snap && snap.data instanceof Uint8Array, "snapshot data is bytes");
  assert.deepEqual([...snap.data], [...state], "snapshot bytes");
  console.log(JSON.stringify({ received: got.length, snapshot: snap.seq }));
} finally {
  a.close();
  b.close();
  c.close();
}
