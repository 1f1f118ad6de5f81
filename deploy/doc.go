// Package deploy holds what an operator deploys syncgate with, as files:
// proxy configs (nginx/, haproxy/), a container image (Dockerfile),
// Kubernetes manifests (kubernetes/), a systemd unit (systemd/), Prometheus
// rules and a Grafana dashboard (prometheus/, grafana/). docs/operations.md
// says how to use each and the command that checks it.
//
// It has no Go API. Its tests run the shipped files: the real nginx and
// HAProxy in front of two gateway nodes (only addresses, ports and paths
// are templated in), promtool on the rules, and offline checks of the rest.
package deploy
