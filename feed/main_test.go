package feed_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/internal/redistest"
)

func TestMain(m *testing.M) {
	redistest.QuietGoRedis()
	goleak.VerifyTestMain(m)
}
