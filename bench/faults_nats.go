//go:build linux

// faults_nats.go: the campaign's NATS cluster, three servers (the natsnode
// command, built here) with JetStream, the gateways' streams replicated
// on all three (R3) with file storage. Every client and route port is
// behind a proxy of the campaign's Net, and each server advertises its
// proxies, so the gateways and the routes all go through them. The
// nemesis's faults hit the leader of the history stream.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/bench/internal/faults"
	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natsserver"
)

const natsServers = 3

// natsNodeTokenEnv is natsnode's TokenEnv.
const natsNodeTokenEnv = "NATSNODE_TOKEN"

// natsCluster is the running cluster.
type natsCluster struct {
	servers []*serverProc
	proxies []string // client proxy address by server
	net     *faults.Net
	token   string
	stream  string
	nc      *nats.Conn // the nemesis's own connection, straight to the servers
	next    int
	owners  serverSet
}

// buildNATSNode builds the natsnode command into dir.
func buildNATSNode(ctx context.Context, root, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "natsnode")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/internal/faults/natsnode")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building natsnode: %v\n%s", err, out)
	}
	return bin, nil
}

// startNATSCluster starts the three servers in dir and waits until
// JetStream has a meta leader.
func startNATSCluster(ctx context.Context, bin, dir string, p *progress) (_ *natsCluster, err error) {
	c := &natsCluster{net: faults.NewNet(), token: natsserver.RandomToken(), stream: natsname.StreamName(jetstream.DefaultPrefix, "HISTORY")}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	c.net.Owner = c.owners.owner
	var clientAddrs, routeAddrs, routeProxies []string
	for i := range natsServers {
		cp, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		rp, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		ca, ra := net.JoinHostPort("127.0.0.1", strconv.Itoa(cp)), net.JoinHostPort("127.0.0.1", strconv.Itoa(rp))
		cpx, err := c.net.Listen(i, ca)
		if err != nil {
			return nil, err
		}
		rpx, err := c.net.Listen(i, ra)
		if err != nil {
			return nil, err
		}
		clientAddrs, routeAddrs, routeProxies = append(clientAddrs, ca), append(routeAddrs, ra), append(routeProxies, rpx)
		c.proxies = append(c.proxies, cpx)
	}
	for i := range natsServers {
		var routes []string
		for j, r := range routeProxies {
			if j != i {
				routes = append(routes, r)
			}
		}
		d := filepath.Join(dir, fmt.Sprintf("nats%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		args := []string{"-name", fmt.Sprintf("n%d", i), "-listen", clientAddrs[i], "-cluster", routeAddrs[i],
			"-routes", strings.Join(routes, ","), "-store", filepath.Join(d, "js"),
			"-client-advertise", c.proxies[i], "-cluster-advertise", routeProxies[i]}
		c.servers = append(c.servers, &serverProc{name: fmt.Sprintf("nats %d", i), bin: bin, args: args, dir: d,
			env: []string{natsNodeTokenEnv + "=" + c.token}, addr: clientAddrs[i], ready: natsReady})
	}
	c.owners.set(c.servers)
	// Started together: JetStream waits for its peers before it is ready.
	errs := make([]error, len(c.servers))
	done := make(chan int)
	for i, s := range c.servers {
		go func() { errs[i] = s.start(ctx); done <- i }()
	}
	for range c.servers {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var urls []string
	for _, a := range clientAddrs {
		urls = append(urls, "nats://"+a)
	}
	c.nc, err = nats.Connect(strings.Join(urls, ","), nats.Token(c.token), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.Timeout(2*time.Second), nats.DontRandomize())
	if err != nil {
		return nil, fmt.Errorf("nats cluster: nemesis connection: %w", err)
	}
	if err := c.waitFor(ctx, 60*time.Second, "a JetStream meta leader", func() error {
		var info struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := c.request("$JS.API.INFO", &info); err != nil {
			return err
		}
		if info.Error != nil {
			return errors.New(info.Error.Description)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	p.printf("nats-cluster: %d servers, JetStream ok", natsServers)
	return c, nil
}

// natsReady: the server sends INFO on a new connection.
func natsReady(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "INFO")
}

// request sends a JetStream API request (empty body) and decodes the
// reply into v.
func (c *natsCluster) request(subject string, v any) error {
	msg, err := c.nc.Request(subject, nil, 3*time.Second)
	if err != nil {
		return fmt.Errorf("nats cluster: %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, v); err != nil {
		return fmt.Errorf("nats cluster: %s: %w", subject, err)
	}
	return nil
}

func (c *natsCluster) waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats cluster: %s: not after %s: %w", what, timeout, err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// leader is the index of the server leading the history stream.
func (c *natsCluster) leader() (int, error) {
	var info struct {
		Cluster *struct {
			Leader string `json:"leader"`
		} `json:"cluster"`
		Error *struct{ Description string } `json:"error"`
	}
	if err := c.request("$JS.API.STREAM.INFO."+c.stream, &info); err != nil {
		return -1, err
	}
	if info.Error != nil {
		return -1, fmt.Errorf("nats cluster: stream %s: %s", c.stream, info.Error.Description)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("nats cluster: stream %s has no leader", c.stream)
	}
	var i int
	if _, err := fmt.Sscanf(info.Cluster.Leader, "n%d", &i); err != nil || i < 0 || i >= len(c.servers) {
		return -1, fmt.Errorf("nats cluster: unknown leader %q", info.Cluster.Leader)
	}
	return i, nil
}

func (c *natsCluster) name() string { return "jetstream-r3" }

func (c *natsCluster) env() []string {
	var urls []string
	for _, a := range c.proxies {
		urls = append(urls, "nats://"+a)
	}
	return []string{"SYNCGATE_BROKER_TYPE=jetstream", "SYNCGATE_NATS_URL=" + strings.Join(urls, ","),
		"SYNCGATE_NATS_TOKEN=" + c.token, "SYNCGATE_NATS_REPLICAS=3", "SYNCGATE_NATS_STORAGE=file"}
}

func (c *natsCluster) kinds() []string {
	return []string{"kill", "restart", "failover", "pause", "partition"}
}

func (c *natsCluster) procs() []*serverProc { return c.servers }

func (c *natsCluster) describe() string {
	return fmt.Sprintf("NATS cluster, %d servers, JetStream streams R3, file storage", natsServers)
}

// inject runs one fault of kind for d on the history stream's leader (a
// server in turn if the stream has none now) and heals it.
func (c *natsCluster) inject(ctx context.Context, kind string, d time.Duration) (faults.Fault, error) {
	l, err := c.waitLeader(ctx, 10*time.Second)
	if err != nil {
		l = c.next % len(c.servers)
		c.next++
	}
	s := c.servers[l]
	f := faults.Fault{Kind: kind, Target: "stream leader " + s.name, Start: time.Now()}
	handled, err := serverFault(ctx, kind, s, c.net, l, d)
	switch {
	case handled:
	case kind == "failover":
		err = c.stepdown(ctx, l)
	default:
		err = fmt.Errorf("nats cluster: no fault %q", kind)
	}
	f.End = time.Now()
	return f, err
}

// waitLeader waits up to timeout for the stream to have a leader.
func (c *natsCluster) waitLeader(ctx context.Context, timeout time.Duration) (int, error) {
	l := -1
	err := c.waitFor(ctx, timeout, "a stream leader", func() (err error) {
		l, err = c.leader()
		return err
	})
	return l, err
}

// stepdown asks the stream leader l to step down and waits for another.
func (c *natsCluster) stepdown(ctx context.Context, l int) error {
	var resp struct {
		Success bool                          `json:"success"`
		Error   *struct{ Description string } `json:"error"`
	}
	if err := c.request("$JS.API.STREAM.LEADER.STEPDOWN."+c.stream, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("nats cluster: stepdown: %s", resp.Error.Description)
	}
	return c.waitFor(context.WithoutCancel(ctx), 15*time.Second, "a new stream leader", func() error {
		n, err := c.leader()
		if err == nil && n == l {
			err = errors.New("the same leader")
		}
		return err
	})
}

// close stops the servers and the proxies.
func (c *natsCluster) close() {
	if c.nc != nil {
		c.nc.Close()
	}
	for _, s := range c.servers {
		s.stop()
	}
	c.net.Close()
}
