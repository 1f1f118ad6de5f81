// Browser end-to-end test of the demo page and the JS client, in headless
// Chromium driven by playwright-core. Run by `go test ./web/` (browser_test.go),
// which starts two gateway nodes sharing a broker and passes:
//   NODE_A, NODE_B   http://127.0.0.1:PORT of each node
//   CONTROL          http://127.0.0.1:PORT: POST /stop?node=b, /start?node=b
//   CHROMIUM         the browser binary (Debian's chromium)
//   SCREENSHOT       where to write the two-user screenshot
// Prints "measured: ..." lines and exits non-zero on the first failure.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { routeYjs, yjsModules } from "./yjsroute.mjs";

const A = process.env.NODE_A, B = process.env.NODE_B, CONTROL = process.env.CONTROL;
const t0 = Date.now();
const step = (s) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);
const doc = "e2e-" + Math.random().toString(36).slice(2, 8);
const ch = "doc:" + doc;

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "syncgate-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1600, height: 660 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
// The demo page imports Yjs from a CDN: answer it from node_modules.
await routeYjs(browser, await yjsModules(A));
const errors = [];
async function control(what) {
  const r = await fetch(CONTROL + "/" + what, { method: "POST" });
  assert.equal(r.status, 200, what + ": " + (await r.text()));
}
const until = (frame, fn, arg, what, timeout = 10000) =>
  frame.waitForFunction(fn, arg, { timeout, polling: 20 }).catch((e) => {
    throw new Error("timed out waiting for " + what + ": " + e.message.split("\n")[0]);
  });

try {
  // ---- two users on two nodes, side by side in one window ----
  const stage = browser.pages()[0] || (await browser.newPage());
  stage.on("pageerror", (e) => errors.push("stage: " + e.message));
  await stage.setContent(`<!doctype html><style>
      body{margin:0;display:flex;gap:0;background:#d5d9e0}
      iframe{border:0;width:50%;height:100vh;background:#fff}
      iframe+iframe{border-left:2px solid #c2c8d2}
    </style>
    <iframe id="ann" src="${A}/?doc=${doc}&name=ann"></iframe>
    <iframe id="bob" src="${B}/?doc=${doc}&name=bob"></iframe>`);
  const frame = async (id) => {
    const h = await stage.waitForSelector("#" + id);
    const f = await h.contentFrame();
    await f.waitForLoadState();
    return f;
  };
  const ann = await frame("ann");
  await until(ann, () => window.demo && window.demo.synced(), null, "ann synced");
  const bob = await frame("bob");
  await until(bob, () => window.demo && window.demo.synced(), null, "bob synced");
  step("ann on node A and bob on node B are connected");
  // Every seq bob's client delivers on the channel, to check "no gap, no
  // duplicate" across the restart below (the text alone could not show a
  // duplicate: re-applying an edit changes nothing).
  await bob.evaluate((ch) => {
    window.seqs = [];
    window.demo.sg.on("msg", (m) => { if (m.ch === ch) window.seqs.push(m.seq); });
  }, ch);

  // Real keystrokes: each is an input event and a publish.
  await ann.locator("#doc").pressSequentially("Shopping list (ann)\n- milk", { delay: 5 });
  await until(bob, () => window.demo.text().includes("- milk"), null, "bob sees ann's text");
  await bob.locator("#doc").press("Control+End");
  await bob.locator("#doc").pressSequentially("\n- bread (bob)", { delay: 5 });
  await until(ann, () => window.demo.text().includes("- bread (bob)"), null, "ann sees bob's text");
  await until(bob, () => window.demo.text().includes("- bread (bob)") && window.demo.synced(), null, "bob steady");
  const textA = await ann.evaluate(() => window.demo.text());
  const textB = await bob.evaluate(() => window.demo.text());
  assert.equal(textB, textA, "both windows show the same document");
  assert.match(textA, /Shopping list \(ann\)\n- milk\n- bread \(bob\)/);
  step("edits cross nodes both ways: " + JSON.stringify(textA));

  for (const [name, f] of [["ann", ann], ["bob", bob]]) {
    await until(f, () => { const p = window.demo.presence(); return p.includes("ann") && p.includes("bob"); }, null, name + " sees both in presence");
  }
  step("presence: both windows list ann and bob");

  // Cross-node latency: ann publishes probes stamped with the wall clock
  // (both frames run on this machine), bob records their arrival.
  await bob.evaluate((ch) => {
    window.probeLat = [];
    window.demo.sg.on("msg", (m) => {
      if (m.ch === ch && m.data && m.data.t === "probe") window.probeLat.push(performance.timeOrigin + performance.now() - m.data.at);
    });
  }, ch);
  await ann.evaluate(async (ch) => {
    for (let i = 0; i < 30; i++) {
      await window.demo.sg.publish(ch, { t: "probe", at: performance.timeOrigin + performance.now() });
      await new Promise((r) => setTimeout(r, 20));
    }
  }, ch);
  await until(bob, () => window.probeLat.length === 30, null, "30 probes at bob");
  const lat = (await bob.evaluate(() => window.probeLat)).sort((x, y) => x - y);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2);
  console.log(`measured: publish (ann, node A) -> msg (bob, node B): p50 ${q(0.5)} ms, p95 ${q(0.95)} ms, max ${q(1)} ms over ${lat.length}`);
  const ping = await ann.evaluate(async () => { const r = []; for (let i = 0; i < 10; i++) r.push(await window.demo.sg.ping()); return r.sort((x, y) => x - y)[5]; });
  console.log(`measured: ping round trip (ann, node A): p50 ${ping.toFixed(2)} ms`);

  await ann.evaluate(() => window.demo.sg.ping());
  await bob.evaluate(() => window.demo.sg.ping());
  await stage.waitForTimeout(150);
  if (process.env.SCREENSHOT) {
    await stage.screenshot({ path: process.env.SCREENSHOT });
    step("screenshot: " + process.env.SCREENSHOT);
  }

  // ---- a raw EventSource on node B ----
  // GET /sse is part of the protocol (docs/protocol.md): a node that does
  // not answer it fails the test, it does not skip the SSE checks.
  const sseProbe = await fetch(A + "/sse?ch=probe:x&user=probe", { signal: AbortSignal.timeout(5000) })
    .then((r) => { const got = { status: r.status, type: r.headers.get("content-type") }; r.body?.cancel().catch(() => {}); return got; })
    .catch((e) => ({ error: String(e) }));
  assert.equal(sseProbe.status, 200, "GET /sse answers 200: " + JSON.stringify(sseProbe));
  assert.match(sseProbe.type || "", /^text\/event-stream/, "GET /sse is an event stream: " + JSON.stringify(sseProbe));
  let eve = null;
  {
    eve = await browser.newPage();
    eve.on("pageerror", (e) => errors.push("eve: " + e.message));
    await eve.goto(B + "/client.js"); // any page of node B's origin
    await eve.evaluate((ch) => {
      window.got = [];
      const es = new EventSource("/sse?ch=" + encodeURIComponent(ch) + "&user=eve");
      window.es = es;
      for (const ev of ["subscribed", "msg", "join", "leave", "disconnect"])
        es.addEventListener(ev, (e) => window.got.push({ event: ev, id: e.lastEventId, data: JSON.parse(e.data) }));
      es.onerror = () => window.got.push({ event: "error", state: es.readyState });
    }, ch);
    await until(eve, () => window.got.some((e) => e.event === "subscribed"), null, "EventSource subscribed");
    await ann.evaluate((ch) => window.demo.sg.publish(ch, { t: "note", text: "to eve" }), ch);
    await until(eve, () => window.got.some((e) => e.event === "msg" && e.data.data.text === "to eve"), null, "EventSource msg");
    const m = await eve.evaluate(() => window.got.find((e) => e.event === "msg" && e.data.data.text === "to eve"));
    assert.equal(m.id, m.data.seq + ":" + m.data.epoch, "msg id is <seq>:<epoch>");
    assert.equal(m.data.from, "ann");
    step("EventSource on node B: subscribed, msg with id " + m.id);
  }

  // ---- kill bob's node, edit meanwhile, bring it back: bob catches up ----
  await control("stop?node=b");
  await until(bob, () => window.demo.status() === "reconnecting", null, "bob reconnecting");
  step("node B stopped; bob is reconnecting");
  await ann.locator("#doc").press("Control+End");
  await ann.locator("#doc").pressSequentially("\n- eggs (while bob was away)", { delay: 5 });
  await until(ann, () => window.demo.text().includes("away)") && window.demo.sg.position(window.demo.ch).seq > 0, null, "ann typed");
  await stage.waitForTimeout(300);
  await control("start?node=b");
  await until(bob, () => window.demo.text().includes("- eggs (while bob was away)"), null, "bob caught up", 15000);
  const ev = await bob.evaluate(() => window.demo.events.map((e) => ({ type: e.type, missed: e.missed, code: e.code })));
  const rec = ev.filter((e) => e.type === "recovered");
  assert.ok(rec.length >= 1 && rec[rec.length - 1].missed > 0, "bob recovered the missed edits: " + JSON.stringify(ev));
  assert.ok(!ev.some((e) => e.type === "reset"), "no reset: " + JSON.stringify(ev));
  assert.ok(ev.some((e) => e.type === "disconnected" && e.code === "shutdown"), "bob was told the node shut down: " + JSON.stringify(ev));
  await until(bob, () => window.demo.status() === "recovered", null, "bob shows recovered");
  assert.equal(await bob.evaluate(() => window.demo.text()), await ann.evaluate(() => window.demo.text()), "same document after catch-up");
  const seqs = await bob.evaluate(() => window.seqs);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, "bob's seqs are contiguous: " + seqs.join(","));
  const lastA = await ann.evaluate(() => window.demo.sg.position(window.demo.ch).seq);
  await until(bob, (n) => window.demo.sg.position(window.demo.ch).seq >= n, lastA, "bob at ann's seq");
  step(`bob recovered ${rec[rec.length - 1].missed} missed message(s); seqs ${seqs[0]}..${seqs[seqs.length - 1]} contiguous, none twice; texts equal`);
  await until(ann, () => window.demo.presence().includes("bob"), null, "ann sees bob again");

  if (eve) {
    // The browser's EventSource reconnected with Last-Event-ID by itself.
    await until(eve, () => window.got.filter((e) => e.event === "subscribed").length >= 2, null, "EventSource resubscribed", 15000);
    const subs = await eve.evaluate(() => window.got.filter((e) => e.event === "subscribed").map((e) => e.data));
    const again = subs[subs.length - 1];
    assert.equal(again.recovered, true, "EventSource resumed from Last-Event-ID: " + JSON.stringify(again));
    assert.ok(again.pubs.length > 0, "the missed messages came in pubs");
    step("EventSource resumed after the restart: recovered, " + again.pubs.length + " missed message(s)");

    // ---- the JS client forced onto SSE + POST ----
    const cid = await browser.newPage();
    cid.on("pageerror", (e) => errors.push("cid: " + e.message));
    await cid.goto(`${A}/?doc=${doc}&name=cid&transport=sse`);
    await until(cid, () => window.demo && window.demo.synced() && window.demo.text().includes("away)"), null, "cid (SSE) has the document");
    await cid.locator("#doc").press("Control+End");
    await cid.locator("#doc").pressSequentially("\n- tea (cid, over SSE)", { delay: 5 });
    await until(bob, () => window.demo.text().includes("over SSE)"), null, "bob sees cid's SSE edit");
    await until(ann, () => window.demo.presence().includes("cid"), null, "ann sees cid");
    assert.equal(await cid.evaluate(() => window.demo.sg.transport), "sse");
    step("JS client on SSE + POST: reads the document, its edits reach node B");
  }
  if (process.env.NODE_C) await authChecks();
  if (process.env.NODE_D) await cookieChecks();
  await frameChecks();
  assert.deepEqual(errors, [], "page errors");
  step("ok");
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}

// authChecks runs against node C (auth on, HS256 secret in AUTH_SECRET):
// the client renews a short-lived token with `refresh` and keeps its
// connection; a client whose WebSocket URL never opens falls back to SSE +
// POST with its token.
async function authChecks() {
  const C = process.env.NODE_C;
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push("auth page: " + e.message));
  await page.goto(C + "/client.js");
  const r = await page.evaluate(async ({ secret, badWS }) => {
    const { SyncGate } = await import("/client.js");
    const b64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    const enc = new TextEncoder();
    const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    let issued = 0;
    const getToken = async () => {
      issued++;
      const head = b64(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
      const body = b64(enc.encode(JSON.stringify({ sub: "tess", exp: Math.floor(Date.now() / 1000) + 3, channels: { sub: ["doc:*"], pub: ["doc:*"] } })));
      return head + "." + body + "." + b64(await crypto.subtle.sign("HMAC", key, enc.encode(head + "." + body)));
    };
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const ws = new SyncGate({ getToken, minBackoff: 50 });
    const got = [];
    ws.on("msg", (m) => got.push(m.data));
    await ws.subscribe("doc:auth");
    const client0 = ws.clientId;
    // Falls back: its WebSocket URL answers HTTP 400 to every upgrade.
    const sse = new SyncGate({ url: badWS, httpBase: location.origin, getToken, minBackoff: 50, maxBackoff: 200 });
    const gotSSE = [];
    sse.on("msg", (m) => gotSSE.push(m.data));
    await sse.subscribe("doc:auth");
    await sleep(4000); // past the first tokens' exp
    await ws.publish("doc:auth", "from ws");
    await sse.publish("doc:auth", "from sse");
    for (let i = 0; i < 100 && (got.length < 2 || gotSSE.length < 2); i++) await sleep(20);
    const out = { issued, sameClient: ws.clientId === client0, user: ws.user, got, gotSSE, transport: sse.transport, wsState: ws.state };
    ws.close();
    sse.close();
    return out;
  }, { secret: process.env.AUTH_SECRET, badWS: CONTROL.replace(/^http/, "ws") + "/ws" });
  assert.equal(r.user, "tess");
  assert.ok(r.sameClient && r.wsState === "connected", "token refreshed on the same connection: " + JSON.stringify(r));
  assert.ok(r.issued >= 3, "tokens issued: " + r.issued);
  assert.equal(r.transport, "sse", "fell back to SSE");
  assert.deepEqual(r.got.sort(), ["from sse", "from ws"]);
  assert.deepEqual(r.gotSSE.sort(), ["from sse", "from ws"]);
  step(`auth on: token (3 s) refreshed on the same connection (${r.issued} tokens issued); a client whose WebSocket never opens fell back to SSE + POST with its token`);
  await page.close();
}

// cookieChecks runs against node D: no JWT anywhere; node D's connect proxy
// (the Go test's backend) maps the "session" cookie to a user and its
// channels. A page of node D's origin sets the cookie and connects with a
// plain SyncGate client. Then a page of another origin on the same host
// (the browser attaches the same cookie: cookies ignore the port) opens a
// WebSocket to node D: cross-site WebSocket hijacking, which node D must
// refuse.
async function cookieChecks() {
  const D = process.env.NODE_D;
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push("cookie page: " + e.message));
  await page.goto(D + "/client.js");
  const r = await page.evaluate(async () => {
    document.cookie = "session=sid-carol; path=/";
    const { SyncGate } = await import("/client.js");
    const sg = new SyncGate({ minBackoff: 50 });
    const got = [];
    sg.on("msg", (m) => got.push(m.data));
    await sg.subscribe("doc:cookie");
    await sg.publish("doc:cookie", { from: "cookie session" });
    for (let i = 0; i < 100 && got.length < 1; i++) await new Promise((r) => setTimeout(r, 20));
    let denied = null;
    await sg.subscribe("chat:cookie").catch((e) => (denied = e.code || String(e)));
    const out = { user: sg.user, state: sg.state, got, denied };
    sg.close();
    return out;
  });
  assert.equal(r.user, "carol", "connected as the backend's user: " + JSON.stringify(r));
  assert.deepEqual(r.got, [{ from: "cookie session" }]);
  assert.equal(r.denied, "forbidden", "channels outside the backend's permissions: " + JSON.stringify(r));
  step("cookie session: connected through the connect proxy as " + r.user + " with no JWT; subscribe/publish within the backend's permissions, others forbidden");
  await page.close();

  const evil = await browser.newPage();
  evil.on("pageerror", (e) => errors.push("evil page: " + e.message));
  await evil.goto(CONTROL + "/evil");
  const h = await evil.evaluate(async (wsURL) => {
    const out = { cookieVisible: document.cookie.includes("session=sid-carol") };
    out.result = await new Promise((resolve) => {
      const ws = new WebSocket(wsURL);
      ws.onopen = () => { resolve("open"); ws.close(); };
      ws.onerror = () => resolve("refused");
      setTimeout(() => resolve("timeout"), 5000);
    });
    return out;
  }, D.replace(/^http/, "ws") + "/ws");
  assert.ok(h.cookieVisible, "the other origin's page shares the victim's cookie jar: " + JSON.stringify(h));
  assert.equal(h.result, "refused", "a WebSocket from another origin carrying the session cookie: " + JSON.stringify(h));
  step("cookie session: a page of another origin (same host, same cookie) cannot open a WebSocket to the node");
  await evil.close();
}

// frameChecks points the client at a scripted server (the test's /fake/ws)
// that sends the subscribed reply and five messages in one frame, seq 2
// twice and seq 4 missing, pings every second, and answers the first ping
// with disconnect reconnect:false.
async function frameChecks() {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push("frames page: " + e.message));
  await page.goto(A + "/client.js");
  const seen = await page.evaluate(async (url) => {
    const { SyncGate } = await import("/client.js");
    const sg = new SyncGate({ url, user: "x", minBackoff: 50 });
    const seen = [];
    sg.on("msg", (m) => seen.push("msg " + m.seq));
    sg.on("gap", (g) => seen.push("gap " + g.from + "-" + g.to));
    sg.on("disconnected", (d) => seen.push("disconnected " + d.code + " reconnect=" + d.reconnect));
    await sg.subscribe("doc:f");
    for (let i = 0; i < 150 && sg.state !== "closed"; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 400)); // no reconnect may follow
    seen.push("state " + sg.state);
    return seen;
  }, CONTROL.replace(/^http/, "ws") + "/fake/ws");
  assert.deepEqual(seen, ["msg 1", "msg 2", "msg 3", "gap 4-4", "msg 5", "disconnected bad_request reconnect=false", "state closed"]);
  const stats = await (await fetch(CONTROL + "/fake/stats")).json();
  assert.deepEqual(stats, { conns: 1, pings: 1 }, "pinged at connected.ping, never reconnected");
  step("frames: five objects in one frame read, duplicate seq dropped, gap reported, pinged after 1 s, disconnect reconnect:false respected");
  await page.close();
}
