#!/usr/bin/env bash
# Installs everything keyrail needs to build, run and test on Debian 12, as
# root: Debian packages (only those missing; no apt-get update when nothing
# is), and the pinned npm packages of the real-client tests (tests/js).
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
  gcc clang meson ninja-build pkg-config
  libuv1-dev libcurl4-openssl-dev libsqlite3-dev libsodium-dev libcjson-dev
  libhttp-parser-dev libpq-dev libcriterion-dev libclang-rt-14-dev
  postgresql python3 python3-pytest curl ca-certificates
  libssl-dev python3-cryptography
  # the confinement tests (tests/integration/test_confine.py) make a network
  # namespace of their own with ip(8)
  iproute2
  # the console's browser tests (tests/js/console_*.mjs): Debian's chromium,
  # driven headless by puppeteer-core; nothing downloads a browser
  chromium
)
# Node.js: Debian's unless a Node.js >= 18 is already installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
[ "${KEYRAIL_SETUP_BENCH:-0}" = 1 ] && pkgs+=(wrk nginx-light gnuplot-nox)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "setup: Node.js >= 18 is required (found $(node --version))" >&2
  exit 1
fi

# Pinned real clients: the Anthropic and OpenAI SDKs and Claude Code; and
# puppeteer-core (it downloads no browser) for the console's browser tests.
if [ ! -f tests/js/node_modules/.keyrail-lock ] ||
   ! cmp -s tests/js/package-lock.json tests/js/node_modules/.keyrail-lock; then
  echo "setup: installing the pinned npm packages of tests/js"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp tests/js/package-lock.json tests/js/node_modules/.keyrail-lock
fi
