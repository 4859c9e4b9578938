"""End to end with the real Claude Code CLI (pinned in tests/js): the incident
and its fix (issue 4).

A concierge is created with no MODEL, provisioned, keyrail is restarted (the
environment is then rebuilt from the store), and `keyrail run … -- claude -p`
starts Claude Code inside a hostile environment: an OAuth token in
CLAUDE_CODE_OAUTH_TOKEN and in ANTHROPIC_AUTH_TOKEN, a vendor key in
ANTHROPIC_API_KEY. The fake vendor must answer, having received the platform
key; the usage must be recorded. A BYOK workspace goes through keyrail's
proxy, which forwards with the org's key (the agent never holds it), or, with
BYOK_ROUTE=direct, reaches the vendor directly with the org's key. Without the launcher the same environment gets
keyrail's 401 with the class diagnosis.
"""
import os
import subprocess

import kr_integration_fixtures as fx

CLAUDE = os.path.join(fx.ROOT, "tests", "js", "node_modules", ".bin", "claude")
HOSTILE = {
    "CLAUDE_CODE_OAUTH_TOKEN": fx.TENANT_OAUTH,
    "ANTHROPIC_AUTH_TOKEN": fx.TENANT_OAUTH,
    "ANTHROPIC_API_KEY": fx.TENANT_ANTHROPIC_KEY,
}


def agent_env(tmp, extra):
    home = os.path.join(tmp, "home")
    os.makedirs(home, exist_ok=True)
    e = {"PATH": os.environ["PATH"], "HOME": home, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
         "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_MAX_RETRIES": "0"}
    e.update(extra)
    return e


def run(cmd, env, timeout=120):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def launch(kr, token, tmp, prompt, extra=None):
    env = agent_env(tmp, dict(HOSTILE, **(extra or {})))
    return run([fx.KEYRAIL, "run", "--no-confine", "--server", f"http://127.0.0.1:{kr.port}", "--token", token, "--",
                CLAUDE, "-p", prompt], env)


def test_concierge_through_launcher_with_hostile_env(tmp_path, kr, vendor):
    kr.extra_config = "[provision]\nconcierge_default_model = claude-sonnet-4-5"
    kr.write_config()
    kr.cli("org", "create", "acme")
    kr.cli("credits", "add", "acme", "10")
    kr.cli("ws", "create", "acme", "boss", "--concierge")  # no MODEL anywhere
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", fx.TENANT_OAUTH)  # an org-wide OAuth token
    token = kr.mint("acme/boss")
    fresh = kr.cli("provision", "acme/boss", "--format", "json").stdout
    kr.start()
    kr.stop()
    kr.start()  # the environment is rebuilt from the store from now on
    rebuilt = kr.cli("provision", "acme/boss", "--rebuild", "--format", "json").stdout
    assert fresh == rebuilt
    p = launch(kr, token, str(tmp_path), "say hello")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Hello from fakevendor." in p.stdout
    # the launcher said what it dropped, by class and fingerprint only
    assert "dropped CLAUDE_CODE_OAUTH_TOKEN (oauth" in p.stderr
    assert "dropped ANTHROPIC_API_KEY (anthropic-api-key" in p.stderr
    for c in fx.CANARIES:
        assert c not in p.stderr and c not in p.stdout
    reqs = [r for r in vendor.requests() if r["path"].endswith("/v1/messages")]
    assert reqs, "Claude Code never reached the vendor"
    for r in reqs:
        assert r["auth_sha256"] == fx.sha256(fx.PLATFORM_ANTHROPIC_KEY), r
    rows = kr.usage()
    assert len(rows) == len(reqs)
    assert all(r["status"] == "complete" and r["workspace_id"] == 1 for r in rows)
    assert sum(r["input"] for r in rows) == sum(r["served"]["input"] for r in reqs)
    assert sum(r["output"] for r in rows) == sum(r["served"]["output"] for r in reqs)


def test_claude_code_over_an_https_upstream(tmp_path):
    """The same launch, with keyrail's upstream over HTTPS (issue 15): the
    fake vendor serves TLS with a certificate from a CA made now, the
    registry names https://localhost:PORT, upstream.ca_file the CA."""
    pki = fx.TestPKI(str(tmp_path))
    vendor = fx.FakeVendor(str(tmp_path), tls=pki.pair("good"))
    kr = None
    try:
        kr = fx.Keyrail(str(tmp_path), vendor, extra_config=f"[upstream]\nca_file = {pki.ca}\n"
                        "[provision]\nconcierge_default_model = claude-sonnet-4-5")
        assert vendor.url.startswith("https://localhost:")
        token = kr.setup_org(credits="10")
        kr.start()
        p = launch(kr, token, str(tmp_path), "say hello")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Hello from fakevendor." in p.stdout
        for c in fx.CANARIES:
            assert c not in p.stderr and c not in p.stdout
        reqs = [r for r in vendor.requests() if r["path"].endswith("/v1/messages")]
        assert reqs, "Claude Code never reached the vendor"
        for r in reqs:
            assert r["tls"] is True and r["sni"] == "localhost", r
            assert r["auth_sha256"] == fx.sha256(fx.PLATFORM_ANTHROPIC_KEY), r
        assert vendor.stats()["tls"]["plaintext"] == 0
        rows = fx.wait_until(lambda: kr.usage() if len(kr.usage()) == len(reqs) else None,
                             what="a usage row per request")
        assert all(r["status"] == "complete" for r in rows)
        assert sum(r["input"] for r in rows) == sum(r["served"]["input"] for r in reqs)
        assert sum(r["output"] for r in rows) == sum(r["served"]["output"] for r in reqs)
    finally:
        rc = kr.stop() if kr else 0
        vendor.stop()
        if kr:
            fx.check_log_clean(kr.log_text())
            assert rc == 0, kr.log_text()[-3000:]


def test_byok_workspace_goes_through_the_proxy_with_the_orgs_key(tmp_path, kr, vendor):
    kr.cli("org", "create", "acme")  # no credits: BYOK is never debited
    kr.secret("--org", "acme", "MINIMAX_API_KEY", fx.TENANT_MINIMAX_KEY)
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", fx.TENANT_OAUTH)
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    token = kr.mint("acme/mm")
    kr.start()
    p = launch(kr, token, str(tmp_path), "say hello")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Hello from fakevendor." in p.stdout
    for c in fx.CANARIES:
        assert c not in p.stderr and c not in p.stdout
    reqs = [r for r in vendor.requests() if r["path"].endswith("/v1/messages")]
    assert reqs
    for r in reqs:
        assert r["path"] == "/minimax/anthropic/v1/messages", r
        assert r["auth_sha256"] == fx.sha256(fx.TENANT_MINIMAX_KEY), r
    rows = fx.wait_until(lambda: len(kr.usage()) == len(reqs) and kr.usage(), what="usage rows")
    assert sum(r["input"] for r in rows) == sum(r["served"]["input"] for r in reqs)
    assert sum(r["output"] for r in rows) == sum(r["served"]["output"] for r in reqs)
    assert kr.db_rows("select distinct route from usage") == [("byok",)]
    assert kr.db_rows("select count(*) from credit_ledger") == [(0,)]


def test_direct_byok_workspace_goes_to_its_vendor_directly(tmp_path, kr, vendor):
    kr.cli("org", "create", "acme")
    kr.secret("--org", "acme", "BYOK_ROUTE", "direct")
    kr.secret("--org", "acme", "MINIMAX_API_KEY", fx.TENANT_MINIMAX_KEY)
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", fx.TENANT_OAUTH)
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    token = kr.mint("acme/mm")
    kr.start()
    p = launch(kr, token, str(tmp_path), "say hello")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Hello from fakevendor." in p.stdout
    reqs = [r for r in vendor.requests() if r["path"].endswith("/v1/messages")]
    assert reqs
    for r in reqs:
        assert r["path"].startswith("/minimax/anthropic/"), "BYOK traffic must go to its vendor"
        assert r["auth_sha256"] == fx.sha256(fx.TENANT_MINIMAX_KEY)
        assert r["model"] == "MiniMax-M2"
    assert kr.usage() == [], "BYOK traffic never passes the proxy"
    assert '"route":"anthropic_messages"' not in kr.log_text()


def test_incident_reproduced_without_the_launcher(tmp_path, kr, vendor):
    kr.extra_config = "[provision]\nconcierge_default_model = claude-sonnet-4-5"
    kr.write_config()
    kr.setup_org()
    kr.start()
    base = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{kr.port}/anthropic",
            "ANTHROPIC_MODEL": "claude-sonnet-4-5"}
    # the incident: an inherited OAuth token, in CLAUDE_CODE_OAUTH_TOKEN and ANTHROPIC_AUTH_TOKEN
    p = run([CLAUDE, "-p", "say hello"], agent_env(str(tmp_path), dict(base, CLAUDE_CODE_OAUTH_TOKEN=fx.TENANT_OAUTH,
                                                                      ANTHROPIC_AUTH_TOKEN=fx.TENANT_OAUTH)))
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "401" in out and "an Anthropic OAuth token was presented" in out, out
    assert fx.TENANT_OAUTH not in out
    # the full hostile environment: Claude Code prefers the vendor key; keyrail names that class
    p = run([CLAUDE, "-p", "say hello"], agent_env(str(tmp_path), dict(base, **HOSTILE)))
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "401" in out and "class anthropic-api-key" in out, out
    assert vendor.requests() == [], "no tenant credential reached the vendor"
