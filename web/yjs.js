// syncgate Yjs provider: syncs a Y.Doc over one syncgate channel.
//
//   import { SyncGate } from "/client.js";
//   import { YjsProvider } from "/yjs.js";
//   import * as Y from "yjs";                        // your copy of Yjs
//   import * as awarenessProtocol from "y-protocols/awareness";
//   const sg = new SyncGate({ url: "wss://host/ws", getToken });
//   const doc = new Y.Doc();
//   const awareness = new awarenessProtocol.Awareness(doc);
//   const p = new YjsProvider(sg, "doc:123", doc, { Y, awareness, awarenessProtocol });
//   await p.ready;   // subscribed; snapshot + tail applied
//   await p.synced;  // the document is complete (or nobody answered in time)
//
// Wire format (docs/yjs.md): each message's data is bytes (the binary data
// extension, docs/protocol.md: a binary WebSocket message, no base64): one
// tag byte, then the Yjs payload,
//   0x00 <Yjs update>           a document update
//   0x01 <state vector>         "send me what I lack"
//   0x02 <awareness update>     on the companion channel <ch>.aw
// Earlier versions sent {"y"|"sv"|"aw": "<base64>"} JSON objects; those
// are still read (mixed versions, snapshots stored by them). encodeMsg and
// decodeMsg below are the only code that knows this.
//
// Snapshots: the client that published the message at a seq divisible by
// `snapshotEvery`, or the last message before `snapshotIdle` ms of quiet,
// stores Y.encodeStateAsUpdate(doc) as the channel's snapshot at that seq
// (the `snap` op), but only while its document is known to hold every
// message up to there. A late joiner subscribes with snapshot: true and
// gets the snapshot and then exactly the messages after it, even when
// nobody else is online. snapshotEvery must be below history.size, and
// snapshotIdle below history.ttl, or a joiner may find the history rolled
// past the snapshot.
//
// Updates are never lost to a dropped connection: an update whose publish
// fails is kept and sent again (merged) once the channel is subscribed
// again. Yjs applies an update it already has as a no-op, so sending one
// twice is harmless.
//
// Yjs itself is passed in (options.Y): this module imports nothing but
// what the caller hands it.

const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

const KINDS = ["y", "sv", "aw"]; // index = tag byte
// Publish errors worth sending the update again for (docs/protocol.md).
const RETRY = new Set(["connection_lost", "timeout", "closed", "rate_limited", "unavailable", "overloaded", "internal"]);

/** encodeMsg(kind, bytes) is the message data carrying one Yjs payload:
 *  kind "y" (document update), "sv" (state vector) or "aw" (awareness
 *  update): the tag byte, then the bytes. */
export function encodeMsg(kind, u8) {
  const out = new Uint8Array(u8.length + 1);
  out[0] = KINDS.indexOf(kind);
  out.set(u8, 1);
  return out;
}

/** decodeMsg(data) is {kind, u8} for a message encodeMsg made (or the JSON
 *  form of earlier versions), else null (other messages on the channel,
 *  or malformed ones). */
export function decodeMsg(data) {
  if (data instanceof Uint8Array) {
    const kind = KINDS[data[0]];
    return kind ? { kind, u8: data.subarray(1) } : null;
  }
  if (!data || typeof data !== "object") return null;
  for (const kind of KINDS) {
    if (typeof data[kind] !== "string") continue;
    try {
      return { kind, u8: unb64(data[kind]) };
    } catch {
      return null;
    }
  }
  return null;
}

export class YjsProvider {
  constructor(sg, ch, doc, { Y, awareness = null, awarenessProtocol = null, snapshotEvery = 100, snapshotIdle = 2000, syncTimeout = 1500, retryMs = 1000 } = {}) {
    if (!Y) throw new Error("YjsProvider: pass the Yjs module as options.Y");
    this.sg = sg;
    this.ch = ch;
    this.awCh = ch + ".aw";
    this.doc = doc;
    this.Y = Y;
    this.awareness = awareness && awarenessProtocol ? awareness : null;
    this.ap = awarenessProtocol;
    this.every = snapshotEvery;
    this.idleMs = snapshotIdle;
    this.syncTimeout = syncTimeout;
    this.retryMs = retryMs;
    // complete: the doc holds every message of the channel up to `last`
    // (so it may be stored as a snapshot at that seq).
    this.complete = false;
    this.fromSnapshot = false;
    this.last = { seq: 0, epoch: "", mine: false };
    this.snapSeq = 0; // seq of the latest snapshot we know is stored
    this.failed = []; // updates whose publish failed: sent again
    this.timers = {};
    this.destroyed = false;
    this.offs = [];
    this.synced = new Promise((resolve) => (this.resolveSynced = resolve));

    this.onUpdate = (u, origin) => {
      if (origin !== this) this.send(u);
    };
    doc.on("update", this.onUpdate);
    this.offs.push(sg.on("snapshot", (m) => {
      if (m.ch !== this.ch) return;
      const d = decodeMsg(m.data);
      if (!d || d.kind !== "y") return;
      this.apply(d.u8);
      this.fromSnapshot = true;
      this.snapSeq = Math.max(this.snapSeq, m.seq || 0);
      this.last = { seq: m.seq || 0, epoch: m.epoch || "", mine: false };
    }));
    this.offs.push(sg.on("subscribed", (e) => {
      if (e.ch === this.awCh && this.awareness) {
        // Back after a drop: the others may have dropped our state (leave).
        if (this.awSubscribed) this.renewAwareness();
        this.awSubscribed = true;
      }
      if (e.ch !== this.ch) return;
      if (e.recovered) {
        if (this.fromSnapshot) this.setComplete();
      } else if (!this.subscribedOnce && !(e.seq > 0)) {
        this.setComplete(); // a channel with no message yet
      } else {
        this.complete = false;
      }
      this.fromSnapshot = false;
      this.subscribedOnce = true;
      this.last = { seq: e.seq || 0, epoch: e.epoch || "", mine: false };
      this.flush();
    }));
    this.offs.push(sg.on("msg", (m) => this.onMsg(m)));
    // History could not fill a gap: ask the others for what we lack.
    const lost = (e) => {
      if (e.ch !== this.ch) return;
      this.complete = false;
      this.askState();
    };
    this.offs.push(sg.on("reset", lost), sg.on("gap", lost));
    if (this.awareness) {
      // Which syncgate user published each remote awareness state: when
      // that user leaves the channel (presence), their cursors go at once
      // instead of after y-protocols' 30 s timeout.
      this.awUsers = new Map();
      this.offs.push(sg.on("leave", (m) => {
        if (m.ch === this.ch) this.userLeft(m.user);
      }));
      this.onAwareness = ({ added, updated, removed }, origin) => {
        if (origin === this) {
          for (const id of added.concat(updated)) if (this.awFrom) this.awUsers.set(id, this.awFrom);
          for (const id of removed) this.awUsers.delete(id);
          // Someone new: tell them about us.
          if (added.length && this.awareness.getLocalState() !== null) this.publishAwareness();
          return;
        }
        if (added.concat(updated, removed).includes(this.doc.clientID)) this.publishAwareness();
      };
      this.awareness.on("update", this.onAwareness);
    }
    // What the doc holds before joining (edits made offline): published
    // once subscribed. Taken now, so a snapshot loaded later is not sent
    // back to the channel.
    this.initial = Y.encodeStateAsUpdate(doc);
    this.ready = this.start();
    this.ready.catch(() => {});
  }

  async start() {
    let r = await this.sg.subscribe(this.ch, { snapshot: true });
    if (!this.complete && r.seq > 0 && r.epoch && !this.destroyed && this.sg.transport === "websocket") {
      // No snapshot: a young channel's history may still hold it all.
      // (Not on SSE: client.js cannot resubscribe there at once.)
      await this.sg.unsubscribe(this.ch);
      this.subscribedOnce = true;
      r = await this.sg.subscribe(this.ch, { since: { seq: 0, epoch: r.epoch }, snapshot: true });
      if (r.recovered) this.setComplete();
    }
    if (this.awareness) {
      await this.sg.subscribe(this.awCh);
      this.publishAwareness();
    }
    // Our own state (edits made before joining), and what the others have
    // that we lack when the channel could not give us everything.
    if (this.initial.length > 2) this.send(this.initial);
    this.initial = null;
    if (!this.complete) {
      this.askState();
      this.timers.sync = setTimeout(() => this.resolveSynced(false), this.syncTimeout);
    }
  }

  setComplete() {
    this.complete = true;
    this.resolveSynced(true);
  }

  // send publishes one update; a publish that failed for a reason that
  // passes (connection, rate, broker) keeps it for flush. One refused for
  // good (too_large: over client.max_message_size; forbidden) is an error
  // event: the update stays in this doc only.
  send(u) {
    this.sg.publish(this.ch, encodeMsg("y", u)).catch((e) => {
      if (this.destroyed) return;
      if (!RETRY.has(e.code)) {
        this.sg.emit("error", { code: "yjs", message: "update of " + u.length + " bytes not published on " + this.ch + ": " + (e.code || e) });
        return;
      }
      this.failed.push(u);
      clearTimeout(this.timers.retry);
      this.timers.retry = setTimeout(() => this.flush(), this.retryMs);
    });
  }

  // flush sends every failed update again as one merged update.
  flush() {
    if (!this.failed.length || this.destroyed || this.sg.state !== "connected") return;
    const u = this.failed.length === 1 ? this.failed[0] : this.Y.mergeUpdates(this.failed);
    this.failed = [];
    this.send(u);
  }

  askState() {
    this.sg.publish(this.ch, encodeMsg("sv", this.Y.encodeStateVector(this.doc))).catch(() => {});
  }

  publishAwareness() {
    const u = this.ap.encodeAwarenessUpdate(this.awareness, [this.doc.clientID]);
    this.sg.publish(this.awCh, encodeMsg("aw", u)).catch(() => {});
  }

  // renewAwareness publishes our state with a new clock (an equal clock
  // would not bring it back where it was removed).
  renewAwareness() {
    const st = this.awareness.getLocalState();
    if (st !== null) this.awareness.setLocalState(st);
  }

  // userLeft drops the awareness states a user published, once presence
  // shows none of their connections left on the channel.
  async userLeft(user) {
    let users;
    try {
      users = await this.sg.presence(this.ch);
    } catch {
      return;
    }
    if (this.destroyed || users.some((u) => u.user === user)) return;
    const ids = [...this.awUsers].filter(([id, u]) => u === user && id !== this.doc.clientID).map(([id]) => id);
    if (ids.length) this.ap.removeAwarenessStates(this.awareness, ids, this);
  }

  apply(u8) {
    try {
      this.Y.applyUpdate(this.doc, u8, this);
      return true;
    } catch (e) {
      this.sg.emit("error", { code: "yjs", message: "bad update on " + this.ch + ": " + e });
      return false;
    }
  }

  onMsg(m) {
    const d = decodeMsg(m.data);
    if (m.ch === this.awCh) {
      if (!this.awareness || !d || d.kind !== "aw") return;
      this.awFrom = m.from;
      try {
        this.ap.applyAwarenessUpdate(this.awareness, d.u8, this);
      } catch (e) {
        this.sg.emit("error", { code: "yjs", message: "bad awareness update on " + this.awCh + ": " + e });
      }
      this.awFrom = null;
      return;
    }
    if (m.ch !== this.ch) return;
    if (d && d.kind === "y") {
      // An answer to our state vector (or any update) while waiting.
      if (this.apply(d.u8) && !this.complete && m.from !== this.sg.user) this.resolveSynced(true);
    } else if (d && d.kind === "sv") {
      // Send what the asker lacks (our own question yields an empty diff).
      let diff;
      try {
        diff = this.Y.encodeStateAsUpdate(this.doc, d.u8);
      } catch (e) {
        this.sg.emit("error", { code: "yjs", message: "bad update on " + this.ch + ": state vector: " + e });
      }
      if (diff && diff.length > 2) this.send(diff);
    }
    if (!m.seq) return;
    // Messages arrive in seq order with no gap (client.js), so a complete
    // doc holds everything up to m.seq now.
    this.last = { seq: m.seq, epoch: m.epoch || "", mine: m.from === this.sg.user };
    if (this.last.mine && this.every > 0 && m.seq % this.every === 0) this.storeSnapshot();
    clearTimeout(this.timers.idle);
    if (this.last.mine && this.idleMs > 0) this.timers.idle = setTimeout(() => this.storeSnapshot(), this.idleMs);
  }

  // storeSnapshot stores the doc as the channel's snapshot at the last seq
  // applied, when the doc is known to hold everything up to it.
  storeSnapshot() {
    const { seq, epoch } = this.last;
    if (!this.complete || this.destroyed || seq <= this.snapSeq || !epoch) return;
    if (this.sg.state !== "connected" || this.sg.transport !== "websocket") return; // `snap` is a WebSocket op
    this.sg.snapshot(this.ch, seq, epoch, encodeMsg("y", this.Y.encodeStateAsUpdate(this.doc))).then(
      (r) => {
        if (r.epoch === epoch) this.snapSeq = Math.max(this.snapSeq, r.seq || 0);
      },
      (e) => {
        // too_large: the document outgrew client.max_message_size or
        // history.snapshot_max_bytes (docs/yjs.md, Limits).
        if (!RETRY.has(e.code)) this.sg.emit("error", { code: "yjs", message: "snapshot of " + this.ch + " at seq " + seq + " not stored: " + (e.code || e) });
      },
    );
  }

  destroy() {
    if (this.destroyed) return;
    if (this.awareness) {
      this.ap.removeAwarenessStates(this.awareness, [this.doc.clientID], "destroy");
      this.awareness.off("update", this.onAwareness);
    }
    this.destroyed = true;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    this.doc.off("update", this.onUpdate);
    for (const off of this.offs) off();
    this.sg.unsubscribe(this.ch).catch(() => {});
    if (this.awareness) this.sg.unsubscribe(this.awCh).catch(() => {});
  }
}
