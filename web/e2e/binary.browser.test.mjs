// Browser test of client.js's binary data (docs/protocol.md, Binary data)
// in headless Chromium driven by playwright-core: run by `go test ./web/`
// (TestBrowserBinary), env NODE (http://127.0.0.1:PORT of a node), CH,
// CHROMIUM. In a page of the node, client.js (imported from /client.js)
// publishes a Uint8Array; a second client on the page receives it as a
// Uint8Array in a binary message, stores a binary snapshot, and a third
// loads it. Prints one JSON line; exits non-zero on failure.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "syncgate-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let code = 0;
try {
  const page = browser.pages()[0] || (await browser.newPage());
  await page.goto(process.env.NODE + "/client.js");
  const out = await page.evaluate(async (ch) => {
    const { SyncGate } = await import("/client.js");
    const url = location.origin.replace(/^http/, "ws") + "/ws";
    const a = new SyncGate({ url, user: "a", transport: "websocket" });
    const b = new SyncGate({ url, user: "b", transport: "websocket" });
    const c = new SyncGate({ url, user: "c", transport: "websocket" });
    const got = new Promise((resolve) => b.on("msg", (m) => m.ch === ch && resolve(m)));
    await b.subscribe(ch);
    const update = new Uint8Array([0, 10, 255, 34, 92, 1, 2, 3, 200]);
    const ack = await a.publish(ch, update);
    const m = await got;
    const same = (x, y) => x instanceof Uint8Array && x.length === y.length && x.every((v, i) => v === y[i]);
    if (!same(m.data, update)) throw new Error("received " + JSON.stringify(m));
    const state = new Uint8Array([7, 0, 10, 13]);
    const r = await b.snapshot(ch, ack.seq, ack.epoch, state);
    if (!r.stored) throw new Error("snapped " + JSON.stringify(r));
    let snap = null;
    c.on("snapshot", (s) => (snap = s));
    await c.subscribe(ch, { snapshot: true, since: { seq: 0, epoch: "gone" } });
    if (!snap || !same(snap.data, state)) throw new Error("snapshot " + JSON.stringify(snap));
    a.close(); b.close(); c.close();
    return { seq: m.seq, bytes: m.data.length, snapshot: snap.seq };
  }, process.env.CH);
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
