"""The Gemini API through keyrail's proxy (issue 22): /gemini/{v1beta|v1}/
models/{model}:generateContent, :streamGenerateContent (SSE with alt=sse, a
JSON array without), :countTokens and the model list. The workspace token
arrives in x-goog-api-key (Gemini CLI, the @google/genai SDK), as a bearer
or as ?key=; the vendor sees the platform's (or the org's BYOK) key in
x-goog-api-key and never a ?key=. Usage is exact: input is the prompt
without its cached part plus the tool-use prompt, output the candidates
plus the thoughts; errors are Google-shaped."""
import json

import pytest

from conftest import (PLATFORM_GOOGLE_KEY, TENANT_GOOGLE_KEY, TENANT_OAUTH, http, sha256,
                      wait_until)

MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def gemini(kr, token, action="generateContent", model=MODEL, body=None, query="", headers=None,
           version="v1beta", auth="x-goog-api-key"):
    h = {}
    if auth == "x-goog-api-key":
        h["x-goog-api-key"] = token
    elif auth == "bearer":
        h["authorization"] = f"Bearer {token}"
    elif auth == "query":
        query = f"key={token}" + (f"&{query}" if query else "")
    h.update(headers or {})
    path = f"/gemini/{version}/models/{model}:{action}" + (f"?{query}" if query else "")
    return http(kr.port, "POST", path, body if body is not None else BODY, h)


def google_error(data, code):
    e = json.loads(data)["error"]
    assert e["code"] == code and isinstance(e["message"], str) and e["status"], e
    return e


def sse_chunks(data):
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def cost(inp, out, cache_read, pin=0.30, pout=2.50, pcache=0.03):
    """Micro-dollars, rounded up, as the meter does (prices per million)."""
    return -(-(inp * round(pin * 1e6) + out * round(pout * 1e6) + cache_read * round(pcache * 1e6)) // 1000000)


FAKE = "in=1200 out=80 cache_read=300 reasoning=20 tool_use_prompt=7"


@pytest.mark.parametrize("action,query", [("generateContent", ""),
                                          ("streamGenerateContent", "alt=sse"),
                                          ("streamGenerateContent", "")])
def test_usage_recorded_exactly(kr, vendor, action, query):
    tok = kr.setup_org()
    kr.start()
    st, h, data = gemini(kr, tok, action, query=query, headers={"x-fake": FAKE})
    assert st == 200, data
    rid = h["x-keyrail-request-id"]
    if action == "generateContent":
        body = json.loads(data)
        assert body["candidates"][0]["content"]["parts"][0]["text"]
        assert body["usageMetadata"]["thoughtsTokenCount"] == 20
    elif query == "alt=sse":
        assert h["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(data)
        assert len(chunks) > 1 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    else:
        chunks = json.loads(data)  # one JSON array, passed through whole
        assert isinstance(chunks, list) and len(chunks) > 1
    rec = vendor.requests()[-1]
    assert rec["path"] == f"/google/v1beta/models/{MODEL}:{action}"
    assert rec["query"] == query  # the alt, never a key
    assert rec["auth_header"] == "x-goog-api-key" and rec["auth_sha256"] == sha256(PLATFORM_GOOGLE_KEY)
    assert not rec["auth_multiple"]
    assert rec["served"]["input"] == 1207 and rec["served"]["output"] == 80
    row = kr.wait_usage(rid)
    # input: the prompt without its cached part, plus the tool-use prompt;
    # output: candidates plus thoughts
    assert (row["input"], row["output"], row["cache_read"], row["cache_write"]) == (1207, 80, 300, 0)
    assert row["status"] == "complete" and row["model"] == MODEL
    assert row["cost_micros"] == cost(1207, 80, 300)
    (bal,), = kr.db_rows("select balance_micros from credits")
    assert bal == 100_000_000 - row["cost_micros"]


@pytest.mark.parametrize("auth", ["x-goog-api-key", "bearer", "query"])
def test_every_credential_form_and_the_key_never_forwarded(kr, vendor, auth):
    tok = kr.setup_org()
    kr.start()
    st, h, data = gemini(kr, tok, "streamGenerateContent", query="alt=sse", auth=auth)
    assert st == 200, data
    rec = vendor.requests()[-1]
    assert rec["query"] == "alt=sse", "a ?key= was forwarded"
    assert rec["auth_header"] == "x-goog-api-key" and rec["auth_sha256"] == sha256(PLATFORM_GOOGLE_KEY)
    assert tok[5:].encode() not in json.dumps(vendor.requests()).encode()
    log = open(kr.log).read()
    assert tok not in log and "key=" + tok[:8] not in log


def test_v1_works_like_v1beta(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = gemini(kr, tok, version="v1")
    assert st == 200, data
    assert vendor.requests()[-1]["path"] == f"/google/v1/models/{MODEL}:generateContent"


def test_count_tokens_is_forwarded_and_not_billed(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = gemini(kr, tok, "countTokens", headers={"x-fake": "in=321"})
    assert st == 200, data
    assert json.loads(data)["totalTokens"] == 321
    assert vendor.requests()[-1]["path"] == f"/google/v1beta/models/{MODEL}:countTokens"
    time_ok = wait_until(lambda: '"route":"gemini_count_tokens"' in open(kr.log).read(), what="log line")
    assert time_ok and kr.usage() == []


def test_model_list_is_the_registrys_gemini_models(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, _, data = http(kr.port, "GET", "/gemini/v1beta/models", headers={"x-goog-api-key": tok})
    assert st == 200, data
    models = json.loads(data)["models"]
    names = {m["name"] for m in models}
    assert f"models/{MODEL}" in names and "models/gemini-3.1-pro-preview" in names
    assert all(n.startswith("models/gemini-") for n in names), names
    assert "models/gemini-unpriced" not in names, "an unpriced platform model cannot be served"
    st, _, data = http(kr.port, "GET", f"/gemini/v1/models/{MODEL}", headers={"x-goog-api-key": tok})
    assert st == 200 and json.loads(data)["name"] == f"models/{MODEL}", data
    for other in ("gemini-unpriced", "claude-sonnet-4-5", "nope"):
        st, _, data = http(kr.port, "GET", f"/gemini/v1beta/models/{other}", headers={"x-goog-api-key": tok})
        assert st == 404 and google_error(data, 404)["status"] == "NOT_FOUND", (other, data)
    assert vendor.requests() == []


def test_refusals_are_google_shaped_and_forward_nothing(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    # no credential
    st, _, data = http(kr.port, "POST", f"/gemini/v1beta/models/{MODEL}:generateContent", BODY)
    assert st == 401 and google_error(data, 401)["status"] == "UNAUTHENTICATED"
    # a Google key instead of the workspace token: named by class, never echoed
    st, _, data = gemini(kr, TENANT_GOOGLE_KEY)
    e = google_error(data, 401)
    assert "google-api-key" in e["message"] and TENANT_GOOGLE_KEY not in data.decode()
    # two credentials: the token and a second one (a header, or ?key=)
    for extra in ({"authorization": f"Bearer {TENANT_OAUTH}"}, {"x-goog-api-key": TENANT_GOOGLE_KEY}):
        st, _, data = gemini(kr, tok, auth="bearer" if "x-goog-api-key" in extra else "x-goog-api-key",
                             headers=extra)
        assert st == 401, data
        assert TENANT_GOOGLE_KEY not in data.decode() and TENANT_OAUTH not in data.decode()
    st, _, data = gemini(kr, tok, query=f"key={TENANT_GOOGLE_KEY}")
    assert st == 401 and TENANT_GOOGLE_KEY not in data.decode(), data
    # an unknown query parameter, a model with no price, a model the platform does not serve
    st, _, data = gemini(kr, tok, query="foo=bar")
    assert st == 400 and google_error(data, 400)["status"] == "INVALID_ARGUMENT"
    st, _, data = gemini(kr, tok, model="gemini-unpriced")
    assert st == 422 and google_error(data, 422)["status"] == "FAILED_PRECONDITION"
    st, _, data = gemini(kr, tok, model="claude-sonnet-4-5")
    assert 400 <= st < 500 and google_error(data, st)
    # paths that are not the API's
    for path in ("/gemini/v2/models/x:generateContent", f"/gemini/v1beta/models/{MODEL}:embedContent",
                 "/gemini/v1beta/models/a/b:generateContent", "/gemini/v1beta/tunedModels/x:generateContent"):
        st, _, data = http(kr.port, "POST", path, BODY, {"x-goog-api-key": tok})
        assert st == 404 and google_error(data, 404)["status"] == "NOT_FOUND", (path, data)
    assert vendor.requests() == []
    assert kr.usage() == []


def test_no_credits_and_vendor_errors_keep_the_google_shape(kr, vendor):
    tok = kr.setup_org(credits=None)
    kr.start()
    st, _, data = gemini(kr, tok)
    assert st == 402 and google_error(data, 402), data
    assert vendor.requests() == []
    kr.cli("credits", "add", "acme", "10")
    # the proxy caches the balance briefly (token_cache_ms)
    st, h, data = wait_until(lambda: (lambda r: r if r[0] != 402 else None)(
        gemini(kr, tok, headers={"x-fake": "mode=status status=429"})), what="the new credits")
    assert st == 429 and google_error(data, 429)["status"] == "RESOURCE_EXHAUSTED", data
    assert h.get("retry-after") == "1"


def test_cut_stream_is_recorded_partial(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    st, h, data = gemini(kr, tok, "streamGenerateContent", query="alt=sse",
                         headers={"x-fake": "in=500 out=40 mode=reset_mid after=2"})
    rid = h["x-keyrail-request-id"]
    row = kr.wait_usage(rid)
    assert row["status"] == "partial" and row["input"] == 500 and 0 < row["output"] <= 40, row


def test_byok_through_the_proxy_sends_the_orgs_key_and_debits_nothing(kr, vendor):
    kr.cli("org", "create", "acme")
    kr.secret("--org", "acme", "GEMINI_API_KEY", TENANT_GOOGLE_KEY)
    kr.cli("ws", "create", "acme", "g", "--runtime", "gemini", "--model", MODEL, "--set", "LLM_PROVIDER=google")
    tok = kr.mint("acme/g")
    kr.start()
    st, h, data = gemini(kr, tok, "streamGenerateContent", query="alt=sse", headers={"x-fake": "in=100 out=10"})
    assert st == 200, data
    rec = vendor.requests()[-1]
    assert rec["auth_header"] == "x-goog-api-key" and rec["auth_sha256"] == sha256(TENANT_GOOGLE_KEY)
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert (row["input"], row["output"]) == (100, 10)
    assert kr.db_rows("select route from usage") == [("byok",)]
    assert TENANT_GOOGLE_KEY not in open(kr.log).read()
