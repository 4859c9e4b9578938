#!/usr/bin/env bash
# Builds keyrail's libFuzzer drivers with clang (ASan+UBSan, the library
# instrumented for coverage) and runs every driver listed in
# tests/fuzz/meson.build on a temporary copy of its seed corpus
# tests/fuzz/corpus/<driver>/ (the seeds in git are never modified), with a
# dictionary when one exists for it (see dict_for below).
#
#   scripts/fuzz.sh --brief        a few seconds per driver (the test command)
#   scripts/fuzz.sh --seconds N    N seconds per driver (`make fuzz`)
#   scripts/fuzz.sh [...] DRIVER…  only these drivers
#
# One line per driver:
#   ok <driver> (<execs> execs)
#   FAIL <driver>: <why>[; reproducer: <path>]     (crash, leak, timeout, stub)
#   skip fuzz_launcher_env (launcher not built yet)
# and the exit status is non-zero when any driver failed. A driver whose
# source is still the placeholder stub fails as "no driver": a stub must
# never pass silently. The one exception is fuzz_launcher_env while its
# source carries the marker KR_FUZZ_PENDING (the launcher is not written
# yet); it is skipped and counted nowhere.
#
# Environment: KEYRAIL_FUZZ_BUILD (default build/fuzz), KEYRAIL_FUZZ_ARTIFACTS
# (default build/fuzz-artifacts: crash reproducers and logs are kept there).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

seconds=""
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --brief) seconds=4 ;;
    --seconds) shift; seconds=${1:-}; [[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds N" >&2; exit 2; } ;;
    --seconds=*) seconds=${1#--seconds=} ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) only+=("$1") ;;
  esac
  shift
done
[ -n "$seconds" ] || seconds=60

BUILD=${KEYRAIL_FUZZ_BUILD:-build/fuzz}
ART=${KEYRAIL_FUZZ_ARTIFACTS:-$ROOT/build/fuzz-artifacts}
mkdir -p "$ART" build

# One fuzz build at a time (the test command and `make fuzz` may overlap).
exec 9>"$ROOT/build/.fuzz.lock"
flock 9

# Every driver named in the fuzz_targets list of tests/fuzz/meson.build.
mapfile -t drivers < <(sed -n '/fuzz_targets *=/,/]/p' tests/fuzz/meson.build | grep -o "'fuzz_[A-Za-z0-9_]*'" | tr -d "'")
if [ ${#drivers[@]} -eq 0 ]; then
  echo "FAIL fuzz.sh: no drivers found in tests/fuzz/meson.build"
  exit 1
fi
if [ ${#only[@]} -gt 0 ]; then
  for d in "${only[@]}"; do
    printf '%s\n' "${drivers[@]}" | grep -qx "$d" || { echo "FAIL $d: not a driver in tests/fuzz/meson.build"; exit 1; }
  done
  drivers=("${only[@]}")
fi

# ---- build ----
if [ ! -f "$BUILD/build.ninja" ]; then
  if ! CC=clang meson setup "$BUILD" -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined \
       -Db_lundef=false >"$ART/setup.log" 2>&1; then
    cat "$ART/setup.log"; echo "FAIL fuzz build: meson setup (see $ART/setup.log)"; exit 1
  fi
fi
targets=()
for d in "${drivers[@]}"; do targets+=("tests/fuzz/$d"); done
if ! nice ninja -C "$BUILD" "${targets[@]}" >"$ART/build.log" 2>&1; then
  tail -40 "$ART/build.log"; echo "FAIL fuzz build: ninja (see $ART/build.log)"; exit 1
fi

# ---- helpers ----

# True when the driver source is the placeholder: LLVMFuzzerTestOneInput
# does nothing but (void)-cast its arguments and return 0, or the file
# includes nothing of keyrail's.
is_stub() {
  /usr/bin/python3 - "$1" <<'PY'
import re, sys
src = open(sys.argv[1], errors="replace").read()
code = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
code = re.sub(r"//[^\n]*", " ", code)
m = re.search(r"LLVMFuzzerTestOneInput\s*\([^)]*\)\s*\{(.*)", code, flags=re.S)
if not m:
    sys.exit(0)  # no entry point at all: not a driver
body = m.group(1)
depth, end = 1, None
for i, ch in enumerate(body):
    if ch == "{": depth += 1
    elif ch == "}":
        depth -= 1
        if depth == 0: end = i; break
body = body[:end] if end is not None else body
trivial = re.fullmatch(r"\s*(\(\s*void\s*\)\s*\w+\s*;\s*)*return\s+0\s*;\s*", body) is not None
project = re.search(r'#\s*include\s*"', code) is not None
sys.exit(0 if trivial or not project else 1)
PY
}

# Dictionaries: tests/fuzz/<name>.dict, tests/fuzz/<driver>.dict, and any
# tests/fuzz/*.dict whose leading comment names the driver; several are
# concatenated.
dict_for() {
  local d=$1 out=$2 f found=0
  : >"$out"
  for f in tests/fuzz/*.dict; do
    [ -f "$f" ] || continue
    if [ "$f" = "tests/fuzz/${d#fuzz_}.dict" ] || [ "$f" = "tests/fuzz/$d.dict" ] ||
       sed -n '1,/^[^#]/p' "$f" | grep -q "^#.*\b$d\b"; then
      cat "$f" >>"$out"; echo >>"$out"; found=1
    fi
  done
  [ $found = 1 ]
}

failed=0
for d in "${drivers[@]}"; do
  src=tests/fuzz/$d.c
  if [ "$d" = fuzz_launcher_env ] && grep -q KR_FUZZ_PENDING "$src" 2>/dev/null; then
    echo "skip fuzz_launcher_env (launcher not built yet)"
    continue
  fi
  if [ ! -f "$src" ] || is_stub "$src"; then
    echo "FAIL $d: no driver ($src is still the placeholder stub)"
    failed=$((failed + 1)); continue
  fi
  bin=$BUILD/tests/fuzz/$d
  if [ ! -x "$bin" ]; then
    echo "FAIL $d: not built ($bin missing)"; failed=$((failed + 1)); continue
  fi
  work=$(mktemp -d /tmp/keyrail-fuzz.XXXXXX)
  mkdir -p "$work/corpus"
  [ -d "tests/fuzz/corpus/$d" ] && cp -r "tests/fuzz/corpus/$d/." "$work/corpus/"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1
        -artifact_prefix="$ART/$d-" -close_fd_mask=1)
  dict_for "$d" "$work/dict" && args+=(-dict="$work/dict")
  log=$ART/$d.log
  "$bin" "${args[@]}" "$work/corpus" >"$log" 2>&1
  rc=$?
  execs=$(grep -oE '^Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+')
  [ -n "$execs" ] || execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  repro=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/^Test unit written to //')
  if [ $rc -ne 0 ]; then
    why=$(grep -m1 -oE "ERROR: [A-Za-z]+: [^ ]+( [^ ]+)?|runtime error: .*|check failed: .*|ERROR: libFuzzer: [a-z-]+|out-of-memory|timeout" "$log" | head -1)
    echo "FAIL $d: exit $rc${why:+ ($why)}${repro:+; reproducer: $repro}; log: $log"
    [ -n "$repro" ] && echo "     reproduce: $bin $repro"
    failed=$((failed + 1))
  elif [ -z "$execs" ]; then
    echo "FAIL $d: no libFuzzer summary (log: $log)"; failed=$((failed + 1))
  elif [ "${cov:-0}" -lt 20 ]; then
    echo "FAIL $d: no driver (coverage ${cov:-0} edges: it exercises nothing)"; failed=$((failed + 1))
  else
    echo "ok $d ($execs execs)"
  fi
  rm -rf "$work"
done

exit $((failed > 0))
