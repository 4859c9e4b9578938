"""Issue 12: `keyrail explain` and `keyrail run --explain` name, per agent
runtime, what goes where -- and their text and JSON forms agree."""
import json
import subprocess

from conftest import KEYRAIL, TENANT_MINIMAX_KEY, TENANT_OAUTH, TENANT_OPENAI_KEY


def explain(kr, ref):
    text = kr.cli("explain", ref).stdout
    doc = json.loads(kr.cli("explain", ref, "--format", "json").stdout)
    return text, doc


def runtime_line(text, name):
    """The line of one runtime in the "runtimes (...)" block (the upstream
    block below it also starts lines with a protocol name: gemini)."""
    all_lines = text.splitlines()
    start = next(i for i, l in enumerate(all_lines) if l.startswith("runtimes ("))
    block = []
    for l in all_lines[start + 1:]:
        if not l.startswith("  "):
            break
        block.append(l)
    lines = [l for l in block if l.startswith(f"  {name} ")]
    assert len(lines) == 1, (name, text)
    return lines[0]


def test_explain_text_and_json_agree_per_runtime(kr, vendor):
    kr.setup_org()
    kr.secret("--org", "acme", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY)
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", TENANT_OAUTH)
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2", "--set", "BYOK_ROUTE=direct")
    kr.cli("ws", "create", "acme", "mp", "--model", "MiniMax-M2")
    kr.cli("ws", "create", "acme", "cx", "--runtime", "codex", "--model", "gpt-4o")
    for ref, route in (("acme/boss", "platform"), ("acme/mm", "byok"), ("acme/mp", "byok"),
                       ("acme/cx", "platform")):
        text, doc = explain(kr, ref)
        assert doc["route"] == route and f"route: {route}" in text
        names = [r["runtime"] for r in doc["runtimes"]]
        assert {"claude-code", "codex"} <= set(names)
        for r in doc["runtimes"]:
            line = runtime_line(text, r["runtime"])
            assert r["host"] in line and r["protocol"] in line
            if r["credential_var"]:
                assert f"sends {r['class']} in {r['credential_var']}" in line, line
            else:
                assert "no credential" in line
            assert ("keyrail proxy" in line) == r["proxy"]
            if r["file"]:
                assert r["file"] in line and r["dir_env"] in line
        for v in doc["env"]:
            assert any(l.split()[:1] == [v["key"]] and v["class"] in l for l in text.splitlines()
                       if l.startswith("  ")), v
        for c in (TENANT_MINIMAX_KEY, TENANT_OAUTH, TENANT_OPENAI_KEY):
            assert c not in text and c not in json.dumps(doc)
    # the platform route names the upstream and the platform key's class
    text, doc = explain(kr, "acme/boss")
    assert doc["upstream"]["anthropic"]["host"].startswith("http://127.0.0.1:")
    assert doc["upstream"]["anthropic"]["class"] == "anthropic-api-key"
    assert "upstream (the proxy forwards with the platform's key)" in text
    assert f"with KEYRAIL_ANTHROPIC_KEY: anthropic-api-key {doc['upstream']['anthropic']['fingerprint']}" in text
    # direct BYOK: Claude Code calls MiniMax with the org's key; Codex gets no credential
    _, doc = explain(kr, "acme/mm")
    cc = [r for r in doc["runtimes"] if r["runtime"] == "claude-code"][0]
    cx = [r for r in doc["runtimes"] if r["runtime"] == "codex"][0]
    assert cc["host"] == vendor.url
    assert cc["credential_var"] == "ANTHROPIC_AUTH_TOKEN" and not cc["proxy"]
    assert cx["credential_var"] == "" and doc["upstream"] == {}
    # BYOK through the proxy: Claude Code calls keyrail with its token; the
    # upstream section names MiniMax, the org's secret, its class and fingerprint
    text, doc = explain(kr, "acme/mp")
    cc = [r for r in doc["runtimes"] if r["runtime"] == "claude-code"][0]
    assert cc["proxy"] and cc["class"] == "workspace-token", cc
    up = doc["upstream"]["anthropic"]
    assert (up["provider"], up["key_env"], up["key_owner"], up["header"]) == \
        ("minimax", "MINIMAX_API_KEY", "org", "authorization"), up
    assert up["host"] == vendor.url and len(up["fingerprint"]) == 8
    assert "the proxy forwards with the org's key" in text and TENANT_MINIMAX_KEY not in text


def test_run_explain_text_and_json_agree(kr, vendor, tmp_path):
    token = kr.setup_org()
    kr.start()
    env = dict(kr.env(), KEYRAIL_WORKSPACE_TOKEN=token, HOME=str(tmp_path),
               CODEX_API_KEY=TENANT_OPENAI_KEY, ANTHROPIC_CUSTOM_HEADERS="x-api-key: " + TENANT_OAUTH)
    base = [KEYRAIL, "run", "--no-confine", "--server", f"http://127.0.0.1:{kr.port}", "--explain"]
    text = subprocess.run(base + ["--", "codex", "exec", "x"], env=env, capture_output=True, text=True,
                          check=True).stdout
    doc = json.loads(subprocess.run(base + ["--format", "json", "--", "codex", "exec", "x"], env=env,
                                    capture_output=True, text=True, check=True).stdout)
    for d in doc["decisions"]:
        assert any(d["var"] in l and d["rule"] in l and d["action"] in l for l in text.splitlines()), d
    for p, v in doc["protocols"].items():
        assert f"{p}: calls {v['host']}" in text
        if v["credential_var"]:
            assert f"with {v['credential_var']} ({v['class']}" in text
    for f in doc["files"]:
        assert f["path"] in text
        for line in f["content"].splitlines():
            assert line in text
    dropped = {d["var"]: d for d in doc["decisions"] if d["action"] == "drop"}
    assert dropped["CODEX_API_KEY"]["class"] == "openai-api-key"
    assert dropped["ANTHROPIC_CUSTOM_HEADERS"]["class"] == "oauth" and dropped["ANTHROPIC_CUSTOM_HEADERS"]["rule"] == "L6"
    for c in (TENANT_OPENAI_KEY, TENANT_OAUTH, token):
        assert c not in text and c not in json.dumps(doc)
