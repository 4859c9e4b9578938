#!/usr/bin/env bash
# keyrail's test command (what `make test` and .ci/run run): builds with
# ASan+UBSan, starts a private PostgreSQL, runs the Criterion unit suites,
# the integration and end-to-end tests (pytest; they start the real
# binaries on free ports), a brief pass of every fuzz driver, and ends with
#   N passed, N failed
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${KEYRAIL_TEST_BUILD:-build/test}
OUT=$ROOT/build/test-results
rm -rf "$OUT"; mkdir -p "$OUT"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug >/dev/null || exit 1
fi
ninja -C "$BUILD" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; echo "0 passed, 1 failed"; exit 1; }
# clang must compile the tree warning-free too (the fuzz build uses it).
if [ ! -f build/clang/build.ninja ]; then
  CC=clang meson setup build/clang -Dtests=false >/dev/null || exit 1
fi
ninja -C build/clang >"$OUT/clang.log" 2>&1 || { cat "$OUT/clang.log"; echo "0 passed, 1 failed"; exit 1; }

PGDIR=$(mktemp -d /tmp/keyrail-pg.XXXXXX); chmod 755 "$PGDIR"
cleanup() { scripts/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR"; }
trap cleanup EXIT
if scripts/pg.sh start "$PGDIR"; then
  export KR_TEST_PG_URL=$(scripts/pg.sh url "$PGDIR")
else
  echo "tests: could not start PostgreSQL" >&2
fi

passed=0; failed=0
# ---- unit suites ----
for t in "$BUILD"/tests/unit/test_*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  name=$(basename "$t")
  "$t" --jobs 1 --short-filename >"$OUT/$name.log" 2>&1
  line=$(grep -a "Synthesis:" "$OUT/$name.log" | tail -1)
  if [ -z "$line" ]; then
    echo "FAIL $name (no Criterion summary; see $OUT/$name.log)"; tail -20 "$OUT/$name.log"
    failed=$((failed + 1)); continue
  fi
  p=$(sed -E 's/.*Passing: ([0-9]+).*/\1/' <<<"$line")
  f=$(sed -E 's/.*Failing: ([0-9]+).*/\1/' <<<"$line")
  c=$(sed -E 's/.*Crashing: ([0-9]+).*/\1/' <<<"$line")
  passed=$((passed + p)); failed=$((failed + f + c))
  if [ $((f + c)) -gt 0 ]; then echo "FAIL $name: $line"; grep -a -E "FAIL|CRASH|\[----\]" "$OUT/$name.log" | head -30
  else echo "ok   $name: $p passed"; fi
done

# ---- integration and end-to-end (pytest; one run per directory, since each
# has its own conftest) ----
# run_pytest NAME BUILD ARGS...: one pytest run against BUILD's binaries,
# counted from its JUnit report (a skipped test counts as failed)
run_pytest() {
  local name=$1 build=$2; shift 2
  KEYRAIL_BUILD=$ROOT/$build /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --basetemp="$OUT/tmp-$name" --junitxml="$OUT/pytest-$name.xml" "$@" >"$OUT/pytest-$name.log" 2>&1
  read -r p f < <(/usr/bin/python3 - "$OUT/pytest-$name.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
    suites = [r] if r.tag == "testsuite" else list(r)
    t = sum(int(s.get("tests", 0)) for s in suites)
    f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    sk = sum(int(s.get("skipped", 0)) for s in suites)
    print(t - f - sk, f + sk)   # a skipped test counts as failed: nothing may be skipped
except Exception:
    print(0, 1)
PY
)
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" -gt 0 ]; then echo "FAIL pytest $name: $p passed, $f failed"; grep -E "^(FAILED|ERROR)" "$OUT/pytest-$name.log" | head -40
  else echo "ok   pytest $name: $p passed"; fi
}
for d in tests/integration tests/e2e; do
  compgen -G "$d/test_*.py" >/dev/null || continue
  run_pytest "$(basename "$d")" "$BUILD" "$d"
done

# ---- ThreadSanitizer: the suites that drive several event loops at once,
# the usage writer and the shared admission state, against a TSan build of
# the binaries (server.workers = 2 in every test, 4 in test_workers) ----
if [ "${KEYRAIL_SKIP_TSAN:-0}" != 1 ]; then
  TSAN_BUILD=build/tsan
  if [ ! -f $TSAN_BUILD/build.ninja ]; then
    meson setup $TSAN_BUILD -Db_sanitize=thread -Db_lundef=false -Dtests=false --buildtype=debug >/dev/null || exit 1
  fi
  if ninja -C $TSAN_BUILD >"$OUT/tsan-build.log" 2>&1; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ASAN_OPTIONS= \
      run_pytest tsan $TSAN_BUILD tests/integration/test_workers.py tests/integration/test_proxy.py \
      tests/integration/test_limits.py tests/integration/test_crash.py tests/integration/test_otel.py \
      tests/integration/test_alerts.py tests/integration/test_pool.py
  else
    failed=$((failed + 1)); echo "FAIL tsan build"; tail -30 "$OUT/tsan-build.log"
  fi
fi

# ---- secret hygiene: no canary byte in any log, response body or store file ----
if tests/hygiene.sh "$OUT"/tmp-* >"$OUT/hygiene.log" 2>&1; then passed=$((passed + 1)); echo "ok   hygiene"
else failed=$((failed + 1)); echo "FAIL hygiene"; cat "$OUT/hygiene.log"; fi

# ---- brief fuzzing (every driver, a few seconds each) ----
if [ "${KEYRAIL_SKIP_FUZZ:-0}" != 1 ] && [ -x scripts/fuzz.sh ]; then
  if scripts/fuzz.sh --brief >"$OUT/fuzz.log" 2>&1; then
    n=$(grep -c '^ok ' "$OUT/fuzz.log"); passed=$((passed + n)); echo "ok   fuzz: $n drivers"
  else
    n=$(grep -c '^ok ' "$OUT/fuzz.log"); m=$(grep -c '^FAIL ' "$OUT/fuzz.log")
    passed=$((passed + n)); failed=$((failed + (m > 0 ? m : 1))); echo "FAIL fuzz"; tail -30 "$OUT/fuzz.log"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
