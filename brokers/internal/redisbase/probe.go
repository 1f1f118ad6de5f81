package redisbase

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// writeProbe writes nothing but, as a Redis 7 script with a shebang and
// without the no-writes flag, is refused wherever a write would be: on a
// read-only replica (READONLY: a node left on a demoted master, or a
// server turned into a replica under it) and, per the Redis documentation,
// when the server is out of memory (OOM) or lacks the replicas
// min-replicas-to-write asks for. PING answers in all of these.
var writeProbe = goredis.NewScript("#!lua\nreturn 1")

// ProbeWrite asks the server behind s whether it takes writes now: one
// round trip (EVALSHA, EVAL the first time), nothing stored. Readiness uses
// it instead of PING: a node whose scripts are refused can serve neither
// Publish nor Subscribe.
func ProbeWrite(ctx context.Context, s goredis.Scripter) error {
	return writeProbe.Run(ctx, s, nil).Err()
}
