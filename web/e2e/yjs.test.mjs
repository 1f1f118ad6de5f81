// Browser test of the Yjs provider (web/yjs.js) through the demo page, in
// headless Chromium driven by playwright-core, with the real Yjs and
// y-protocols of web/e2e/node_modules answering the page's CDN URLs (see
// yjsroute.mjs). Run by `go test ./web/` (TestBrowserYjs), which starts
// two nodes sharing a JetStream broker with a history of HISTORY_SIZE
// messages per channel and passes:
//   NODE_A, NODE_B   http://127.0.0.1:PORT of each node
//   CONTROL          http://127.0.0.1:PORT: POST /stop?node=b, /start?node=b
//   HISTORY_SIZE     the nodes' history.size
//   CHROMIUM         the browser binary (Debian's chromium)
// Exits non-zero on the first failure.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { routeYjs, yjsModules } from "./yjsroute.mjs";

const A = process.env.NODE_A, B = process.env.NODE_B, CONTROL = process.env.CONTROL;
const HISTORY = Number(process.env.HISTORY_SIZE);
const t0 = Date.now();
const step = (s) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);
const rnd = Math.random().toString(36).slice(2, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = (page, fn, arg, what, timeout = 10000) =>
  page.waitForFunction(fn, arg, { timeout, polling: 20 }).catch((e) => {
    throw new Error("timed out waiting for " + what + ": " + e.message.split("\n")[0]);
  });
async function control(what) {
  const r = await fetch(CONTROL + "/" + what, { method: "POST" });
  assert.equal(r.status, 200, what + ": " + (await r.text()));
}

const mods = await yjsModules(A);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const errors = [];

// user opens the demo page in a browser context of its own (its own
// network, for setOffline). With offline: true its WebSockets go through a
// route that can cut them.
async function user(node, doc, name, { query = "", offline = false } = {}) {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 600 } });
  await routeYjs(ctx, mods);
  const net = { down: false, socks: new Set() };
  if (offline) {
    await ctx.routeWebSocket(/\/ws$/, (ws) => {
      if (net.down) return ws.close({ code: 4000, reason: "offline" });
      const server = ws.connectToServer();
      const s = { ws, server };
      net.socks.add(s);
      ws.onClose(() => { net.socks.delete(s); server.close().catch(() => {}); });
      server.onClose(() => { net.socks.delete(s); ws.close().catch(() => {}); });
    });
  }
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(name + ": " + e.message));
  page.on("console", (m) => { if (/already imported/i.test(m.text())) errors.push(name + ": " + m.text()); });
  await page.goto(`${node}/?doc=${doc}&name=${name}${query}`);
  await until(page, () => window.demo && window.demo.synced(), null, name + " synced");
  // Input events with their times, to show typing overlapped.
  await page.evaluate(() => {
    window.typed = [];
    document.getElementById("doc").addEventListener("input", () => window.typed.push(Date.now()));
  });
  const setNet = async (up) => {
    net.down = !up;
    await ctx.setOffline(!up);
    if (!up) for (const s of [...net.socks]) await s.ws.close({ code: 4000, reason: "offline" }).catch(() => {});
  };
  return { page, ctx, name, setNet, text: () => page.evaluate(() => window.demo.text()) };
}
const ed = (u) => u.page.locator("#doc");
// waitSame polls until every page shows the same text (or times out with
// the texts in the message).
async function waitSame(users, what, timeout = 15000) {
  const end = Date.now() + timeout;
  let texts;
  for (;;) {
    texts = await Promise.all(users.map((u) => u.text()));
    if (texts.every((t) => t === texts[0])) return texts[0];
    if (Date.now() > end) assert.fail(what + ": pages still differ after " + timeout + " ms: " + JSON.stringify(texts));
    await sleep(50);
  }
}

try {
  // ---- (a) two pages on two nodes type into the same line at once ----
  const d1 = "yjs-a-" + rnd;
  const ann = await user(A, d1, "ann");
  const bob = await user(B, d1, "bob");
  const base = "The quick fox";
  await ed(ann).pressSequentially(base, { delay: 5 });
  await until(bob.page, (b) => window.demo.text() === b, base, "bob sees ann's line");
  await ed(ann).press("End");
  await ed(bob).press("End");
  const sA = " jumps over [ann]", sB = " sleeps under [bob]";
  await Promise.all([ed(ann).pressSequentially(sA, { delay: 30 }), ed(bob).pressSequentially(sB, { delay: 30 })]);
  const line = await waitSame([ann, bob], "same line");
  const [ta, tb] = [await ann.page.evaluate(() => window.typed), await bob.page.evaluate(() => window.typed)];
  const overlap = Math.min(ta[ta.length - 1], tb[tb.length - 1]) - Math.max(ta[ta.length - sA.length], tb[tb.length - sB.length]);
  assert.ok(overlap > 0, "both typed at the same time: overlap " + overlap + " ms");
  assert.ok(!line.includes("\n"), "still one line: " + JSON.stringify(line));
  assert.ok(line === base + sA + sB || line === base + sB + sA, "both people's characters kept, each run whole: " + JSON.stringify(line));
  step(`(a) same line, typed concurrently for ${overlap} ms on nodes A and B: both pages show ${JSON.stringify(line)}`);
  // Remote cursors: each page shows the other's caret, with its name.
  await until(ann.page, () => window.demo.cursors().includes("bob") && document.querySelector('#cursors .caret[data-user="bob"]'), null, "ann sees bob's cursor");
  await until(bob.page, () => window.demo.cursors().includes("ann") && document.querySelector('#cursors .caret[data-user="ann"]'), null, "bob sees ann's cursor");
  step("(a) remote cursors: ann sees bob's caret and bob sees ann's (awareness on " + "doc:" + d1 + ".aw)");

  // ---- (b) node B restarts while bob types ----
  const sB2 = "\nbob keeps typing while node B restarts: 0123456789 abcdefghij";
  const sA2 = "[ann meanwhile] ";
  const discBefore = await bob.page.evaluate(() => window.demo.events.filter((e) => e.type === "disconnected").length);
  await ed(bob).press("Control+End");
  await ed(ann).press("Control+Home");
  const t1 = Date.now();
  await Promise.all([
    ed(bob).pressSequentially(sB2, { delay: 40 }),
    ed(ann).pressSequentially(sA2, { delay: 60 }),
    (async () => {
      await sleep(300);
      await control("stop?node=b");
      await control("start?node=b");
    })(),
  ]);
  const after = await waitSame([ann, bob], "after the restart", 20000);
  const ev = await bob.page.evaluate(() => window.demo.events);
  const disc = ev.filter((e) => e.type === "disconnected");
  assert.ok(disc.length > discBefore && disc[disc.length - 1].at > t1, "bob's node went away while he typed: " + JSON.stringify(ev.slice(-6)));
  const typedB = await bob.page.evaluate(() => window.typed);
  assert.ok(disc[disc.length - 1].at < typedB[typedB.length - 1], "bob typed on after the disconnect");
  assert.equal(after, sA2 + line + sB2, "nothing lost: " + JSON.stringify(after));
  step(`(b) node B restarted while bob typed (${disc[disc.length - 1].code}); every character of both arrived: ${after.length} chars on both pages`);

  // ---- (c) a late page after the history window rolled over ----
  const d3 = "yjs-c-" + rnd;
  const eve = await user(A, d3, "eve", { query: "&snapEvery=10&snapIdle=0" });
  const long = "Eve writes a document longer than the history window: " + "abcdefghijklmnopqrstuvwxyz".repeat(2);
  await ed(eve).pressSequentially(long, { delay: 2 });
  await until(eve.page, (n) => window.demo.sg.position(window.demo.ch).seq >= n, long.length, "eve's keystrokes published");
  const eveText = await eve.text();
  assert.equal(eveText, long);
  const eveSeq = await eve.page.evaluate(() => window.demo.sg.position(window.demo.ch).seq);
  await eve.ctx.close();
  await sleep(300);
  const carl = await user(B, d3, "carl");
  const got = await carl.page.evaluate(() => ({ text: window.demo.text(), snaps: window.demo.snapshots, seq: window.demo.sg.position(window.demo.ch).seq, presence: window.demo.presence(), events: window.demo.events.map((e) => e.type) }));
  assert.equal(got.text, long, "carl loaded the whole document: " + JSON.stringify(got));
  assert.ok(got.seq > HISTORY && eveSeq > HISTORY, `the channel (seq ${got.seq}) is longer than the history (${HISTORY})`);
  assert.equal(got.snaps.length, 1, "carl loaded a snapshot: " + JSON.stringify(got));
  const tail = got.seq - got.snaps[0];
  assert.ok(tail >= 0 && tail <= HISTORY, "snapshot + a tail inside the window: " + JSON.stringify(got));
  assert.deepEqual(got.presence, ["carl"], "nobody else online");
  step(`(c) carl, alone, loaded ${got.text.length} chars from the snapshot at seq ${got.snaps[0]} + ${tail} message(s) of tail (channel at seq ${got.seq}, history ${HISTORY})`);
  await carl.ctx.close();

  // ---- (d) a page offline for a while merges its edits on return ----
  const d4 = "yjs-d-" + rnd;
  const fay = await user(A, d4, "fay");
  const dan = await user(B, d4, "dan", { offline: true });
  await ed(fay).pressSequentially("shared line", { delay: 5 });
  await until(dan.page, () => window.demo.text() === "shared line", null, "dan has the line");
  await ed(dan).press("End");
  await until(fay.page, () => window.demo.cursors().includes("dan"), null, "fay sees dan's cursor");
  await dan.setNet(false);
  await until(dan.page, () => window.demo.sg.state !== "connected", null, "dan offline");
  // dan's connection is gone (presence leave): his cursor goes at once.
  await until(fay.page, () => !window.demo.cursors().includes("dan"), null, "dan's cursor gone at fay", 5000);
  await ed(dan).press("End");
  await ed(dan).pressSequentially(" +dan offline", { delay: 10 });
  await ed(fay).press("Home");
  await ed(fay).pressSequentially("fay online: ", { delay: 10 });
  await sleep(2000);
  assert.equal(await fay.text(), "fay online: shared line", "dan's offline edits did not reach fay while offline");
  assert.equal(await dan.text(), "shared line +dan offline", "fay's edits did not reach dan while offline");
  const back = Date.now();
  await dan.setNet(true);
  const merged = await waitSame([fay, dan], "after dan came back", 20000);
  assert.equal(merged, "fay online: shared line +dan offline", "both sides' edits merged");
  await until(fay.page, () => window.demo.cursors().includes("dan"), null, "dan's cursor back at fay");
  const how = await dan.page.evaluate(() => window.demo.events.filter((e) => e.type === "recovered" || e.type === "reset").map((e) => e.type).slice(-1)[0]);
  step(`(d) dan offline for 2 s typed on; back online (${how}), both pages show ${JSON.stringify(merged)} ${Date.now() - back} ms later; his cursor left fay's page with his connection and came back with it`);

  assert.deepEqual(errors, [], "page errors");
  step("ok");
} finally {
  await browser.close();
}
