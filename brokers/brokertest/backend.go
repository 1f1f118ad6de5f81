package brokertest

import (
	"errors"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// Nodes is a Suite with the checks of f whose brokers come from newNode,
// each a node of one shared backend (so pairs of them are two nodes).
func Nodes(f Features, newNode func() brokers.Broker) Suite {
	return Suite{
		Features: f,
		New:      func(*testing.T) brokers.Broker { return newNode() },
		NewPair:  func(*testing.T) (a, b brokers.Broker) { return newNode(), newNode() },
	}
}

// StartWhileDown checks a broker b whose backend is down: Start fails
// with brokers.ErrUnavailable; once up has brought the backend back, Start
// succeeds and a publication on a subscribed channel is delivered within
// wait. b is closed at the end.
func StartWhileDown(t *testing.T, b brokers.Broker, up func(), wait time.Duration) {
	t.Helper()
	if err := b.Start(t.Context(), NewRecorder()); !errors.Is(err, brokers.ErrUnavailable) {
		t.Fatalf("Start with the backend down: %v, want ErrUnavailable", err)
	}
	up()
	rec := NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatalf("Start once the backend is up: %v", err)
	}
	defer b.Close()
	if err := b.Subscribe(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), "a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec.WaitPublications(t, "a", 1, wait)
}
