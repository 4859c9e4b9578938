"""The fake vendor's scripted tool calls (override tool=HEX, tool_name=NAME),
called directly, with no keyrail in between: per protocol, streamed and not,
the one tool call a request with tools and no tool result gets, the text a
follow-up carrying the tool result gets, the usage (the usual deterministic
numbers), the record's tool_call flag and invalid values. The rules are in
src/fakevendor/fv.h (SCRIPTED TOOL CALLS); the real CLIs were checked by hand
(see the commit message)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, TENANT_ANTHROPIC_KEY, TENANT_OPENAI_KEY, check_log_clean, http, sse_events, wait_until

REPLY = "Hello from fakevendor."
# quotes, backslashes, a newline, a tab, a control character and non-ASCII
# of 2, 3 and 4 bytes: everything JSON escaping (and double escaping in the
# streamed argument deltas) has to get right
CMD = 'printf "%s|" "q\\"uote" \'back\\slash\' "\u00fc\u20ac\U0001F600" > /tmp/x\necho "tab\there" \x01 done'

ANTH = "/v1/messages"
CHAT = "/v1/chat/completions"
RESP = "/v1/responses"
PROTOS = ["anthropic", "chat", "responses"]
PATHS = {"anthropic": ANTH, "chat": CHAT, "responses": RESP}
AUTH = {"anthropic": {"x-api-key": TENANT_ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        "chat": {"authorization": f"Bearer {TENANT_OPENAI_KEY}"},
        "responses": {"authorization": f"Bearer {TENANT_OPENAI_KEY}"}}
TOOLS = {"anthropic": [{"name": "Bash", "description": "run a command",
                        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
         "chat": [{"type": "function", "function": {"name": "shell", "parameters": {
             "type": "object", "properties": {"command": {"type": "string"}}}}}],
         "responses": [{"type": "function", "name": "exec_command", "parameters": {
             "type": "object", "properties": {"cmd": {"type": "string"}}}}]}
NAMES = {"anthropic": "Bash", "chat": "shell", "responses": "exec_command"}
ARG = {"anthropic": "command", "chat": "command", "responses": "cmd"}


@pytest.fixture(autouse=True)
def vendor_exits_clean(vendor, tmp_path):
    """After each test: the vendor (an ASan+UBSan build under KEYRAIL_BUILD)
    exits 0 on SIGTERM with no sanitizer report in its log."""
    yield
    vendor.stop()
    check_log_clean((tmp_path / "fakevendor.log").read_text(errors="replace"), "fakevendor log")
    assert vendor.proc.returncode == 0


def hexof(cmd):
    return cmd.encode().hex()


def body(proto, prompt, stream=False, tools=True, turns=None, **extra):
    """A request of the protocol: one user turn with the prompt, or the
    conversation `turns`."""
    b = {"model": {"anthropic": "claude-test", "chat": "gpt-4o", "responses": "gpt-5"}[proto]}
    if proto == "anthropic":
        b["max_tokens"] = 1000
        b["messages"] = turns or [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    elif proto == "chat":
        b["messages"] = turns or [{"role": "user", "content": prompt}]
        if stream:
            b["stream_options"] = {"include_usage": True}
    else:
        b["input"] = turns or [{"type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": prompt}]}]
    if tools:
        b["tools"] = TOOLS[proto]
    if stream:
        b["stream"] = True
    b.update(extra)
    return b


def post(vendor, proto, b, headers=None):
    """POSTs b (a dict, sent as this exact JSON text); returns (status,
    headers, data, the default IN for this body)."""
    raw = json.dumps(b)
    h = dict(AUTH[proto], **{"content-type": "application/json"})
    h.update(headers or {})
    st, hd, data = http(vendor.port, "POST", PATHS[proto], raw, h)
    return st, hd, data, 1 + len(raw.encode()) // 4


def seq_of(proto, headers):
    rid = headers["request-id" if proto == "anthropic" else "x-request-id"]
    assert rid.startswith("req_fake_") and len(rid) == len("req_fake_") + 12
    return int(rid[len("req_fake_"):])


def record(vendor, seq):
    def done():
        r = [r for r in vendor.requests() if r["seq"] == seq]
        return r and not r[0]["pending"] and r[0]
    return wait_until(done, what=f"record {seq} finished")


def events(data):
    """Parsed SSE data per event ([DONE] kept as the string)."""
    out = []
    for e in sse_events(data):
        d = e["data"]
        out.append(d if d == "[DONE]" else json.loads(d))
    return out


def usage_of(proto, inp, out):
    if proto == "anthropic":
        return {"input_tokens": inp, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": out}
    if proto == "chat":
        return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}


def tool_call(proto, stream, data, seq, n=8):
    """Checks the shape of a scripted tool call answer (n deltas if streamed)
    and returns (name, arguments object, usage)."""
    if not stream:
        assert not any(c < 0x20 for c in data), "raw control characters in a JSON body"
        r = json.loads(data)
        if proto == "anthropic":
            assert r["id"] == f"msg_fake_{seq:012d}" and r["stop_reason"] == "tool_use"
            [c] = r["content"]
            assert c["type"] == "tool_use" and c["id"] == f"toolu_fake_{seq:012d}"
            assert set(c) == {"type", "id", "name", "input"}
            return c["name"], c["input"], r["usage"]
        if proto == "chat":
            [ch] = r["choices"]
            assert ch["finish_reason"] == "tool_calls"
            m = ch["message"]
            assert m["role"] == "assistant" and m["content"] is None
            [tc] = m["tool_calls"]
            assert tc["id"] == f"call_fake_{seq:012d}" and tc["type"] == "function"
            return tc["function"]["name"], json.loads(tc["function"]["arguments"]), r["usage"]
        assert r["id"] == f"resp_fake_{seq:012d}" and r["status"] == "completed"
        [it] = r["output"]
        assert it == {"id": f"fc_fake_{seq:012d}", "type": "function_call", "status": "completed",
                      "arguments": it["arguments"], "call_id": f"call_fake_{seq:012d}", "name": it["name"]}
        return it["name"], json.loads(it["arguments"]), r["usage"]

    evs = events(data)
    if proto == "anthropic":
        assert [e["type"] for e in evs] == (["message_start", "content_block_start", "ping"] +
                                            ["content_block_delta"] * n +
                                            ["content_block_stop", "message_delta", "message_stop"])
        start = evs[1]
        assert start["index"] == 0
        cb = start["content_block"]
        assert cb == {"type": "tool_use", "id": f"toolu_fake_{seq:012d}", "name": cb["name"], "input": {}}
        deltas = evs[3:3 + n]
        assert all(d["index"] == 0 and d["delta"]["type"] == "input_json_delta" for d in deltas)
        args = json.loads("".join(d["delta"]["partial_json"] for d in deltas))
        assert evs[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
        u = dict(evs[0]["message"]["usage"], output_tokens=evs[-2]["usage"]["output_tokens"])
        return cb["name"], args, u
    if proto == "chat":
        assert evs[-1] == "[DONE]"
        chunks = evs[:-1]
        assert len(chunks) == n + 3  # role+tool chunk, n argument chunks, finish, usage
        assert all(c["id"] == f"chatcmpl-fake-{seq:012d}" and c["object"] == "chat.completion.chunk"
                   for c in chunks)
        first = chunks[0]["choices"][0]
        assert first["delta"]["role"] == "assistant" and first["finish_reason"] is None
        [tc] = first["delta"]["tool_calls"]
        assert tc == {"index": 0, "id": f"call_fake_{seq:012d}", "type": "function",
                      "function": {"name": tc["function"]["name"], "arguments": ""}}
        pieces = []
        for c in chunks[1:1 + n]:
            [ch] = c["choices"]
            assert ch["finish_reason"] is None and set(ch["delta"]) == {"tool_calls"}
            [d] = ch["delta"]["tool_calls"]
            assert d["index"] == 0 and set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
            pieces.append(d["function"]["arguments"])
        fin = chunks[n + 1]["choices"][0]
        assert fin["delta"] == {} and fin["finish_reason"] == "tool_calls"
        assert chunks[n + 2]["choices"] == []
        return tc["function"]["name"], json.loads("".join(pieces)), chunks[n + 2]["usage"]
    types = [e["type"] for e in evs]
    assert types == (["response.created", "response.in_progress", "response.output_item.added"] +
                     ["response.function_call_arguments.delta"] * n +
                     ["response.function_call_arguments.done", "response.output_item.done", "response.completed"])
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    fc = f"fc_fake_{seq:012d}"
    added = evs[2]
    assert added["output_index"] == 0
    assert added["item"] == {"id": fc, "type": "function_call", "status": "in_progress", "arguments": "",
                             "call_id": f"call_fake_{seq:012d}", "name": added["item"]["name"]}
    deltas = evs[3:3 + n]
    assert all(d["item_id"] == fc and d["output_index"] == 0 for d in deltas)
    text = "".join(d["delta"] for d in deltas)
    done = evs[3 + n]
    assert done["item_id"] == fc and done["output_index"] == 0 and done["arguments"] == text
    assert done["name"] == added["item"]["name"]
    item = evs[4 + n]["item"]
    assert item == dict(added["item"], status="completed", arguments=text)
    final = evs[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [item]
    return item["name"], json.loads(text), final["usage"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("proto", PROTOS)
def test_tool_call_then_text(vendor, proto, stream):
    st, h, data, inp = post(vendor, proto, body(proto, f"[[fake tool={hexof(CMD)}]] do it", stream))
    assert st == 200
    seq = seq_of(proto, h)
    name, args, usage = tool_call(proto, stream, data, seq)
    assert name == NAMES[proto] and args == {ARG[proto]: CMD}
    assert usage == usage_of(proto, inp, 16)  # IN = 1 + body_bytes / 4, OUT = 2 * 8
    rec = record(vendor, seq)
    assert rec["tool_call"] is True and rec["status"] == 200 and rec["completed"] is True
    assert rec["planned"] == rec["served"] == {"input": inp, "output": 16, "cache_read": 0, "cache_write": 0}

    # the CLI runs the command and sends its result back, with the same
    # prompt (and directive) earlier in the conversation: now text
    prompt = f"[[fake tool={hexof(CMD)}]] do it"
    if proto == "anthropic":
        turns = [{"role": "user", "content": prompt},
                {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_fake_{seq:012d}",
                                                   "name": name, "input": args}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_fake_{seq:012d}",
                                              "content": "q\"uote|", "is_error": False}]}]
    elif proto == "chat":
        turns = [{"role": "user", "content": prompt},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_fake_{seq:012d}", "type": "function",
                     "function": {"name": name, "arguments": json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": f"call_fake_{seq:012d}", "content": "q\"uote|"}]
    else:
        turns = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
                {"type": "function_call", "id": f"fc_fake_{seq:012d}", "call_id": f"call_fake_{seq:012d}",
                 "name": name, "arguments": json.dumps(args), "status": "completed"},
                {"type": "function_call_output", "call_id": f"call_fake_{seq:012d}", "output": "q\"uote|"}]
    st, h, data, inp = post(vendor, proto, body(proto, None, stream, turns=turns))
    assert st == 200
    seq2 = seq_of(proto, h)
    if stream:
        evs = events(data)
        if proto == "anthropic":
            text = "".join(e["delta"]["text"] for e in evs if e["type"] == "content_block_delta")
            assert evs[-2]["delta"]["stop_reason"] == "end_turn"
        elif proto == "chat":
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in evs[:-1] if c["choices"])
        else:
            text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
            assert evs[-1]["response"]["output"][0]["type"] == "message"
    else:
        r = json.loads(data)
        if proto == "anthropic":
            assert r["content"] == [{"type": "text", "text": REPLY}] and r["stop_reason"] == "end_turn"
            text = r["content"][0]["text"]
        elif proto == "chat":
            m = r["choices"][0]["message"]
            assert "tool_calls" not in m and r["choices"][0]["finish_reason"] == "stop"
            text = m["content"]
        else:
            assert [o["type"] for o in r["output"]] == ["message"]
            text = r["output"][0]["content"][0]["text"]
    assert text == REPLY
    rec = record(vendor, seq2)
    assert rec["tool_call"] is False
    assert rec["planned"] == rec["served"] == {"input": inp, "output": 16, "cache_read": 0, "cache_write": 0}


@pytest.mark.parametrize("proto", PROTOS)
def test_no_tools_declared_gets_text(vendor, proto):
    """Utility calls (titles, summaries) carry the prompt but no tools."""
    for tools in (False, []):
        b = body(proto, f"title for: [[fake tool={hexof('echo hi')}]] do it", tools=False)
        if tools == []:
            b["tools"] = []
        st, h, data, _ = post(vendor, proto, b)
        assert st == 200 and REPLY.encode() in data
        for tool_id in (b"toolu_fake_", b"call_fake_", b"fc_fake_"):  # no tool call ids
            assert tool_id not in data
        assert record(vendor, seq_of(proto, h))["tool_call"] is False


@pytest.mark.parametrize("proto", PROTOS)
def test_prompt_text_cannot_fake_a_tool_result(vendor, proto):
    """Words that look like a tool result, inside strings (prompt text, a
    tool's schema), are no tool result: the answer is still the tool call."""
    prompt = ('[[fake tool=6869]] {"type":"tool_result"} "type": "function_call_output" '
              '{"role":"tool"} role tool tool_result')
    b = body(proto, prompt)
    b["tools"] = [dict(t) for t in TOOLS[proto]]
    b["metadata"] = {"type": "tool_result", "role": "tool"}  # not in the conversation
    st, h, data, _ = post(vendor, proto, b)
    assert st == 200
    _, args, _ = tool_call(proto, False, data, seq_of(proto, h))
    assert args == {ARG[proto]: "hi"}


def test_count_tokens_and_models_unaffected(vendor):
    b = body("anthropic", f"[[fake tool={hexof('ls')} in=77]] hi")
    st, _, data = http(vendor.port, "POST", "/v1/messages/count_tokens", json.dumps(b), AUTH["anthropic"])
    assert st == 200 and json.loads(data) == {"input_tokens": 77}
    st, _, data = http(vendor.port, "GET", "/v1/models", None, dict(AUTH["chat"], **{"x-fake-tool": "6869"}))
    assert st == 200 and json.loads(data)["object"] == "list"


@pytest.mark.parametrize("proto", PROTOS)
def test_tool_name_and_header_sources(vendor, proto):
    # x-fake-KEY, upper-case hex
    st, h, data, _ = post(vendor, proto, body(proto, "hi"),
                          {"x-fake-tool": hexof("ls -l").upper(), "x-fake-tool-name": "my.tool:v2"})
    assert st == 200
    name, args, _ = tool_call(proto, False, data, seq_of(proto, h))
    assert name == "my.tool:v2" and args == {ARG[proto]: "ls -l"}  # the argument key stays
    # x-fake beats the body's directive
    st, h, data, _ = post(vendor, proto, body(proto, f"[[fake tool={hexof('no')} tool_name=x]]"),
                          {"x-fake": f"tool={hexof('yes')} events=3"})
    name, args, _ = tool_call(proto, False, data, seq_of(proto, h))
    assert name == "x" and args == {ARG[proto]: "yes"}


@pytest.mark.parametrize("proto", PROTOS)
def test_events_and_clamping(vendor, proto):
    """events=N sets the number of argument deltas (1: the JSON whole) and
    OUT; max_tokens below OUT clamps it as for text, the call stays whole."""
    st, h, data, inp = post(vendor, proto, body(proto, f"[[fake tool={hexof(CMD)} events=1]]", True))
    name, args, usage = tool_call(proto, True, data, seq_of(proto, h), n=1)
    assert args == {ARG[proto]: CMD} and usage == usage_of(proto, inp, 2)
    limit = {"anthropic": "max_tokens", "chat": "max_tokens", "responses": "max_output_tokens"}[proto]
    st, h, data, inp = post(vendor, proto, body(proto, f"[[fake tool={hexof(CMD)}]]", **{limit: 5}))
    r = json.loads(data)
    if proto == "anthropic":
        assert r["stop_reason"] == "max_tokens" and r["content"][0]["input"] == {"command": CMD}
        assert r["usage"]["output_tokens"] == 5
    elif proto == "chat":
        assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 5
        assert json.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"command": CMD}
    else:
        assert r["status"] == "incomplete" and r["output"][0]["status"] == "incomplete"
        assert json.loads(r["output"][0]["arguments"]) == {"cmd": CMD} and r["usage"]["output_tokens"] == 5
    assert record(vendor, seq_of(proto, h))["tool_call"] is True


def test_longest_command(vendor):
    cmd = "e" * 4090 + "\u00fc\u00fc\u00fc"  # 4096 bytes
    st, h, data, _ = post(vendor, "anthropic", body("anthropic", f"[[fake tool={hexof(cmd)}]]"))
    assert st == 200
    assert json.loads(data)["content"][0]["input"] == {"command": cmd}


@pytest.mark.parametrize("value,why", [
    ("abc", "an even number of hex digits"),
    ("", "an even number of hex digits"),
    ("zz", "hex digits only"),
    ("6x69", "hex digits only"),
    ("ff41", "the hex of UTF-8 text"),
    ("41" * 4097, "at most 4096 bytes"),
])
@pytest.mark.parametrize("proto", PROTOS)
def test_bad_hex_is_a_400(vendor, proto, value, why):
    st, h, data, _ = post(vendor, proto, body(proto, f"[[fake tool={value}]] do it", stream=True))
    assert st == 400 and h["content-type"] == "application/json"
    msg = f"fakevendor: bad tool= value: it must be {why}"
    if proto == "anthropic":
        r = json.loads(data)
        assert r["type"] == "error" and r["error"]["type"] == "invalid_request_error"
        assert r["error"]["message"].startswith(msg)
    else:
        err = json.loads(data)["error"]
        assert err["type"] == "invalid_request_error" and err["message"].startswith(msg)
    rec = record(vendor, seq_of(proto, h))
    assert rec["status"] == 400 and rec["tool_call"] is False
    assert rec["served"] == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}


def test_bad_tool_name_and_last_value_wins(vendor):
    st, _, data, _ = post(vendor, "anthropic", body("anthropic", "[[fake tool=6869 tool_name=a/b]]"))
    assert st == 400 and "bad tool_name= value" in json.loads(data)["error"]["message"]
    # a later good tool= replaces an earlier bad one (and the header beats both)
    st, h, data, _ = post(vendor, "anthropic", body("anthropic", "[[fake tool=zz]] [[fake tool=6869]]"))
    assert st == 200 and json.loads(data)["content"][0]["input"] == {"command": "hi"}
    st, h, data, _ = post(vendor, "anthropic", body("anthropic", "[[fake tool=6869]]"), {"x-fake-tool": "6"})
    assert st == 400


def test_faults_and_the_record(vendor):
    # an injected error is no tool call
    st, h, _, _ = post(vendor, "chat", body("chat", "[[fake tool=6869 mode=status status=503]]"))
    assert st == 503
    assert record(vendor, seq_of("chat", h))["tool_call"] is False
    # a delayed tool call is recorded as one once answered
    st, h, data, _ = post(vendor, "responses", body("responses", "[[fake tool=6869 mode=delay delay_ms=50]]"))
    assert st == 200 and record(vendor, seq_of("responses", h))["tool_call"] is True
    # the --record lines and /_fake/requests carry the flag
    recs = vendor.requests()
    assert [r["tool_call"] for r in recs] == [False, True]


def test_cut_x_fake_header_drops_the_cut_command(vendor):
    """An x-fake value over 16 KiB is cut; a tool= token the cut runs through
    is dropped rather than run truncated."""
    value = "in=1 " * 2000 + "tool=" + hexof("echo " + "x" * 4000)
    assert len(value) > 16384
    st, h, data, _ = post(vendor, "anthropic", body("anthropic", "hi"), {"x-fake": value})
    assert st == 200 and json.loads(data)["content"] == [{"type": "text", "text": REPLY}]


JS = os.path.join(ROOT, "tests", "js")


@pytest.mark.skipif(not shutil.which("node") or not os.path.isdir(os.path.join(JS, "node_modules", "openai")),
                    reason="node or the pinned SDKs (tests/js) are not installed")
def test_official_sdks_rebuild_the_streamed_call(vendor):
    p = subprocess.run(["node", os.path.join(JS, "sdk_tools.mjs")], cwd=JS, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, KR_BASE_URL=vendor.url, KR_CMD=CMD))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    a = out["anthropic"]
    assert a["stop_reason"] == "tool_use" and len(a["content"]) == 1
    assert a["content"][0]["input"] == {"command": CMD} and a["content"][0]["name"] == "Bash"
    assert a["usage"]["output_tokens"] == 16
    c = out["chat"]
    assert c["finish_reason"] == "tool_calls" and len(c["tool_calls"]) == 1
    assert json.loads(c["tool_calls"][0]["function"]["arguments"]) == {"command": CMD}
    assert c["usage"]["completion_tokens"] == 16
    r = out["responses"]
    assert r["status"] == "completed" and [o["type"] for o in r["output"]] == ["function_call"]
    assert json.loads(r["output"][0]["arguments"]) == {"cmd": CMD} == json.loads(r["streamed_args"])
    assert r["usage"]["output_tokens"] == 16
