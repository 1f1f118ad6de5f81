// syncgate browser client: an ES module with no dependencies and no build
// step. Served by every syncgate node at /client.js.
//
//   import { SyncGate } from "/client.js";
//   const sg = new SyncGate({ user: "ann" });          // or { token } / { getToken }
//   sg.on("msg", (m) => console.log(m.ch, m.seq, m.from, m.data));
//   await sg.subscribe("doc:123");
//   await sg.publish("doc:123", { text: "hello" });    // resolves with the ack
//
// The client reconnects by itself (jittered exponential backoff), resubscribes
// every channel with `since` = the last seq/epoch it saw, applies the missed
// messages, drops duplicates by seq, pings at the interval the server asks
// for, renews its token before it expires, and falls back to Server-Sent
// Events + HTTP POST when WebSockets cannot be opened. See docs/clients.md.

const DEFAULTS = {
  url: "", // ws(s)://host/ws; default: the page's own host
  httpBase: "", // http(s)://host for /sse and /pub; default: derived from url
  token: "", // JWT, when the server has auth on
  getToken: null, // async () => JWT: called to connect, to refresh before exp and after token_expired
  user: "", // user name, when auth is off
  transport: "auto", // "auto" | "websocket" | "sse"
  sseAfter: 3, // auto: WebSocket attempts that never open before SSE is tried
  minBackoff: 250, // ms: first reconnect delay (jittered)
  maxBackoff: 10000, // ms: cap on the reconnect delay
  timeout: 10000, // ms: a command without a reply by then fails
  refreshMargin: 30, // s: refresh the token this long before exp (at most a fifth of its lifetime)
};

/** Error of a failed command: code is the server's error code, or
 *  "timeout", "connection_lost", "closed", "http_<status>". */
// Provisional positions (docs/protocol.md): a node's own publishes during a
// broker outage, in an epoch starting with "~". A channel record keeps the
// last seq applied in each of the few latest provisional epochs.
function isProvisional(epoch) {
  return typeof epoch === "string" && epoch.startsWith("~");
}

function hasProv(rec, seq, epoch) {
  const p = (rec.prov || []).find((q) => q.epoch === epoch);
  return !!p && seq <= p.seq;
}

function noteProv(rec, seq, epoch) {
  rec.prov = rec.prov || [];
  const p = rec.prov.find((q) => q.epoch === epoch);
  if (p) p.seq = Math.max(p.seq, seq);
  else {
    rec.prov.push({ seq, epoch });
    if (rec.prov.length > 16) rec.prov.shift();
  }
}

// Binary data (docs/protocol.md "Binary data"): publish/snapshot with a
// Uint8Array send a binary WebSocket message (a JSON header line, then the
// bytes); the server sends binary publications to us (we ask with
// `binary: true` on connect) the same way, and as base64 under "bin" in
// JSON (catch-up, SSE). Either way msg and snapshot events carry the bytes
// as a Uint8Array in `data`.
function isBytes(d) {
  return d instanceof Uint8Array;
}

function toB64(u8) {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromB64(s) {
  const b = atob(s);
  const u8 = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) u8[i] = b.charCodeAt(i);
  return u8;
}

// wire encodes a command: JSON text, or, when its data is bytes, a binary
// message: the command without data as one JSON line, then the bytes.
function wire(cmd) {
  if (!isBytes(cmd.data)) return JSON.stringify(cmd);
  const { data, ...head } = cmd;
  const h = new TextEncoder().encode(JSON.stringify(head) + "\n");
  const out = new Uint8Array(h.length + data.length);
  out.set(h, 0);
  out.set(data, h.length);
  return out;
}

// wireSize is the size in bytes of the message wire(cmd) sends.
function wireSize(cmd) {
  const w = wire(cmd);
  return typeof w === "string" ? new TextEncoder().encode(w).length : w.length;
}

// parseBinary parses a binary server message: the header object (a msg
// or snapshot without data) and the bytes after its line; null when it is
// not that.
function parseBinary(buf) {
  const u8 = new Uint8Array(buf);
  const nl = u8.indexOf(10);
  if (nl < 0) return null;
  let head;
  try {
    head = new TextDecoder("utf-8", { fatal: true }).decode(u8.subarray(0, nl));
  } catch {
    return null;
  }
  const m = parseObject(head);
  if (!m || "data" in m || "bin" in m) return null;
  m.data = u8.slice(nl + 1);
  return m;
}

// unBin turns a JSON message's "bin" (base64) into bytes in `data`; false
// when it is not base64.
function unBin(m) {
  if (typeof m.bin !== "string") return true;
  try {
    m.data = fromB64(m.bin);
  } catch {
    return false;
  }
  delete m.bin;
  return true;
}

// parseObject parses one server message: a JSON object, or null.
function parseObject(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  return m !== null && typeof m === "object" && !Array.isArray(m) ? m : null;
}

export class SyncGateError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "SyncGateError";
    this.code = code;
  }
}

export class SyncGate {
  constructor(options = {}) {
    this.opts = { ...DEFAULTS, ...options };
    if (!this.opts.url) {
      const l = globalThis.location;
      this.opts.url = (l && l.protocol === "https:" ? "wss://" : "ws://") + (l ? l.host : "localhost:8080") + "/ws";
    }
    this.httpBase = (this.opts.httpBase || this.opts.url.replace(/^ws/, "http").replace(/\/ws\/?(\?.*)?$/, "")).replace(/\/$/, "");
    this.state = "idle"; // idle | connecting | connected | reconnecting | closed
    this.transport = null; // "websocket" | "sse" while connected
    this.user = null;
    this.clientId = null;
    this.rtt = null; // ms, last ping round trip
    this.channels = new Map(); // ch -> {seq, epoch, since, live, waiters: [{resolve, reject}]}
    this.handlers = new Map();
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.outbox = []; // commands waiting for a connection
    this.nextId = 1;
    this.attempt = 0;
    this.wsFails = 0;
    this.lastTransport = null;
    this.sock = null;
    this.sse = null;
    this.timers = {};
    this.token = this.opts.token;
    this.tokenExp = 0;
    this.started = false;
    // Back online: retry now instead of waiting out the backoff.
    this.onOnline = () => {
      if (this.state !== "reconnecting") return;
      clearTimeout(this.timers.reconnect);
      this.open();
    };
    if (typeof globalThis.addEventListener === "function") globalThis.addEventListener("online", this.onOnline);
  }

  // ---- events ----

  /** on(name, fn) registers a handler and returns a function that removes it.
   *  Events: state, connected, disconnected, reconnecting, subscribed, msg,
   *  join, leave, recovered, reset, gap, latency, error. */
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name).delete(fn);
  }

  emit(name, ev) {
    for (const fn of this.handlers.get(name) || []) {
      try {
        fn(ev);
      } catch (e) {
        console.error("syncgate: " + name + " handler threw", e);
      }
    }
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit("state", s);
  }

  // ---- public API ----

  /** connect opens the connection (subscribe/publish call it too). The
   *  promise resolves on the first `connected`. */
  connect() {
    if (this.state === "closed") return Promise.reject(new SyncGateError("closed", "client is closed"));
    if (!this.started) {
      this.started = true;
      this.firstConnect = new Promise((resolve, reject) => {
        this.firstResolve = resolve;
        this.firstReject = reject;
      });
      this.firstConnect.catch(() => {});
      this.open();
    }
    return this.firstConnect;
  }

  /** subscribe(ch, {since: {seq, epoch}}) resolves with the `subscribed`
   *  reply. Messages arrive as `msg` events. */
  subscribe(ch, { since, snapshot } = {}) {
    let rec = this.channels.get(ch);
    if (rec && rec.live) return Promise.resolve(rec.reply);
    if (!rec) {
      rec = { seq: 0, epoch: "", known: false, since: since || null, live: false, waiters: [], reply: null, snapshot: !!snapshot };
      if (since) {
        rec.seq = since.seq;
        rec.epoch = since.epoch || "";
        if (isProvisional(rec.epoch)) noteProv(rec, rec.seq, rec.epoch);
        else rec.real = { seq: rec.seq, epoch: rec.epoch };
        rec.known = true;
      }
      this.channels.set(ch, rec);
    }
    const p = new Promise((resolve, reject) => rec.waiters.push({ resolve, reject }));
    this.connect().catch(() => {});
    if (this.state === "connected") this.sendSub(ch, rec);
    return p;
  }

  /** unsubscribe(ch) stops the channel's messages and presence. */
  async unsubscribe(ch) {
    const rec = this.channels.get(ch);
    if (!rec) return;
    this.channels.delete(ch);
    for (const w of rec.waiters) w.reject(new SyncGateError("unsubscribed", "unsubscribed from " + ch));
    if (this.state !== "connected") return;
    if (this.transport === "sse") return this.restartSSE();
    await this.request({ op: "unsub", ch });
  }

  /** publish(ch, data) resolves with the ack {ch, seq}. data is any JSON
   *  value, or a Uint8Array: bytes, sent as a binary message (subscribers
   *  get a Uint8Array). A publish made while
   *  disconnected waits for the connection; one in flight when the
   *  connection drops fails with code "connection_lost" (it may or may not
   *  have been published). */
  async publish(ch, data) {
    this.connect().catch(() => {});
    if (this.transport === "sse" && this.state === "connected") return this.httpPublish(ch, data);
    return this.request({ op: "pub", ch, data });
  }

  /** snapshot(ch, seq, epoch, data) stores data (a JSON value, or a
   *  Uint8Array of bytes) as ch's snapshot covering
   *  every message up to seq (extension, docs/protocol.md); resolves with
   *  the `snapped` reply {stored, seq, epoch}. */
  async snapshot(ch, seq, epoch, data) {
    this.connect().catch(() => {});
    return this.request({ op: "snap", ch, at: { seq, epoch }, data });
  }

  /** presence(ch) resolves with [{user, client}, ...]. */
  async presence(ch) {
    this.connect().catch(() => {});
    if (this.transport === "sse" && this.state === "connected") {
      const r = await this.http("GET", "/presence?ch=" + encodeURIComponent(ch));
      return r.users || [];
    }
    const r = await this.request({ op: "presence", ch });
    return r.users || [];
  }

  /** ping() resolves with the round trip in ms (WebSocket), or with the
   *  round trip of an HTTP request to /healthz on SSE. */
  async ping() {
    const t0 = performance.now();
    if (this.transport === "sse") await this.http("GET", "/healthz");
    else await this.request({ op: "ping" });
    this.rtt = performance.now() - t0;
    this.emit("latency", { rtt: this.rtt });
    return this.rtt;
  }

  /** position(ch) is the last {seq, epoch} seen on ch. */
  position(ch) {
    const rec = this.channels.get(ch);
    return rec ? { seq: rec.seq, epoch: rec.epoch } : null;
  }

  /** reconnect() drops the current connection and connects again now
   *  (catching up as after any drop). */
  reconnect() {
    if (this.state === "closed") return;
    this.attempt = 0;
    this.teardown({ code: "client", reason: "reconnect requested", reconnect: true }, 0);
  }

  /** close() closes the connection for good; pending commands fail. */
  close() {
    if (this.state === "closed") return;
    if (typeof globalThis.removeEventListener === "function") globalThis.removeEventListener("online", this.onOnline);
    this.teardown({ code: "closed", reason: "closed by the client", reconnect: false });
    this.setState("closed");
    for (const rec of this.channels.values())
      for (const w of rec.waiters) w.reject(new SyncGateError("closed", "client is closed"));
    for (const c of this.outbox) c.reject(new SyncGateError("closed", "client is closed"));
    this.outbox = [];
    if (this.firstReject) this.firstReject(new SyncGateError("closed", "client is closed"));
  }

  // ---- connection lifecycle ----

  nextTransport() {
    const t = this.opts.transport;
    if (t === "websocket" || t === "sse") return t;
    if (typeof WebSocket === "undefined") return "sse";
    if (this.wsFails >= this.opts.sseAfter && this.lastTransport === "websocket") return "sse";
    return "websocket";
  }

  async open() {
    if (this.state === "closed") return;
    if (this.state !== "connected") this.setState(this.everConnected ? "reconnecting" : "connecting");
    if (!this.token && this.opts.getToken) {
      try {
        await this.fetchToken();
      } catch (e) {
        return this.teardown({ code: "token", reason: "getToken failed: " + e, reconnect: true });
      }
    }
    const transport = this.nextTransport();
    this.lastTransport = transport;
    const gen = (this.gen = (this.gen || 0) + 1);
    // An attempt still in flight (open() called early by "online") is dropped.
    if (this.sock) {
      try {
        this.sock.close();
      } catch {}
      this.sock = null;
    }
    if (this.sse) {
      this.sse.abort();
      this.sse = null;
    }
    if (transport === "sse") return this.openSSE(gen);
    let ws;
    try {
      ws = new WebSocket(this.opts.url);
    } catch (e) {
      this.wsFails++;
      return this.teardown({ code: "transport", reason: String(e), reconnect: true });
    }
    this.sock = ws;
    let opened = false;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      opened = true;
      // binary: binary publications come as bytes, not base64.
      const c = { op: "connect", id: this.nextId++, binary: true };
      if (this.token) c.token = this.token;
      else if (this.opts.user) c.user = this.opts.user;
      this.pending.set(c.id, { resolve: (r) => this.onConnected(r, "websocket"), reject: (e) => this.onConnectFailed(e), timer: null });
      ws.send(JSON.stringify(c));
    };
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => {
      if (gen !== this.gen) return;
      if (e.data instanceof ArrayBuffer) {
        this.lastRecv = Date.now();
        const m = parseBinary(e.data);
        if (!m) return this.protocolError("a binary message is not a JSON header line and bytes");
        return this.handle(m);
      }
      if (typeof e.data !== "string") return;
      this.lastRecv = Date.now();
      // One JSON object per line. A line that is not one is a protocol
      // error: nothing of the frame is trusted, the connection is dropped.
      const msgs = [];
      for (const line of e.data.split("\n")) {
        if (!line.trim()) continue;
        const m = parseObject(line);
        if (!m) return this.protocolError("a line of a frame is not a JSON object: " + line.slice(0, 64));
        msgs.push(m);
      }
      for (const m of msgs) {
        if (gen !== this.gen) return;
        this.handle(m);
      }
    };
    ws.onclose = (e) => {
      if (gen !== this.gen) return;
      if (!opened) this.wsFails++;
      const d = this.lastDisconnect || { code: opened ? "closed" : "transport", reason: e.reason || "connection closed (" + e.code + ")", reconnect: true };
      this.teardown(d);
    };
    ws.onerror = () => {};
  }

  onConnectFailed(err) {
    // unauthorized / forbidden on connect: a fresh token may help once.
    if (this.opts.getToken && !this.retriedToken) {
      this.retriedToken = true;
      this.token = "";
      return this.teardown({ code: err.code, reason: err.message, reconnect: true }, 0);
    }
    this.teardown({ code: err.code, reason: err.message, reconnect: false });
  }

  onConnected(r, transport) {
    this.retriedToken = false;
    this.everConnected = true;
    this.transport = transport;
    if (transport === "websocket") this.wsFails = 0;
    this.user = r.user;
    this.clientId = r.client;
    this.lastDisconnect = null;
    this.setState("connected");
    clearTimeout(this.timers.stable);
    this.timers.stable = setTimeout(() => (this.attempt = 0), 5000);
    if (r.exp) this.scheduleRefresh(r.exp);
    this.emit("connected", { client: r.client, user: r.user, ping: r.ping, transport });
    if (this.firstResolve) {
      this.firstResolve(r);
      this.firstResolve = null;
    }
    if (transport === "websocket") {
      // Resubscribe, then flush queued commands, in one batched frame.
      const lines = [];
      for (const [ch, rec] of this.channels) lines.push(JSON.stringify(this.subCmd(ch, rec)));
      for (const c of this.outbox) {
        this.pending.set(c.cmd.id, c);
        this.armTimeout(c);
        const w = wire(c.cmd);
        if (typeof w === "string") {
          lines.push(w);
          continue;
        }
        // Bytes go in a message of their own, in order.
        if (lines.length) this.sock.send(lines.join("\n"));
        lines.length = 0;
        this.sock.send(w);
      }
      this.outbox = [];
      if (lines.length) this.sock.send(lines.join("\n"));
      this.startPing(r.ping || 25);
    } else {
      // SSE: queued publishes go over HTTP.
      const q = this.outbox;
      this.outbox = [];
      for (const c of q) {
        const cmd = c.cmd;
        const p = cmd.op === "pub" ? this.httpPublish(cmd.ch, cmd.data) : cmd.op === "presence" ? this.presence(cmd.ch).then((users) => ({ users })) : this.ping();
        p.then(c.resolve, c.reject);
      }
    }
  }

  subCmd(ch, rec) {
    const cmd = { op: "sub", id: this.nextId++, ch };
    if (rec.known) {
      cmd.since = { seq: rec.seq, epoch: rec.epoch };
      // Take a large catch-up in pages paced by our reading (docs/protocol.md).
      cmd.stream = true;
    }
    // A subscriber that asked for snapshots gets the channel's snapshot
    // (a `snapshot` event) and the messages after it when history cannot
    // serve it (docs/protocol.md).
    if (rec.snapshot) cmd.snapshot = true;
    rec.sentSince = rec.known;
    this.pending.set(cmd.id, {
      resolve: (r) => this.onSubscribed(ch, r),
      reject: (e) => {
        if (this.channels.get(ch) !== rec) return;
        this.channels.delete(ch);
        for (const w of rec.waiters) w.reject(e);
      },
      timer: null,
    });
    return cmd;
  }

  sendSub(ch, rec) {
    if (this.transport === "sse") return this.restartSSE();
    this.sock.send(JSON.stringify(this.subCmd(ch, rec)));
  }

  onSubscribed(ch, r) {
    const rec = this.channels.get(ch);
    if (!rec) return;
    const hadSince = rec.sentSince;
    rec.catching = null;
    if (hadSince && r.recovered && r.more) {
      // Streamed catch-up: the rest of the missed messages follow as msg
      // frames, then caught_up (handle).
      let missed = 0;
      for (const m of r.pubs || []) if (this.deliver(m, rec)) missed++;
      rec.live = true;
      rec.catching = { missed };
    } else if (hadSince && r.recovered) {
      let missed = 0;
      for (const m of r.pubs || []) if (this.deliver(m, rec)) missed++;
      rec.live = true;
      rec.seq = r.seq || 0;
      rec.epoch = r.epoch || "";
      rec.real = { seq: rec.seq, epoch: rec.epoch };
      this.emit("recovered", { ch, missed, seq: rec.seq, epoch: rec.epoch });
    } else {
      rec.seq = r.seq || 0;
      rec.epoch = r.epoch || "";
      rec.real = { seq: rec.seq, epoch: rec.epoch };
      rec.live = true;
      if (hadSince) this.emit("reset", { ch, seq: rec.seq, epoch: rec.epoch });
    }
    rec.known = true;
    rec.reply = r;
    this.emit("subscribed", { ch, seq: r.seq, epoch: r.epoch, recovered: r.recovered });
    const ws = rec.waiters;
    rec.waiters = [];
    for (const w of ws) w.resolve(r);
  }

  // deliver applies one msg to its channel: drops duplicates by seq, notes
  // gaps, and emits it. Returns whether it was new. Real and provisional
  // positions (a broker outage, see docs/protocol.md) are deduplicated
  // apart, and a real msg whose `was` is a provisional position already
  // applied only moves the position.
  deliver(m, rec) {
    if (!rec) return false;
    if (!unBin(m)) {
      this.protocolError("a msg's bin is not base64");
      return false;
    }
    const seq = m.seq || 0;
    const epoch = m.epoch || "";
    if (seq && isProvisional(epoch)) {
      if (hasProv(rec, seq, epoch)) return false; // duplicate
      noteProv(rec, seq, epoch);
    } else {
      const real = rec.real || { seq: 0, epoch: "" };
      if (seq && epoch === real.epoch && seq <= real.seq) return false; // duplicate
      if (m.was && hasProv(rec, m.was.seq, m.was.epoch)) {
        rec.real = { seq, epoch };
        rec.seq = seq;
        rec.epoch = epoch;
        rec.known = true;
        return false;
      }
      if (seq && epoch && epoch === real.epoch && seq > real.seq + 1) {
        this.emit("gap", { ch: m.ch, from: real.seq + 1, to: seq - 1 });
      }
      if (seq) rec.real = { seq, epoch };
    }
    if (seq) {
      rec.seq = seq;
      rec.epoch = epoch;
      rec.known = true;
    }
    this.emit("msg", m);
    return true;
  }

  handle(m) {
    if (m.id && this.pending.has(m.id)) {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.op === "error") p.reject(new SyncGateError(m.code, m.message));
      else p.resolve(m);
      return;
    }
    switch (m.op) {
      case "msg": {
        const rec = this.channels.get(m.ch);
        if (rec && rec.live && this.deliver(m, rec) && rec.catching) rec.catching.missed++;
        return;
      }
      case "caught_up": {
        // End of a streamed catch-up: recovered, or reset when the server
        // could not finish it from history (live msgs follow from m.seq).
        const rec = this.channels.get(m.ch);
        if (!rec || !rec.catching) return;
        const missed = rec.catching.missed;
        rec.catching = null;
        if (m.recovered) {
          this.emit("recovered", { ch: m.ch, missed, seq: rec.seq, epoch: rec.epoch });
        } else {
          rec.seq = m.seq || 0;
          rec.epoch = m.epoch || "";
          rec.real = { seq: rec.seq, epoch: rec.epoch };
          rec.known = true;
          this.emit("reset", { ch: m.ch, seq: rec.seq, epoch: rec.epoch });
        }
        return;
      }
      case "snapshot": {
        // The catch-up continues from the snapshot's position: the msgs
        // after it follow in `subscribed` (or streamed).
        const rec = this.channels.get(m.ch);
        if (!rec) return;
        if (!unBin(m)) return this.protocolError("a snapshot's bin is not base64");
        rec.seq = m.seq || 0;
        rec.epoch = m.epoch || "";
        rec.real = { seq: rec.seq, epoch: rec.epoch };
        rec.known = true;
        rec.sentSince = true;
        this.emit("snapshot", m);
        return;
      }
      case "join":
      case "leave":
        if (this.channels.has(m.ch)) this.emit(m.op, m);
        return;
      case "unsubscribed": {
        // No id: the server ended the subscription (the application's
        // server API); it is not resubscribed on reconnect.
        const rec = this.channels.get(m.ch);
        if (!rec) return;
        this.channels.delete(m.ch);
        for (const w of rec.waiters) w.reject(new SyncGateError("unsubscribed", "unsubscribed from " + m.ch + " by the server"));
        this.emit("unsubscribed", { ch: m.ch, byServer: true });
        return;
      }
      case "disconnect":
        this.lastDisconnect = m;
        return;
      case "error":
        if (!m.id && m.code === "too_large" && this.failTooLarge(m)) return;
        this.emit("error", m);
        return;
    }
  }

  // failTooLarge answers the node's too_large error for a message it
  // discarded unread (over client.max_message_size, docs/protocol.md): it
  // has no id, so the commands in flight whose message is over the limit
  // the error names fail with it instead of timing out (a publish that
  // timed out would be sent again, and refused again, forever). Several
  // such commands each get an error: the ones after the first are
  // absorbed. Reports whether the error was accounted for.
  failTooLarge(m) {
    const limit = Number((/\((\d+) bytes\)/.exec(m.message || "") || [])[1]);
    if (!limit) return false;
    let n = 0;
    for (const [id, p] of this.pending) {
      if (!p.cmd || wireSize(p.cmd) <= limit) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new SyncGateError("too_large", m.message));
      n++;
    }
    if (n) {
      this.tooLargeAhead = (this.tooLargeAhead || 0) + n - 1;
      return true;
    }
    if (this.tooLargeAhead > 0) {
      this.tooLargeAhead--;
      return true;
    }
    return false;
  }

  // protocolError drops a connection whose server sent something that is
  // not the protocol (an unparsable line): an "error" event, then the
  // usual reconnect with catch-up.
  protocolError(reason) {
    this.emit("error", { code: "protocol", message: reason });
    this.teardown({ code: "protocol", reason, reconnect: true });
  }

  // request sends a command and resolves with its reply; while disconnected
  // the command waits in the outbox.
  request(cmd) {
    if (this.state === "closed") return Promise.reject(new SyncGateError("closed", "client is closed"));
    cmd.id = this.nextId++;
    return new Promise((resolve, reject) => {
      const c = { cmd, resolve, reject, timer: null };
      if (this.state === "connected" && this.transport === "websocket") {
        this.pending.set(cmd.id, c);
        this.armTimeout(c);
        this.sock.send(wire(cmd));
      } else {
        this.outbox.push(c);
      }
    });
  }

  armTimeout(c) {
    c.timer = setTimeout(() => {
      if (this.pending.get(c.cmd.id) !== c) return;
      this.pending.delete(c.cmd.id);
      c.reject(new SyncGateError("timeout", c.cmd.op + ": no reply within " + this.opts.timeout + " ms"));
    }, this.opts.timeout);
  }

  startPing(seconds) {
    clearInterval(this.timers.ping);
    let waiting = false;
    this.timers.ping = setInterval(() => {
      if (waiting) {
        // No pong for a whole interval: the connection is dead.
        return this.teardown({ code: "timeout", reason: "no pong from the server", reconnect: true });
      }
      waiting = true;
      this.ping().then(
        () => (waiting = false),
        () => {},
      );
    }, seconds * 1000);
    // One early ping gives a latency reading right away.
    this.ping().catch(() => {});
  }

  // teardown closes the current transport, fails in-flight commands and
  // schedules a reconnect when d.reconnect.
  teardown(d, delay) {
    this.gen = (this.gen || 0) + 1;
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.refresh);
    clearTimeout(this.timers.stable);
    clearTimeout(this.timers.sseIdle);
    const wasConnected = this.state === "connected";
    if (this.sock) {
      try {
        this.sock.close(1000);
      } catch {}
      this.sock = null;
    }
    if (this.sse) {
      this.sse.abort();
      this.sse = null;
    }
    const quiet = d.code === "resubscribe"; // SSE reopening with a new channel set
    // A quiet reopen stays on SSE: a subscribe, unsubscribe or publish
    // meanwhile goes the SSE way (another reopen, HTTP), never to a socket.
    if (!quiet) this.transport = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      // Subscriptions are redone on reconnect; everything else fails.
      if (p.cmd) p.reject(new SyncGateError("connection_lost", "connection lost before the reply"));
      this.pending.delete(id);
    }
    for (const rec of this.channels.values()) rec.live = false;
    this.lastDisconnect = null;
    this.tooLargeAhead = 0;
    if ((wasConnected && !quiet) || !d.reconnect) this.emit("disconnected", { code: d.code, reason: d.reason, reconnect: !!d.reconnect });
    if (this.state === "closed") return;
    if (!d.reconnect) {
      this.setState("closed");
      for (const rec of this.channels.values()) for (const w of rec.waiters) w.reject(new SyncGateError(d.code, d.reason));
      for (const c of this.outbox) c.reject(new SyncGateError(d.code, d.reason));
      this.outbox = [];
      if (this.firstReject) this.firstReject(new SyncGateError(d.code, d.reason));
      return;
    }
    if (d.code === "token_expired") this.token = "";
    if (delay === undefined) delay = this.backoff();
    if (!quiet) {
      this.setState("reconnecting");
      this.attempt++;
      this.emit("reconnecting", { attempt: this.attempt, delay, transport: this.nextTransport() });
    }
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.open(), delay);
  }

  // backoff is the delay before the next attempt: exponential in the
  // attempt number, capped, with "equal jitter" (half fixed, half random)
  // so a node's clients don't all come back in the same millisecond.
  backoff() {
    const base = Math.min(this.opts.maxBackoff, this.opts.minBackoff * 2 ** Math.min(this.attempt, 20));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  // ---- auth ----

  async fetchToken() {
    this.token = await this.opts.getToken();
    return this.token;
  }

  scheduleRefresh(exp) {
    clearTimeout(this.timers.refresh);
    this.tokenExp = exp;
    if (!this.opts.getToken) return;
    const left = exp * 1000 - Date.now();
    const margin = Math.min(this.opts.refreshMargin * 1000, left / 5);
    this.timers.refresh = setTimeout(() => this.refresh(), Math.max(0, left - margin));
  }

  async refresh() {
    const gen = this.gen;
    let token;
    try {
      token = await this.fetchToken();
    } catch (e) {
      this.emit("error", { code: "token", message: "getToken failed: " + e });
      return;
    }
    if (gen !== this.gen || this.state !== "connected") return;
    if (this.transport === "sse") return this.restartSSE(); // the new token goes in the new stream's URL
    try {
      const r = await this.request({ op: "refresh", token });
      if (r.exp) this.scheduleRefresh(r.exp);
    } catch (e) {
      this.emit("error", { code: e.code, message: "refresh failed: " + e.message });
    }
  }

  // ---- SSE + HTTP POST fallback ----

  // openSSE reads /sse with fetch (so it can send Last-Event-ID holding
  // every channel's position, as a browser's EventSource does on its own
  // reconnects). The stream connects as soon as the response starts.
  async openSSE(gen) {
    const q = new URLSearchParams();
    const chans = [...this.channels.keys()];
    if (!chans.length) {
      // Nothing to stream yet: the stream opens with the first subscribe.
      return this.onConnected({ user: this.opts.user || null, client: null, ping: 15 }, "sse");
    }
    for (const ch of chans) q.append("ch", ch);
    if (this.token) q.set("token", this.token);
    else if (this.opts.user) q.set("user", this.opts.user);
    const headers = { Accept: "text/event-stream" };
    const known = chans.filter((ch) => this.channels.get(ch).known);
    if (chans.length === 1 && known.length === 1) {
      const rec = this.channels.get(chans[0]);
      headers["Last-Event-ID"] = rec.seq + ":" + rec.epoch;
    } else if (known.length) {
      headers["Last-Event-ID"] = known
        .map((ch) => encodeURIComponent(ch) + "=" + this.channels.get(ch).seq + ":" + this.channels.get(ch).epoch)
        .join("&");
    }
    for (const ch of chans) this.channels.get(ch).sentSince = this.channels.get(ch).known;
    const ctl = new AbortController();
    this.sse = ctl;
    let res;
    try {
      res = await fetch(this.httpBase + "/sse?" + q.toString(), { headers, signal: ctl.signal, cache: "no-store" });
    } catch (e) {
      if (gen === this.gen) this.teardown({ code: "transport", reason: "sse: " + e, reconnect: true });
      return;
    }
    if (gen !== this.gen) return;
    if (!res.ok || !(res.headers.get("content-type") || "").startsWith("text/event-stream")) {
      let d = { code: "http_" + res.status, reason: "sse: HTTP " + res.status, reconnect: res.status >= 500 || res.status === 404 || res.status === 429 };
      try {
        const e = await res.json();
        if (e && e.code) d = { code: e.code, reason: e.message, reconnect: d.reconnect };
      } catch {}
      return this.teardown(d);
    }
    // A subscribe while the stream was opening (before it counts as
    // connected, so it sent nothing): open it again with that channel.
    if (this.channels.size !== chans.length || chans.some((ch) => !this.channels.has(ch))) return this.restartSSE();
    this.onConnected({ user: this.opts.user || null, client: null, ping: 15 }, "sse");
    this.sseAlive();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let ev = { event: "message", data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== this.gen) break;
        this.sseAlive();
        buf += value;
        let i;
        while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + (buf[i] === "\r" && buf[i + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (ev.data.length) this.sseEvent(ev.event, ev.data.join("\n"));
            ev = { event: "message", data: [] };
            if (gen !== this.gen) break; // torn down (protocol error)
            continue;
          }
          if (line[0] === ":") continue; // comment (keep-alive)
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? "" : line.slice(c + 1);
          if (val[0] === " ") val = val.slice(1);
          if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
        }
      }
    } catch {}
    if (gen === this.gen) this.teardown(this.lastDisconnect || { code: "closed", reason: "sse stream ended", reconnect: true });
  }

  // sseAlive re-arms the idle check: the server comments `: ping` every
  // 15 s, so 40 s of silence means the stream is dead.
  sseAlive() {
    clearTimeout(this.timers.sseIdle);
    const gen = this.gen;
    this.timers.sseIdle = setTimeout(() => {
      if (gen === this.gen) this.teardown({ code: "timeout", reason: "sse: no data for 40 s", reconnect: true });
    }, 40000);
  }

  sseEvent(event, data) {
    const m = parseObject(data);
    if (!m) return this.protocolError("an event's data is not a JSON object: " + data.slice(0, 64));
    if (!m.op) m.op = event === "message" ? "msg" : event;
    if (event === "subscribed") return this.onSubscribed(m.ch, m);
    if (event === "disconnect") {
      this.lastDisconnect = m;
      return;
    }
    this.handle(m);
  }

  // restartSSE reopens the stream with the current channel set, carrying
  // every channel's position (subscribe/unsubscribe on SSE).
  restartSSE() {
    this.teardown({ code: "resubscribe", reason: "channel set changed", reconnect: true }, 0);
  }

  async http(method, path, body) {
    const headers = {};
    let url = this.httpBase + path;
    if (this.token) headers.Authorization = "Bearer " + this.token;
    else if (this.opts.user) url += (url.includes("?") ? "&" : "?") + "user=" + encodeURIComponent(this.opts.user);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.opts.timeout);
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: ctl.signal, cache: "no-store" });
    } catch (e) {
      throw new SyncGateError(ctl.signal.aborted ? "timeout" : "connection_lost", method + " " + path + ": " + e);
    } finally {
      clearTimeout(timer);
    }
    let j = null;
    try {
      j = await res.json();
    } catch {}
    if (!res.ok || (j && j.op === "error")) throw new SyncGateError((j && j.code) || "http_" + res.status, (j && j.message) || "HTTP " + res.status);
    return j || {};
  }

  httpPublish(ch, data) {
    if (isBytes(data)) return this.http("POST", "/pub", { ch, bin: toB64(data) });
    return this.http("POST", "/pub", { ch, data });
  }
}

export default SyncGate;
