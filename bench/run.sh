#!/usr/bin/env bash
# bench/run.sh -- keyrail's benchmark harness (`make bench`; docs/PERFORMANCE.md).
# Builds keyrail and the fake vendor optimised (build/release), the kbench
# client (bench/kbench.c) and the pinned Portkey gateway (bench/portkey, npm
# ci), then runs bench/bench.py: every target x workload x concurrency,
# interleaved, several rounds. Results: bench/out/ (results.json, table.txt,
# perf-latency.png, raw/). Unattended; about 20 minutes on 2 cores.
# Knobs (environment): BENCH_ROUNDS, BENCH_ACTIVE_S, BENCH_TAIL_S, BENCH_CONCS,
# BENCH_TARGETS, BENCH_STREAMS, BENCH_TTFB_SAMPLES, BENCH_TTFB_S (bench.py);
# BENCH_BUILD=DIR (+ BENCH_REV=name) benchmarks an existing build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in wrk nginx gnuplot node npm cc; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (run: KEYRAIL_SETUP_BENCH=1 scripts/setup.sh)" >&2; exit 1; }
done

if [ -n "${BENCH_BUILD:-}" ]; then
  # a build directory made elsewhere, e.g. of a clean `git archive` snapshot
  # while the work tree is mid-edit; BENCH_REV names it in machine.txt
  echo "bench: using the keyrail build in $BENCH_BUILD"
  export BENCH_BUILD
else
  echo "bench: building keyrail (release) ..."
  [ -f build/release/build.ninja ] || meson setup build/release --buildtype=release >/dev/null
  ninja -C build/release keyrail keyrail-fakevendor >/dev/null
fi

mkdir -p bench/out/bin bench/out/raw
cc -O2 -std=c17 -Wall -Wextra -Werror -o bench/out/bin/kbench bench/kbench.c

if [[ ",${BENCH_TARGETS:-portkey}," == *",portkey,"* ]]; then
  if [ ! -f bench/portkey/node_modules/.bench-lock ] ||
     ! cmp -s bench/portkey/package-lock.json bench/portkey/node_modules/.bench-lock; then
    echo "bench: installing the pinned Portkey gateway (npm ci) ..."
    (cd bench/portkey && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp bench/portkey/package-lock.json bench/portkey/node_modules/.bench-lock
  fi
fi

# 1,000 streams need ~2,000 descriptors in each process on the path
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -m | awk '/^Mem:/{print $2 " MiB"}')"
  echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "node: $(node --version)"
  echo "curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
  echo "libuv: $(pkg-config --modversion libuv)"
  echo "sqlite: $(pkg-config --modversion sqlite3)"
  echo "cc: $(cc --version | head -1)"
  if [ -n "${BENCH_BUILD:-}" ]; then
    echo "keyrail: ${BENCH_REV:-unknown} (build: $BENCH_BUILD)"
  else
    changed=$(git diff --name-only HEAD -- src 2>/dev/null | tr '\n' ' ')
    echo "keyrail: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${changed:+ + uncommitted: $changed}"
  fi
  echo "portkey: @portkey-ai/gateway $(node -p 'require("./bench/portkey/node_modules/@portkey-ai/gateway/package.json").version' 2>/dev/null || echo -), @hono/node-server $(node -p 'require("./bench/portkey/node_modules/@hono/node-server/package.json").version' 2>/dev/null || echo -)"
  echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee bench/out/machine.txt

/usr/bin/python3 bench/bench.py
cp bench/out/machine.txt bench/out/raw/ 2>/dev/null || true
