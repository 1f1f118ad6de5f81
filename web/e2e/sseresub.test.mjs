// Node test of client.js on the SSE transport: subscribe right after
// unsubscribe (the stream is reopening with the new channel set). Run by
// `go test ./web/` (sseresub_test.go), which passes CLIENT_JS and WS_URL.
// Prints one JSON line and exits non-zero on failure.
import assert from "node:assert/strict";

const { SyncGate } = await import(process.env.CLIENT_JS);
const sg = new SyncGate({ url: process.env.WS_URL, user: "js", transport: "sse", timeout: 15000 });
const got = [];
sg.on("msg", (m) => got.push(m.ch + ":" + m.data));

// waitMsg resolves once `want` (ch:data) has arrived.
async function waitMsg(want) {
  for (let i = 0; i < 1500; i++) {
    if (got.includes(want)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("no " + want + " after 15 s; got " + JSON.stringify(got));
}

let timer;
const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("not done after 45 s")), 45000)));
try {
  await Promise.race([
    deadline,
    (async () => {
      await sg.subscribe("doc:a");
      assert.equal(sg.transport, "sse");
      await sg.publish("doc:a", "1");
      await waitMsg("doc:a:1");

      // Unsubscribe, then subscribe again at once.
      await sg.unsubscribe("doc:a");
      const r = await sg.subscribe("doc:a");
      assert.equal(r.ch, "doc:a");
      await sg.publish("doc:a", "2");
      await waitMsg("doc:a:2");

      // Unsubscribe, then subscribe to another channel and back, without
      // waiting between them.
      const un = sg.unsubscribe("doc:a");
      const sb = sg.subscribe("doc:b");
      const sa = sg.subscribe("doc:a");
      await Promise.all([un, sb, sa]);
      await sg.publish("doc:b", "3");
      await sg.publish("doc:a", "4");
      await waitMsg("doc:b:3");
      await waitMsg("doc:a:4");
      assert.deepEqual([...sg.channels.keys()].sort(), ["doc:a", "doc:b"]);

      // A new client subscribing to two channels at once: the second
      // subscribe comes while the first stream is being opened.
      const sg2 = new SyncGate({ url: process.env.WS_URL, user: "js2", transport: "sse", timeout: 15000 });
      try {
        sg2.on("msg", (m) => got.push("2/" + m.ch + ":" + m.data));
        await Promise.all([sg2.subscribe("doc:c"), sg2.subscribe("doc:d")]);
        await sg.publish("doc:d", "5");
        await waitMsg("2/doc:d:5");
      } finally {
        sg2.close();
      }
    })(),
  ]);
  console.log(JSON.stringify({ got }));
} finally {
  clearTimeout(timer);
  sg.close();
}
