"""BYOK through the proxy (issue 21, part 1): the workspace holds a workspace
token, keyrail forwards with the org's key in its vendor's own header shape,
meters the usage as byok and never debits it; direct BYOK stays available
when chosen explicitly."""
import time
import json
import os
import subprocess

import pytest

from conftest import (CACHE_SETTLE, KEYRAIL, TENANT_DEEPSEEK_KEY, TENANT_MINIMAX_KEY, TENANT_MOONSHOT_KEY, TENANT_OAUTH,
                      TENANT_OPENAI_KEY, TENANT_OPENROUTER_KEY, http, sha256, wait_until)

# provider, runtime, key variable, key, model, protocol, the header the vendor takes
VENDORS = [
    ("minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2", "anthropic",
     "authorization"),
    ("deepseek-anthropic", "claude-code", "DEEPSEEK_API_KEY", TENANT_DEEPSEEK_KEY, "deepseek-chat",
     "anthropic", "x-api-key"),
    ("moonshot", "claude-code", "MOONSHOT_API_KEY", TENANT_MOONSHOT_KEY, "kimi-k2", "anthropic",
     "authorization"),
    ("openrouter", "claude-code", "OPENROUTER_API_KEY", TENANT_OPENROUTER_KEY,
     "anthropic/claude-sonnet-4.5", "anthropic", "authorization"),
    ("deepseek", "codex", "DEEPSEEK_API_KEY", TENANT_DEEPSEEK_KEY, "deepseek-chat", "openai",
     "authorization"),
    ("openai", "codex", "OPENAI_API_KEY", TENANT_OPENAI_KEY, "gpt-4o", "openai", "authorization"),
]
PATHS = {"minimax": "/minimax/anthropic/v1/messages",
         "deepseek-anthropic": "/deepseek/anthropic/v1/messages",
         "moonshot": "/moonshot/anthropic/v1/messages",
         "openrouter": "/openrouter/api/v1/messages",
         "deepseek": "/deepseek/v1/chat/completions",
         "openai": "/v1/chat/completions"}


def call(kr, tok, proto, model, fake="in=120 out=30", stream=False):
    if proto == "anthropic":
        body = {"model": model, "max_tokens": 50, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}
        return http(kr.port, "POST", "/anthropic/v1/messages", body,
                    {"authorization": f"Bearer {tok}", "anthropic-version": "2023-06-01", "x-fake": fake})
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return http(kr.port, "POST", "/openai/v1/chat/completions", body,
                {"authorization": f"Bearer {tok}", "x-fake": fake})


def make_ws(kr, provider, runtime, var, key, model, direct=False):
    kr.cli("org", "create", "acme")  # no credits at all: BYOK is never debited
    kr.secret("--org", "acme", var, key)
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", TENANT_OAUTH)  # an org-wide token rides nowhere
    if direct:
        kr.secret("--org", "acme", "BYOK_ROUTE", "direct")
    args = ["ws", "create", "acme", "w", "--runtime", runtime, "--model", model]
    if provider == "openai":
        args += ["--set", "LLM_PROVIDER=openai"]
    kr.cli(*args)
    return kr.mint("acme/w")


def run_env(kr, tok, tmp):
    """`keyrail run -- env` as a workspace would: what the agent would hold."""
    env = {"PATH": os.environ["PATH"], "HOME": tmp, "KEYRAIL_WORKSPACE_TOKEN": tok,
           "ANTHROPIC_API_KEY": "sk-ant-api03-INHERITEDxxxxxxxxxxxxxxxxxxxxxxxxx"}
    p = subprocess.run([KEYRAIL, "run", "--no-confine", "--server", f"http://127.0.0.1:{kr.port}", "--",
                        "env"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return dict(l.split("=", 1) for l in p.stdout.splitlines() if "=" in l)


@pytest.mark.parametrize("provider,runtime,var,key,model,proto,header", VENDORS,
                         ids=[v[0] for v in VENDORS])
def test_byok_through_the_proxy_for_every_listed_vendor(kr, vendor, tmp_path, provider, runtime, var,
                                                        key, model, proto, header):
    tok = make_ws(kr, provider, runtime, var, key, model)
    kr.start()
    for stream in (False, True):
        st, h, data = call(kr, tok, proto, model, stream=stream)
        assert st == 200, data
        rec = vendor.requests()[-1]
        assert rec["path"] == PATHS[provider], rec
        # the vendor sees the org's key, in its own header, and nothing else
        assert rec["auth_header"] == header, rec
        assert rec["auth_sha256"] == sha256(key), rec
        row = kr.wait_usage(h["x-keyrail-request-id"])
        assert (row["input"], row["output"], row["status"]) == (120, 30, "complete"), row
    rows = kr.db_rows("select route, provider, model from usage order by id")
    assert rows == [("byok", provider, model)] * 2, rows
    # metered, never debited: no credit row moved, no ledger entry
    assert kr.db_rows("select count(*) from credit_ledger") == [(0,)]
    assert kr.db_rows("select coalesce(sum(balance_micros), 0) from credits") == [(0,)]
    assert kr.db_rows("select route, sum(requests) from usage_daily group by route") == [("byok", 2)]
    # the agent's environment holds the workspace token for keyrail, no vendor key
    env = run_env(kr, tok, str(tmp_path))
    for v in env.values():
        assert key not in v and TENANT_OAUTH not in v and "INHERITED" not in v
    base = env["ANTHROPIC_BASE_URL" if proto == "anthropic" else "OPENAI_BASE_URL"]
    assert base.startswith(f"http://127.0.0.1:{kr.port}/{proto}"), base
    assert tok in env.values()
    # usage shows the route
    csv = kr.cli("usage", "--format", "csv").stdout.splitlines()
    assert csv[0].split(",")[:5] == ["org", "workspace", "model", "route", "day"], csv
    assert csv[1].split(",")[3] == "byok", csv


def test_byok_allow_lists_and_rate_limits_apply(kr, vendor):
    tok = make_ws(kr, "minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2")
    kr.cli("limits", "set", "--ws", "acme/w", "--models", "MiniMax-M2", "--rpm", "2")
    kr.start()
    st, _, data = call(kr, tok, "anthropic", "MiniMax-M1")
    assert st == 403 and b"allow-list" in data, data
    assert call(kr, tok, "anthropic", "MiniMax-M2")[0] == 200
    assert call(kr, tok, "anthropic", "MiniMax-M2")[0] == 200
    st, h, _ = call(kr, tok, "anthropic", "MiniMax-M2")
    assert st == 429 and int(h["retry-after"]) >= 1
    assert len([r for r in vendor.requests() if r["path"].startswith("/minimax/")]) == 2
    # the wrong protocol for the workspace's provider: refused, nothing forwarded
    st, _, data = call(kr, tok, "openai", "MiniMax-M2")
    assert st == 403 and b"speaks the anthropic protocol" in data, data


def test_byok_usage_is_priced_for_information_and_shown_beside_platform(kr, vendor):
    tok = make_ws(kr, "minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2")
    kr.cli("credits", "add", "acme", "10")
    kr.cli("ws", "create", "acme", "plat", "--model", "claude-sonnet-4-5")
    ptok = kr.mint("acme/plat")
    kr.start()
    st, h, _ = call(kr, tok, "anthropic", "MiniMax-M2", fake="in=1000000 out=0")
    assert st == 200
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert row["cost_micros"] == 300_000  # 0.30 per million input tokens, list price
    st, h, _ = call(kr, ptok, "anthropic", "claude-sonnet-4-5", fake="in=1000 out=0")
    assert st == 200
    prow = kr.wait_usage(h["x-keyrail-request-id"])
    wait_until(lambda: kr.db_rows("select balance_micros from credits")[0][0] == 10_000_000 - prow["cost_micros"],
               what="the platform debit")
    # only the platform row was debited
    assert kr.db_rows("select count(*) from credit_ledger where reason = 'usage'") == [(1,)]
    csv = kr.cli("usage", "--by", "route", "--format", "csv").stdout.splitlines()
    assert [l.split(",")[:3] for l in csv[1:]] == [["byok", "1", "1000000"], ["platform", "1", "1000"]], csv


def test_direct_byok_is_chosen_explicitly_and_the_proxy_refuses_it(kr, vendor, tmp_path):
    tok = make_ws(kr, "minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2",
                  direct=True)
    kr.start()
    st, _, data = call(kr, tok, "anthropic", "MiniMax-M2")
    assert st == 403 and b"BYOK_ROUTE=direct" in data, data
    assert vendor.requests() == []
    env = run_env(kr, tok, str(tmp_path))
    assert env["ANTHROPIC_AUTH_TOKEN"] == TENANT_MINIMAX_KEY
    assert env["ANTHROPIC_BASE_URL"].endswith("/minimax/anthropic")
    text = kr.cli("explain", "acme/w").stdout
    assert "BYOK direct: BYOK_ROUTE=direct (org scope)" in text, text


def test_explain_says_byok_goes_through_the_proxy_and_why(kr, vendor):
    make_ws(kr, "minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2")
    text = kr.cli("explain", "acme/w").stdout
    assert "BYOK through keyrail's proxy (the default: BYOK_ROUTE unset)" in text, text
    assert TENANT_MINIMAX_KEY not in text
    j = json.loads(kr.cli("explain", "acme/w", "--format", "json").stdout)
    assert j["route"] == "byok" and j["provider"] == "minimax"


def test_a_revoked_byok_key_stops_at_the_cache_lifetime(kr, vendor):
    """The org's key is read with the token: a changed key is used, and a
    removed key stops forwarding, within the token cache's lifetime."""
    kr.extra_config = "[server]\ntoken_cache_ms = 200"
    kr.write_config()
    tok = make_ws(kr, "minimax", "claude-code", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY, "MiniMax-M2")
    kr.start()
    assert call(kr, tok, "anthropic", "MiniMax-M2")[0] == 200
    new_key = "mmk-CANARYROTATEDMINIMAX00000000000000000"
    kr.secret("--org", "acme", "MINIMAX_API_KEY", new_key)
    wait_until(lambda: call(kr, tok, "anthropic", "MiniMax-M2")[0] == 200 and
               vendor.requests()[-1]["auth_sha256"] == sha256(new_key), timeout=5, what="the new key")
    kr.cli("secret", "unset", "--org", "acme", "MINIMAX_API_KEY")
    wait_until(lambda: call(kr, tok, "anthropic", "MiniMax-M2")[0] != 200, timeout=5,
               what="the removed key")
    time.sleep(CACHE_SETTLE)  # every event loop's cache, not only the one that refused first
    st, _, data = call(kr, tok, "anthropic", "MiniMax-M2")
    assert st == 503 and new_key.encode() not in data, data
