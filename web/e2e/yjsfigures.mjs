// Figures of the Yjs provider, with real Yjs in Node.js against a real
// node; run by the benchmarks in web/yjs_bench_test.go (docs/benchmarks.md).
// Env: CLIENT_JS, YJS_JS (client.js and yjs.js copied as .mjs), WS_URL.
// Prints one JSON line.
//
//   MODE=wire N=500   N keystrokes typed by one client, seen by another:
//                     the bytes of each frame, against y-websocket's
//                     encoding of the same Yjs updates.
//   MODE=fill BYTES=1048576 TAIL=100
//                     builds a document of BYTES characters, stores it
//                     as the channel's snapshot, then TAIL keystrokes.
//   MODE=open BYTES=1048576
//                     opens that document (snapshot + tail) and times it.
import assert from "node:assert/strict";
import * as Y from "yjs";

const counters = [];
// CountingWebSocket counts the payload bytes of every frame, per socket.
class CountingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.count = { sent: [], recv: [] };
    counters.push(this.count);
    this.addEventListener("message", (e) => this.count.recv.push(Buffer.byteLength(e.data)));
  }
  send(d) {
    this.count.sent.push(Buffer.byteLength(d));
    super.send(d);
  }
}
globalThis.WebSocket = CountingWebSocket;
const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider, encodeMsg } = await import(process.env.YJS_JS);
const url = process.env.WS_URL;
const ch = process.env.CH || "doc:figures";
const mode = process.env.MODE;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function peer(user, opts = {}) {
  const sg = new SyncGate({ url, user, transport: "websocket" });
  const doc = new Y.Doc();
  const p = new YjsProvider(sg, ch, doc, { Y, snapshotEvery: 0, snapshotIdle: 0, ...opts });
  return { sg, doc, p, text: doc.getText("text") };
}
const varuintLen = (n) => { let l = 1; while (n >= 0x80) { n = Math.floor(n / 128); l++; } return l; };
const sum = (a) => a.reduce((x, y) => x + y, 0);
// size is the bytes of a message's data: bytes, or JSON text.
const size = (d) => (d instanceof Uint8Array ? d.length : JSON.stringify(d).length);

if (mode === "wire") {
  const n = Number(process.env.N || 500);
  const ann = peer("ann"), bob = peer("bob");
  await ann.p.ready;
  await bob.p.ready;
  await sleep(200);
  const [ca, cb] = counters;
  for (const c of [ca, cb]) c.sent.length = c.recv.length = 0;
  const updates = [];
  ann.doc.on("update", (u, origin) => { if (origin !== ann.p) updates.push(u.length); });
  const words = "the quick brown fox jumps over the lazy dog ";
  for (let i = 0; i < n; i++) {
    const seen = new Promise((r) => bob.doc.once("update", r));
    ann.text.insert(ann.text.length, words[i % words.length]);
    await seen;
  }
  await sleep(300);
  assert.equal(bob.text.toString(), ann.text.toString());
  assert.equal(updates.length, n);
  // y-websocket: one binary frame per update, to the server and from it
  // to every connection of the document (the sender too):
  // varuint messageSync (0), varuint messageYjsUpdate (2), varuint length,
  // the update.
  const yws = updates.map((l) => 2 + varuintLen(l) + l);
  // syncgate: the data alone as yjs.js encodes it (encodeMsg), and as
  // earlier versions did, base64 in JSON.
  const data = updates.map((l) => size(encodeMsg("y", new Uint8Array(l))));
  const dataJSON = updates.map((l) => JSON.stringify({ y: Buffer.alloc(l).toString("base64") }).length);
  console.log(JSON.stringify({
    keystrokes: n,
    update: sum(updates) / n,
    ywsFrame: sum(yws) / n,
    data: sum(data) / n,
    dataJSON: sum(dataJSON) / n,
    pubSent: sum(ca.sent) / n, // publisher -> node: the pub frame
    pubRecv: sum(ca.recv) / n, // node -> publisher: ack + its own msg
    msgRecv: sum(cb.recv) / n, // node -> another viewer: the msg
    framesSent: ca.sent.length, framesRecvOther: cb.recv.length,
  }));
  ann.sg.close();
  bob.sg.close();
} else if (mode === "fill") {
  const bytes = Number(process.env.BYTES), tail = Number(process.env.TAIL || 100);
  const w = peer("writer");
  await w.p.ready;
  // BYTES characters in lines of 64, inserted 4 KiB at a time (one Yjs
  // item per insert: a pasted document, not a typed one).
  const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";
  const chunk = line.repeat(64);
  w.p.destroy(); // build offline, store once
  while (w.text.length < bytes) w.text.insert(w.text.length, chunk.slice(0, Math.min(chunk.length, bytes - w.text.length)));
  const state = Y.encodeStateAsUpdate(w.doc);
  const pos = await w.sg.subscribe(ch);
  const seq0 = (await w.sg.publish(ch, { note: "start" })).seq;
  const r = await w.sg.snapshot(ch, seq0, pos.epoch, encodeMsg("y", state));
  assert.ok(r.stored, "snapshot stored: " + JSON.stringify(r));
  const p2 = peer("typist");
  await p2.p.ready;
  for (let i = 0; i < tail; i++) p2.text.insert(i, "t");
  await sleep(500);
  console.log(JSON.stringify({ chars: w.text.length + tail, state: state.length, snapshotData: size(encodeMsg("y", state)), snapSeq: r.seq, tail }));
  w.sg.close();
  p2.sg.close();
} else if (mode === "open") {
  const want = Number(process.env.BYTES) + Number(process.env.TAIL || 100);
  const t0 = performance.now();
  const r = peer("reader");
  let snapAt = 0, sub = null;
  r.sg.on("snapshot", () => (snapAt = performance.now()));
  r.sg.on("subscribed", (e) => (sub = sub || e));
  await r.p.ready;
  const complete = await r.p.synced;
  const t1 = performance.now();
  assert.ok(complete && snapAt > 0, "loaded from snapshot + tail: " + JSON.stringify({ complete, snapAt, sub }));
  assert.equal(r.text.length, want);
  console.log(JSON.stringify({ ms: t1 - t0, snapshotFrameMs: snapAt - t0, chars: r.text.length, recvBytes: sum(counters[0].recv) }));
  r.sg.close();
} else {
  throw new Error("MODE: wire, fill or open");
}
