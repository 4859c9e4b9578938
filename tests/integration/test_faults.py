"""Upstream faults, beyond what test_proxy.py covers (issue 7).

test_proxy.py already has: refused -> 502 and stall -> 504 (Anthropic,
non-stream), status pass-through, Anthropic stall_mid/reset_mid streams
ending in an error event with partial usage, Anthropic malformed SSE, and a
client leaving mid-stream. Here: the same faults for OpenAI and for
streaming requests, cut non-stream bodies, a 5xx storm under concurrency,
slow drips, and after every fault the exact usage of what was streamed
(the vendor's own record of what it served is the reference) and no leak:
/metrics back to idle (keyrail_open_streams 0, keyrail_inflight_requests 1
-- the /metrics request itself --, keyrail_open_connections 1 -- its
connection --, keyrail_usage_queue 0). The kr fixture then stops keyrail with
SIGTERM and fails the test on a non-zero exit or any sanitizer line (the
test build is ASan+UBSan with LeakSanitizer).

Defences: src/proxy/routes.c (kr_req_upstream_done, record_usage,
end_response, on_up_timeout), src/proxy/upstream.c, src/proxy/server.c.
"""
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import http, metrics, parse_responses, raw_exchange, sse_events, wait_until

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def call(kr, tok, proto, stream, fake, extra=None):
    if proto == "anthropic":
        path, body, h = "/anthropic/v1/messages", dict(MSG, stream=stream), {"x-api-key": tok}
    else:
        path, body, h = "/openai/v1/chat/completions", dict(CHAT, stream=stream), \
            {"authorization": f"Bearer {tok}"}
    if fake:
        h["x-fake"] = fake
    h.update(extra or {})
    return http(kr.port, "POST", path, body, h)


def assert_idle(kr):
    """No stream, request or connection left behind (ours are the /metrics
    request and its connection)."""
    want = {"keyrail_open_streams": 0, "keyrail_inflight_requests": 1,
            "keyrail_open_connections": 1, "keyrail_usage_queue": 0}

    def idle():
        m = metrics(kr.port)
        return all(m.get(k) == v for k, v in want.items()) or print({k: m.get(k) for k in want})
    wait_until(idle, timeout=10, what="keyrail idle after the fault")


def assert_usage_is_what_was_served(kr, rid, rec, status):
    row = kr.wait_usage(rid)
    served = rec["served"]
    assert (row["input"], row["output"], row["cache_read"], row["cache_write"]) == \
        (served["input"], served["output"], served["cache_read"], served["cache_write"]), (row, rec)
    assert row["status"] == status, row
    return row


def last_record(vendor):
    wait_until(lambda: not vendor.requests()[-1].get("pending"), what="vendor record finished")
    return vendor.requests()[-1]


# ---- refused: a clean error in the protocol's shape, nothing metered ----

@pytest.mark.parametrize("proto,stream", [("anthropic", True), ("openai", False), ("openai", True)])
def test_refused_upstream(kr, vendor, proto, stream):
    tok = kr.setup_org()
    kr.start()
    vendor.stop()
    st, h, data = call(kr, tok, proto, stream, None)
    assert st == 502, data
    err = json.loads(data)
    if proto == "openai":
        assert err["error"]["type"] == "api_error" and "code" in err["error"]
        assert h["x-request-id"] == h["x-keyrail-request-id"]
    else:
        assert err["type"] == "error" and err["error"]["type"] == "api_error"
        assert h["request-id"] == h["x-keyrail-request-id"]
    assert h["content-type"] == "application/json"
    assert kr.usage() == [], "nothing was served: nothing is metered"
    assert_idle(kr)
    assert metrics(kr.port)["keyrail_upstream_errors_total"] >= 1


# ---- broken streams: an error event in the protocol's shape, a well-formed
# end of the chunked body, usage of exactly what was served ----

@pytest.mark.parametrize("mode,after", [("reset_mid", 3), ("reset_mid", 1)])
def test_openai_stream_broken_midway(kr, vendor, mode, after):
    tok = kr.setup_org()
    kr.start()
    st, h, data = call(kr, tok, "openai", True, f"mode={mode} after={after} in=700")
    assert st == 200  # http.client read a complete chunked body: well-formed
    evs = sse_events(data)
    err = json.loads(evs[-1]["data"])
    assert err["error"]["type"] == "api_error" and ("stalled" if mode == "stall_mid" else "broke off") \
        in err["error"]["message"]
    assert all(json.loads(e["data"]).get("object") == "chat.completion.chunk" for e in evs[:-1])
    # OpenAI serves usage only in the final chunk, which never came: 0 tokens
    row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], last_record(vendor), "partial")
    assert row["cost_micros"] == 0
    assert_idle(kr)


def test_anthropic_stream_reset_right_after_message_start(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = call(kr, tok, "anthropic", True, "mode=reset_mid after=1 in=4321 cache_read=10")
    assert st == 200
    evs = sse_events(data)
    assert [e["event"] for e in evs] == ["message_start", "error"]
    row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], last_record(vendor), "partial")
    assert row["input"] == 4321 and row["cost_micros"] > 0
    assert_idle(kr)


@pytest.mark.parametrize("proto", ["anthropic", "openai"])
def test_non_stream_body_cut_midway(kr, vendor, proto, mode="reset_mid"):
    """A JSON body cannot be repaired once its head went out: keyrail ends
    the chunked body WITHOUT its terminator and closes the connection, so
    the client knows the body is truncated (never a silently short body)."""
    tok = kr.setup_org()
    kr.start()
    check_cut_body(kr, vendor, tok, proto, mode, 55)
    assert_idle(kr)


def check_cut_body(kr, vendor, tok, proto, mode, tag):
    path, body, auth = (("/anthropic/v1/messages", MSG, f"x-api-key: {tok}") if proto == "anthropic"
                        else ("/openai/v1/chat/completions", CHAT, f"authorization: Bearer {tok}"))
    b = json.dumps(body).encode()
    req = (f"POST {path} HTTP/1.1\r\nHost: k\r\n{auth}\r\nx-fake: mode={mode} in={tag}\r\n"
           f"content-type: application/json\r\ncontent-length: {len(b)}\r\n\r\n").encode() + b
    got, closed = raw_exchange(kr.port, req, timeout=8)
    assert closed
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert not rest.endswith(b"0\r\n\r\n"), "a cut body must not look complete"
    with pytest.raises(Exception):
        parse_responses(got)  # the chunked framing is incomplete
    rid = [ln.split(b": ")[1].decode() for ln in head.split(b"\r\n")
           if ln.lower().startswith(b"x-keyrail-request-id")][0]
    assert_usage_is_what_was_served(kr, rid, record_for(vendor, tag), "partial")


def test_malformed_sse_is_relayed_and_metered_openai(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = call(kr, tok, "openai", True, "mode=malformed after=2 in=50 out=9")
    assert st == 200 and sse_events(data)[-1]["data"] == "[DONE]"
    row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], last_record(vendor), "complete")
    assert (row["input"], row["output"]) == (50, 9)
    assert_idle(kr)


def test_malformed_non_stream_body(kr, vendor):
    """A truncated JSON body (content-length consistent): relayed as is, and
    nothing can be read from it, so nothing is charged; the row says its usage
    was unreadable, and so do the log and the metric."""
    tok = kr.setup_org()
    kr.start()
    st, h, data = call(kr, tok, "anthropic", False, "mode=malformed in=50 out=9")
    assert st == 200
    with pytest.raises(ValueError):
        json.loads(data)
    row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], last_record(vendor), "unreadable")
    assert row["cost_micros"] == 0
    assert metrics(kr.port)["keyrail_usage_unreadable_total"] == 1
    assert h["x-keyrail-request-id"] in kr.log_text()
    assert_idle(kr)


# ---- a 5xx storm under concurrency ----

def test_5xx_storm(kr, vendor):
    """Every client gets a well-formed answer: half 503 in the vendor's own
    error shape, half 200; each 200 is metered exactly, each 503 recorded as
    an error with no cost; nothing is left open afterwards."""
    tok = kr.setup_org()
    kr.start()
    vendor.clear()  # the storm counter starts at the next request
    n = 24

    def one(i):
        proto = "anthropic" if i % 3 else "openai"
        return i, proto, call(kr, tok, proto, bool(i % 2), f"mode=storm in={1000 + i} out={1 + i % 7}")

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(n)))
    oks = [r for r in results if r[2][0] == 200]
    errs = [r for r in results if r[2][0] == 503]
    assert len(oks) == n // 2 and len(errs) == n // 2, [r[2][0] for r in results]
    for i, proto, (st, h, data) in errs:
        e = json.loads(data)
        if proto == "openai":
            assert e["error"]["type"] and "storm" in e["error"]["message"]
        else:
            assert e["type"] == "error" and "storm" in e["error"]["message"]
        row = kr.wait_usage(h["x-keyrail-request-id"])
        assert row["status"] == "error" and row["cost_micros"] == 0 and row["input"] == 0
    for i, proto, (st, h, data) in oks:
        if i % 2:
            evs = sse_events(data)
            assert evs[-1].get("event") == "message_stop" or evs[-1]["data"] == "[DONE]"
        else:
            json.loads(data)
        row = kr.wait_usage(h["x-keyrail-request-id"])
        assert row["status"] == "complete" and row["input"] == 1000 + i and row["output"] == 1 + i % 7
    recs = vendor.requests()
    assert len(recs) == n and sorted(r["status"] for r in recs) == [200] * (n // 2) + [503] * (n // 2)
    assert sum(r["served"]["input"] for r in recs) == sum(u["input"] for u in kr.usage())
    assert_idle(kr)
    m = metrics(kr.port)
    assert m['keyrail_requests_total{route="anthropic_messages",status="503"}'] + \
        m['keyrail_requests_total{route="openai_chat_completions",status="503"}'] == n // 2


# ---- every timeout path at once ----

def record_for(vendor, tag):
    """The vendor's record of the request sent with in=<tag>, once finished."""
    def done():
        rs = [r for r in vendor.requests() if r["planned"]["input"] == tag]
        return rs and not rs[-1].get("pending") and rs[-1]
    return wait_until(done, what=f"vendor record in={tag}")


def test_upstream_silence_paths_concurrently(kr, vendor):
    """Stalled before headers (504), stalled mid-stream (error event), a
    non-stream body stalled midway (cut, no terminator), a drip slower than
    upstream_timeout_ms (2000 here: cut) and one faster (completes although
    it lasts longer than 2000 ms: the timeout bounds silence, not duration)
    -- all at once on one keyrail, each with its own timers; then nothing is
    left open."""
    tok = kr.setup_org()
    kr.start()
    cases = {
        "stall-a": ("anthropic", True, "mode=stall in=901"),
        "stall-o": ("openai", True, "mode=stall in=902"),
        "stall_mid-o": ("openai", True, "mode=stall_mid after=3 in=903"),
        "drip-slow-a": ("anthropic", True, "mode=drip interval_ms=2600 events=3 in=904"),
        "drip-slow-o": ("openai", True, "mode=drip interval_ms=2600 events=3 in=905"),
        "drip-fast-a": ("anthropic", True, "mode=drip interval_ms=200 events=5 in=906 out=12"),
    }
    with ThreadPoolExecutor(len(cases) + 2) as ex:
        futs = {k: ex.submit(call, kr, tok, *v) for k, v in cases.items()}
        cut_a = ex.submit(check_cut_body, kr, vendor, tok, "anthropic", "stall_mid", 907)
        cut_o = ex.submit(check_cut_body, kr, vendor, tok, "openai", "stall_mid", 908)
        res = {k: f.result() for k, f in futs.items()}
        cut_a.result()
        cut_o.result()

    for k in ("stall-a", "stall-o"):
        st, h, data = res[k]
        assert st == 504 and b"did not answer" in data, (k, data)
        json.loads(data)
        # keyrail let go of the upstream: the vendor saw its client leave
        rec = record_for(vendor, int(cases[k][2].split("in=")[1]))
        assert rec["completed"] is False
        assert kr.usage(h["x-keyrail-request-id"]) == [], "nothing served: nothing metered"

    for k in ("stall_mid-o", "drip-slow-a", "drip-slow-o"):
        st, h, data = res[k]
        assert st == 200, k  # http.client read a complete chunked body: well-formed
        evs = sse_events(data)
        err = json.loads(evs[-1]["data"])["error"]
        assert err["type"] == "api_error" and "stalled" in err["message"], (k, evs[-1])
        if cases[k][0] == "openai":
            assert all(json.loads(e["data"]).get("object") == "chat.completion.chunk" for e in evs[:-1])
        tag = int(cases[k][2].split("in=")[1].split()[0])
        row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], record_for(vendor, tag),
                                              "partial")
        if cases[k][0] == "anthropic":
            assert row["input"] == tag and row["cost_micros"] > 0
        else:  # OpenAI serves usage only in the final chunk, which never came
            assert row["cost_micros"] == 0

    st, h, data = res["drip-fast-a"]
    assert st == 200 and sse_events(data)[-1]["event"] == "message_stop"
    row = assert_usage_is_what_was_served(kr, h["x-keyrail-request-id"], record_for(vendor, 906),
                                          "complete")
    assert (row["input"], row["output"]) == (906, 12)
    assert_idle(kr)


def test_many_clients_drop_mid_stream(kr, vendor):
    """Clients vanishing mid-stream all at once: every upstream is
    cancelled, every partial usage recorded, nothing left open."""
    tok = kr.setup_org()
    kr.start()
    body = json.dumps(dict(MSG, stream=True))
    socks = []
    for i in range(6):
        s = socket.create_connection(("127.0.0.1", kr.port), timeout=10)
        s.sendall((f"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
                   f"x-fake: mode=drip interval_ms=150 events=40 in={200 + i}\r\n"
                   f"content-length: {len(body)}\r\n\r\n{body}").encode())
        socks.append(s)
    rids = []
    for s in socks:
        got = b""
        while b"content_block_delta" not in got:
            got += s.recv(4096)
        rids.append([ln for ln in got.decode().split("\r\n")
                     if ln.startswith("x-keyrail-request-id")][0].split(": ")[1])
    for s in socks:
        s.close()
    for i, rid in enumerate(rids):
        row = kr.wait_usage(rid)
        assert row["status"] == "client_closed" and row["input"] == 200 + i
    wait_until(lambda: all(r["completed"] is False and not r.get("pending") for r in vendor.requests()),
               what="every upstream cancelled")
    assert_idle(kr)
    assert metrics(kr.port)["keyrail_client_disconnects_total"] == 6


def test_keyrail_restarts_cleanly_after_faults(kr, vendor):
    """A run of every fault, then SIGTERM: exit 0, no sanitizer report
    (checked by the fixture), and it starts again on the same store."""
    tok = kr.setup_org()
    kr.start()
    for fake in ("mode=stall_mid after=2", "mode=reset_mid after=2", "mode=malformed after=1",
                 "mode=status status=500", "mode=storm", "mode=storm"):
        st, _, _ = call(kr, tok, "anthropic", True, fake)
        assert st in (200, 500, 503)
    assert_idle(kr)
    assert kr.stop() == 0
    kr.start()
    assert call(kr, tok, "anthropic", True, None)[0] == 200
    assert_idle(kr)
