#!/usr/bin/env bash
# Installs what the test suite needs and is missing: redis-server (Debian's
# package); for the browser test, Debian's chromium, Node.js and the npm
# packages pinned in web/e2e/package-lock.json. Safe to run again; does
# nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The browser test drives Chromium with playwright-core (no browser download).
if [ ! -f web/e2e/node_modules/playwright-core/package.json ]; then
  echo "installing: npm packages of web/e2e"
  (cd web/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
