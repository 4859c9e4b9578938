#!/usr/bin/env bash
# make demo -- the shortest way to see keyrail work: keyrail and the fake
# vendor on free ports, an org and its concierge, one prompt through
# `keyrail run` to the real Claude Code, in a hostile environment (an OAuth
# token and a vendor key inherited), and what the vendor received.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/release
DIR=$(mktemp -d /tmp/keyrail-demo.XXXXXX)
cleanup() { kill "${KR_PID:-}" "${FV_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "timeout: $1" >&2; return 1; }

step "1. the fake vendor (stands in for api.anthropic.com)"
"$BIN/keyrail-fakevendor" --port-file "$DIR/fv.port" --quiet >/dev/null 2>&1 &
FV_PID=$!
for _ in $(seq 1 200); do [ -s "$DIR/fv.port" ] && break; sleep 0.05; done
FV=$(cat "$DIR/fv.port"); wait_http "http://127.0.0.1:$FV/_fake/healthz"
echo "fake vendor on 127.0.0.1:$FV"

step "2. keyrail config: a store, a master key, a registry pointing at the fake vendor"
PORT=$(free_port)
sed "s|https://api.anthropic.com|http://127.0.0.1:$FV|; s|https://api.openai.com|http://127.0.0.1:$FV|" etc/providers.conf >"$DIR/providers.conf"
cat >"$DIR/keyrail.conf" <<CONF
[store]
url = $DIR/keyrail.db
[secrets]
master_key_file = $DIR/master.key
[registry]
file = $DIR/providers.conf
[server]
listen = 127.0.0.1:$PORT
public_url = http://127.0.0.1:$PORT
log_file = $DIR/keyrail.log
[provision]
concierge_default_model = claude-sonnet-4-5
CONF
export KEYRAIL_CONFIG=$DIR/keyrail.conf
export KEYRAIL_ANTHROPIC_KEY=sk-ant-api03-DEMO-PLATFORM-KEY-0000000000000000
"$BIN/keyrail" keygen "$DIR/master.key"

step "3. an org with credits, a concierge with no MODEL, an org-wide OAuth token, a workspace token"
"$BIN/keyrail" org create acme
"$BIN/keyrail" credits add acme 25.00
"$BIN/keyrail" ws create acme concierge --concierge
echo "sk-ant-oat01-DEMO-TENANT-OAUTH-000000000000" | "$BIN/keyrail" secret set --org acme CLAUDE_CODE_OAUTH_TOKEN
TOKEN=$("$BIN/keyrail" token mint acme/concierge 2>/dev/null)
echo "token minted (shown once; kept in this script only)"

step "4. keyrail explain acme/concierge"
"$BIN/keyrail" explain acme/concierge

step "5. keyrail serve"
"$BIN/keyrail" serve &
KR_PID=$!
wait_http "http://127.0.0.1:$PORT/readyz"
echo "keyrail on 127.0.0.1:$PORT"

step "6. keyrail run --explain, in a hostile environment"
HOSTILE=(CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-DEMO-INHERITED-OAUTH-00000000
         ANTHROPIC_AUTH_TOKEN=sk-ant-oat01-DEMO-INHERITED-OAUTH-00000000
         ANTHROPIC_API_KEY=sk-ant-api03-DEMO-INHERITED-KEY-000000000)
# the token in the environment, as the README recommends (ps shows argv)
env "${HOSTILE[@]}" KEYRAIL_WORKSPACE_TOKEN="$TOKEN" "$BIN/keyrail" run --server "http://127.0.0.1:$PORT" --explain

step "7. one prompt to the real Claude Code through the launcher, confined"
mkdir -p "$DIR/home"
# confined as root, the agent runs as nobody: it needs a HOME of its own
if [ "$(id -u)" = 0 ]; then chmod 755 "$DIR"; chown 65534:65534 "$DIR/home"; fi
env -i PATH="$PATH" HOME="$DIR/home" CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 \
  "${HOSTILE[@]}" KEYRAIL_WORKSPACE_TOKEN="$TOKEN" "$BIN/keyrail" run --server "http://127.0.0.1:$PORT" -- \
  "$ROOT/tests/js/node_modules/.bin/claude" -p "Say hello"

step "8. what the vendor received (credential class only) and what keyrail metered"
curl -s "http://127.0.0.1:$FV/_fake/requests" | /usr/bin/python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print("vendor got %s %s model=%s credential=%s via %s tokens=%s" % (r["method"], r["path"],
          r["model"], r["auth_class"], r["auth_header"], r["served"]))'
"$BIN/keyrail" usage
"$BIN/keyrail" credits show acme
echo; echo "done: the vendor saw the platform key (anthropic-api-key), never the inherited OAuth token."
