"""Crash safety (issue 7): kill -9 under sustained streaming load.

The mechanism under test: keyrail appends each usage row to its usage
journal (one write to the page cache, which survives kill -9) before the
final chunk (0\\r\\n\\r\\n) of the metered response leaves
(server.usage_sync, src/proxy/routes.c record_usage -> kr_meter_submit), and
replays the journal into the store at the next start; so a client that saw
its response complete is always billed, whatever happens to the process
afterwards. Responses cut by the kill may or may not have rows
(docs/SECURITY.md states that window).

The load runs in two phases: normal, then with the store's write lock held
by another process (a slow store), so usage rows cannot commit and every
response that completes in that phase would be unbilled if keyrail released
final chunks before the commit. keyrail is then killed with SIGKILL, the
lock released, keyrail restarted on the same store: it must open cleanly
(readyz, PRAGMA integrity_check), every completed response must have its
row, and the ledger must be consistent (rollup and credit debit committed
with the rows, never apart).
"""
import json
import signal
import socket
import sqlite3
import threading
import time

from conftest import metrics, wait_until

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


class Load:
    """Client threads sending streaming requests, one per connection, each
    noting whether its response completed (the chunked terminator arrived)."""

    def __init__(self, port, tok, threads=6):
        self.port, self.tok = port, tok
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.completed, self.cut = [], []  # request ids (cut: None when no head arrived)
        self.during = None  # responses completed while the store's write lock was held
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
            assert not t.is_alive(), "a client thread hung"

    def one(self, i, n):
        body = json.dumps(dict(MSG, stream=True)).encode()
        # a mix of quick streams and slower drips, so the kill meets streams at every stage
        fake = "mode=drip interval_ms=10 events=12" if (i + n) % 3 == 0 else "events=4"
        req = (f"POST /anthropic/v1/messages HTTP/1.1\r\nHost: k\r\nx-api-key: {self.tok}\r\n"
               f"x-fake: {fake} in={100 + i} out=7\r\ncontent-type: application/json\r\n"
               f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError:
            time.sleep(0.01)  # keyrail is down: nothing was sent, nothing to record
            return
        got = b""
        try:
            s.sendall(req)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        finally:
            s.close()
        head, _, rest = got.partition(b"\r\n\r\n")
        rid = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-keyrail-request-id:"):
                rid = line.split(b":", 1)[1].strip().decode()
        done = head.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n0\r\n\r\n")
        with self.lock:
            (self.completed if done else self.cut).append(rid)

    def run(self, i):
        n = 0
        while not self.stop.is_set():
            self.one(i, n)
            n += 1


def usage_ids(kr):
    return {r[0] for r in kr.db_rows("select request_id from usage")}


def ledger_consistent(kr):
    """The rollup and the credit debits were committed with the rows, never apart."""
    (rows, cost), = kr.db_rows("select count(*), coalesce(sum(cost_micros), 0) from usage")
    (dreq, dcost), = kr.db_rows("select coalesce(sum(requests), 0), coalesce(sum(cost_micros), 0) "
                               "from usage_daily")
    (debit,), = kr.db_rows("select coalesce(sum(delta_micros), 0) from credit_ledger "
                           "where request_id is not null")
    (ledger,), = kr.db_rows("select coalesce(sum(delta_micros), 0) from credit_ledger")
    (bal,), = kr.db_rows("select coalesce(sum(balance_micros), 0) from credits")
    assert (dreq, dcost) == (rows, cost), "the daily rollup and the usage rows disagree"
    assert debit == -cost, "the credit debits and the usage rows disagree"
    assert bal == ledger, "the balance and the ledger disagree"
    return rows, cost


def kill_under_load(kr, tok, slow_store):
    load = Load(kr.port, tok).start()
    wait_until(lambda: len(load.completed) >= 60, timeout=30, what="load running")
    hold = None
    if slow_store:
        # another process takes the store's write lock: usage rows cannot commit
        hold = sqlite3.connect(kr.db, timeout=10, isolation_level=None)
        hold.execute("BEGIN IMMEDIATE")
        with load.lock:
            before = len(load.completed)
        # rows are waiting behind the lock...
        wait_until(lambda: metrics(kr.port)["keyrail_usage_queue"] >= 1, what="usage rows blocked")
        # ...and the load goes on for a while (a load duration, not a readiness wait)
        time.sleep(0.6)
        with load.lock:
            during = len(load.completed) - before
    kr.proc.send_signal(signal.SIGKILL)
    kr.proc.wait(timeout=10)
    kr.proc = None
    load.join()
    if hold:
        hold.execute("ROLLBACK")
        hold.close()
        load.during = during
    print(f"load: {len(load.completed)} completed, {len(load.cut)} cut"
          + (f", {during} completed under the lock" if hold else ""))
    return load


def check_after_restart(kr, load):
    kr.start()  # waits for /readyz 200: the store opened (and recovered) cleanly
    (ok,), = kr.db_rows("pragma integrity_check")
    assert ok == "ok"
    have = usage_ids(kr)
    completed = [r for r in load.completed if r]
    assert len(completed) == len(load.completed), "a completed response without a request id"
    missing = [r for r in completed if r not in have]
    assert not missing, f"{len(missing)} of {len(completed)} completed responses have no usage row: " \
                        f"{missing[:5]}"
    assert load.cut, "the kill met no response in flight: the window was not exercised"
    if load.during is not None:
        # responses went on completing while no row could commit: their rows
        # were in the usage journal only, and the restart replayed them (the
        # check above); the window was really exercised
        assert load.during > 0, "nothing completed while the store was locked"
    # rows that exist are whole: exact tokens for the requests that sent them
    for row in kr.usage():
        assert row["input"] in range(100, 106) and row["status"] in ("complete", "partial",
                                                                     "client_closed"), row
    return ledger_consistent(kr)


def test_kill9_under_streaming_load_loses_no_completed_usage(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    load = kill_under_load(kr, tok, slow_store=False)
    rows1, _ = check_after_restart(kr, load)
    assert rows1 >= len(load.completed)


def test_kill9_while_the_store_is_slow(kr, vendor):
    """With the store's write lock held elsewhere no row can commit, yet
    responses complete: each row is in the usage journal before its response
    ends. The kill then loses the writer's queue, and the restart replays the
    journal: no completed response is unbilled."""
    tok = kr.setup_org()
    kr.start()
    load = kill_under_load(kr, tok, slow_store=True)
    check_after_restart(kr, load)
    # and keyrail serves again afterwards, metering as before
    load2 = Load(kr.port, tok, threads=2).start()
    wait_until(lambda: len(load2.completed) >= 5, timeout=20, what="load after restart")
    load2.join()
    # rows commit in the background, a batch window after their responses
    wait_until(lambda: all(r in usage_ids(kr) for r in load2.completed), timeout=10,
               what="every response completed after the restart has its row")


def test_a_second_instance_on_the_same_journal_refuses_to_start(kr, vendor, tmp_path):
    """One journal per instance: another keyrail replaying and truncating a
    live journal would lose rows it had not committed yet (or write them
    twice). The journal is locked; a second instance given it stops at once
    with a message naming the file and the setting."""
    import subprocess
    from conftest import Keyrail, KEYRAIL
    tok = kr.setup_org()
    kr.start()
    other = Keyrail(str(tmp_path), vendor, name="kr2")
    other.journal = kr.journal
    other.write_config()
    p = subprocess.run([KEYRAIL, "serve"], env=other.env(), capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    err = p.stderr + other.log_text()
    assert kr.journal in err and "in use by another keyrail" in err and "usage_journal" in err, err
    # the running instance is unharmed and still journals
    load = Load(kr.port, tok, threads=1).start()
    wait_until(lambda: len(load.completed) >= 2, timeout=20, what="requests after the refused start")
    load.join()
    wait_until(lambda: all(r in usage_ids(kr) for r in load.completed), timeout=10,
               what="their usage rows")
