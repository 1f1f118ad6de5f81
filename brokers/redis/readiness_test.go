package redis_test

import (
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
)

func newRedisBroker(addr string) brokertest.RedisBroker { return redis.New(testConfig(addr)) }

func TestFlushedUnderNode(t *testing.T)  { brokertest.RedisFlushedUnderNode(t, newRedisBroker) }
func TestReadOnlyUnderNode(t *testing.T) { brokertest.RedisReadOnlyUnderNode(t, newRedisBroker) }
func TestSubscribeStoresNothing(t *testing.T) {
	brokertest.RedisSubscribeStoresNothing(t, newRedisBroker)
}
