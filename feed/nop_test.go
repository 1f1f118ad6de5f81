package feed_test

import "github.com/syncgate/syncgate/brokers"

type nopHandler struct{}

func (nopHandler) HandlePublication(string, brokers.Publication)                    {}
func (nopHandler) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {}
