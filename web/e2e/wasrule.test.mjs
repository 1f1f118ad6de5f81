// Node test of client.js's rule for provisional positions and `was`
// (docs/protocol.md, docs/provisional.md step 5), driven by the step table
// the Go client's TestWasRule reads (STEPS: client/testdata/was_steps.json),
// so the two clients cannot drift apart. Run by `go test ./web/`
// (wasrule_test.go). No server: the channel starts from a `subscribed`
// reply at the table's start and each step's msg is handed to the client
// as if it came off the wire. Prints one JSON line and exits non-zero on
// failure.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const { SyncGate } = await import(process.env.CLIENT_JS);
const tab = JSON.parse(readFileSync(process.env.STEPS, "utf8"));
assert.ok(tab.steps.length >= 10, "steps: " + tab.steps.length);

const ch = "doc";
const sg = new SyncGate({ url: "ws://127.0.0.1:1/ws", user: "js" });
sg.close(); // nothing goes on the wire: the frames below are handed in
const applied = [];
sg.on("msg", (m) => applied.push(m));
sg.subscribe(ch).catch(() => {});
sg.onSubscribed(ch, { op: "subscribed", ch, seq: tab.start.seq, epoch: tab.start.epoch });
assert.deepEqual(sg.position(ch), tab.start, "start");

const fails = [];
tab.steps.forEach((st, i) => {
  const before = applied.length;
  // A fresh object each time: the client may take the message over.
  sg.handle({ op: "msg", ch, ...structuredClone(st.msg) });
  const got = applied.length > before;
  if (got !== st.applied) fails.push(`step ${i} (${st.msg.data}): applied ${got}, want ${st.applied}`);
  const pos = sg.position(ch);
  if (pos.seq !== st.pos.seq || pos.epoch !== st.pos.epoch)
    fails.push(`step ${i} (${st.msg.data}): position ${JSON.stringify(pos)}, want ${JSON.stringify(st.pos)}`);
});
assert.deepEqual(fails, []);
console.log(JSON.stringify({ steps: tab.steps.length, applied: applied.map((m) => m.data) }));
