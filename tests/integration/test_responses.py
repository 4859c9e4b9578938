"""Issue 12 at the proxy: POST /openai/v1/responses (streaming and not, the
official OpenAI SDK, usage exact with cached tokens, big final events), the
WebSocket refusal Codex needs, OpenAI-shaped errors on every /openai/ path,
and requests carrying a workspace token plus any other credential."""
import json
import os
import socket
import subprocess

from conftest import (ROOT, PLATFORM_OPENAI_KEY, TENANT_ANTHROPIC_KEY, TENANT_OAUTH, TENANT_OPENAI_KEY,
                      http, metrics, parse_responses, raw_exchange, sha256, sse_events, wait_until)

JS = os.path.join(ROOT, "tests", "js")
RESP = {"model": "gpt-4o", "input": "hi"}


def responses(kr, token, body=None, headers=None):
    h = {"authorization": f"Bearer {token}"}
    h.update(headers or {})
    return http(kr.port, "POST", "/openai/v1/responses", body if body is not None else RESP, h)


def served_usage(req):
    """The usage the fake vendor served, in keyrail's terms (input = uncached)."""
    s = req["served"]
    return (s["input"], s["output"], s["cache_read"])


def test_non_streaming_usage_is_exact_with_cached_tokens(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = responses(kr, tok, dict(RESP, input="x [[fake in=500 cache_read=120 out=33 reasoning=11]]"))
    assert st == 200, data
    body = json.loads(data)
    u = body["usage"]
    assert (u["input_tokens"], u["input_tokens_details"]["cached_tokens"], u["output_tokens"]) == (620, 120, 33)
    rid = h["x-keyrail-request-id"]
    row = kr.wait_usage(rid)
    # billable input = input - cached; cached billed as cache reads; output includes reasoning
    assert (row["input"], row["output"], row["cache_read"], row["status"]) == (500, 33, 120, "complete")
    assert row["model"] == "gpt-4o"
    # gpt-4o: 2.50 in, 10.00 out, 1.25 cached, per million
    assert row["cost_micros"] == -(-(500 * 2_500_000 + 33 * 10_000_000 + 120 * 1_250_000) // 1_000_000)
    (req,) = vendor.requests()
    assert req["path"] == "/v1/responses" and req["auth_sha256"] == sha256(PLATFORM_OPENAI_KEY)
    assert served_usage(req) == (500, 33, 120)


def test_streaming_usage_from_the_final_event(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = responses(kr, tok, dict(RESP, stream=True, input="s [[fake in=70 cache_read=30 out=16]]"))
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    evs = sse_events(data)
    assert evs[0]["event"] == "response.created" and evs[-1]["event"] == "response.completed"
    text = "".join(json.loads(e["data"])["delta"] for e in evs if e.get("event") == "response.output_text.delta")
    assert text == "Hello from fakevendor."
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"], row["cache_read"], row["status"]) == (70, 16, 30, "complete")
    assert served_usage(vendor.requests()[0]) == (70, 16, 30)


def test_incomplete_response_is_metered_and_max_output_tokens_counts(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = responses(kr, tok, dict(RESP, stream=True, max_output_tokens=5,
                                          input="s [[fake in=10 out=40]]"))
    assert st == 200
    assert sse_events(data)[-1]["event"] == "response.incomplete"
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"]) == (10, 5)
    assert vendor.requests()[0]["max_tokens"] == 5
    st, _, data = responses(kr, tok, dict(RESP, max_output_tokens=0))
    assert st == 400 and b"max_output_tokens" in data


def test_big_final_event_within_the_cap_and_over_it(kr, vendor):
    kr.extra_config = "max_usage_event_bytes = 1048576"
    kr.write_config()
    tok = kr.setup_org()
    kr.start()
    # 700 KB of output repeated in response.completed: read within the cap
    st, h, data = responses(kr, tok, dict(RESP, stream=True, input="s [[fake in=9 out=4 pad=700000]]"))
    assert st == 200 and len(data) > 700000
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"], row["status"]) == (9, 4, "complete")
    # 3 MB: the client gets it all, the row says its usage could not be read, and so do
    # the log and the metric
    before = metrics(kr.port).get("keyrail_usage_unreadable_total", 0)
    st, h, data = responses(kr, tok, dict(RESP, stream=True, input="s [[fake in=9 out=4 pad=3000000]]"))
    assert st == 200 and len(data) > 3000000
    assert sse_events(data)[-1]["event"] == "response.completed"
    rid = h["x-keyrail-request-id"]
    row = kr.wait_usage(rid)
    assert row["status"] == "unreadable"
    assert metrics(kr.port)["keyrail_usage_unreadable_total"] == before + 1
    assert rid in kr.log_text() and "status unreadable" in kr.log_text()
    # the same for a non-streamed body over the cap
    st, h, data = responses(kr, tok, dict(RESP, input="s [[fake in=9 out=4 pad=2000000]]"))
    assert st == 200 and len(data) > 2000000
    assert kr.wait_usage(h["x-keyrail-request-id"])["status"] == "unreadable"


def test_responses_route_has_the_same_admission(kr, vendor):
    tok = kr.setup_org(credits=None)  # no credits: 402
    kr.start()
    st, _, data = responses(kr, tok)
    assert st == 402 and json.loads(data)["error"]["type"] == "billing_error"
    st, _, data = responses(kr, tok, dict(RESP, model="claude-sonnet-4-5"))
    assert st == 403 and b"/anthropic/v1/messages" in data
    st, _, data = responses(kr, tok, dict(RESP, model="gpt-unpriced"))
    assert st == 422
    assert vendor.requests() == []


def test_websocket_upgrade_is_refused_at_once_in_openai_shape(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    req = (f"GET /openai/v1/responses HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           f"Authorization: Bearer {tok}\r\n\r\n").encode()
    got, _ = raw_exchange(kr.port, req, timeout=3)
    (st, h, body), = parse_responses(got)[:1]
    assert st == 405 and h.get("allow") == "POST"
    err = json.loads(body)["error"]
    assert "WebSocket" in err["message"] and err["type"] == "invalid_request_error"
    assert "x-keyrail-request-id" in h


def test_every_openai_error_is_openai_shaped(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    for path in ("/openai/v1/nope", "/openai/v1/embeddings"):
        st, _, data = http(kr.port, "POST", path, RESP, {"authorization": f"Bearer {tok}"})
        assert st == 404
        body = json.loads(data)
        assert "type" not in body and body["error"]["message"].startswith("no route"), body
    st, _, data = http(kr.port, "GET", "/openai/v1/responses", None, {"authorization": f"Bearer {tok}"})
    assert st == 405 and json.loads(data)["error"]["code"] is None


def test_a_second_credential_beside_the_workspace_token_is_refused(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    cases = [
        ("x-api-key", TENANT_ANTHROPIC_KEY, "anthropic-api-key"),
        ("x-custom-auth", f"x-api-key: {TENANT_ANTHROPIC_KEY}", "anthropic-api-key"),
        ("cookie", f"session={TENANT_OAUTH}", "oauth"),
        ("x-api-key", "not-a-token-at-all", "unknown"),
    ]
    for name, value, cls in cases:
        st, _, data = responses(kr, tok, headers={name: value})
        assert st == 401, (name, data)
        msg = json.loads(data)["error"]["message"]
        shown = "API key" if name == "x-api-key" else name  # Claude Code hides "x-api-key" 401s
        assert f"class {cls}" in msg and f"the {shown} header" in msg, msg
        assert value.encode() not in data and TENANT_ANTHROPIC_KEY.encode() not in data
    # a second Authorization header, and two different workspace tokens
    other = kr.mint("acme/boss")
    for extra in (f"Authorization: Bearer {TENANT_OPENAI_KEY}\r\n", f"x-api-key: {other}\r\n"):
        req = (f"POST /openai/v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n{extra}"
               f"Content-Type: application/json\r\nContent-Length: {len(json.dumps(RESP))}\r\n\r\n"
               f"{json.dumps(RESP)}").encode()
        got, _ = raw_exchange(kr.port, req, timeout=3)
        (st, _, body), = parse_responses(got)[:1]
        assert st == 401 and TENANT_OPENAI_KEY.encode() not in body and other.encode() not in body
    # the same token twice (x-api-key and Authorization) is one credential
    st, _, _ = responses(kr, tok, headers={"x-api-key": tok})
    assert st == 200
    assert len(vendor.requests()) == 1


def test_model_holding_a_credential_is_not_echoed(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = responses(kr, tok, dict(RESP, model=TENANT_OAUTH))
    assert st == 400 and b"class oauth" in data and TENANT_OAUTH.encode() not in data
    assert vendor.requests() == []


def test_tpm_never_refuses_with_a_retry_that_cannot_succeed(kr, vendor):
    tok = kr.setup_org()
    kr.cli("limits", "set", "--ws", "acme/boss", "--tpm", "1000")
    kr.start()
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi [[fake in=20 out=5]]"}]}
    hdr = {"authorization": f"Bearer {tok}"}
    # no output cap: the estimate (4096) alone is over the limit; admitted into the empty window
    st, _, data = http(kr.port, "POST", "/openai/v1/chat/completions", chat, hdr)
    assert st == 200, data
    # max_completion_tokens and max_output_tokens are honoured in the estimate
    st, _, _ = http(kr.port, "POST", "/openai/v1/chat/completions", dict(chat, max_completion_tokens=50), hdr)
    assert st == 200
    st, _, _ = responses(kr, tok, dict(RESP, max_output_tokens=50, input="[[fake in=20 out=5]]"))
    assert st == 200
    # an estimate over the limit into a window that is not empty: 429 until the minute turns
    st, h, _ = http(kr.port, "POST", "/openai/v1/chat/completions", chat, hdr)
    assert st == 429 and 1 <= int(h["retry-after"]) <= 60


def test_openai_sdk_responses_stream_and_not(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    env = dict(os.environ, KR_BASE_URL=f"http://127.0.0.1:{kr.port}/openai/v1", KR_TOKEN=tok, KR_MODEL="gpt-4o")
    p = subprocess.run(["node", os.path.join(JS, "sdk_openai_responses.mjs")], cwd=JS, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["text"] == "Hello from fakevendor." and out["streamed"] == "Hello from fakevendor."
    assert out["usage"]["input_tokens"] == 433 and out["usage"]["input_tokens_details"]["cached_tokens"] == 100
    assert out["refused"]["status"] == 429
    rows = wait_until(lambda: len(kr.usage()) >= 4 and kr.usage(), what="4 usage rows")
    reqs = [r for r in vendor.requests() if r["path"] == "/v1/responses"]
    ok = [r for r in reqs if r["served"]]
    assert sum(r["input"] for r in rows) == sum(r["served"]["input"] for r in ok)
    assert sum(r["output"] for r in rows) == sum(r["served"]["output"] for r in ok)
    assert sum(r["cache_read"] for r in rows) == sum(r["served"]["cache_read"] for r in ok)
    assert all(r["auth_sha256"] == sha256(PLATFORM_OPENAI_KEY) for r in reqs)
