#!/bin/sh
# Real-browser test of the intercom pages against a daemon binary.
#   tests/browser/run.sh DAEMON_BINARY
# Installs what it needs on a bare Debian 12 machine (Chromium, Firefox ESR, WebKitGTK's
# WebKitWebDriver, Xvfb and certutil via apt,
# playwright-core, puppeteer-core and peerjs via npm ci), then runs the test inside its own network namespace so that nothing
# (WebRTC, STUN lookups, the daemon) can leave loopback. Needs root (apt, unshare -n).
# Optional environment: INTERCOMD_WWW=DIR serves the pages from DIR (--www) instead of
# the copy compiled into the binary; SCREENSHOTS=DIR is where the suite saves its
# screenshots (default target/screenshots; SCREENSHOTS=docs refreshes README's pictures).
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 DAEMON_BINARY" >&2
  exit 2
fi
case "$1" in
  /*) BIN=$1 ;;
  *) BIN=$(pwd)/$1 ;;
esac
if [ ! -x "$BIN" ]; then
  echo "run.sh: daemon binary $BIN is missing or not executable (build it first, e.g. cargo build)" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
SCREENSHOTS=${SCREENSHOTS:-$HERE/../../target/screenshots}
mkdir -p "$SCREENSHOTS"
SCREENSHOTS=$(cd "$SCREENSHOTS" && pwd)
export SCREENSHOTS

export DEBIAN_FRONTEND=noninteractive
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update
    apt_updated=1
  fi
  apt-get install -y "$@"
}

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing Debian's chromium" >&2
  apt_install chromium
fi
if [ ! -x /usr/bin/firefox-esr ]; then
  # firefox.test.mjs: the pages in Firefox, driven by puppeteer-core over WebDriver BiDi.
  echo "run.sh: installing Debian's firefox-esr" >&2
  apt_install --no-install-recommends firefox-esr
fi
if ! command -v WebKitWebDriver >/dev/null 2>&1 || ! command -v xvfb-run >/dev/null 2>&1; then
  # webkit.test.mjs: WebKitGTK (Safari's engine), its MiniBrowser driven by WebKitWebDriver, under Xvfb.
  echo "run.sh: installing Debian's webkit2gtk-driver and xvfb" >&2
  apt_install webkit2gtk-driver xvfb
fi
if ! command -v certutil >/dev/null 2>&1; then
  # https.test.mjs makes Chromium trust the daemon's CA through an NSS database, as on a desktop.
  echo "run.sh: installing Debian's libnss3-tools (certutil)" >&2
  apt_install libnss3-tools
fi
if ! command -v zbarimg >/dev/null 2>&1; then
  # onboard.test.mjs reads the QR codes the pages show back with zbarimg.
  echo "run.sh: installing Debian's zbar-tools (zbarimg)" >&2
  apt_install --no-install-recommends zbar-tools
fi
if ! command -v unshare >/dev/null 2>&1; then apt_install util-linux; fi
if ! command -v ip >/dev/null 2>&1; then apt_install iproute2; fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: installing node and npm" >&2
  apt_install nodejs npm
fi
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "run.sh: node $(node --version) is too old: playwright-core needs node 20 or newer" >&2
  exit 1
fi

# Again when package.json gained a package since the last install (peerjs for peerjs.test.mjs).
if [ ! -d "$HERE/node_modules/playwright-core" ] || [ ! -d "$HERE/node_modules/peerjs" ] ||
   [ ! -d "$HERE/node_modules/puppeteer-core" ]; then
  echo "run.sh: npm ci in $HERE" >&2
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

if ! unshare -n true 2>/dev/null; then
  echo "run.sh: cannot create a network namespace (unshare -n needs root / CAP_SYS_ADMIN)" >&2
  exit 1
fi

cd "$HERE"
export INTERCOMD_BIN="$BIN"
# Besides loopback, the namespace gets a veth pair and a default route through it: Firefox
# gathers ICE candidates only on the default route's interface (without one it gathers none and
# its calls fail without a word). Both ends are inside the namespace: nothing leaves it.
# WebKitGTK's MiniBrowser needs a display: xvfb-run gives the suite one (Chromium and Firefox
# run headless and ignore it).
exec unshare -n sh -c 'ip link set lo up &&
  ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 && ip addr add 10.99.0.2/24 dev v1 &&
  ip link set v0 up && ip link set v1 up && ip route add default dev v0 &&
  exec xvfb-run -a node --test --test-reporter=spec *.test.mjs'
