// Package faults is the model and the checker of the fault campaign
// (`go run ./bench faults`): a History of what publishers were told, what
// every subscriber received, and which faults the nemesis injected when;
// Check accounts for every acked publication at every subscriber and
// reports, per fault kind, what was lost, duplicated or reordered and how
// long delivery took to resume once the fault ended.
//
// The rules (Check):
//
//   - An acked publication must reach every subscriber of its channel:
//     once, and in publish order (one publisher per channel, publishing
//     one message at a time, so publish order is id order).
//   - A subscriber's Reset event (the server's `recovered: false`: the
//     epoch changed or the history is gone) announces that messages may be
//     missing: it covers the acked ids between the last id the subscriber
//     had before it and the first id it receives after it (or, with
//     nothing after it, the ids acked before the Reset arrived). Covered
//     ids are counted apart, not as lost. Delivery order and duplicates are
//     judged between Resets: a copy received again after a Reset is the
//     reload the Reset asked for, not a duplicate.
//   - Publications that were refused or timed out may or may not have been
//     stored; their copies are counted (UnackedDelivered) but never
//     anomalies, and they are left out of the order check.
//
// An anomaly is attributed to the fault period of its publication: from a
// fault's start to the next fault's start ("none" before the first).
// Check is a function of its History: build the History (each subscriber's
// events by one goroutine, or under a lock), then Check it.
//
// Net is the campaign's network: loopback TCP proxies in front of every
// server port, which partition one server away (Isolate, Heal) by holding
// every byte to it and from it; SocketOwner tells which server dialled a
// connection (from /proc), so a partition also cuts the connections the
// isolated server opened to its peers. Net is safe for concurrent use.
package faults
