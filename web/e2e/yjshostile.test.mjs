// Node test of web/yjs.js against hostile messages on its channels: run by
// `go test ./web/` (TestYjsProviderHostile) with real Yjs. Env CLIENT_JS,
// YJS_JS (the modules copied as .mjs), WS_URL. Another client with publish
// permission sends what is not a Yjs message, base64 that is not, empty
// bytes, an unknown tag, updates Yjs cannot read, state vectors and
// awareness updates that are garbage, as bytes and in the JSON form of
// earlier versions, huge claimed lengths; the provider reports each
// as an error event (or ignores it), keeps its document, and still applies
// the valid update sent last. Prints one JSON line; exits non-zero on
// failure.
import assert from "node:assert/strict";
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";

const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider, encodeMsg } = await import(process.env.YJS_JS);
const url = process.env.WS_URL, ch = "doc:hostile";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const sg = new SyncGate({ url, user: "victim", transport: "websocket" });
const errors = [];
sg.on("error", (e) => errors.push(e.message));
const doc = new Y.Doc();
const awareness = new awarenessProtocol.Awareness(doc);
const p = new YjsProvider(sg, ch, doc, { Y, awareness, awarenessProtocol, snapshotIdle: 0 });
await p.ready;
doc.getText("text").insert(0, "mine");

const evil = new SyncGate({ url, user: "evil", transport: "websocket" });
const hostile = [
  [ch, "just a string"],
  [ch, { y: 42 }],
  [ch, { y: "%%% not base64 %%%" }],
  [ch, { y: "AAAA" }], // decodes, is not a readable update
  [ch, { y: btoa(String.fromCharCode(...new Uint8Array(64).fill(0xff))) }], // varuints that never end
  [ch, { sv: "%%%" }],
  [ch, { sv: btoa("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01") }],
  [ch, new Uint8Array(0)],
  [ch, Uint8Array.of(9, 1, 2, 3)], // unknown tag
  [ch, Uint8Array.of(0, ...new Uint8Array(64).fill(0xff))], // update: varuints that never end
  [ch, Uint8Array.of(1, ...new Uint8Array(11).fill(0xff))], // state vector: the same
  [ch + ".aw", Uint8Array.of(2, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)],
  [ch + ".aw", { aw: "AAAA" }],
  [ch + ".aw", { aw: btoa("\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f") }],
];
for (const [c, data] of hostile) await evil.publish(c, data);
// Then a valid update from a real peer.
const good = new Y.Doc();
good.getText("text").insert(0, "theirs ");
await evil.publish(ch, encodeMsg("y", Y.encodeStateAsUpdate(good)));
for (let i = 0; i < 100 && !doc.getText("text").toString().includes("theirs"); i++) await sleep(20);
const text = doc.getText("text").toString();
try {
  assert.ok(text.includes("mine") && text.includes("theirs") && text.length === "mine".length + "theirs ".length, "document kept and the valid update applied: " + JSON.stringify(text));
  assert.equal(sg.state, "connected", "still connected");
  assert.ok(errors.length >= 6, "bad updates reported as error events: " + JSON.stringify(errors));
  for (const e of errors) assert.match(e, /^bad (awareness )?update on doc:hostile/, "error events name the channel: " + e);
  console.log(JSON.stringify({ text, errors }));
} finally {
  p.destroy();
  awareness.destroy();
  sg.close();
  evil.close();
}
