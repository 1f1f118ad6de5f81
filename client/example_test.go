package client_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/gateway"
)

func Example() {
	url, stop := exampleNode() // a syncgate node: ws://127.0.0.1:PORT/ws
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ann, err := client.Dial(ctx, url, client.Options{User: "ann"})
	if err != nil {
		log.Fatal(err)
	}
	defer ann.Close()
	bob, err := client.Dial(ctx, url, client.Options{User: "bob"})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()

	sub, err := bob.Subscribe(ctx, "doc:123")
	if err != nil {
		log.Fatal(err)
	}
	seq, err := ann.Publish(ctx, "doc:123", map[string]any{"line": 1, "text": "hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published seq", seq)

	for {
		ev, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Type {
		case client.Message:
			fmt.Printf("%s #%d from %s: %s\n", ev.Channel, ev.Seq, ev.From, ev.Data)
			members, _ := bob.Presence(ctx, "doc:123")
			fmt.Println("viewers:", len(members))
			return
		case client.Reset:
			// History could not cover what was missed: reload the document.
		}
	}
	// Output:
	// published seq 1
	// doc:123 #1 from ann: {"line":1,"text":"hello"}
	// viewers: 1
}

// exampleNode starts an in-process node on a free loopback port.
func exampleNode() (url string, stop func()) {
	cfg := gateway.Config{Server: gateway.ServerConfig{DrainWindow: 10 * time.Millisecond}}
	srv, err := gateway.New(cfg, memory.New(memory.Config{HistorySize: 100, HistoryTTL: time.Minute}), nil)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	return "ws://" + ln.Addr().String() + "/ws", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}
