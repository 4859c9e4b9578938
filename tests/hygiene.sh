#!/usr/bin/env bash
# hygiene.sh -- the secret-hygiene sweep run after the integration tests.
#
#   tests/hygiene.sh [DIR…]    DIR: a pytest basetemp; default: every
#                              build/test-results/tmp-* (tests/run.sh runs
#                              pytest once per test directory with
#                              --basetemp=build/test-results/tmp-<dir>)
#
# The whole suite runs with recognisable canary credentials (CANARIES in
# tests/integration/conftest.py). This scans, under each DIR:
#   - every log: *.log, *.stderr, *.out, *.err (keyrail, fake vendor, ...)
#   - every saved response body: DIR/responses/errors.log and ok.log (the
#     conftest hook appends every body the tests receive); env.log -- the
#     2xx bodies of /v1/workspace/env, which hand a workspace its own
#     credentials by design -- is left out, and minted.log -- the admin
#     API's token mints and alert creates, which show a new token or webhook
#     secret once by design -- is scanned for canaries only
#   - every console page the browser tests saw: */console-pages/*.html (the
#     DOM as rendered, saved with each screenshot by tests/js/console_lib.mjs)
#   - every store file: *.db, *.db-wal, *.db-shm, *.db-journal
# for the bytes of any canary, and for any complete workspace or admin
# token (krws_ / kradm_ + 43 base64url characters) or alert webhook secret
# (whsec_ + 64 hex digits) in a log, an error body
# or a store file. The stores keep secrets only as ciphertext and tokens only as
# hashes, so a raw byte scan of the .db files must find none at all: there
# is no allowance for "the secrets table". The sweep fails when the
# directory holds no log or no store (nothing scanned proves nothing), and
# it first checks itself on a planted canary.
# Prints one line "ok hygiene: ..." or "FAIL hygiene: ..." lines; exit status
# non-zero on any hit.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- build/test-results/tmp-*
  [ -e "$1" ] || set -- build/test-results/tmp
fi

exec /usr/bin/python3 - tests/integration/conftest.py "$@" <<'PY'
import os, re, sqlite3, sys, tempfile

conftest, roots = sys.argv[1], sys.argv[2:]
src = open(conftest).read()
# the canaries: every string constant conftest.py lists in CANARIES
names = re.search(r"CANARIES\s*=\s*\[(.*?)\]", src, re.S).group(1)
consts = dict(re.findall(r'^([A-Z_]+)\s*=\s*"([^"]+)"', src, re.M))
canaries = [consts[n.strip()] for n in names.split(",") if n.strip()]
assert canaries and all("CANARY" in c for c in canaries), "conftest.py CANARIES not understood"
TOKEN = re.compile(rb"(?:krws|kradm)_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])|whsec_[0-9a-f]{64}(?![0-9a-f])")

LOG_SUFFIXES = (".log", ".stderr", ".out", ".err")
STORE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")


def classify(path):
    base = os.path.basename(path)
    if os.sep + "responses" + os.sep in path:
        return None if base == "env.log" else "issued" if base == "minted.log" else "body"
    if base.endswith(".html") and os.sep + "console-pages" + os.sep in path:
        return "page"
    if base.endswith(STORE_SUFFIXES):
        return "store"
    if base.endswith(LOG_SUFFIXES):
        return "log"
    return None


def scan(root):
    hits, counts = [], {"log": 0, "body": 0, "store": 0, "issued": 0, "page": 0}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            kind = classify(p)
            if not kind or not os.path.isfile(p):
                continue
            counts[kind] += 1
            data = open(p, "rb").read()
            for c in canaries:
                if c.encode() in data:
                    hits.append(f"{p}: canary {c[:14]}... ({kind})")
            m = TOKEN.search(data) if kind != "issued" else None
            if m:
                hits.append(f"{p}: a token {m.group()[:9].decode()}... ({kind})")
    return hits, counts


def secret_rows(root):
    rows = stores = 0
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".db"):
                try:
                    c = sqlite3.connect(f"file:{os.path.join(d, f)}?mode=ro&immutable=1", uri=True)
                    rows += c.execute("select count(*) from secrets").fetchone()[0]
                    stores += 1
                    c.close()
                except sqlite3.Error:
                    pass
    return rows, stores


# 1. the sweep must catch a planted canary (and a planted token), and pass clean files
with tempfile.TemporaryDirectory() as t:
    os.makedirs(os.path.join(t, "case", "responses"))
    os.makedirs(os.path.join(t, "case", "console-pages"))
    open(os.path.join(t, "case", "console-pages", "secrets.html"), "w").write("<td>%s</td>" % canaries[1])
    open(os.path.join(t, "case", "kr.log"), "w").write('{"msg":"x %s y"}\n' % canaries[-1])
    open(os.path.join(t, "case", "keyrail.db"), "wb").write(b"SQLite format 3\0 krws_" + b"A" * 43)
    open(os.path.join(t, "case", "responses", "errors.log"), "w").write("ok")
    open(os.path.join(t, "case", "responses", "env.log"), "w").write(canaries[0])
    open(os.path.join(t, "case", "responses", "minted.log"), "w").write("kradm_" + "B" * 43)
    h, n = scan(t)
    if len(h) != 3 or n != {"log": 1, "body": 1, "store": 1, "issued": 1, "page": 1}:
        print(f"FAIL hygiene: the self-check did not see what was planted: {h} {n}")
        sys.exit(1)

# 2. the real sweep
hits, counts, rows, stores = [], {"log": 0, "body": 0, "store": 0, "issued": 0, "page": 0}, 0, 0
for root in roots:
    if not os.path.isdir(root):
        print(f"FAIL hygiene: {root} does not exist (run pytest with --basetemp={root})")
        sys.exit(1)
    h, n = scan(root)
    hits += h
    for k in counts:
        counts[k] += n[k]
    r, s = secret_rows(root)
    rows, stores = rows + r, stores + s
for h in hits:
    print(f"FAIL hygiene: {h}")
if counts["log"] == 0 or counts["store"] == 0:
    print(f"FAIL hygiene: nothing to scan under {' '.join(roots)} ({counts})")
    sys.exit(1)
if hits:
    sys.exit(1)
print(f"ok hygiene: no canary and no workspace or admin token or webhook secret in {counts['log']} logs, "
      f"{counts['body']} response-body files ({counts['issued']} of issued tokens, canaries only), {counts['page']} console pages, {counts['store']} store files ({stores} stores holding {rows} "
      f"encrypted secrets) under {' '.join(roots)}; {len(canaries)} canaries")
PY
