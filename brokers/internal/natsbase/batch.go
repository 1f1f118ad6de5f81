package natsbase

import (
	"context"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// RequestMany sends every message as a request and waits for all the
// answers (or ctx), pipelined over one reply subscription. It returns one
// answer or error per message, in order.
func RequestMany(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg) ([]*nats.Msg, []error) {
	replies := make([]*nats.Msg, len(msgs))
	errs := make([]error, len(msgs))
	if len(msgs) == 0 {
		return replies, errs
	}
	prefix := nc.NewInbox()
	ch := make(chan *nats.Msg, len(msgs))
	sub, err := nc.ChanSubscribe(prefix+".*", ch)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return replies, errs
	}
	defer sub.Unsubscribe()
	waiting := 0
	for i, m := range msgs {
		m.Reply = prefix + "." + strconv.Itoa(i)
		if err := nc.PublishMsg(m); err != nil {
			errs[i] = err
			continue
		}
		waiting++
	}
	for waiting > 0 {
		select {
		case r := <-ch:
			i, err := strconv.Atoi(r.Subject[strings.LastIndexByte(r.Subject, '.')+1:])
			if err != nil || i < 0 || i >= len(msgs) || replies[i] != nil || errs[i] != nil {
				continue
			}
			if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
				errs[i] = nats.ErrNoResponders
			} else {
				replies[i] = r
			}
			waiting--
		case <-ctx.Done():
			for i := range msgs {
				if replies[i] == nil && errs[i] == nil {
					errs[i] = cause(ctx, ctx.Err())
				}
			}
			return replies, errs
		}
	}
	return replies, errs
}
