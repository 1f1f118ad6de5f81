package redistest

import (
	"context"
	"io"
	"log"
	"log/slog"
	"os"

	goredis "github.com/redis/go-redis/v9"
)

// QuietGoRedis discards what go-redis logs on its own global logger (dial
// failures, of which fault tests cause plenty). Call it from TestMain.
func QuietGoRedis() {
	goredis.SetLogger(quietLogger{log.New(io.Discard, "", 0)})
}

type quietLogger struct{ *log.Logger }

func (l quietLogger) Printf(_ context.Context, format string, v ...any) {
	l.Logger.Printf(format, v...)
}

// Logger is a logger for the brokers under test: to stderr, debug level
// and up, when REDIS_TEST_LOG is set; else it discards.
func Logger() *slog.Logger {
	if os.Getenv("REDIS_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
