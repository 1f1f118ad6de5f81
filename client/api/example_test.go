package api_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
)

// The backend publishes a server-side change; a client sees it with the
// "from" the backend chose. Then the backend lists the channel and
// disconnects the user.
func Example() {
	wsURL, apiURL, stop := exampleNode("example-api-key-0123456789")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ann, err := client.Dial(ctx, wsURL, client.Options{User: "ann"})
	if err != nil {
		log.Fatal(err)
	}
	defer ann.Close()
	sub, err := ann.Subscribe(ctx, "doc:123")
	if err != nil {
		log.Fatal(err)
	}

	backend := api.New(apiURL, "example-api-key-0123456789", api.Options{})
	res, err := backend.Publish(ctx, "doc:123", map[string]any{"title": "Imported"}, "importer")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published seq", res.Seq)
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ann got #%d from %s: %s\n", ev.Seq, ev.From, ev.Data)

	chs, err := backend.Channels(ctx, "doc:*")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("channels:", chs)
	hist, err := backend.History(ctx, "doc:123", 0, 10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("history:", len(hist.Pubs), "at seq", hist.Seq)
	act, err := backend.Disconnect(ctx, "ann", false)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("disconnected on this node:", act.Local)
	// Output:
	// published seq 1
	// ann got #1 from importer: {"title":"Imported"}
	// channels: [{doc:123 1}]
	// history: 1 at seq 1
	// disconnected on this node: 1
}

// exampleNode starts an in-process node (memory broker) with its server
// API, each on a free loopback port.
func exampleNode(key string) (wsURL, apiURL string, stop func()) {
	cfg := gateway.Config{Server: gateway.ServerConfig{DrainWindow: 10 * time.Millisecond}}
	srv, err := gateway.New(cfg, memory.New(memory.Config{HistorySize: 100, HistoryTTL: time.Minute}), nil)
	if err != nil {
		log.Fatal(err)
	}
	apiSrv, err := serverapi.New(serverapi.Config{Keys: []string{key}}, srv, nil)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(ln); done <- struct{}{} }()
	go func() { _ = apiSrv.Serve(aln); done <- struct{}{} }()
	return "ws://" + ln.Addr().String() + "/ws", "http://" + aln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = apiSrv.Shutdown(ctx)
		_ = srv.Shutdown(ctx)
		<-done
		<-done
	}
}
