"""The official Node SDKs (pinned in tests/js) against a real keyrail."""
import json
import os
import subprocess

from conftest import ROOT, sha256, PLATFORM_ANTHROPIC_KEY, PLATFORM_GOOGLE_KEY, PLATFORM_OPENAI_KEY

JS = os.path.join(ROOT, "tests", "js")


def run_node(script, env):
    p = subprocess.run(["node", os.path.join(JS, script)], cwd=JS, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_anthropic_sdk_stream_and_non_stream(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    out = run_node("sdk_anthropic.mjs", dict(os.environ, KR_BASE_URL=f"http://127.0.0.1:{kr.port}/anthropic",
                                             KR_TOKEN=tok))
    assert out["text"] == "Hello from fakevendor."
    assert out["usage"]["input_tokens"] == 111 and out["usage"]["output_tokens"] == 12
    assert out["streamed"] == "Hello from fakevendor."
    assert out["stream_usage"]["output_tokens"] == 20
    assert out["refused"]["status"] == 401 and out["refused"]["type"] == "authentication_error"
    assert "oauth" in out["refused"]["message"] and "NOTAWORKSPACETOKEN" not in out["refused"]["message"]
    rows = kr.usage()
    assert [(r["input"], r["output"], r["status"]) for r in rows] == [(111, 12, "complete"), (222, 20, "complete")]
    assert all(r["auth_sha256"] == sha256(PLATFORM_ANTHROPIC_KEY) for r in vendor.requests())


def test_openai_sdk_stream_and_non_stream(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    out = run_node("sdk_openai.mjs", dict(os.environ, KR_BASE_URL=f"http://127.0.0.1:{kr.port}/openai/v1",
                                          KR_TOKEN=tok))
    assert out["text"] == "Hello from fakevendor."
    assert out["usage"]["prompt_tokens"] == 333 and out["usage"]["completion_tokens"] == 7
    assert out["streamed"] == "Hello from fakevendor."
    assert out["stream_usage"]["prompt_tokens"] == 444
    assert out["refused"]["status"] == 401 and out["refused"]["code"] == "invalid_api_key"
    rows = kr.usage()
    assert [(r["input"], r["output"]) for r in rows] == [(333, 7), (444, 9)]
    assert all(r["auth_sha256"] == sha256(PLATFORM_OPENAI_KEY) for r in vendor.requests())


def test_google_genai_sdk_through_the_gemini_routes(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    out = run_node("sdk_gemini.mjs", dict(os.environ, KR_BASE_URL=f"http://127.0.0.1:{kr.port}/gemini",
                                          KR_TOKEN=tok, KR_CMD="echo 'hi there'"))
    assert out["text"] == "Hello from fakevendor." and out["finish_reason"] == "STOP"
    assert out["usage"]["promptTokenCount"] == 333 and out["usage"]["candidatesTokenCount"] == 7
    assert out["streamed"] == "Hello from fakevendor."
    assert out["stream_usage"][-1]["thoughtsTokenCount"] == 2
    assert out["count"]["totalTokens"] == 61
    assert "models/gemini-2.5-flash" in out["models"] and "models/claude-sonnet-4-5" not in out["models"]
    assert out["model"]["name"] == "models/gemini-2.5-pro"
    assert out["tool"]["function_calls"][0]["args"]["command"] == "echo 'hi there'"
    assert out["tool_stream"]["function_calls"][0]["name"] == "run_shell_command"
    assert out["refused"]["is_api_error"] and out["refused"]["status"] == 429
    rows = kr.usage()
    # generateContent, the stream (input: 444 + the 4 tool-use prompt tokens; output 9 with 2
    # thoughts; 5 cached), two tool calls; countTokens is not billed; the 429 costs nothing
    # (rows are in commit order: with several event loops not always request order)
    got = [(r["input"], r["output"], r["cache_read"]) for r in rows]
    assert (333, 7, 0) in got and (448, 9, 5) in got
    assert sum(r["status"] == "complete" for r in rows) == 4
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["cost_micros"] == 0
    assert all(r["auth_sha256"] == sha256(PLATFORM_GOOGLE_KEY) for r in vendor.requests())
    assert tok not in json.dumps(vendor.requests())
