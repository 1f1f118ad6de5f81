// Node test of client.js's snapshot + tail (docs/protocol.md, Snapshots):
// run by `go test ./web/` (snapshot_test.go) against a node whose history
// window has rolled past the channel's start; env CLIENT_JS, WS_URL, CH,
// SNAP (the snapshot's seq), N (the channel's last seq). Prints one JSON
// line and exits non-zero on failure.
import assert from "node:assert/strict";

const { SyncGate } = await import(process.env.CLIENT_JS);
const ch = process.env.CH, snapSeq = Number(process.env.SNAP), n = Number(process.env.N);
const sg = new SyncGate({ url: process.env.WS_URL, user: "late", transport: "websocket" });
const seqs = [];
let snap = null;
sg.on("snapshot", (m) => { snap = m; });
sg.on("msg", (m) => { if (m.ch === ch) seqs.push(m.seq); });
try {
  const r = await sg.subscribe(ch, { snapshot: true });
  assert.ok(snap, "no snapshot event");
  assert.equal(snap.seq, snapSeq, "snapshot seq");
  assert.equal(r.recovered, true, "recovered");
  assert.deepEqual(seqs, Array.from({ length: n - snapSeq }, (_, i) => snapSeq + 1 + i), "tail");
  assert.deepEqual(sg.position(ch).seq, n, "position");
  console.log(JSON.stringify({ snapshot: snap.seq, tail: seqs.length }));
} finally {
  sg.close();
}
