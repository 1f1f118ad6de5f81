// Node test of web/yjs.js at the default client.max_message_size (64 KiB):
// run by `go test ./web/` (TestYjsProviderSnapshotTooLarge) with real Yjs.
// Env CLIENT_JS, YJS_JS, WS_URL. A document of 60 KiB of Yjs state is
// snapshotted; one that grows past 64 KiB (in 1 KiB
// updates, each published fine) is not: the node discards the `snap`
// frame as over client.max_message_size; client.js fails the snap with
// that too_large and the provider says so in an error event (code "yjs").
// Prints one JSON line.
import assert from "node:assert/strict";
import * as Y from "yjs";

const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider } = await import(process.env.YJS_JS);
const url = process.env.WS_URL;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function grow(ch, kib) {
  const sg = new SyncGate({ url, user: "writer", transport: "websocket" });
  const errors = [], snaps = [];
  sg.on("error", (e) => errors.push(e.message));
  const doc = new Y.Doc();
  const p = new YjsProvider(sg, ch, doc, { Y, snapshotEvery: 0, snapshotIdle: 300 });
  await p.ready;
  const text = doc.getText("text");
  const line = "x".repeat(63) + "\n";
  while (Y.encodeStateAsUpdate(doc).length < kib * 1024) {
    text.insert(text.length, line.repeat(16)); // 1 KiB per update
    await sleep(2);
  }
  const state = Y.encodeStateAsUpdate(doc).length;
  for (let i = 0; i < 150 && p.snapSeq === 0 && !errors.length; i++) await sleep(20);
  const out = { state, snapSeq: p.snapSeq, errors };
  p.destroy();
  sg.close();
  return out;
}

const small = await grow("doc:limits-small", 60);
assert.ok(small.snapSeq > 0 && small.errors.length === 0, "60 KiB of state is snapshotted: " + JSON.stringify(small));
const big = await grow("doc:limits-big", 65);
assert.equal(big.snapSeq, 0, "no snapshot stored past the limit");
assert.equal(big.errors.length, 1, "one error event: " + JSON.stringify(big));
// client.js fails the snap with the node's too_large (it has no id: the
// command over the limit it names), which the provider reports.
assert.match(big.errors[0], /^snapshot of doc:limits-big at seq \d+ not stored: too_large$/);
console.log(JSON.stringify({ small: { state: small.state, snapSeq: small.snapSeq }, big }));
