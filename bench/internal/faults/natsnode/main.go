// Command natsnode is one server of the fault campaign's NATS cluster: a
// nats-server with JetStream, run as a process of its own so the nemesis
// can kill -9 it, pause it with SIGSTOP and restart it in place (same
// name, ports and store directory). The campaign builds it and passes the
// credential in the environment (NATSNODE_TOKEN), never on the command
// line where ps shows it. Clients and routes reach it through the
// campaign's proxies, which it advertises instead of its own ports.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/syncgate/syncgate/internal/natsserver"
)

// TokenEnv carries the credential of every client and route.
const TokenEnv = "NATSNODE_TOKEN"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("natsnode", flag.ContinueOnError)
	name := fs.String("name", "", "server name, stable across restarts (JetStream knows its peers by it)")
	listen := fs.String("listen", "", "client address, host:port")
	cluster := fs.String("cluster", "", "route address, host:port")
	routes := fs.String("routes", "", "comma-separated route addresses of the other servers (their proxies)")
	store := fs.String("store", "", "JetStream store directory")
	clientAdv := fs.String("client-advertise", "", "client address advertised to clients (this server's proxy)")
	clusterAdv := fs.String("cluster-advertise", "", "route address advertised to peers (this server's route proxy)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	token := os.Getenv(TokenEnv)
	if token == "" || *name == "" || *listen == "" || *cluster == "" || *routes == "" || *store == "" {
		fmt.Fprintln(os.Stderr, "natsnode: want -name, -listen, -cluster, -routes, -store and a token in", TokenEnv)
		return 2
	}
	opts, err := natsserver.ServerOptions(natsserver.ServerConfig{
		Listen: *listen, StoreDir: *store, ClusterListen: *cluster, Routes: strings.Split(*routes, ","),
		ClusterName: "faults", ServerName: *name, Token: token,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsnode:", err)
		return 2
	}
	opts.ClientAdvertise = *clientAdv
	opts.Cluster.Advertise = *clusterAdv
	// Leave the discovery to the proxies the campaign names.
	opts.Cluster.NoAdvertise = true
	opts.NoLog = false
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsnode:", err)
		return 1
	}
	s.ConfigureLogger()
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsnode: not ready after 30s")
		s.Shutdown()
		return 1
	}
	fmt.Fprintln(os.Stderr, "natsnode: ready on", *listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}
