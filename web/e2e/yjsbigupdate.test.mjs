// Node test of web/yjs.js and client.js when one Yjs update is over
// client.max_message_size (a large paste): the node discards the message
// unread and answers with a too_large error that has no id; client.js
// fails the publish with it (the command in flight over the limit the
// error names), so the provider reports the update as not published (an
// error event, code "yjs") once, instead of the publish timing out and
// being re-sent, and refused, forever. Run by `go test ./web/`
// (TestYjsProviderUpdateTooLarge) with real Yjs on a node with the default
// 64 KiB limit; env CLIENT_JS, YJS_JS, WS_URL. Prints one JSON line and
// exits non-zero on failure.
import assert from "node:assert/strict";
import * as Y from "yjs";

const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider } = await import(process.env.YJS_JS);
const url = process.env.WS_URL, ch = "doc:bigupdate";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The command timeout (2 min) is far longer than the waits below: the
// publish must fail with too_large, not time out (a timed-out publish is
// kept and re-sent: no error event at all).
const sg = new SyncGate({ url, user: "writer", transport: "websocket", timeout: 120000 });
const errors = [];
sg.on("error", (e) => errors.push(e));
const doc = new Y.Doc();
const p = new YjsProvider(sg, ch, doc, { Y, snapshotEvery: 0, snapshotIdle: 0, retryMs: 100 });
const reader = new SyncGate({ url, user: "reader", transport: "websocket" });
const rdoc = new Y.Doc();
const rp = new YjsProvider(reader, ch, rdoc, { Y, snapshotIdle: 0 });
try {
  await p.ready;
  await rp.ready;
  const text = doc.getText("text");
  text.insert(0, "before\n");
  text.insert(text.length, "z".repeat(70 * 1024)); // one update of 70 KiB
  const t0 = Date.now();
  for (let i = 0; i < 1500 && !errors.length; i++) await sleep(20);
  const took = Date.now() - t0;
  await sleep(1500); // a re-send (retryMs 100) would be refused again within this
  assert.equal(errors.length, 1, "one error event: " + JSON.stringify(errors));
  assert.equal(errors[0].code, "yjs");
  assert.match(errors[0].message, /^update of \d+ bytes not published on doc:bigupdate: too_large$/);
  assert.equal(sg.state, "connected");
  // The small update before it went through.
  for (let i = 0; i < 100 && !rdoc.getText("text").toString().includes("before"); i++) await sleep(20);
  assert.equal(rdoc.getText("text").toString(), "before\n");
  console.log(JSON.stringify({ took, errors }));
} finally {
  rp.destroy();
  reader.close();
  p.destroy();
  sg.close();
}
