// Runs web/client.js under node for the gateway's tests (roundtrip_test.go):
// subscribes to CHS (comma-separated), prints every event as one JSON line
// on stdout, and exits after COUNT msgs (plus a short wait, so extra ones
// show), after the second `connected` when EXIT_ON=reconnect, or after
// TIMEOUT_MS with status 1.
import { SyncGate } from "../../web/client.js";

const env = process.env;
const count = Number(env.COUNT || 0);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sg = new SyncGate({ url: env.WS_URL, user: env.USER_NAME || "js", transport: env.TRANSPORT || "websocket", timeout: 10000, minBackoff: 50, maxBackoff: 200 });

let msgs = 0;
let connects = 0;
let finishing = false;
const timer = setTimeout(() => finish(1), Number(env.TIMEOUT_MS || 30000));
function finish(code, delay = 0) {
  if (finishing) return;
  finishing = true;
  clearTimeout(timer);
  setTimeout(() => {
    out({ ev: "exit", code });
    sg.close();
    process.exit(code);
  }, delay);
}

sg.on("msg", (m) => {
  out({ ev: "msg", ch: m.ch, seq: m.seq, from: m.from, data: m.data });
  if (count && ++msgs === count) finish(0, 300);
});
for (const name of ["error", "gap", "reset", "disconnected"]) sg.on(name, (e) => out({ ev: name, ...e }));
sg.on("connected", (e) => {
  out({ ev: "connected", transport: e.transport });
  if (++connects === 2 && env.EXIT_ON === "reconnect") finish(0, 300);
});
for (const ch of (env.CHS || "").split(",")) {
  const since = env.SINCE_EPOCH ? { seq: 0, epoch: env.SINCE_EPOCH } : undefined;
  sg.subscribe(ch, { since }).then(
    (r) => out({ ev: "subscribed", ch, seq: r.seq, epoch: r.epoch }),
    (e) => out({ ev: "subscribe_failed", ch, code: e.code, message: e.message }),
  );
}
