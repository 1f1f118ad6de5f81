// syncgate Yjs provider: syncs a Y.Doc over one syncgate channel.
//
//   import { SyncGate } from "/client.js";
//   import { YjsProvider } from "/yjs.js";
//   import * as Y from "yjs";                        // your copy of Yjs
//   const sg = new SyncGate({ url: "wss://host/ws", getToken });
//   const doc = new Y.Doc();
//   const p = new YjsProvider(sg, "doc:123", doc, { Y });
//   await p.ready;                                   // snapshot + tail applied
//
// Wire format (docs/yjs.md): each message's data is one JSON object,
//   {"y": "<base64 Yjs update>"}        a document update
//   {"sv": "<base64 state vector>"}     "send me what I lack" (on join)
//   {"aw": "<base64 awareness update>"} on the companion channel <ch>.aw
// Updates travel base64 in JSON (about a third more bytes than binary):
// the protocol has no binary frames yet.
//
// Snapshots: every `snapshotEvery` messages (by seq), a client that
// published the message at that seq stores Y.encodeStateAsUpdate(doc) as
// the channel's snapshot at that seq (the `snap` op); a late joiner
// subscribes with snapshot: true and gets the snapshot and then exactly
// the messages after it, even when nobody else is online.
// Yjs itself is passed in (options.Y): no bundler or import map needed.

const b64 = (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
};
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

export class YjsProvider {
  constructor(sg, ch, doc, { Y, awareness = null, awarenessProtocol = null, snapshotEvery = 100 } = {}) {
    if (!Y) throw new Error("YjsProvider: pass the Yjs module as options.Y");
    this.sg = sg;
    this.ch = ch;
    this.doc = doc;
    this.Y = Y;
    this.awareness = awareness;
    this.ap = awarenessProtocol;
    this.every = snapshotEvery;
    this.user = null;
    this.offs = [];
    this.onUpdate = (u, origin) => {
      if (origin === this) return;
      this.sg.publish(this.ch, { y: b64(u) }).catch(() => {});
    };
    doc.on("update", this.onUpdate);
    this.offs.push(sg.on("connected", (e) => { this.user = e.user; }));
    this.offs.push(sg.on("snapshot", (m) => {
      if (m.ch === this.ch && m.data && typeof m.data.y === "string") this.apply(m.data.y);
    }));
    this.offs.push(sg.on("msg", (m) => this.onMsg(m)));
    this.offs.push(sg.on("reset", (e) => {
      // History could not fill a gap: ask the others for what we lack.
      if (e.ch === this.ch) this.askState();
    }));
    if (awareness && awarenessProtocol) {
      this.onAwareness = ({ added, updated, removed }, origin) => {
        if (origin === this) return;
        const ids = added.concat(updated, removed);
        this.sg.publish(this.ch + ".aw", { aw: b64(awarenessProtocol.encodeAwarenessUpdate(awareness, ids)) }).catch(() => {});
      };
      awareness.on("update", this.onAwareness);
    }
    this.ready = this.start();
  }

  async start() {
    await this.sg.subscribe(this.ch, { snapshot: true });
    if (this.awareness && this.ap) await this.sg.subscribe(this.ch + ".aw");
    // Our state, and what the others have that we lack.
    const mine = this.Y.encodeStateAsUpdate(this.doc);
    if (mine.length > 2) await this.sg.publish(this.ch, { y: b64(mine) });
    this.askState();
  }

  askState() {
    this.sg.publish(this.ch, { sv: b64(this.Y.encodeStateVector(this.doc)) }).catch(() => {});
  }

  apply(y) {
    try {
      this.Y.applyUpdate(this.doc, unb64(y), this);
    } catch (e) {
      this.sg.emit("error", { code: "yjs", message: "bad update on " + this.ch + ": " + e });
    }
  }

  onMsg(m) {
    const d = m.data;
    if (!d || typeof d !== "object") return;
    if (m.ch === this.ch + ".aw" && this.ap && typeof d.aw === "string") {
      this.ap.applyAwarenessUpdate(this.awareness, unb64(d.aw), this);
      return;
    }
    if (m.ch !== this.ch) return;
    if (typeof d.y === "string") this.apply(d.y);
    else if (typeof d.sv === "string" && m.from !== this.user) {
      const diff = this.Y.encodeStateAsUpdate(this.doc, unb64(d.sv));
      if (diff.length > 2) this.sg.publish(this.ch, { y: b64(diff) }).catch(() => {});
    }
    if (m.seq && this.every > 0 && m.seq % this.every === 0 && m.from === this.user) {
      // Our doc holds every message up to m.seq (they arrive in order).
      this.sg.snapshot(this.ch, m.seq, m.epoch, { y: b64(this.Y.encodeStateAsUpdate(this.doc)) }).catch(() => {});
    }
  }

  destroy() {
    this.doc.off("update", this.onUpdate);
    if (this.onAwareness) this.awareness.off("update", this.onAwareness);
    for (const off of this.offs) off();
    this.sg.unsubscribe(this.ch).catch(() => {});
    if (this.awareness && this.ap) this.sg.unsubscribe(this.ch + ".aw").catch(() => {});
  }
}
