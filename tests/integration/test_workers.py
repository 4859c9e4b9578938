"""Several event loops in one instance (issue 23, server.workers).

keyrail runs server.workers loops, each with its own listening socket on the
same port (SO_REUSEPORT), its own upstream connections, token cache and store
workers. What they share must stay exact: the rate windows, the credit view,
the usage writer and its journals, the counters /metrics shows. These tests
start keyrail with 4 loops (more than this machine's cores: the loops really
interleave) and check each shared thing from outside, through the real
binary; the ThreadSanitizer stage of tests/run.sh runs them again.
"""
import json
import os
import signal
import socket
import threading
import time

import pytest

from conftest import CACHE_SETTLE, MSG, Keyrail, call, http, metrics, wait_until

LOOPS = 4


@pytest.fixture
def kr4(tmp_path, vendor):
    from conftest import check_log_clean
    k = Keyrail(str(tmp_path), vendor)
    k.workers = LOOPS
    k.write_config()
    yield k
    rc = k.stop()
    text = k.log_text()
    check_log_clean(text)
    assert rc == 0, f"keyrail exited {rc}:\n{text[-3000:]}"


def request_lines(k):
    out = []
    for line in open(k.log, errors="replace"):
        if '"msg":"request"' in line:
            out.append(json.loads(line))
    return out


def parallel(n, fn):
    """Runs fn(i) for i in range(n) on n threads at once (each its own connection)."""
    results = [None] * n
    go = threading.Barrier(n)

    def run(i):
        go.wait()
        results[i] = fn(i)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
        assert not t.is_alive(), "a client hung"
    return results


def away_from_minute_end():
    wait_until(lambda: time.time() % 60 < 45, timeout=20, what="the start of a minute")


def test_connections_spread_over_the_loops_and_metrics_sum_them(kr4, vendor):
    tok = kr4.setup_org()
    kr4.start()
    n = 48
    res = parallel(n, lambda i: call(kr4, tok, "anthropic", stream=i % 2 == 1)[0])
    assert res == [200] * n
    lines = [l for l in request_lines(kr4) if l.get("route") == "anthropic_messages"]
    assert len(lines) == n
    workers = {l["worker"] for l in lines}
    assert workers <= set(range(LOOPS)) and len(workers) >= 2, f"every request on one loop: {workers}"
    # /metrics sums every loop's counters, whichever loop answers it
    for _ in range(6):
        m = metrics(kr4.port)
        assert m['keyrail_requests_total{route="anthropic_messages",status="200"}'] == n
        assert m["keyrail_event_loops"] == LOOPS
        assert m['keyrail_tokens_total{kind="input"}'] == n * 1000
    # usage rows: one per request, each exact
    wait_until(lambda: len(kr4.usage()) == n, timeout=10, what="every usage row")
    assert all(r["input"] == 1000 and r["output"] == 100 for r in kr4.usage())


def test_rate_limit_is_exact_across_loops(kr4, vendor):
    """rpm = 10 and 40 requests at once, spread over 4 loops: exactly 10 pass."""
    tok = kr4.setup_org()
    kr4.cli("limits", "set", "--ws", "acme/boss", "--rpm", "10")
    kr4.start()
    away_from_minute_end()
    res = parallel(40, lambda i: call(kr4, tok, "anthropic")[0])
    assert sorted(res) == [200] * 10 + [429] * 30, res
    assert len(vendor.requests()) == 10
    assert len({l["worker"] for l in request_lines(kr4) if l.get("route") == "anthropic_messages"}) >= 2
    # and the window in the store says 10 (the sync runs on one loop for all)
    wait_until(lambda: kr4.db_rows("select requests from rate_windows where scope='workspace'") == [(10,)],
               timeout=5, what="the window in the store")


def test_credits_debited_exactly_once_across_loops(kr4, vendor):
    tok = kr4.setup_org(credits="10")
    kr4.start()
    res = parallel(32, lambda i: call(kr4, tok, "anthropic", stream=i % 3 == 0,
                                      fake=f"in={1000 + i} out={50 + i}")[0])
    assert res == [200] * 32
    wait_until(lambda: len(kr4.usage()) == 32, timeout=10, what="every usage row")
    rows = kr4.usage()
    assert sorted(r["input"] for r in rows) == [1000 + i for i in range(32)]
    spent = sum(r["cost_micros"] for r in rows)
    (bal,), = kr4.db_rows("select balance_micros from credits")
    assert bal == 10_000_000 - spent


def test_drain_lets_streams_on_every_loop_finish(kr4, vendor):
    tok = kr4.setup_org()
    kr4.start()
    n = 16
    done = [None] * n
    started = threading.Barrier(n + 1)

    def slow(i):
        body = json.dumps(dict(MSG, stream=True)).encode()
        req = (f"POST /anthropic/v1/messages HTTP/1.1\r\nHost: k\r\nx-api-key: {tok}\r\n"
               f"x-fake: mode=drip interval_ms=100 events=10 in=10 out=5\r\n"
               f"content-type: application/json\r\nconnection: close\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
        s = socket.create_connection(("127.0.0.1", kr4.port), timeout=20)
        s.sendall(req)
        got = s.recv(65536)
        started.wait()
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
        s.close()
        done[i] = got

    ts = [threading.Thread(target=slow, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    started.wait(timeout=20)
    kr4.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # no new connection is taken while draining, on any loop
    for _ in range(LOOPS * 4):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", kr4.port), timeout=2).close()
    for t in ts:
        t.join(timeout=30)
    assert kr4.proc.wait(timeout=20) == 0
    for got in done:
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n0\r\n\r\n"), got[-200:]
    lines = [l for l in request_lines(kr4) if l.get("route") == "anthropic_messages"]
    assert len(lines) == n and len({l["worker"] for l in lines}) >= 2
    ids = {l["request_id"] for l in lines}
    assert {r["request_id"] for r in kr4.usage()} == ids, "every drained stream is metered"
    assert "keyrail stopped" in kr4.log_text()


def test_kill9_journals_of_every_loop_replayed_by_fewer_loops(kr4, vendor):
    """Rows journaled by 4 loops and never committed (the store's write lock
    held), then kill -9: a restart with one loop replays every loop's
    journal file."""
    import sqlite3
    tok = kr4.setup_org()
    kr4.start()
    assert call(kr4, tok, "anthropic")[0] == 200
    wait_until(lambda: len(kr4.usage()) == 1, timeout=10, what="the first row")
    hold = sqlite3.connect(kr4.db, timeout=10, isolation_level=None)
    hold.execute("BEGIN IMMEDIATE")
    try:
        res = parallel(24, lambda i: call(kr4, tok, "anthropic", fake=f"in={2000 + i} out=9"))
        assert [r[0] for r in res] == [200] * 24
        ids = {r[1]["x-keyrail-request-id"] for r in res}
        journals = [kr4.journal] + [f"{kr4.journal}.{i}" for i in range(1, LOOPS)]
        sizes = [os.path.getsize(j) for j in journals]
        assert sum(1 for s in sizes if s > 0) >= 2, f"the rows were journaled by one loop only: {sizes}"
        kr4.proc.send_signal(signal.SIGKILL)
        kr4.proc.wait(timeout=10)
    finally:
        hold.execute("ROLLBACK")
        hold.close()
    kr4.proc = None
    kr4.workers = 1
    kr4.write_config()
    kr4.start()
    rows = {r["request_id"]: r for r in kr4.usage()}
    assert ids <= set(rows), "a journaled row was lost"
    assert sorted(rows[i]["input"] for i in ids) == [2000 + i for i in range(24)]
    assert "replayed" in kr4.log_text()
    # the journals of loops this start does not have were replayed and removed
    assert not any(os.path.exists(f"{kr4.journal}.{i}") for i in range(1, LOOPS))


def test_revocation_reaches_every_loop_within_the_cache_lifetime(kr4, vendor):
    tok = kr4.setup_org()
    kr4.start()
    # warm every loop's cache
    assert parallel(16, lambda i: call(kr4, tok, "anthropic")[0]) == [200] * 16
    kr4.cli("token", "revoke", tok[:12])
    t0 = time.monotonic()
    wait_until(lambda: call(kr4, tok, "anthropic")[0] == 401, timeout=5, what="revocation")
    time.sleep(CACHE_SETTLE)
    assert time.monotonic() - t0 < 2.0
    res = parallel(16, lambda i: call(kr4, tok, "anthropic")[0])
    assert res == [401] * 16, res


def test_one_loop_still_serves(tmp_path, vendor):
    k = Keyrail(str(tmp_path), vendor)
    k.workers = 1
    k.write_config()
    try:
        tok = k.setup_org()
        k.start()
        assert call(k, tok, "anthropic")[0] == 200
        assert metrics(k.port)["keyrail_event_loops"] == 1
        assert all("worker" not in l for l in request_lines(k)), "one loop: no worker field"
    finally:
        assert k.stop() == 0
