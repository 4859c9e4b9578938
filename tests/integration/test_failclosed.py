"""Fail closed (issue 7): when the store cannot answer or a secret cannot be
read, keyrail refuses (503) -- it never serves unauthenticated, unmetered,
or as if an unreadable secret were unset.

What really exercises each path on SQLite (found by experiment):
  - usage writes: another process holding the write lock (BEGIN IMMEDIATE).
    The meter's batch waits out the 5 s busy timeout, fails, marks itself
    unhealthy (src/proxy/meter.c) and the proxy refuses metered requests
    (src/proxy/routes.c on_auth) until a retry commits.
  - auth reads on a cache miss (store worker threads, src/proxy/auth.c
    lookup_work): a write lock does NOT block them -- the store runs in WAL
    mode, where readers never wait for a writer -- and an exclusive locking
    mode cannot be taken while keyrail holds its connections open, and
    file permissions do not apply to root or to open files. A failing read
    is simulated by taking the table away under keyrail (ALTER TABLE ...
    RENAME from another process): each of the three reads of a lookup
    (token, workspace, secrets) then fails as a store error would.
  - unreadable secrets: a corrupted ciphertext, a ciphertext copied from
    another row, the wrong master key.
On PostgreSQL the realistic case is the database going away: a private
server (scripts/pg.sh) whose database stops accepting connections and has
keyrail's sessions terminated; keyrail must refuse until it can reconnect.
"""
import json
import time
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading

import pytest

from conftest import (CACHE_SETTLE, KEYRAIL, ROOT, TENANT_OAUTH, Keyrail, check_log_clean, http, metrics,
                      wait_until)

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


def anthropic(kr, tok, body=None, path="/anthropic/v1/messages", headers=None):
    h = {"x-api-key": tok, "anthropic-version": "2023-06-01"}
    h.update(headers or {})
    return http(kr.port, "POST", path, body if body is not None else MSG, h)


def sql(kr, statement, args=()):
    c = sqlite3.connect(kr.db, timeout=10, isolation_level=None)
    try:
        return c.execute(statement, args).fetchall()
    finally:
        c.close()


def secrets_table(kr):
    return kr.db_rows("select scope, owner_id, key, ciphertext, enc_version, created_at, updated_at "
                      "from secrets order by scope, owner_id, key")


STORE_DOWN = b"the store is unavailable; keyrail refuses to serve unauthenticated"
UNMETERED = b"usage cannot be recorded right now; keyrail refuses to serve unmetered"


def until_lookups_fail(kr, tok, timeout, cache_ms=200):
    """Drives keyrail into one defined state after the store began to fail:
    the token's cached answer has expired, so every request's lookup reaches
    the store and is refused with STORE_DOWN (store failures are never
    cached). On the way there, only correct answers may be seen: 200 (still
    authenticated from the cache, within token_cache_ms; its usage row is
    journaled) or 503 with one of the two correct refusals -- UNMETERED when
    such a request's usage could not be committed, which then wins while the
    cached answer lives. Which of those come first is a race; the state this
    returns in is not. Each event loop has its own token cache: after the
    first loop refuses, the others' entries live up to cache_ms longer."""
    seen = []

    def lookups_fail():
        st, _, data = anthropic(kr, tok)
        seen.append((st, data))
        return st == 503 and STORE_DOWN in data

    wait_until(lookups_fail, timeout=timeout, what="every lookup refused while the store fails")
    settled = time.monotonic() + cache_ms / 1000 + 0.1
    while time.monotonic() < settled:
        lookups_fail()
        time.sleep(0.02)
    for st, data in seen:
        assert st == 200 or (st == 503 and (STORE_DOWN in data or UNMETERED in data)), (st, data)
    return seen


def flip_char(ct, i=12):
    """A different base64 character at position i: still base64, no longer authentic."""
    return ct[:i] + ("B" if ct[i] != "B" else "C") + ct[i + 1:]


# ---- the store cannot be read: auth refuses with 503 ----

@pytest.mark.parametrize("table", ["tokens", "workspaces", "secrets"])
def test_store_read_failure_on_auth_is_503(kr, vendor, table):
    tok = kr.setup_org()
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    vendor.clear()
    sql(kr, f"alter table {table} rename to {table}_away")
    try:
        # the cached answer lives token_cache_ms (200 here); then every lookup fails
        until_lookups_fail(kr, tok, timeout=5)
        vendor.clear()
        st, h, data = anthropic(kr, tok)
        assert st == 503
        err = json.loads(data)
        assert err["error"]["type"] == "api_error" and err["error"]["message"] == STORE_DOWN.decode()
        # an unknown token is not let in either: when the token read itself fails it
        # is not even called unknown (the store did not say); else the store did say
        st, _, data = anthropic(kr, "krws_" + "x" * 43)
        assert st == (503 if table == "tokens" else 401), data
        st, _, _ = http(kr.port, "GET", "/v1/workspace/env", headers={"x-api-key": tok})
        assert st == 503
        assert vendor.requests() == [], "nothing may be served while the store fails"
    finally:
        sql(kr, f"alter table {table}_away rename to {table}")
    # store failures are not cached: the next request is served again
    st, _, _ = anthropic(kr, tok)
    assert st == 200


# ---- usage cannot be written: metered requests are refused ----

def test_usage_write_failure_refuses_metered_requests(kr, vendor):
    tok = kr.setup_org()
    kr.journal = None  # the default journal: next to the SQLite store
    kr.write_config()
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    assert http(kr.port, "GET", "/readyz")[0] == 200
    hold = sqlite3.connect(kr.db, timeout=10, isolation_level=None)
    hold.execute("BEGIN IMMEDIATE")  # the store's write lock, held by another process
    held = {}

    def stream():
        held["resp"] = anthropic(kr, tok, dict(MSG, stream=True), headers={"x-fake": "in=321 out=5"})

    t = threading.Thread(target=stream)
    try:
        t.start()
        # the usage batch waits out the busy timeout (5 s) and fails: not ready
        wait_until(lambda: http(kr.port, "GET", "/readyz", timeout=5)[0] == 503, timeout=20,
                   what="meter unhealthy")
        st, _, data = http(kr.port, "GET", "/readyz")
        assert st == 503 and b"usage writes are failing" in data
        n = len(vendor.requests())
        for body, path in ((MSG, "/anthropic/v1/messages"), (dict(MSG, stream=True), "/anthropic/v1/messages")):
            st, _, data = anthropic(kr, tok, body, path)
            assert st == 503 and b"refuses to serve unmetered" in data, data
        st, _, data = http(kr.port, "POST", "/openai/v1/chat/completions",
                           {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                           {"authorization": f"Bearer {tok}"})
        assert st == 503 and b"unmetered" in data
        assert len(vendor.requests()) == n, "a metered request was served while usage could not be written"
        # unmetered routes still work (count_tokens is free)
        st, _, _ = anthropic(kr, tok, MSG, "/anthropic/v1/messages/count_tokens")
        assert st == 200
        # the first stream completed: its row is journaled, not yet committed
        t.join(timeout=20)
        st, h, data = held["resp"]
        assert st == 200 and data.rstrip().endswith(b'"type":"message_stop"}')
        assert kr.usage(h["x-keyrail-request-id"]) == []
        assert metrics(kr.port)["keyrail_usage_queue"] >= 1
        # in the journal of the event loop that served it (loop N: path + ".N")
        journals = [kr.db + "-usage-journal"] + [f"{kr.db}-usage-journal.{i}" for i in range(1, kr.workers)]
        assert sum(os.path.getsize(j) for j in journals) > 0, "the row is in a usage journal"
    finally:
        hold.execute("ROLLBACK")
        hold.close()
    # the retry commits; everything is metered; the journal is emptied
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["status"]) == (321, "complete")
    wait_until(lambda: http(kr.port, "GET", "/readyz")[0] == 200, timeout=10, what="ready again")
    assert anthropic(kr, tok)[0] == 200
    assert "store write failed" in kr.log_text() and "recovered" in kr.log_text()


# ---- PostgreSQL: the database goes away under keyrail ----

PSQL = shutil.which("psql") or "/usr/bin/psql"


@pytest.fixture
def pg():
    d = tempfile.mkdtemp(prefix="keyrail-pg-failclosed.")
    os.chmod(d, 0o755)
    pgsh = os.path.join(ROOT, "scripts", "pg.sh")
    p = subprocess.run([pgsh, "start", d], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"could not start a private PostgreSQL: {p.stderr}"
    url = open(os.path.join(d, "url")).read().strip()
    yield url
    subprocess.run([pgsh, "stop", d], capture_output=True, timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def psql(url, statement):
    admin = url.rsplit("/", 1)[0] + "/postgres"
    p = subprocess.run([PSQL, admin, "-v", "ON_ERROR_STOP=1", "-qAtc", statement],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("cache_ms", [200, 3000])
def test_postgres_database_gone_is_503(vendor, tmp_path, pg, cache_ms):
    """cache_ms 3000: the cached token outlives the first failed usage commit,
    so the way to the defined state always passes the UNMETERED refusal (the
    race that made this test flaky, made certain)."""
    k = Keyrail(str(tmp_path), vendor, store_url=pg, extra_config=f"token_cache_ms = {cache_ms}\n")
    try:
        tok = k.setup_org()
        k.start()
        assert anthropic(k, tok)[0] == 200
        db = pg.rsplit("/", 1)[1]
        psql(pg, f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        psql(pg, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        seen = until_lookups_fail(k, tok, timeout=10, cache_ms=cache_ms)
        if cache_ms == 3000:
            assert any(UNMETERED in data for _, data in seen), "the race was not exercised"
        vendor.clear()
        st, _, data = anthropic(k, tok)
        assert st == 503 and STORE_DOWN in data
        st, _, _ = anthropic(k, "krws_" + "y" * 43)
        assert st == 503, "an unknown token is not called unknown when the store cannot say"
        st, _, data = http(k.port, "GET", "/readyz")
        assert st == 503 and b"store is unreachable" in data
        assert vendor.requests() == []
        psql(pg, f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        # keyrail reconnects by itself; store failures were never cached
        wait_until(lambda: anthropic(k, tok)[0] == 200, timeout=10, what="served again")
        wait_until(lambda: http(k.port, "GET", "/readyz")[0] == 200, timeout=10, what="ready again")
    finally:
        rc = k.stop()
        text = k.log_text()
        check_log_clean(text)
    assert rc == 0, text[-3000:]


# ---- the store cannot be opened: keyrail does not start ----

@pytest.mark.parametrize("how", ["garbage", "missing-dir", "directory"])
def test_unusable_store_refuses_to_start(kr, vendor, how, tmp_path):
    if how == "garbage":
        with open(kr.db, "wb") as f:
            f.write(b"this is not a database" * 100)
    elif how == "missing-dir":
        kr.store_url = str(tmp_path / "no" / "such" / "dir" / "k.db")
    else:
        kr.store_url = str(tmp_path)
    kr.write_config()
    p = subprocess.run([KEYRAIL, "serve"], env=kr.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    # the log is a file here: the refusal is in it, and on stderr too
    assert "refusing to start: store" in open(kr.log).read()
    assert p.stderr.startswith("keyrail: refusing to start: store"), p.stderr


# ---- secrets that cannot be read never become "unset" ----

def concierge_pin(kr):
    rows = kr.db_rows("select ciphertext from secrets where scope = 'workspace' and key = 'LLM_PROVIDER'")
    assert len(rows) == 1, "the concierge's provider pin is stored"
    return rows[0][0]


def assert_refused_as_unreadable(kr, vendor, tok):
    wait_until(lambda: anthropic(kr, tok)[0] == 503, timeout=5, what="503 for the unreadable workspace")
    time.sleep(CACHE_SETTLE)  # every event loop's cache, not only the one that refused first
    st, _, data = anthropic(kr, tok)
    err = json.loads(data)["error"]
    assert st == 503 and "SECRET_UNREADABLE" in err["message"], err
    st, _, data = http(kr.port, "GET", "/v1/workspace/env", headers={"x-api-key": tok})
    assert st == 503 and b"SECRET_UNREADABLE" in data
    assert vendor.requests() == []


def test_corrupt_secret_fails_rebuild_and_is_left_unchanged(kr, vendor):
    tok = kr.setup_org()
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", TENANT_OAUTH)
    ct = concierge_pin(kr)
    sql(kr, "update secrets set ciphertext = ? where key = 'LLM_PROVIDER'", (flip_char(ct),))
    before = secrets_table(kr)
    db_bytes = {k: v for k, v in ((r[2], r[3]) for r in before)}

    p = kr.cli("provision", "acme/boss", "--rebuild", check=False)
    assert p.returncode != 0
    assert "SECRET_UNREADABLE" in p.stderr + p.stdout and "LLM_PROVIDER" in p.stderr + p.stdout
    assert TENANT_OAUTH not in p.stdout + p.stderr
    # a fresh provisioning with a payload must not paper over it either
    p = kr.cli("provision", "acme/boss", "--model", "claude-haiku-4-5", check=False)
    assert p.returncode != 0 and "SECRET_UNREADABLE" in p.stderr + p.stdout
    p = kr.cli("secret", "list", "--ws", "acme/boss")
    assert "UNREADABLE" in p.stdout
    # nothing was written: the row is byte-for-byte what it was
    assert secrets_table(kr) == before
    assert {r[2]: r[3] for r in secrets_table(kr)} == db_bytes

    kr.start()
    assert_refused_as_unreadable(kr, vendor, tok)
    assert secrets_table(kr) == before, "serving must not rewrite an unreadable secret"


def test_ciphertext_moved_to_another_row_does_not_open(kr, vendor):
    """A ciphertext is bound to its row (scope, owner, key): a valid sealed
    value copied onto the pin row is unreadable there, not a value."""
    tok = kr.setup_org()
    kr.secret("--org", "acme", "LLM_PROVIDER", "platform")  # a real sealed "platform", other row
    (org_ct,), = kr.db_rows("select ciphertext from secrets where scope = 'org' and key = 'LLM_PROVIDER'")
    sql(kr, "update secrets set ciphertext = ? where scope = 'workspace' and key = 'LLM_PROVIDER'", (org_ct,))
    before = secrets_table(kr)
    p = kr.cli("provision", "acme/boss", "--rebuild", check=False)
    assert p.returncode != 0 and "SECRET_UNREADABLE" in p.stderr + p.stdout
    assert secrets_table(kr) == before
    kr.start()
    assert_refused_as_unreadable(kr, vendor, tok)


def refused_start(kr, *args, env=None):
    p = subprocess.run([KEYRAIL, "serve", *args], env=env or kr.env(), capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keyrail: refusing to start: "), err
    return err


def test_wrong_master_key_refuses_to_start(kr, vendor, tmp_path):
    """Started with another master key, keyrail could read no secret. The
    store's key check finds it at start: keyrail refuses to start, on stderr
    as well as in its log file, naming where the key came from; a secret
    write under that key is refused too (the store would be sealed under two
    keys), and nothing changes."""
    tok = kr.setup_org()
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    assert kr.stop() == 0
    right = kr.key_file
    other = str(tmp_path / "other.key")
    subprocess.run([KEYRAIL, "keygen", other], check=True, capture_output=True)
    kr.key_file = other
    kr.write_config()
    before = secrets_table(kr)
    err = refused_start(kr)
    assert f"wrong master key (the master key from key file {other})" in err, err
    assert f"key file {other}" in open(kr.log).read()
    # from the environment, the variable is named
    env = kr.env()
    env["KEYRAIL_MASTER_KEY"] = open(other).read().strip()
    err = refused_start(kr, env=env)
    assert "the master key from KEYRAIL_MASTER_KEY" in err and other not in err, err
    assert open(other).read().strip() not in err + kr.log_text()
    # --log-file too: stderr still says why
    err = refused_start(kr, "--log-file", str(tmp_path / "other.log"))
    assert "wrong master key" in err and "wrong master key" in open(tmp_path / "other.log").read()
    # writers refuse the other key: nothing sealed under it
    for cmd in (["secret", "set", "--org", "acme", "NOTE", "--value", "x"],
                ["ws", "create", "acme", "dev", "--model", "claude-haiku-4-5"]):
        p = kr.cli(*cmd, check=False)
        assert p.returncode == 1, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "WRONG_MASTER_KEY" in p.stderr, p.stderr
        assert f"(the master key from key file {other})" in p.stderr, p.stderr
    assert secrets_table(kr) == before
    assert kr.db_rows("select name from workspaces where name = 'dev'") == []
    # the right key starts and serves as before
    kr.key_file = right
    kr.write_config()
    kr.start()
    assert anthropic(kr, tok)[0] == 200


def test_store_from_before_the_key_check(kr, vendor, tmp_path):
    """A store whose secrets were sealed before the key check existed: a key
    that opens none of them refuses to start and writes nothing; the right
    key proves itself on them, and its check is written at that first use."""
    tok = kr.setup_org()
    sql(kr, "delete from key_check")
    before = secrets_table(kr)
    other = str(tmp_path / "other.key")
    subprocess.run([KEYRAIL, "keygen", other], check=True, capture_output=True)
    right, kr.key_file = kr.key_file, other
    kr.write_config()
    err = refused_start(kr)
    assert "opens none of the 1 secret(s)" in err, err
    assert kr.db_rows("select count(*) from key_check") == [(0,)]
    kr.key_file = right
    kr.write_config()
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    assert kr.db_rows("select count(*) from key_check") == [(1,)]
    assert secrets_table(kr) == before
    assert kr.stop() == 0
    kr.key_file = other
    kr.write_config()
    assert "not the store's" in refused_start(kr)


# ---- strict base64 (found by fuzz_secret_open) ----

def test_secret_with_non_base64_byte_is_unreadable(kr, vendor):
    """libsodium 1.0.18 (Debian 12) decodes every byte >= 0x80 as '/', so a
    stored value whose '/' had its high bit set would still open; secrets.c
    refuses any byte outside [A-Za-z0-9+/=] first, so a corrupted byte is
    never silently accepted."""
    kr.setup_org()
    for _ in range(50):  # a fresh nonce each time until the stored text holds a '/'
        kr.secret("--org", "acme", "SOME_SETTING", "v")
        (ct,), = kr.db_rows("select ciphertext from secrets where key = 'SOME_SETTING'")
        if "/" in ct:
            break
    assert "/" in ct
    i = ct.index("/")
    bad = ct.encode()[:i] + b"\xaf" + ct.encode()[i + 1:]  # '/' | 0x80: not a base64 byte
    c = sqlite3.connect(kr.db)
    c.execute("update secrets set ciphertext = cast(? as text) where key = 'SOME_SETTING'", (bad,))
    c.commit()
    c.close()
    p = kr.cli("secret", "list", "--org", "acme")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("SOME_SETTING")][0]
    assert "UNREADABLE" in line, f"a stored value that is not base64 was accepted: {line}"
