//go:build linux

// natsserver.go is the hidden "bench natsserver" subcommand: a standalone
// NATS server with JetStream, so that the study can kill -9 the broker
// alone while both gateway nodes keep running.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/syncgate/syncgate/internal/natsserver"
)

const natsServerArg = "natsserver"

// natsTokenEnv passes the token to the natsserver subcommand.
const natsTokenEnv = "BENCH_NATS_TOKEN"

// natsToken is the NATS credential of every server and gateway this bench
// process starts (set once, read only).
var natsToken = natsserver.RandomToken()

// natsServerMain runs a NATS server on -listen with its JetStream data in
// -store until SIGTERM, SIGINT or the parent's death (Pdeathsig).
func natsServerMain(args []string) int {
	fs := flag.NewFlagSet(natsServerArg, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4222", "client address, host:port")
	store := fs.String("store", "", "JetStream store directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The token comes in the environment, not on the command line (where
	// ps shows it).
	token := os.Getenv(natsTokenEnv)
	if token == "" {
		fmt.Fprintln(os.Stderr, "natsserver: no token in", natsTokenEnv)
		return 2
	}
	s, err := natsserver.StartServer(natsserver.ServerConfig{Listen: *listen, StoreDir: *store, Token: token})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "natsserver: ready on", *listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}
