// Node test of the server-API path of docs/yjs.md ("Migrating"): a backend
// stores a Yjs document as a channel's snapshot and providers that join
// load it. Run by `go test ./web/` (TestYjsProviderServerSnapshot) with
// real Yjs; env CLIENT_JS, YJS_JS, WS_URL, CH. This script makes the
// document (real Yjs) and asks the Go test, as the backend, to seed it
// ("> seed <base64 of the Yjs state>" on stdout, "ok" back on stdin): the
// backend publishes one message that is not Yjs (a snapshot needs a seq)
// and stores 0x00 + the state as the snapshot at its position through the
// server API. With nobody else online, a provider that joins must hold the
// document and report synced: true; its edits and the seed then reach a
// second joiner. Prints one JSON line and exits non-zero on failure.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import * as Y from "yjs";

const { SyncGate } = await import(process.env.CLIENT_JS);
const { YjsProvider } = await import(process.env.YJS_JS);
const url = process.env.WS_URL, ch = process.env.CH;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The stored document: text and a map, made by real Yjs.
const stored = new Y.Doc();
stored.getText("text").insert(0, "seeded by the backend\n");
stored.getMap("meta").set("title", "migrated");
const state = Y.encodeStateAsUpdate(stored);
console.log("> seed " + Buffer.from(state).toString("base64"));
{
  const { value, done } = await lines.next();
  assert.ok(!done && value === "ok", "seed: " + value);
}

async function join(user) {
  const sg = new SyncGate({ url, user, transport: "websocket" });
  const errors = [];
  sg.on("error", (e) => errors.push(e));
  const doc = new Y.Doc();
  const p = new YjsProvider(sg, ch, doc, { Y, syncTimeout: 1500, snapshotIdle: 0, snapshotEvery: 0 });
  await p.ready;
  const synced = await p.synced;
  return { sg, doc, p, synced, errors };
}

const a = await join("ann");
const out = {};
try {
  assert.equal(a.synced, true, "synced (nobody else online: only the snapshot can say so)");
  assert.equal(a.doc.getText("text").toString(), "seeded by the backend\n");
  assert.equal(a.doc.getMap("meta").get("title"), "migrated");
  assert.deepEqual(a.errors, []);
  a.doc.getText("text").insert(a.doc.getText("text").length, "ann's edit\n");
  const b = await join("bob");
  try {
    for (let i = 0; i < 100 && !b.doc.getText("text").toString().includes("ann's edit"); i++) await sleep(20);
    assert.equal(b.synced, true, "second joiner synced");
    assert.equal(b.doc.getText("text").toString(), "seeded by the backend\nann's edit\n");
    assert.equal(b.doc.getMap("meta").get("title"), "migrated");
    assert.deepEqual(b.errors, []);
    out.b = b.doc.getText("text").toString();
  } finally {
    b.p.destroy();
    b.sg.close();
  }
  out.a = a.doc.getText("text").toString();
  out.stateBytes = state.length;
  console.log(JSON.stringify(out));
} finally {
  a.p.destroy();
  a.sg.close();
  process.stdin.destroy();
}
