"""keyrail serve: auth, forwarding, streaming, metering, faults, limits (issue 3)."""
import json
import socket
import time

import pytest

from conftest import (CACHE_SETTLE, PLATFORM_ANTHROPIC_KEY, PLATFORM_OPENAI_KEY, TENANT_ANTHROPIC_KEY,
                      TENANT_MINIMAX_KEY, TENANT_OAUTH, TENANT_OPENAI_KEY, http, parse_responses,
                      save_body, sha256, sse_events, wait_until)

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100,
       "messages": [{"role": "user", "content": "hello"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def anthropic(kr, token, body=None, headers=None, path="/anthropic/v1/messages"):
    h = {"x-api-key": token, "anthropic-version": "2023-06-01"}
    h.update(headers or {})
    return http(kr.port, "POST", path, body if body is not None else MSG, h)


def openai(kr, token, body=None, headers=None):
    h = {"authorization": f"Bearer {token}"}
    h.update(headers or {})
    return http(kr.port, "POST", "/openai/v1/chat/completions", body if body is not None else CHAT, h)


def served(vendor, seq_index=-1):
    return vendor.requests()[seq_index]


# ---- usage is exact, for every protocol and mode ----

@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_usage_recorded_exactly(kr, vendor, stream):
    tok = kr.setup_org()
    kr.start()
    body = dict(MSG, stream=stream)
    st, h, data = anthropic(kr, tok, body, {"x-fake": "in=1234 out=77 cache_read=500 cache_write=40"})
    assert st == 200, data
    rid = h["x-keyrail-request-id"]
    if stream:
        evs = sse_events(data)
        assert evs[0]["event"] == "message_start" and evs[-1]["event"] == "message_stop"
    else:
        assert json.loads(data)["usage"]["output_tokens"] == 77
    row = kr.wait_usage(rid)
    rec = served(vendor)
    assert rec["served"] == {"input": 1234, "output": 77, "cache_read": 500, "cache_write": 40}
    assert (row["input"], row["output"], row["cache_read"], row["cache_write"]) == (1234, 77, 500, 40)
    # 3.00/M in, 15.00/M out, 0.30/M cache read, 3.75/M cache write, rounded up
    expect = -(-(1234 * 3000000 + 77 * 15000000 + 500 * 300000 + 40 * 3750000) // 1000000)
    assert row["cost_micros"] == expect
    assert row["status"] == "complete" and row["model"] == "claude-sonnet-4-5"
    # the daily rollup and the credit debit follow the row
    (req, cost), = kr.db_rows("select requests, cost_micros from usage_daily")
    assert (req, cost) == (1, expect)
    (bal,), = kr.db_rows("select balance_micros from credits")
    assert bal == 100_000_000 - expect


@pytest.mark.parametrize("stream,client_asked", [(False, False), (True, False), (True, True)])
def test_openai_usage_recorded_exactly(kr, vendor, stream, client_asked):
    tok = kr.setup_org()
    kr.start()
    body = dict(CHAT, stream=stream)
    if client_asked:
        body["stream_options"] = {"include_usage": True}
    st, h, data = openai(kr, tok, body, {"x-fake": "in=900 out=33 cache_read=100"})
    assert st == 200, data
    rec = served(vendor)
    assert rec["include_usage"] == stream, "keyrail must ask the vendor for the usage chunk"
    if stream and not client_asked:
        pass  # the client receives the usage chunk too; harmless for SDKs
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"], row["cache_read"]) == (900, 33, 100)
    assert row["cost_micros"] == -(-(900 * 2500000 + 33 * 10000000 + 100 * 1250000) // 1000000)


def test_alias_is_resolved_and_sent_canonical(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, _ = anthropic(kr, tok, dict(MSG, model="sonnet"))
    assert st == 200
    assert served(vendor)["model"] == "claude-sonnet-4-5"
    assert kr.wait_usage(h["x-keyrail-request-id"])["model"] == "claude-sonnet-4-5"


# ---- auth ----

@pytest.mark.parametrize("cred,cls,how", [
    (TENANT_OAUTH, "oauth", "bearer"),
    (TENANT_ANTHROPIC_KEY, "anthropic-api-key", "x-api-key"),
    (TENANT_OPENAI_KEY, "openai-api-key", "bearer"),
    ("krws_unknownunknownunknownunknownunknownunknown12", None, "x-api-key"),
    ("garbage-token-value", "unknown", "x-api-key"),
])
def test_wrong_credentials_get_401_with_class_and_no_bytes(kr, vendor, cred, cls, how):
    kr.setup_org()
    kr.start()
    h = {"authorization": f"Bearer {cred}"} if how == "bearer" else {"x-api-key": cred}
    st, hd, data = http(kr.port, "POST", "/anthropic/v1/messages", MSG, h)
    assert st == 401, data
    err = json.loads(data)
    assert err["type"] == "error" and err["error"]["type"] == "authentication_error"
    assert cred not in data.decode() and cred[8:24] not in data.decode()
    assert hd["request-id"] == err["request_id"]
    if cls:
        assert f"class {cls}" in err["error"]["message"]
        assert "workspace token" in err["error"]["message"]
    else:
        assert "unknown workspace token" in err["error"]["message"]
    assert vendor.requests() == [], "nothing may reach the vendor"
    assert cred not in kr.log_text()


def test_openai_route_errors_in_openai_shape(kr, vendor):
    kr.setup_org()
    kr.start()
    st, h, data = openai(kr, TENANT_OPENAI_KEY)
    assert st == 401
    err = json.loads(data)
    assert set(err["error"]) >= {"message", "type", "code"} and err["error"]["code"] == "invalid_api_key"
    assert h["x-request-id"].startswith("req_")


def test_missing_credential(kr, vendor):
    kr.setup_org()
    kr.start()
    st, _, data = http(kr.port, "POST", "/anthropic/v1/messages", MSG, {})
    assert st == 401 and b"no credential" in data


def test_revoked_token_refused_within_cache_lifetime(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    kr.cli("token", "revoke", tok[:12])
    t0 = time.monotonic()
    wait_until(lambda: anthropic(kr, tok)[0] == 401, timeout=5, what="revocation")
    assert time.monotonic() - t0 < 2.0, "token_cache_ms is 200: the bound was not held"
    time.sleep(CACHE_SETTLE)  # every loop's cache, not only the one that refused first
    for _ in range(4):  # whichever loop serves it
        st, _, data = anthropic(kr, tok)
        assert st == 401 and b"revoked" in data and tok.encode() not in data
    st, _, data = anthropic(kr, tok)
    assert st == 401 and b"revoked" in data and tok.encode() not in data


def test_expired_token(kr, vendor):
    kr.setup_org()
    tok = kr.mint("acme/boss")
    kr.start()
    assert anthropic(kr, tok)[0] == 200
    # expire it in the store directly, as time would
    import sqlite3
    c = sqlite3.connect(kr.db)
    c.execute("update tokens set expires_at = 1")
    c.commit()
    c.close()
    wait_until(lambda: anthropic(kr, tok)[0] == 401, timeout=5, what="expiry")
    time.sleep(CACHE_SETTLE)  # every loop's cache, not only the one that refused first
    for _ in range(4):
        assert b"expired" in anthropic(kr, tok)[2]


def test_direct_byok_workspace_token_is_refused(kr, vendor):
    kr.setup_org()
    kr.secret("--org", "acme", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY)
    kr.secret("--org", "acme", "BYOK_ROUTE", "direct")
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    tok = kr.mint("acme/mm")
    kr.start()
    st, _, data = anthropic(kr, tok)
    assert st == 403 and b"BYOK_ROUTE=direct" in data
    assert vendor.requests() == []


def test_vendor_sees_platform_key_never_tenant_credentials(kr, vendor):
    tok = kr.setup_org()
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", TENANT_OAUTH)
    kr.start()
    # a hostile client sends its own vendor credential along: refused, class named, nothing sent
    st, _, data = anthropic(kr, tok, headers={"authorization": f"Bearer {TENANT_OAUTH}"})
    assert st == 401 and b"class oauth" in data and TENANT_OAUTH.encode() not in data
    assert vendor.requests() == []
    fwd = {f"x-forwarded-{k}": "v" for k in ("for", "host", "proto", "port", "prefix", "server",
                                              "scheme", "uri", "ssl")}
    st, _, _ = anthropic(kr, tok, headers=dict(fwd, cookie="a=b", forwarded="for=1.2.3.4",
                                               **{"x-real-ip": "1.2.3.4", "anthropic-beta": "tools-2024"}))
    assert st == 200
    st, _, _ = openai(kr, tok)
    assert st == 200
    a, o = vendor.requests()
    assert a["auth_header"] == "x-api-key" and a["auth_sha256"] == sha256(PLATFORM_ANTHROPIC_KEY)
    assert a["auth_class"] == "anthropic-api-key" and not a.get("auth_multiple")
    assert a["anthropic_beta"] == "tools-2024" and a["anthropic_version"] == "2023-06-01"
    assert "cookie" not in [x.lower() for x in a["headers"]]
    sent = [x.lower() for x in a["headers"]]
    assert not [h for h in sent if h.startswith("x-forwarded-") or h in ("forwarded", "x-real-ip")], sent
    assert o["auth_header"] == "authorization" and o["auth_sha256"] == sha256(PLATFORM_OPENAI_KEY)


# ---- request checks ----

def test_unknown_model_unpriced_model_and_wrong_protocol(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = anthropic(kr, tok, dict(MSG, model="MiniMax-M2"))
    assert st == 403 and b"not available" in data
    st, _, data = anthropic(kr, tok, dict(MSG, model="claude-unpriced"))
    assert st == 422 and b"no price" in data
    st, _, data = anthropic(kr, tok, dict(MSG, model="gpt-4o"))
    assert st == 403 and b"/openai/v1/chat/completions" in data
    st, _, data = anthropic(kr, tok, "{not json")
    assert st == 400
    st, _, data = anthropic(kr, tok, '{"model":"claude-sonnet-4-5","model":"claude-haiku-4-5"}')
    assert st == 400, "two model members could mean two things"
    assert vendor.requests() == []


def test_count_tokens_and_models(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = anthropic(kr, tok, MSG, path="/anthropic/v1/messages/count_tokens")
    assert st == 200 and "input_tokens" in json.loads(data)
    assert kr.usage() == [], "count_tokens is free: no usage row"
    st, _, data = http(kr.port, "GET", "/anthropic/v1/models", headers={"x-api-key": tok})
    ids = [m["id"] for m in json.loads(data)["data"]]
    assert st == 200 and "claude-sonnet-4-5" in ids and "claude-unpriced" not in ids and "gpt-4o" not in ids
    st, _, data = http(kr.port, "GET", "/openai/v1/models", headers={"authorization": f"Bearer {tok}"})
    assert st == 200 and [m["id"] for m in json.loads(data)["data"]] == ["gpt-4o", "gpt-4o-mini", "gpt-6.2-sol"]


def test_unknown_path_and_method(kr, vendor):
    kr.start()
    st, _, data = http(kr.port, "GET", "/nope")
    assert st == 404 and json.loads(data)["error"]["type"] == "not_found_error"
    st, h, _ = http(kr.port, "GET", "/anthropic/v1/messages")
    assert st == 405 and "POST" in h["allow"]


# ---- faults ----

def test_upstream_refused_is_502(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    vendor.stop()
    st, _, data = anthropic(kr, tok)
    assert st == 502
    assert json.loads(data)["error"]["type"] == "api_error"


def test_upstream_stall_before_headers_is_504(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = anthropic(kr, tok, headers={"x-fake-mode": "stall"})
    assert st == 504 and b"did not answer" in data


@pytest.mark.parametrize("status", [400, 429, 500, 529])
def test_vendor_error_status_passes_through(kr, vendor, status):
    tok = kr.setup_org()
    kr.start()
    st, h, data = anthropic(kr, tok, headers={"x-fake": f"mode=status status={status}"})
    assert st == status
    assert json.loads(data)["type"] == "error"
    if status == 429:
        assert h.get("retry-after") == "1"
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert row["status"] == "error" and row["cost_micros"] == 0


@pytest.mark.parametrize("mode", ["stall_mid", "reset_mid"])
def test_stream_broken_midway_ends_with_error_event_and_partial_usage(kr, vendor, mode):
    tok = kr.setup_org()
    kr.start()
    st, h, data = anthropic(kr, tok, dict(MSG, stream=True), {"x-fake": f"mode={mode} after=3 in=500"})
    assert st == 200
    evs = sse_events(data)
    assert evs[0]["event"] == "message_start"
    assert evs[-1]["event"] == "error" and json.loads(evs[-1]["data"])["type"] == "error"
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert row["status"] == "partial" and row["input"] == 500 and row["cost_micros"] > 0


def test_malformed_sse_is_relayed_and_metered(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = anthropic(kr, tok, dict(MSG, stream=True), {"x-fake": "mode=malformed after=2 in=50 out=9"})
    assert st == 200 and sse_events(data)[-1]["event"] == "message_stop"
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"]) == (50, 9)


def test_client_disconnect_mid_stream_records_partial_usage(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    s = socket.create_connection(("127.0.0.1", kr.port))
    body = json.dumps(dict(MSG, stream=True))
    s.sendall((f"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
               f"x-fake: mode=drip interval_ms=200 in=321 events=50\r\n"
               f"content-length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while b"content_block_delta" not in got:
        got += s.recv(4096)
    s.close()
    rid = [l for l in got.decode().split("\r\n") if l.startswith("x-keyrail-request-id")][0].split(": ")[1]
    row = kr.wait_usage(rid)
    assert row["status"] == "client_closed" and row["input"] == 321 and row["cost_micros"] > 0
    # the upstream was cancelled: the vendor saw its client go
    wait_until(lambda: served(vendor)["completed"] is False and not served(vendor).get("pending"),
               what="vendor saw the cancel")


# ---- limits ----

def test_oversize_body_is_413(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, _ = anthropic(kr, tok, "x" * (1048576 + 10))
    assert st == 413
    assert vendor.requests() == []


def read_until_closed(s, timeout=15):
    """Everything the server sends until it closes the connection."""
    s.settimeout(timeout)
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def assert_408(got, shape="anthropic"):
    (st, hdrs, body), = parse_responses(got)
    err = json.loads(body)
    assert st == 408 and hdrs.get("connection") == "close", got
    rid = hdrs.get("x-keyrail-request-id")
    if shape == "anthropic":
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
        assert rid and hdrs.get("request-id") == rid == err["request_id"], hdrs
    else:
        assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] is None, err
        assert rid and hdrs.get("x-request-id") == rid == err["request_id"], hdrs
    return (err["error"]["message"])


def test_slow_client_gets_408(kr, vendor):
    """A head that stops arriving: 408 after header_timeout_ms (1500 here), closed."""
    kr.start()
    s = socket.create_connection(("127.0.0.1", kr.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finishes the head
    t0 = time.monotonic()
    got = read_until_closed(s)
    assert 1.0 < time.monotonic() - t0 < 5.0
    assert "head did not arrive within 1500 ms" in assert_408(got)
    s.close()


@pytest.mark.parametrize("path", ["/anthropic/v1/messages", "/openai/v1/chat/completions"])
def test_trickling_body_is_cut_by_the_request_deadline(kr, vendor, path):
    """A body that keeps moving -- one byte every 300 ms, never silent for
    header_timeout_ms (1500) -- must still arrive whole within
    request_timeout_ms (2500 here) of the request's first byte: 408 in the
    route's shape, the connection closed, nothing at the vendor."""
    tok = kr.setup_org()
    kr.extra_config = "request_timeout_ms = 2500"
    kr.write_config()
    kr.start()
    body = json.dumps(MSG).encode()
    s = socket.create_connection(("127.0.0.1", kr.port))
    s.sendall((f"POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
               f"authorization: Bearer {tok}\r\ncontent-length: {len(body)}\r\n\r\n").encode())
    t0 = time.monotonic()
    s.setblocking(False)
    got, sent = b"", 0
    while time.monotonic() - t0 < 15:
        try:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        if sent < len(body) - 1:  # never the last byte
            try:
                s.send(body[sent:sent + 1])
                sent += 1
            except OSError:
                pass
        time.sleep(0.3)  # the client's pace is what is under test
    elapsed = time.monotonic() - t0
    s.close()
    save_body("trickle", None, got)
    assert 2.0 < elapsed < 6.0, elapsed
    msg = assert_408(got, "openai" if path.startswith("/openai/") else "anthropic")
    assert "did not arrive within 2500 ms" in msg, msg
    assert vendor.requests() == []


def test_pausing_body_gets_408(kr, vendor):
    """A body that stops moving for header_timeout_ms: 408, closed."""
    tok = kr.setup_org()
    kr.start()
    s = socket.create_connection(("127.0.0.1", kr.port))
    body = json.dumps(MSG)
    s.sendall((f"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
               f"content-length: {len(body)}\r\n\r\n{body[:10]}").encode())
    t0 = time.monotonic()
    got = read_until_closed(s)
    assert 1.0 < time.monotonic() - t0 < 5.0
    assert "body paused for 1500 ms" in assert_408(got)
    assert vendor.requests() == []


def test_keepalive_and_pipelining(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    s = socket.create_connection(("127.0.0.1", kr.port))
    body = json.dumps(MSG)
    one = (f"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
           f"content-length: {len(body)}\r\n\r\n{body}")
    s.sendall((one + "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" + one).encode())
    s.settimeout(10)
    buf = b""
    while buf.count(b"HTTP/1.1 200") < 3 or not buf.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    s.close()
    assert buf.index(b"msg_fake") < buf.index(b'{"status":"ok"}'), "responses out of order"
    assert len(vendor.requests()) == 2


def test_metrics_and_readiness(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    anthropic(kr, tok, dict(MSG, stream=True), {"x-fake": "in=10 out=5"})
    anthropic(kr, TENANT_OAUTH)
    st, h, data = http(kr.port, "GET", "/metrics")
    text = data.decode()
    assert st == 200 and h["content-type"].startswith("text/plain")
    assert 'keyrail_requests_total{route="anthropic_messages",status="200"} 1' in text
    assert 'keyrail_requests_total{route="anthropic_messages",status="401"} 1' in text
    assert 'keyrail_tokens_total{kind="input"} 10' in text
    assert "keyrail_upstream_latency_seconds_count 1" in text
    assert "keyrail_open_streams 0" in text


def test_graceful_shutdown_lets_running_stream_finish(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    s = socket.create_connection(("127.0.0.1", kr.port))
    body = json.dumps(dict(MSG, stream=True))
    s.sendall((f"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {tok}\r\n"
               f"x-fake: mode=drip interval_ms=100 events=10\r\n"
               f"content-length: {len(body)}\r\n\r\n{body}").encode())
    got = s.recv(4096)
    assert b"200 OK" in got
    import signal as sig
    kr.proc.send_signal(sig.SIGTERM)
    # new connections are refused while the stream goes on
    wait_until(lambda: _refused(kr.port), timeout=5, what="listener closed")
    s.settimeout(10)
    while not got.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        assert chunk, "stream cut by shutdown"
        got += chunk
    assert b"message_stop" in got
    kr.proc.wait(timeout=10)
    assert kr.proc.returncode == 0
    assert kr.usage()[0]["status"] == "complete", "usage flushed before exit"


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True
