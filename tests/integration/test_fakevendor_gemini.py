"""The fake vendor's Google Gemini API (generateContent,
streamGenerateContent as SSE and as a JSON array, countTokens, the model
list), called directly, with no keyrail in between: the shapes, the usage
buckets (running totals in streams), clamping to maxOutputTokens, errors and
fault modes, the three credential forms and the record, scripted tool calls.
The wire format is documented at the top of src/fakevendor/fv_gemini.c
(GEMINI API) and the numbers in src/fakevendor/fv.h (DETERMINISM)."""
import json
import os
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import ROOT, check_log_clean, http, raw_exchange, sha256, wait_until

MODEL = "gemini-2.5-flash"
BASE = "/google/v1beta/models"  # matched by suffix: a base URL may carry a prefix
GEN = f"{BASE}/{MODEL}:generateContent"
SSE = f"{BASE}/{MODEL}:streamGenerateContent?alt=sse"
ARRAY = f"{BASE}/{MODEL}:streamGenerateContent"
COUNT = f"{BASE}/{MODEL}:countTokens"
KEY = "AIzaSyCANARYFAKEVENDORGEMINI000000000000"
AUTH = {"x-goog-api-key": KEY}
REPLY = "Hello from fakevendor."
# quotes, backslashes, a newline, a tab, a control character and non-ASCII
# of 2, 3 and 4 bytes (as in test_fakevendor_tools.py)
CMD = 'printf "%s|" "q\\"uote" \'back\\slash\' "\u00fc\u20ac\U0001F600" > /tmp/x\necho "tab\there" \x01 done'
TOOLS = [{"functionDeclarations": [{"name": "run_shell_command", "description": "run a command",
                                    "parameters": {"type": "OBJECT",
                                                   "properties": {"command": {"type": "STRING"}},
                                                   "required": ["command"]}}]}]
MODELS = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
          "gemini-3-flash-preview", "gemini-3.1-pro-preview", "gemini-3.1-flash-lite", "gemini-3.5-flash",
          "gemini-3.5-flash-lite"]


@pytest.fixture(autouse=True)
def vendor_exits_clean(vendor, tmp_path):
    """After each test: the vendor (an ASan+UBSan build under KEYRAIL_BUILD)
    exits 0 on SIGTERM with no sanitizer report in its log, and the API key
    is nowhere in its log or records."""
    yield
    recs = json.dumps(vendor.requests())
    vendor.stop()
    log = (tmp_path / "fakevendor.log").read_text(errors="replace")
    check_log_clean(log, "fakevendor log")
    assert KEY not in log and KEY not in recs
    assert vendor.proc.returncode == 0


def hexof(cmd):
    return cmd.encode().hex()


def body(prompt="hi", tools=None, contents=None, **extra):
    b = {"contents": contents or [{"role": "user", "parts": [{"text": prompt}]}]}
    if tools is not None:
        b["tools"] = tools
    b.update(extra)
    return b


def post(vendor, path, b, headers=None, auth=AUTH):
    """POSTs b as this exact JSON text; returns (status, headers, data, the
    default IN for this body)."""
    raw = b if isinstance(b, str) else json.dumps(b)
    h = dict(auth, **{"content-type": "application/json"})
    h.update(headers or {})
    st, hd, data = http(vendor.port, "POST", path, raw, h)
    return st, hd, data, 1 + len(raw.encode()) // 4


def seq_of(headers):
    rid = headers["x-request-id"]
    assert rid.startswith("req_fake_") and len(rid) == len("req_fake_") + 12
    return int(rid[len("req_fake_"):])


def record(vendor, seq):
    def done():
        r = [r for r in vendor.requests() if r["seq"] == seq]
        return r and not r[0]["pending"] and r[0]
    return wait_until(done, what=f"record {seq} finished")


def served(inp, out, cr=0):
    return {"input": inp, "output": out, "cache_read": cr, "cache_write": 0}


def usage(inp, cand, cr=0, thoughts=0, tup=0):
    """usageMetadata as fv.h (DETERMINISM) says: zero counts left out but
    promptTokenCount and totalTokenCount."""
    prompt = inp + cr
    u = {"promptTokenCount": prompt, "totalTokenCount": prompt + cand + thoughts + tup}
    if cand:
        u["candidatesTokenCount"] = cand
    if prompt:
        u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cr:
        u["cachedContentTokenCount"] = cr
        u["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cr}]
    if tup:
        u["toolUsePromptTokenCount"] = tup
    if thoughts:
        u["thoughtsTokenCount"] = thoughts
    return u


def sse_chunks(data):
    """The chunks of an alt=sse stream: every event exactly "data: JSON"
    followed by Google's "\\r\\n\\r\\n"."""
    assert data.endswith(b"\r\n\r\n")
    out = []
    for ev in data[:-4].split(b"\r\n\r\n"):
        assert ev.startswith(b"data: ") and b"\n" not in ev, ev[:200]
        out.append(json.loads(ev[6:]))
    return out


def array_chunks(data, n):
    """The chunks of a JSON-array stream, checking its framing: "[" CHUNK
    ("\\n,\\r\\n" CHUNK)... "\\n]"."""
    assert data.startswith(b"[{") and data.endswith(b"}\n]")
    assert data.count(b"\n,\r\n{") == n - 1
    chunks = json.loads(data)
    assert isinstance(chunks, list) and len(chunks) == n
    return chunks


def response(text, fin="STOP", u=None, seq=None, model=MODEL, part=None):
    """One GenerateContentResponse as fv_gemini.c renders it."""
    cand = {"content": {"parts": [part or {"text": text}], "role": "model"}, "index": 0}
    if fin:
        cand["finishReason"] = fin
    return {"candidates": [cand], "usageMetadata": u, "modelVersion": model,
            "responseId": f"gem_fake_{seq:012d}"}


def pieces(text, n):
    """The reply split into n byte ranges (fv_core.c text_piece; ASCII)."""
    b = text.encode()
    return [b[len(b) * i // n:len(b) * (i + 1) // n].decode() for i in range(n)]


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("path", [GEN, f"/v1beta/models/{MODEL}:generateContent",
                                  f"/v1/models/{MODEL}:generateContent",
                                  f"/x/y/v1/models/{MODEL}:generateContent"])
def test_generate_content(vendor, path):
    b = body("hello", generationConfig={"temperature": 0.5}, model="not-this-one", stream=True,
             max_tokens=1)  # another protocol's fields: ignored
    st, h, data, inp = post(vendor, path, b)
    assert st == 200 and h["content-type"] == "application/json"
    seq = seq_of(h)
    assert json.loads(data) == response(REPLY, u=usage(inp, 16), seq=seq)
    rec = record(vendor, seq)
    assert rec["model"] == MODEL and rec["stream"] is False and rec["max_tokens"] is None
    assert rec["path"] == path and rec["status"] == 200 and rec["completed"] is True
    assert rec["planned"] == rec["served"] == served(inp, 16)
    assert rec["tool_call"] is False


@pytest.mark.parametrize("n", [8, 3, 1, 30])
def test_stream_sse_running_usage(vendor, n):
    st, h, data, inp = post(vendor, SSE, body(), {"x-fake": f"events={n}"})
    assert st == 200 and h["content-type"] == "text/event-stream"
    assert h["transfer-encoding"] == "chunked"
    seq = seq_of(h)
    chunks = sse_chunks(data)
    assert len(chunks) == n
    out = 2 * n
    for k, (c, piece) in enumerate(zip(chunks, pieces(REPLY, n))):
        last = k == n - 1
        assert c == response(piece, "STOP" if last else None, usage(inp, out * (k + 1) // n), seq)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == REPLY
    rec = record(vendor, seq)
    assert rec["stream"] is True and rec["query"] == "alt=sse" and rec["model"] == MODEL
    assert rec["planned"] == rec["served"] == served(inp, out)


@pytest.mark.parametrize("query", ["", "?alt=json", "?$alt=x&alt=json"])
def test_stream_json_array(vendor, query):
    st, h, data, inp = post(vendor, ARRAY + query, body(), {"x-fake": "events=4 out=10"})
    assert st == 200 and h["content-type"] == "application/json"
    assert h["transfer-encoding"] == "chunked"
    seq = seq_of(h)
    chunks = array_chunks(data, 4)
    for k, (c, piece) in enumerate(zip(chunks, pieces(REPLY, 4))):
        assert c == response(piece, "STOP" if k == 3 else None, usage(inp, 10 * (k + 1) // 4), seq)
    rec = record(vendor, seq)
    assert rec["stream"] is True and rec["planned"] == rec["served"] == served(inp, 10)


@pytest.mark.parametrize("kind", ["sse", "array"])
def test_no_events_is_one_chunk(vendor, kind):
    st, h, data, inp = post(vendor, SSE if kind == "sse" else ARRAY, body(), {"x-fake": "events=0 out=5"})
    assert st == 200
    chunks = sse_chunks(data) if kind == "sse" else array_chunks(data, 1)
    assert chunks == [response("", u=usage(inp, 5), seq=seq_of(h))]


@pytest.mark.parametrize("mode", ["plain", "sse", "array"])
def test_usage_buckets(vendor, mode):
    """cache_read, reasoning and tool_use_prompt in Gemini's fields, and in
    keyrail's sense in the record: input = IN + tool_use_prompt, output =
    candidates + thoughts, cache_read."""
    fake = "in=100 out=40 cache_read=30 reasoning=15 tool_use_prompt=7 cache_write=9 events=5"
    path = {"plain": GEN, "sse": SSE, "array": ARRAY}[mode]
    st, h, data, _ = post(vendor, path, body(), {"x-fake": fake})
    assert st == 200
    seq = seq_of(h)
    final = usage(100, 25, cr=30, thoughts=15, tup=7)
    assert final["promptTokenCount"] == 130 and final["totalTokenCount"] == 130 + 25 + 15 + 7
    if mode == "plain":
        assert json.loads(data)["usageMetadata"] == final
    else:
        chunks = sse_chunks(data) if mode == "sse" else array_chunks(data, 5)
        # running totals: the prompt side whole on every chunk, candidates growing
        assert [c["usageMetadata"] for c in chunks] == [usage(100, 25 * (k + 1) // 5, 30, 15, 7)
                                                        for k in range(5)]
    rec = record(vendor, seq)
    assert rec["planned"] == rec["served"] == served(107, 40, 30)


def test_zero_counts_are_left_out(vendor):
    st, _, data, _ = post(vendor, GEN, body(), {"x-fake": "in=0 out=6 reasoning=6"})
    u = json.loads(data)["usageMetadata"]
    assert u == {"promptTokenCount": 0, "totalTokenCount": 6, "thoughtsTokenCount": 6}


@pytest.mark.parametrize("gc", [{"generationConfig": {"maxOutputTokens": 5}},
                                {"generation_config": {"max_output_tokens": 5}}])
@pytest.mark.parametrize("mode", ["plain", "sse"])
def test_max_output_tokens_clamps(vendor, gc, mode):
    b = body(**gc)
    st, h, data, inp = post(vendor, GEN if mode == "plain" else SSE, b, {"x-fake": "reasoning=9"})
    assert st == 200
    seq = seq_of(h)
    if mode == "plain":
        r = json.loads(data)
        assert r == response(REPLY, "MAX_TOKENS", usage(inp, 0, thoughts=5), seq)  # the text stays whole
    else:
        chunks = sse_chunks(data)
        assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
        assert chunks[-1]["usageMetadata"] == usage(inp, 0, thoughts=5)
    rec = record(vendor, seq)
    assert rec["max_tokens"] == 5 and rec["served"] == served(inp, 5)


def test_limits_elsewhere_are_not_the_limit(vendor):
    """Only generationConfig's maxOutputTokens: not a top-level one, not
    another protocol's max_tokens, not one nested deeper."""
    b = body(max_tokens=1, maxOutputTokens=2, max_output_tokens=3,
             tools=[{"functionDeclarations": [{"name": "f", "generationConfig": {"maxOutputTokens": 4}}]}],
             generationConfig={"thinkingConfig": {"maxOutputTokens": 5}})
    st, h, data, inp = post(vendor, GEN, b)
    assert json.loads(data)["candidates"][0]["finishReason"] == "STOP"
    assert record(vendor, seq_of(h))["max_tokens"] is None


# ---------------------------------------------------------------- countTokens, models

def test_count_tokens(vendor):
    st, h, data, inp = post(vendor, COUNT, body("count me"))
    assert st == 200
    assert json.loads(data) == {"totalTokens": inp, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": inp}]}
    rec = record(vendor, seq_of(h))
    assert rec["model"] == MODEL and rec["stream"] is False
    assert rec["planned"] == rec["served"] == served(inp, 0)
    # with cached content: the total is the whole prompt, as promptTokenCount
    st, h, data, _ = post(vendor, f"/v1/models/{MODEL}:countTokens", body("[[fake in=50 cache_read=20 tool=6869]]",
                                                                         tools=TOOLS))
    assert json.loads(data) == {"totalTokens": 70, "cachedContentTokenCount": 20,
                                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 70}],
                                "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 20}]}
    rec = record(vendor, seq_of(h))
    assert rec["served"] == served(50, 0) and rec["tool_call"] is False


def test_models(vendor):
    st, h, data = http(vendor.port, "GET", BASE, None, AUTH)
    assert st == 200
    ms = json.loads(data)["models"]
    assert [m["name"] for m in ms] == [f"models/{m}" for m in MODELS]
    for m in ms:
        assert set(m) == {"name", "version", "displayName", "description", "inputTokenLimit", "outputTokenLimit",
                          "supportedGenerationMethods", "temperature", "topP", "topK", "maxTemperature", "thinking"}
        assert "generateContent" in m["supportedGenerationMethods"]
    st, h, data = http(vendor.port, "GET", f"{BASE}/gemini-2.5-pro", None, AUTH)
    assert st == 200 and json.loads(data) == ms[0]
    assert record(vendor, seq_of(h))["model"] == "gemini-2.5-pro"
    st, h, data = http(vendor.port, "GET", f"{BASE}/gemini-9", None, AUTH)
    assert st == 404 and json.loads(data) == {"error": {
        "code": 404, "message": "models/gemini-9 is not found for API version v1beta", "status": "NOT_FOUND"}}
    # v1 (the SDK's default): Gemini's with a Google credential, as before without
    for h_, q in ((AUTH, ""), ({}, f"?key={KEY}"), ({"authorization": "Bearer ya29.a0token"}, "")):
        st, _, data = http(vendor.port, "GET", f"/google/v1/models{q}", None, h_)
        assert st == 200 and [m["name"] for m in json.loads(data)["models"]] == [f"models/{m}" for m in MODELS]
        st, _, data = http(vendor.port, "GET", f"/google/v1/models/gemini-3.5-flash{q}", None, h_)
        assert st == 200 and json.loads(data)["name"] == "models/gemini-3.5-flash"
    st, _, data = http(vendor.port, "GET", "/v1/models", None, {"authorization": "Bearer sk-x"})
    assert st == 200 and json.loads(data)["object"] == "list"
    st, _, data = http(vendor.port, "GET", "/v1/models", None, {"anthropic-version": "2023-06-01"})
    assert st == 200 and "has_more" in json.loads(data)
    st, _, data = http(vendor.port, "GET", "/v1/models/gemini-2.5-pro", None, {"authorization": "Bearer sk-x"})
    assert st == 404 and json.loads(data)["type"] == "error"  # no Google credential: not Gemini's


# ---------------------------------------------------------------- errors and faults

def gerror(data, code, status):
    e = json.loads(data)
    assert set(e) == {"error"} and e["error"]["code"] == code and e["error"]["status"] == status
    return e["error"]


@pytest.mark.parametrize("method,path,code,status", [
    ("POST", f"{BASE}/{MODEL}:embedContent", 404, "NOT_FOUND"),
    ("POST", f"{BASE}/{MODEL}:", 404, "NOT_FOUND"),
    ("POST", f"{BASE}/:generateContent", 404, "NOT_FOUND"),
    ("GET", GEN, 404, "NOT_FOUND"),
    ("POST", BASE, 404, "NOT_FOUND"),
    ("POST", f"{BASE}/{MODEL}", 404, "NOT_FOUND"),
    ("GET", "/google/v1beta/cachedContents", 404, "NOT_FOUND"),
    ("POST", "/v1beta/openai/chat/completions", 404, "NOT_FOUND"),
    ("POST", f"{BASE}/{MODEL}:streamGenerateContent?alt=proto", 400, "INVALID_ARGUMENT"),
    ("POST", f"{BASE}/{MODEL}:streamGenerateContent?alt=", 400, "INVALID_ARGUMENT"),
])
def test_no_such_endpoint_is_a_google_error(vendor, method, path, code, status):
    st, h, data = http(vendor.port, method, path, json.dumps(body()), AUTH)
    assert st == code and h["content-type"] == "application/json"
    gerror(data, code, status)
    rec = record(vendor, seq_of(h))
    assert rec["status"] == code and rec["served"] == served(0, 0)


def test_other_paths_stay_anthropic_404(vendor):
    st, _, data = http(vendor.port, "POST", "/v2/models/x:generateContent", "{}", AUTH)
    assert st == 404 and json.loads(data)["type"] == "error"


@pytest.mark.parametrize("code,status", [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                         (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
                                         (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE"),
                                         (504, "DEADLINE_EXCEEDED"), (409, "ABORTED"), (418, "INVALID_ARGUMENT"),
                                         (529, "INTERNAL")])
@pytest.mark.parametrize("path", [GEN, SSE, COUNT])
def test_status_fault_is_a_google_error(vendor, code, status, path):
    st, h, data, _ = post(vendor, path, body(), {"x-fake": f"mode=status status={code}"})
    assert st == code and h["content-type"] == "application/json"
    assert ("retry-after" in h) == (code == 429)
    e = gerror(data, code, status)
    assert e["message"] == f"fakevendor: injected {code} (mode=status)"
    if code == 429:  # what Gemini CLI reads the retry delay from
        assert e["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    else:
        assert "details" not in e
    rec = record(vendor, seq_of(h))
    assert rec["status"] == code and rec["served"] == served(0, 0)


def test_bad_overrides_are_google_400s(vendor):
    st, _, data, _ = post(vendor, SSE, body("[[fake mode=nonsense]]"))
    assert st == 400 and gerror(data, 400, "INVALID_ARGUMENT")["message"] == "fakevendor: unknown mode 'nonsense'"
    st, _, data, _ = post(vendor, GEN, body("[[fake tool=zz]]", tools=TOOLS))
    assert st == 400 and "bad tool= value" in gerror(data, 400, "INVALID_ARGUMENT")["message"]


def test_storm(vendor):
    got = [post(vendor, GEN, body(), {"x-fake": "mode=storm"})[:3:2] for _ in range(4)]
    assert [st for st, _ in got] == [503, 200, 503, 200]
    gerror(got[0][1], 503, "UNAVAILABLE")


def raw_post(vendor, path, b, fake, timeout):
    data = json.dumps(b).encode()
    req = (f"POST {path} HTTP/1.1\r\nHost: fv\r\nx-goog-api-key: {KEY}\r\nx-fake: {fake}\r\n"
           f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n").encode() + data
    got, closed = raw_exchange(vendor.port, req, timeout=timeout)
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    payload = b""  # de-chunk what arrived (no terminating chunk)
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        assert n > 0, "a cut stream must not end like a complete one"
        payload += rest[:n]
        rest = rest[n + 2:]
    seq = int(head.split(b"x-request-id: req_fake_")[1][:12])
    return payload, closed, seq


@pytest.mark.parametrize("mode", ["stall_mid", "reset_mid"])
def test_cut_stream_serves_the_running_totals_sent(vendor, mode):
    payload, closed, seq = raw_post(vendor, SSE, body(), f"mode={mode} after=3 in=40 out=16 events=8",
                                    timeout=8 if mode == "reset_mid" else 1.5)
    assert closed == (mode == "reset_mid")
    chunks = sse_chunks(payload)
    assert len(chunks) == 3 and all("finishReason" not in c["candidates"][0] for c in chunks)
    assert chunks[-1]["usageMetadata"] == usage(40, 6)
    rec = record(vendor, seq)  # stall_mid: finished when we closed (vanished)
    assert rec["completed"] is False
    assert rec["planned"] == served(40, 16) and rec["served"] == served(40, 6)


def test_stall_mid_json_array(vendor):
    payload, _, seq = raw_post(vendor, ARRAY, body(), "mode=stall_mid after=2 events=4 out=8", timeout=1.5)
    assert payload.startswith(b"[{") and payload.count(b"\n,\r\n") == 1 and not payload.endswith(b"]")
    first, second = payload[1:].split(b"\n,\r\n")
    assert json.loads(second)["usageMetadata"]["candidatesTokenCount"] == 4


def test_malformed_sse(vendor):
    st, h, data, inp = post(vendor, SSE, body(), {"x-fake": "mode=malformed after=2 out=9"})
    assert st == 200
    events = data[:-4].split(b"\r\n\r\n")
    assert len(events) == 9
    with pytest.raises(ValueError):
        json.loads(events[2][6:])
    good = sse_chunks(b"".join(e + b"\r\n\r\n" for i, e in enumerate(events) if i != 2))
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in good) == REPLY
    assert good[-1]["usageMetadata"] == usage(inp, 9)
    assert record(vendor, seq_of(h))["served"] == served(inp, 9)


def test_malformed_json_array(vendor):
    st, h, data, inp = post(vendor, ARRAY, body(), {"x-fake": "mode=malformed after=2 events=4"})
    assert st == 200
    with pytest.raises(ValueError):
        json.loads(data)
    broken = b'\n,\r\n{"candidates":[{"content":{"parts":[{"text":"oops'
    assert data.count(broken) == 1
    chunks = array_chunks(data.replace(broken, b""), 4)
    assert chunks[-1]["usageMetadata"] == usage(inp, 8)


def test_malformed_non_stream_and_drip(vendor):
    st, h, data, _ = post(vendor, GEN, body(), {"x-fake": "mode=malformed"})
    assert st == 200 and int(h["content-length"]) == len(data)
    with pytest.raises(ValueError):
        json.loads(data)
    st, h, data, inp = post(vendor, SSE, body(), {"x-fake": "mode=drip interval_ms=10 events=3"})
    assert st == 200 and sse_chunks(data)[-1]["usageMetadata"] == usage(inp, 6)


# ---------------------------------------------------------------- credentials and the record

@pytest.mark.parametrize("how", ["header", "query", "query-encoded", "oauth", "none", "header+query",
                                 "header+oauth"])
def test_credentials_and_the_record(vendor, how):
    path, h, key = SSE, {}, KEY
    if "header" in how:
        h["x-goog-api-key"] = KEY
    if how.startswith("query") or "+query" in how:
        path = SSE + "&key=" + (urllib.parse.quote(KEY, safe="") .replace("A", "%41") if how == "query-encoded"
                                else KEY)
    if "oauth" in how:
        h["authorization"] = "Bearer ya29.a0AfB_fakeOAuthToken"
        if how == "oauth":
            key = "ya29.a0AfB_fakeOAuthToken"
    b = body("hi", generationConfig={"maxOutputTokens": 1000})
    st, hd, data, inp = post(vendor, path, b, auth=h)
    assert st == 200
    rec = record(vendor, seq_of(hd))
    expect = {"header": ("x-goog-api-key", "google-api-key"), "query": ("query-key", "google-api-key"),
              "query-encoded": ("query-key", "google-api-key"), "oauth": ("authorization", "google-oauth"),
              "none": ("none", "none"), "header+query": ("x-goog-api-key", "google-api-key"),
              "header+oauth": ("x-goog-api-key", "google-api-key")}[how]
    assert (rec["auth_header"], rec["auth_class"]) == expect
    assert rec["auth_sha256"] == (None if how == "none" else sha256(key))
    assert rec["auth_multiple"] is ("+" in how)
    assert rec["query"] == ("alt=sse&key=REDACTED" if "query" in how else "alt=sse")
    assert rec["method"] == "POST" and rec["path"] == path.split("?")[0] and rec["model"] == MODEL
    assert rec["stream"] is True and rec["include_usage"] is False and rec["max_tokens"] == 1000
    assert rec["body_bytes"] == len(json.dumps(b)) and rec["mode"] == "none"
    assert rec["anthropic_version"] is None and rec["tls"] is False
    assert rec["planned"] == rec["served"] == served(inp, 16)
    assert ("x-goog-api-key" in rec["headers"]) == ("header" in how)


def test_query_key_is_only_gemini_s(vendor):
    """?key= is no credential on the other protocols' endpoints, but is
    still redacted from the record."""
    st, h, _ = http(vendor.port, "POST", f"/v1/chat/completions?key={KEY}&x=1",
                    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert st == 200
    rec = record(vendor, seq_of(h))
    assert rec["auth_header"] == "none" and rec["query"] == "key=REDACTED&x=1"


# ---------------------------------------------------------------- scripted tool calls

def call_part(cmd=CMD, name="run_shell_command"):
    return {"functionCall": {"name": name, "args": {"command": cmd}}}


@pytest.mark.parametrize("mode", ["plain", "sse", "array"])
def test_tool_call_then_text(vendor, mode):
    prompt = f"[[fake tool={hexof(CMD)}]] do it"
    path = {"plain": GEN, "sse": SSE, "array": ARRAY}[mode]
    st, h, data, inp = post(vendor, path, body(prompt, tools=TOOLS))
    assert st == 200
    seq = seq_of(h)
    if mode == "plain":
        assert not any(c < 0x20 for c in data), "raw control characters in a JSON body"
        assert json.loads(data) == response(None, u=usage(inp, 16), seq=seq, part=call_part())
    else:
        chunks = sse_chunks(data) if mode == "sse" else array_chunks(data, 8)
        assert len(chunks) == 8  # the events keep their count; the call is never split
        for k, c in enumerate(chunks[:-1]):
            assert c == {"candidates": [{"content": {"role": "model"}, "index": 0}],
                         "usageMetadata": usage(inp, 2 * (k + 1)), "modelVersion": MODEL,
                         "responseId": f"gem_fake_{seq:012d}"}
        assert chunks[-1] == response(None, u=usage(inp, 16), seq=seq, part=call_part())
    rec = record(vendor, seq)
    assert rec["tool_call"] is True and rec["planned"] == rec["served"] == served(inp, 16)

    # Gemini CLI runs it and sends the result back (role user, a
    # functionResponse part), the prompt and directive still in the history
    turns = [{"role": "user", "parts": [{"text": prompt}]},
             {"role": "model", "parts": [call_part()]},
             {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command",
                                                              "response": {"output": 'q"uote|'}}}]}]
    st, h, data, inp = post(vendor, path, body(contents=turns, tools=TOOLS))
    assert st == 200
    if mode == "plain":
        assert json.loads(data) == response(REPLY, u=usage(inp, 16), seq=seq_of(h))
    else:
        chunks = sse_chunks(data) if mode == "sse" else array_chunks(data, 8)
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == REPLY
    assert record(vendor, seq_of(h))["tool_call"] is False


@pytest.mark.parametrize("tools", [None, [], [{"googleSearch": {}}, {"codeExecution": {}}],
                                   [{"functionDeclarations": []}]])
def test_no_function_declared_gets_text(vendor, tools):
    """Utility calls (Gemini CLI's router, summaries) and tools that are no
    functions: the text reply."""
    st, h, data, _ = post(vendor, GEN, body(f"[[fake tool={hexof('echo hi')}]] x", tools=tools))
    assert st == 200 and json.loads(data)["candidates"][0]["content"]["parts"] == [{"text": REPLY}]
    assert record(vendor, seq_of(h))["tool_call"] is False


def test_function_response_only_counts_in_contents_parts(vendor):
    """"functionResponse" in prompt text, in systemInstruction's parts, in a
    declaration or deeper in a part is no tool result: still the call."""
    prompt = '[[fake tool=6869]] {"functionResponse": {}} "functionResponse" function_response'
    tools = [{"functionDeclarations": [{"name": "run_shell_command",
                                        "parameters": {"functionResponse": {"type": "OBJECT"}}}]}]
    contents = [{"role": "user", "parts": [{"text": prompt}, {"inlineData": {"functionResponse": 1}}],
                 "functionResponse": {}}]
    b = body(contents=contents, tools=tools, systemInstruction={"parts": [{"functionResponse": {}}]})
    st, h, data, inp = post(vendor, GEN, b)
    assert st == 200 and json.loads(data)["candidates"][0]["content"]["parts"] == [call_part("hi")]


def test_snake_case_and_tool_name(vendor):
    tools = [{"function_declarations": [{"name": "run_shell_command"}]}]
    st, h, data, _ = post(vendor, GEN, body("x", tools=tools),
                          {"x-fake-tool": hexof("ls -l").upper(), "x-fake-tool-name": "my.tool:v2"})
    assert json.loads(data)["candidates"][0]["content"]["parts"] == [call_part("ls -l", "my.tool:v2")]
    turns = [{"role": "user", "parts": [{"text": "x"}]}, {"role": "model", "parts": [call_part("ls -l")]},
             {"role": "function", "parts": [{"function_response": {"name": "run_shell_command", "response": {}}}]}]
    st, h, data, _ = post(vendor, GEN, body(contents=turns, tools=tools), {"x-fake-tool": hexof("ls -l")})
    assert json.loads(data)["candidates"][0]["content"]["parts"] == [{"text": REPLY}]


def test_tool_call_clamped_and_one_event(vendor):
    b = body(f"[[fake tool={hexof(CMD)} events=0 out=10]]", tools=TOOLS, generationConfig={"maxOutputTokens": 3})
    st, h, data, inp = post(vendor, SSE, b)
    [c] = sse_chunks(data)
    assert c == response(None, "MAX_TOKENS", usage(inp, 3), seq_of(h), part=call_part())
    st, h, data, inp = post(vendor, GEN, b)
    assert json.loads(data)["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert record(vendor, seq_of(h))["tool_call"] is True


# ---------------------------------------------------------------- the official SDK

JS = os.path.join(ROOT, "tests", "js")


def genai_available():
    """@google/genai resolvable from tests/js (or through NODE_PATH)."""
    if not shutil.which("node"):
        return False
    p = subprocess.run(["node", "-e", "require.resolve('@google/genai')"], cwd=JS, capture_output=True)
    return p.returncode == 0


@pytest.mark.skipif(not genai_available(), reason="node or the Google Gen AI SDK (@google/genai) is not installed")
def test_official_genai_sdk(vendor):
    p = subprocess.run(["node", os.path.join(JS, "sdk_gemini.mjs")], cwd=JS, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, KR_BASE_URL=f"{vendor.url}/google", KR_TOKEN=KEY,
                                             KR_CMD=CMD))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["text"] == REPLY and out["finish_reason"] == "STOP" and out["model_version"] == MODEL
    assert out["usage"] == usage(333, 7)
    assert out["streamed"] == REPLY and out["stream_finish"] == [None, None, "STOP"]
    assert out["stream_usage"] == [usage(444, 7 * k // 3, cr=5, thoughts=2, tup=4) for k in (1, 2, 3)]
    assert out["count"] == {"totalTokens": 61, "cachedContentTokenCount": 6}
    assert out["models"] == [f"models/{m}" for m in MODELS]
    assert out["model"] == {"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro",
                            "inputTokenLimit": 1048576}
    assert out["tool"] == {"function_calls": [{"name": "run_shell_command", "args": {"command": CMD}}],
                           "finish_reason": "STOP"}
    assert out["tool_stream"] == {"function_calls": [{"name": "run_shell_command", "args": {"command": CMD}}],
                                  "chunks": 8}
    assert out["refused"]["is_api_error"] is True and out["refused"]["status"] == 429
    assert json.loads(out["refused"]["message"])["error"]["status"] == "RESOURCE_EXHAUSTED"
    recs = vendor.requests()
    assert {r["auth_header"] for r in recs} == {"x-goog-api-key"}
    assert all(r["auth_sha256"] == sha256(KEY) for r in recs)
    # the SDK's default API version is v1
    assert {r["path"].split("/")[2] for r in recs} == {"v1"}
    assert [r["served"] for r in recs if r["stream"] and not r["tool_call"]] == [served(448, 9, 5)]
