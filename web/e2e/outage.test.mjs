// Node test of client.js through a real broker outage (docs/provisional.md):
// a node on JetStream whose server the Go test stops and restarts when this
// script asks ("> down", "> up" on stdout; the answer comes on stdin). Run
// by `go test ./web/` (outage_test.go), which passes CLIENT_JS, WS_URL, CH.
//   - a subscriber on the publishing node gets the outage publishes at once
//     under a provisional epoch, then again under their real positions with
//     `was`: it must apply each exactly once and end on the real position;
//   - a client that resubscribes after the outage from a provisional
//     position it held must get only what it had not applied.
// Prints one JSON line and exits non-zero on failure.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";

const { SyncGate } = await import(process.env.CLIENT_JS);
const ch = process.env.CH;
const url = process.env.WS_URL;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// ask has the Go test do something and waits for its answer.
async function ask(what) {
  console.log("> " + what);
  const { value, done } = await lines.next();
  assert.ok(!done && value === "ok", what + ": " + value);
}

async function until(what, cond, ms = 30000) {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 10)))
    if (Date.now() > end) throw new Error("not " + what + " after " + ms + " ms");
}

const isProv = (e) => typeof e === "string" && e.startsWith("~");

function follower(name) {
  const sg = new SyncGate({ url, user: name, transport: "websocket", timeout: 30000 });
  const f = { sg, applied: new Map(), gaps: [], errors: [] };
  sg.on("msg", (m) => m.ch === ch && f.applied.set(m.data, (f.applied.get(m.data) || 0) + 1));
  sg.on("gap", (g) => f.gaps.push(g));
  sg.on("error", (e) => f.errors.push(e));
  return f;
}

const sub = follower("sub");
// A long command timeout: a publish that timed out on the client but was
// taken by the node would be published twice.
const pub = new SyncGate({ url, user: "pub", transport: "websocket", timeout: 30000 });
let later;
try {
  await sub.sg.subscribe(ch);
  for (const d of ["r1", "r2"]) await pub.publish(ch, d);
  await until("r1, r2 applied", () => sub.applied.has("r2"));

  await ask("down");
  // Publishes during the outage are acked with provisional positions and
  // delivered at once on this node. The first may still find the broker
  // up in the node's eyes: retry what fails as unavailable.
  const prov = [];
  let held = null; // a provisional position the subscriber held
  for (let i = 1; i <= 5; i++) {
    const d = "p" + i;
    for (let tries = 0; ; tries++) {
      try {
        const ack = await pub.publish(ch, d);
        prov.push(ack);
        break;
      } catch (e) {
        if (tries > 50 || e.code !== "unavailable") throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await until(d + " applied", () => sub.applied.has(d));
    if (i === 3) held = sub.sg.position(ch);
  }
  assert.ok(prov.every((a) => isProv(a.epoch)), "acks: " + JSON.stringify(prov));
  assert.ok(isProv(held.epoch) && held.seq >= 1, "held " + JSON.stringify(held));
  assert.ok(isProv(sub.sg.position(ch).epoch), "position during the outage " + JSON.stringify(sub.sg.position(ch)));

  await ask("up");
  // The outbox is stored; the subscriber gets p1..p5 again under real
  // positions with `was` and must not apply them again.
  await until("back on a real position", () => {
    const p = sub.sg.position(ch);
    return !isProv(p.epoch) && p.seq >= 7;
  }, 45000);
  await pub.publish(ch, "r3");
  await until("r3 applied", () => sub.applied.has("r3"));

  // A client that held the provisional position after p3 resubscribes
  // from it: the node replays from the real position the epoch names, the
  // replay's `was` makes it skip p1..p3.
  later = follower("later");
  const r = await later.sg.subscribe(ch, { since: held });
  assert.equal(r.recovered, true, "recovered: " + JSON.stringify(r));
  await until("r3 applied by the later client", () => later.applied.has("r3"));

  const want = ["r1", "r2", "p1", "p2", "p3", "p4", "p5", "r3"];
  assert.deepEqual(Object.fromEntries(sub.applied), Object.fromEntries(want.map((d) => [d, 1])), "subscriber applied");
  assert.deepEqual(Object.fromEntries(later.applied), { p4: 1, p5: 1, r3: 1 }, "later client applied");
  assert.deepEqual(sub.gaps, [], "gaps");
  assert.deepEqual(sub.errors, [], "errors");
  const end = sub.sg.position(ch);
  assert.ok(!isProv(end.epoch) && end.seq === 8, "end position " + JSON.stringify(end));
  console.log(JSON.stringify({ prov: prov.map((a) => a.seq + "@" + a.epoch), held, end, later: later.sg.position(ch) }));
} finally {
  sub.sg.close();
  pub.close();
  if (later) later.sg.close();
  process.stdin.destroy();
}
