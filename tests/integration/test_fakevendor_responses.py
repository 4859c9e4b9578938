"""The fake vendor's OpenAI Responses API (POST .../v1/responses), called
directly, with no keyrail in between: the usage it plans and puts on the
wire, the stream's event order, clamping to max_output_tokens, pad=, fault
modes and the record. The wire format is documented at the top of
src/fakevendor/fv_responses.c (RESPONSES API)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import (ROOT, TENANT_OPENAI_KEY, check_log_clean, http, raw_exchange, sha256, sse_events,
                      wait_until)

PATH = "/openai/v1/responses"  # matched by suffix, like the other endpoints
AUTH = {"authorization": f"Bearer {TENANT_OPENAI_KEY}"}
REPLY = "Hello from fakevendor."
STREAM_TYPES = (["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added"] + ["response.output_text.delta"] * 8 +
                ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                 "response.completed"])


@pytest.fixture(autouse=True)
def vendor_exits_clean(vendor, tmp_path):
    """After each test: the vendor (an ASan+UBSan build under KEYRAIL_BUILD)
    exits 0 on SIGTERM with no sanitizer report in its log."""
    yield
    vendor.stop()
    check_log_clean((tmp_path / "fakevendor.log").read_text(errors="replace"), "fakevendor log")
    assert vendor.proc.returncode == 0


def post(vendor, body, fake=None, headers=None):
    h = dict(AUTH)
    if fake:
        h["x-fake"] = fake
    h.update(headers or {})
    return http(vendor.port, "POST", PATH, body, h)


def record(vendor, seq):
    """The finished record of request `seq` (polled until it is no longer pending)."""
    def done():
        r = [r for r in vendor.requests() if r["seq"] == seq]
        return r and not r[0]["pending"] and r[0]
    return wait_until(done, what=f"record {seq} finished")


def seq_of(headers):
    rid = headers["x-request-id"]
    assert rid.startswith("req_fake_") and len(rid) == len("req_fake_") + 12
    return int(rid[len("req_fake_"):])


def events(data):
    """(event line, parsed data) per SSE event; every event has both."""
    out = []
    for e in sse_events(data):
        d = json.loads(e["data"])
        assert e["event"] == d["type"], e
        out.append((e["event"], d))
    return out


def usage(inp, cached, out, reasoning):
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": inp + out}


def test_non_stream_usage_and_shape(vendor):
    body = {"model": "gpt-5", "input": "hi"}
    st, h, data = post(vendor, body, "in=100 cache_read=30 out=50 reasoning=20")
    assert st == 200 and h["content-type"] == "application/json"
    seq = seq_of(h)
    r = json.loads(data)
    assert r["id"] == f"resp_fake_{seq:012d}" and r["object"] == "response"
    assert r["status"] == "completed" and r["model"] == "gpt-5"
    assert r["error"] is None and r["incomplete_details"] is None and r["max_output_tokens"] is None
    assert r["tools"] == [] and r["tool_choice"] == "auto" and isinstance(r["created_at"], int)
    assert r["output"] == [{"id": f"msg_fake_{seq:012d}", "type": "message", "status": "completed",
                            "role": "assistant",
                            "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                         "text": REPLY}]}]
    # input_tokens includes the cached ones; output_tokens includes reasoning
    assert r["usage"] == usage(130, 30, 50, 20)
    rec = record(vendor, seq)
    assert rec["planned"] == rec["served"] == {"input": 100, "output": 50, "cache_read": 30, "cache_write": 0}
    assert rec["status"] == 200 and rec["completed"] is True

    # the defaults: IN = 1 + body_bytes / 4, OUT = 16, no reasoning
    raw = json.dumps(body)
    st, h, data = post(vendor, raw, headers={"content-type": "application/json"})
    assert json.loads(data)["usage"] == usage(1 + len(raw) // 4, 0, 16, 0)


def test_stream_event_order_and_final_usage(vendor):
    st, h, data = post(vendor, {"model": "gpt-5", "stream": True, "input": "hi [[fake in=70 cache_read=5]]"},
                       headers={"x-fake-reasoning": "6"})
    assert st == 200 and h["content-type"] == "text/event-stream"
    assert b"[DONE]" not in data
    seq = seq_of(h)
    evs = events(data)
    assert [t for t, _ in evs] == STREAM_TYPES
    assert [d["sequence_number"] for _, d in evs] == list(range(len(evs)))
    for _, d in evs[:2]:
        assert d["response"]["status"] == "in_progress"
        assert d["response"]["output"] == [] and d["response"]["usage"] is None
    item_id = f"msg_fake_{seq:012d}"
    added = evs[2][1]["item"]
    assert added["id"] == item_id and added["status"] == "in_progress" and added["content"] == []
    deltas = [d for t, d in evs if t == "response.output_text.delta"]
    assert all(d["item_id"] == item_id and d["output_index"] == 0 and d["content_index"] == 0
               for d in deltas)
    assert "".join(d["delta"] for d in deltas) == REPLY
    assert evs[12][1]["text"] == REPLY and evs[13][1]["part"]["text"] == REPLY
    done_item = evs[14][1]["item"]
    assert done_item["status"] == "completed" and done_item["content"][0]["text"] == REPLY
    final = evs[-1][1]["response"]
    assert final["id"] == f"resp_fake_{seq:012d}" and final["status"] == "completed"
    assert final["output"] == [done_item]
    assert final["usage"] == usage(75, 5, 16, 6)
    rec = record(vendor, seq)
    assert rec["stream"] is True and rec["completed"] is True
    assert rec["served"] == {"input": 70, "output": 16, "cache_read": 5, "cache_write": 0}


@pytest.mark.parametrize("stream", [True, False])
def test_clamped_to_max_output_tokens_is_incomplete(vendor, stream):
    st, h, data = post(vendor, {"model": "gpt-5", "stream": stream, "max_output_tokens": 5, "input": "hi"},
                       "in=9 reasoning=8")
    assert st == 200
    if stream:
        evs = events(data)
        assert [t for t, _ in evs] == STREAM_TYPES[:-1] + ["response.incomplete"]
        r = evs[-1][1]["response"]
        assert evs[-2][1]["item"]["status"] == "incomplete"
    else:
        r = json.loads(data)
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["max_output_tokens"] == 5 and r["output"][0]["content"][0]["text"] == REPLY
    assert r["usage"] == usage(9, 0, 5, 5)  # OUT clamped to 5, reasoning clamped to OUT
    rec = record(vendor, seq_of(h))
    assert rec["max_tokens"] == 5
    assert rec["planned"]["output"] == rec["served"]["output"] == 5


@pytest.mark.parametrize("stream", [True, False])
def test_pad_makes_the_final_object_big_and_changes_no_usage(vendor, stream):
    pad = 3_000_000
    st, h, data = post(vendor, {"model": "gpt-5", "stream": stream, "input": f"hi [[fake pad={pad}]]"},
                       "in=11 out=12")
    assert st == 200 and len(data) > pad
    seq = seq_of(h)
    if stream:
        evs = events(data)
        assert [t for t, _ in evs] == STREAM_TYPES
        assert all(len(json.dumps(d)) < 4096 for _, d in evs[:-1]), "only the final event is padded"
        r = evs[-1][1]["response"]
    else:
        r = json.loads(data)
    assert [o["id"] for o in r["output"]] == [f"msg_fake_{seq:012d}", f"msg_fake_{seq:012d}_pad"]
    assert r["output"][0]["content"][0]["text"] == REPLY
    assert len(r["output"][1]["content"][0]["text"]) == pad
    assert r["usage"] == usage(11, 0, 12, 0)
    assert record(vendor, seq)["served"] == {"input": 11, "output": 12, "cache_read": 0, "cache_write": 0}


@pytest.mark.parametrize("status,etype", [(500, "server_error"), (429, "rate_limit_error")])
def test_status_fault_is_an_openai_error(vendor, status, etype):
    st, h, data = post(vendor, {"model": "gpt-5", "stream": True, "input": "hi"}, f"mode=status status={status}")
    assert st == status and h["content-type"] == "application/json"
    assert ("retry-after" in h) == (status == 429)
    assert json.loads(data) == {"error": {"message": f"fakevendor: injected {status} (mode=status)",
                                          "type": etype, "param": None, "code": None}}
    rec = record(vendor, seq_of(h))
    assert rec["status"] == status and rec["mode"] == "status"
    assert rec["served"] == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}


def test_reset_mid_stream_serves_no_usage(vendor):
    body = json.dumps({"model": "gpt-5", "stream": True, "input": "hi"}).encode()
    req = (f"POST {PATH} HTTP/1.1\r\nHost: fv\r\nx-fake: mode=reset_mid after=5 in=40\r\n"
           f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    got, closed = raw_exchange(vendor.port, req, timeout=8)
    assert closed
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    payload = b""  # de-chunk what arrived (the stream has no terminating chunk)
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        assert n > 0, "a cut stream must not end like a complete one"
        payload += rest[:n]
        rest = rest[n + 2:]
    assert [t for t, _ in events(payload)] == STREAM_TYPES[:5]
    seq = int(head.split(b"x-request-id: req_fake_")[1][:12])
    rec = record(vendor, seq)
    assert rec["completed"] is False and rec["planned"]["input"] == 40
    assert rec["served"] == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}


def test_malformed_event_then_the_rest(vendor):
    st, h, data = post(vendor, {"model": "gpt-5", "stream": True, "input": "hi"}, "mode=malformed after=2 out=9")
    assert st == 200
    blocks = sse_events(data)
    assert len(blocks) == len(STREAM_TYPES) + 1
    with pytest.raises(ValueError):
        json.loads(blocks[2]["data"])
    good = [json.loads(b["data"]) for i, b in enumerate(blocks) if i != 2]
    assert [d["type"] for d in good] == STREAM_TYPES
    assert good[-1]["response"]["usage"]["output_tokens"] == 9
    assert record(vendor, seq_of(h))["served"]["output"] == 9


def test_record(vendor):
    body = {"model": "gpt-5-codex", "stream": True, "max_output_tokens": 1000, "input": "hi",
            "tools": [{"type": "function", "name": "f", "max_output_tokens": 1}]}  # nested: not the limit
    raw = json.dumps(body)
    st, h, _ = post(vendor, raw, headers={"content-type": "application/json"})
    assert st == 200
    rec = record(vendor, seq_of(h))
    assert rec["method"] == "POST" and rec["path"] == PATH and rec["mode"] == "none"
    assert rec["auth_header"] == "authorization" and rec["auth_class"] == "openai-key"
    assert rec["auth_sha256"] == sha256(TENANT_OPENAI_KEY)
    assert rec["model"] == "gpt-5-codex" and rec["stream"] is True and rec["include_usage"] is False
    assert rec["max_tokens"] == 1000 and rec["body_bytes"] == len(raw)
    assert rec["planned"] == rec["served"] == {"input": 1 + len(raw) // 4, "output": 16, "cache_read": 0,
                                               "cache_write": 0}
    assert "authorization" in rec["headers"] and rec["status"] == 200 and rec["completed"] is True


def test_reasoning_override_in_chat_completions_too(vendor):
    st, _, data = http(vendor.port, "POST", "/v1/chat/completions",
                       {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                       dict(AUTH, **{"x-fake": "in=5 out=30 reasoning=12"}))
    u = json.loads(data)["usage"]
    assert st == 200 and u["completion_tokens"] == 10  # clamped to max_tokens, reasoning to that
    assert u["completion_tokens_details"]["reasoning_tokens"] == 10


JS = os.path.join(ROOT, "tests", "js")


@pytest.mark.skipif(not shutil.which("node") or not os.path.isdir(os.path.join(JS, "node_modules", "openai")),
                    reason="node or the pinned OpenAI SDK (tests/js) is not installed")
def test_official_openai_sdk(vendor):
    p = subprocess.run(["node", os.path.join(JS, "sdk_openai_responses.mjs")], cwd=JS, capture_output=True,
                       text=True, timeout=120,
                       env=dict(os.environ, KR_BASE_URL=f"{vendor.url}/v1", KR_TOKEN=TENANT_OPENAI_KEY))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["text"] == REPLY and out["status"] == "completed"
    assert out["usage"] == usage(433, 100, 40, 25)
    assert out["types"] == STREAM_TYPES and out["streamed"] == REPLY
    assert out["stream_usage"] == usage(444, 0, 9, 0)
    assert out["helper"] == {"text_len": len(REPLY) + 5000, "items": 2, "usage": usage(7, 0, 3, 0)}
    assert out["refused"]["status"] == 429 and out["refused"]["type"] == "rate_limit_error"

