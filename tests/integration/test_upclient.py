"""keyrail's own upstream client (issue 15; src/proxy/upclient.c): what the
fake vendor cannot show, against a scripted plain-HTTP vendor that decides
per connection and per request what to send.

- the retry rule: a POST on a reused connection lost after it was written
  whole is never sent again (502); count_tokens is repeated once on a fresh
  connection; a request that was not written whole is sent again, once;
- a malformed upstream head (duplicate or conflicting lengths, obs-fold,
  bytes nobody framed) is a 502 naming it, nothing metered, and the
  connection is never reused; bytes after a response retire the connection;
- keep-alive: requests share one connection; a connection the vendor closed
  while idle, or one past the vendor's Keep-Alive timeout, is not used;
- back-pressure: while the client reads nothing, keyrail stops reading the
  vendor (the vendor's writes block), and everything arrives afterwards;
- over TLS, sequential calls share one handshake.

These tests pin `[upstream] client = native` whatever KR_TEST_UPSTREAM_CLIENT
says (libcurl sends a POST again on a reused connection that died silently).
"""
import json
import os
import socket
import struct
import threading
import time

import pytest

from conftest import FakeVendor, Keyrail, TestPKI, check_log_clean, http, wait_until

NATIVE = "[upstream]\nclient = native\n"
MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def message_json(inp=10, out=5):
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                       "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": inp, "output_tokens": out}}).encode()


def answer(body=None, status="200 OK", extra=b""):
    body = message_json() if body is None else body
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            .encode() + extra + b"\r\n" + body)


class RawVendor:
    """A plain-HTTP vendor run by script(conn_no, req_no, path) -> action:
    ("send", bytes, keep)  read the body, send the bytes, keep the connection or close it
    ("silent", )            read the body, close without a byte
    ("reset", )             after the head, reset the connection (the body unread)
    ("stream", n)           read the body, send a head and n body bytes (chunked), then keep
    """

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = []
        self.conns = 0
        self.sent = 0  # body bytes handed to the kernel by ("stream", n)
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                cn = self.conns
                self.conns += 1
            threading.Thread(target=self.serve, args=(s, cn), daemon=True).start()

    def serve(self, s, cn):
        buf, rn = b"", 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
                n = int(hdrs.get("content-length", "0"))
                act = self.script(cn, rn, path)
                rec = {"conn": cn, "req": rn, "path": path, "length": n, "received": 0}
                with self.lock:
                    self.requests.append(rec)
                if act[0] == "reset":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                while len(buf) < n:
                    d = s.recv(1 << 20)
                    if not d:
                        rec["received"] = len(buf)
                        return
                    buf += d
                rec["received"] = n
                buf = buf[n:]
                if act[0] == "silent":
                    return
                if act[0] == "send":
                    s.sendall(act[1])
                    if not act[2]:
                        return
                elif act[0] == "stream":
                    s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                              b"transfer-encoding: chunked\r\n\r\n")
                    chunk = b"x" * 65536
                    left = act[1]
                    while left:
                        k = min(left, len(chunk))
                        s.sendall(b"%x\r\n" % k + chunk[:k] + b"\r\n")
                        left -= k
                        self.sent += k
                    s.sendall(b"0\r\n\r\n")
                rn += 1
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def raw(tmp_path):
    made = []

    def make(script, extra=""):
        v = RawVendor(script)
        d = tmp_path / f"k{len(made)}"
        os.makedirs(d, exist_ok=True)
        k = Keyrail(str(d), v, extra_config=NATIVE + extra)
        # one event loop: these tests count connections of one upstream pool
        # (each loop keeps its own)
        k.workers = 1
        k.write_config()
        tok = k.setup_org()
        k.start()
        made.append((v, k))
        return v, k, tok

    yield make
    for v, k in made:
        rc = k.stop()
        v.stop()
        check_log_clean(k.log_text())
        assert rc == 0, k.log_text()[-3000:]


def messages(k, tok, path="/anthropic/v1/messages", body=None, timeout=30):
    return http(k.port, "POST", path, body if body is not None else MSG, {"x-api-key": tok}, timeout=timeout)


def rows(k):
    return k.db_rows("select request_id, status from usage order by id")


# ---- the retry rule ----

def test_post_lost_after_it_was_written_whole_is_never_sent_again(raw):
    """The vendor reads the whole second request on the reused connection,
    then closes it without a byte: it may have acted on it, so keyrail
    answers 502 and does not repeat it."""
    v, k, tok = raw(lambda cn, rn, path: ("silent",) if (cn, rn) == (0, 1) else ("send", answer(), True))
    st, h1, _ = messages(k, tok)
    assert st == 200
    st, h, data = messages(k, tok)
    assert st == 502, data
    msg = json.loads(data)["error"]["message"]
    assert "Empty reply from server" in msg, msg
    time.sleep(0.2)
    assert [(r["conn"], r["req"]) for r in v.requests] == [(0, 0), (0, 1)], v.requests
    # the next call works, on a fresh connection
    st, h3, _ = messages(k, tok)
    assert st == 200
    assert [(r["conn"], r["req"]) for r in v.requests][-1] == (1, 0)
    wait_until(lambda: len(rows(k)) == 2, what="two usage rows")
    assert {r[0] for r in rows(k)} == {h1["x-keyrail-request-id"], h3["x-keyrail-request-id"]}


def test_count_tokens_lost_on_a_reused_connection_is_repeated_once(raw):
    v, k, tok = raw(lambda cn, rn, path: ("silent",) if (cn, rn) == (0, 1)
                    else ("send", answer(b'{"input_tokens":12}'), True))
    assert messages(k, tok, "/anthropic/v1/messages/count_tokens")[0] == 200
    st, _, data = messages(k, tok, "/anthropic/v1/messages/count_tokens")
    assert st == 200 and json.loads(data) == {"input_tokens": 12}
    assert [(r["conn"], r["req"]) for r in v.requests] == [(0, 0), (0, 1), (1, 0)]
    assert "sent again on a fresh connection" in k.log_text()


def test_request_not_written_whole_is_sent_again_once(raw):
    """The vendor resets the reused connection after the head of a 12 MB
    request: the body never reached it whole, so keyrail sends it once more
    on a fresh connection."""
    v, k, tok = raw(lambda cn, rn, path: ("reset",) if (cn, rn) == (0, 1) else ("send", answer(), True),
                    "[server]\nmax_body_bytes = 33554432\n")
    assert messages(k, tok)[0] == 200
    big = dict(MSG, messages=[{"role": "user", "content": "x" * (12 << 20)}])
    st, h, data = messages(k, tok, body=big, timeout=60)
    assert st == 200, data
    reqs = [(r["conn"], r["req"]) for r in v.requests]
    assert reqs == [(0, 0), (0, 1), (1, 0)], reqs
    assert v.requests[1]["received"] == 0 and v.requests[2]["received"] == v.requests[2]["length"]
    assert v.requests[2]["length"] > 12 << 20
    wait_until(lambda: len(rows(k)) == 2, what="usage rows")
    assert "the request had not been sent whole" in k.log_text()


def test_fresh_connection_lost_is_not_retried(raw):
    v, k, tok = raw(lambda cn, rn, path: ("silent",))
    st, _, data = messages(k, tok)
    assert st == 502 and b"Empty reply from server" in data
    time.sleep(0.2)
    assert len(v.requests) == 1
    assert rows(k) == []


# ---- malformed responses ----

BAD_HEADS = {
    "two_lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
    "length_and_chunked": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 5\r\n\r\nhello",
    "bare_lf": b"HTTP/1.1 200 OK\ncontent-length: 5\n\nhello",
    "gzip": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nhello",
    "http2": b"HTTP/2 200\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_HEADS))
def test_malformed_upstream_head_is_502_and_the_connection_retired(raw, case):
    v, k, tok = raw(lambda cn, rn, path: ("send", BAD_HEADS[case], True) if cn == 0
                    else ("send", answer(), True))
    st, h, data = messages(k, tok)
    assert st == 502, data
    msg = json.loads(data)["error"]["message"]
    assert "the upstream's response is malformed" in msg or "status line" in msg, msg
    assert rows(k) == []
    st, _, _ = messages(k, tok)
    assert st == 200
    assert v.requests[-1]["conn"] == 1, "a connection that spoke garbage is never reused"


def test_bytes_after_a_response_retire_the_connection(raw):
    v, k, tok = raw(lambda cn, rn, path: ("send", answer() + b"HTTP/1.1 200 OK\r\n\r\n", True) if cn == 0
                    else ("send", answer(), True))
    assert messages(k, tok)[0] == 200
    assert messages(k, tok)[0] == 200
    assert [r["conn"] for r in v.requests] == [0, 1]


def test_chunked_response_with_trailers_passes_without_them(raw):
    body = message_json(7, 3)
    chunked = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n" +
               b"%x;ext=1\r\n" % len(body) + body + b"\r\n0\r\nx-secret-trailer: t\r\n\r\n")
    v, k, tok = raw(lambda cn, rn, path: ("send", chunked, True))
    st, h, data = messages(k, tok)
    assert st == 200 and data == body
    assert "x-secret-trailer" not in h
    wait_until(lambda: k.db_rows("select input_tokens, output_tokens, status from usage") ==
               [(7, 3, "complete")], what="the row")
    assert messages(k, tok)[0] == 200
    assert [r["conn"] for r in v.requests] == [0, 0], "kept alive after the trailers"


# ---- keep-alive ----

def test_calls_share_a_connection_and_idle_closes_are_noticed(raw):
    closing = {"after": None}

    def script(cn, rn, path):
        return ("send", answer(), closing["after"] is None)
    v, k, tok = raw(script)
    for _ in range(5):
        assert messages(k, tok)[0] == 200
    assert {r["conn"] for r in v.requests} == {0}, "five calls, one connection"
    # the vendor closes the connection after the next answer (as an idle timeout would)
    closing["after"] = True
    assert messages(k, tok)[0] == 200
    time.sleep(0.3)
    closing["after"] = None
    assert messages(k, tok)[0] == 200, "a closed idle connection is never used"
    assert [r["conn"] for r in v.requests][-1] == 1


def test_keep_alive_timeout_hint_is_honoured(raw):
    v, k, tok = raw(lambda cn, rn, path: ("send", answer(extra=b"keep-alive: timeout=2\r\n"), True))
    assert messages(k, tok)[0] == 200
    assert messages(k, tok)[0] == 200
    time.sleep(1.3)  # the hint minus keyrail's margin of a second has passed
    assert messages(k, tok)[0] == 200
    assert [r["conn"] for r in v.requests] == [0, 0, 1]


# ---- back-pressure ----

def test_a_client_that_reads_nothing_stops_the_vendor(raw):
    total = 128 << 20
    v, k, tok = raw(lambda cn, rn, path: ("stream", total))
    s = socket.create_connection(("127.0.0.1", k.port), timeout=60)
    body = json.dumps(MSG).encode()
    s.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              b"x-api-key: " + tok.encode() + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    first = s.recv(1024)
    assert first.startswith(b"HTTP/1.1 200"), first
    time.sleep(1.0)
    a = v.sent
    time.sleep(1.0)
    b = v.sent
    assert a == b and b < total // 2, f"the vendor kept writing ({a} then {b} of {total} bytes)"
    got = len(first)
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
        if got > total and d.endswith(b"0\r\n\r\n"):
            break
    s.close()
    assert v.sent == total
    assert got > total


# ---- TLS ----

def test_tls_calls_share_one_handshake(tmp_path):
    os.makedirs(tmp_path / "pki")
    pki = TestPKI(str(tmp_path / "pki"))
    v = FakeVendor(str(tmp_path), tls=pki.pair("good"))
    k = Keyrail(str(tmp_path), v, extra_config=f"[upstream]\nca_file = {pki.ca}\nclient = native\n")
    k.workers = 1  # one loop, one upstream pool: the handshake is shared within it
    k.write_config()
    try:
        tok = k.setup_org()
        k.start()
        h0 = v.stats()["tls"]["handshakes"]
        for stream in (False, True, False, True):
            st, _, _ = http(k.port, "POST", "/anthropic/v1/messages", dict(MSG, stream=stream),
                            {"x-api-key": tok})
            assert st == 200
        h1 = v.stats()["tls"]["handshakes"]
        assert h1 - h0 == 2, "keyrail's one connection and this stats call"
    finally:
        rc = k.stop()
        v.stop()
        check_log_clean(k.log_text())
        assert rc == 0
