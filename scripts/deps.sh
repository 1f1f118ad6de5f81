#!/usr/bin/env bash
# Installs what the test suite needs and is missing: redis-server (Debian's
# package); for the deploy/ tests, nginx, haproxy and promtool (Debian's
# prometheus package, the only one that ships promtool) and systemd-analyze
# (systemd, to verify the unit); for the browser
# test, Debian's chromium, Node.js and the npm packages pinned in
# web/e2e/package-lock.json. Safe to run again; does nothing when
# everything is there. The services these packages bring are not started
# (the tests run their own processes on random loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# nginx and haproxy live in /usr/sbin, often not on a user's PATH.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Keep the packages' services (nginx on :80, prometheus on :9090, ...)
  # from starting: a policy-rc.d that denies them, during the install only.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null || status=$?
  [ -n "$policy" ] && $SUDO rm -f "$policy"
  [ "$status" -eq 0 ] || exit "$status"
fi
# The browser tests drive Chromium with playwright-core (no browser
# download) and serve the demo page Yjs and y-protocols, bundled by esbuild.
for pkg in playwright-core yjs y-protocols esbuild; do
  if [ ! -f "web/e2e/node_modules/$pkg/package.json" ]; then
    echo "installing: npm packages of web/e2e"
    (cd web/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    break
  fi
done
