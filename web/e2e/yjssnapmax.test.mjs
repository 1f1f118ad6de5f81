// Node test of web/yjs.js when a snapshot is over history.snapshot_max_bytes
// but within client.max_message_size: the node answers the `snap` with
// too_large and the provider reports it as an error event (code "yjs"),
// keeps its document and stays connected; nothing of the document is lost
// (a second viewer joining from history gets it all). Run by `go test
// ./web/` (TestYjsProviderSnapshotOverMax) with real Yjs, on a node whose
// history.snapshot_max_bytes is 4096; env CLIENT_JS, YJS_JS, WS_URL.
// Prints one JSON line and exits non-zero on failure.
import assert from "node:assert/strict";
import * as Y from "yjs";

const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider } = await import(process.env.YJS_JS);
const url = process.env.WS_URL, ch = "doc:snapmax";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const sg = new SyncGate({ url, user: "writer", transport: "websocket" });
const errors = [];
sg.on("error", (e) => errors.push(e));
const doc = new Y.Doc();
const p = new YjsProvider(sg, ch, doc, { Y, snapshotEvery: 0, snapshotIdle: 200 });
await p.ready;
// One update of about 6 KiB: over the snapshot limit, well within the
// 64 KiB message limit.
doc.getText("text").insert(0, ("y".repeat(63) + "\n").repeat(96));
const state = Y.encodeStateAsUpdate(doc).length;
for (let i = 0; i < 1000 && !errors.length; i++) await sleep(20);
// Nothing more comes: a second snapshot attempt waits for a new message.
await sleep(400);

const reader = new SyncGate({ url, user: "reader", transport: "websocket" });
const rdoc = new Y.Doc();
const rp = new YjsProvider(reader, ch, rdoc, { Y, snapshotIdle: 0 });
try {
  await rp.ready;
  assert.ok(state > 4096, "state " + state);
  assert.equal(errors.length, 1, "one error event: " + JSON.stringify(errors));
  assert.equal(errors[0].code, "yjs");
  assert.match(errors[0].message, /^snapshot of doc:snapmax at seq \d+ not stored: too_large$/);
  assert.equal(p.snapSeq, 0, "no snapshot stored");
  assert.equal(sg.state, "connected");
  assert.equal(await rp.synced, true, "the reader got the whole document from history");
  assert.equal(rdoc.getText("text").toString(), doc.getText("text").toString());
  console.log(JSON.stringify({ state, errors }));
} finally {
  rp.destroy();
  reader.close();
  p.destroy();
  sg.close();
}
