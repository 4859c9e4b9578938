"""Issue 14: the web console, in a real browser (Debian chromium, headless,
driven by puppeteer-core from tests/js/console.mjs). An operator signs in,
creates an org, a workspace, a secret and a token, adds credits, reads the
usage charts of real proxy calls and the audit log; an org admin sees its
own org and nothing else; forged and revoked sessions are refused. Every
page loads with no console error and no Content-Security-Policy violation,
every string from the server is shown as text, never as markup."""
import json
import os
import subprocess
import time

from conftest import ROOT, TENANT_MINIMAX_KEY, call, http

JS = os.path.join(ROOT, "tests", "js")
CHROMIUM = os.environ.get("KR_BROWSER", "/usr/bin/chromium")


def browse(kr, tmp_path, scenario, token, **extra):
    shots = tmp_path / f"shots-{scenario}"
    shots.mkdir()
    pages = tmp_path / "console-pages"
    pages.mkdir(exist_ok=True)
    report = tmp_path / f"report-{scenario}.json"
    env = dict(os.environ, KR_SCENARIO=scenario, KR_TOKEN=token, KR_BROWSER=CHROMIUM,
               KR_CONSOLE=f"http://127.0.0.1:{kr.admin_port}/console/", KR_SHOTS=str(shots), KR_PAGES=str(pages),
               KR_PROFILE=str(tmp_path / f"chromium-{scenario}"), KR_REPORT=str(report),
               KR_SECRET_VALUE=TENANT_MINIMAX_KEY, **extra)
    p = subprocess.Popen(["node", os.path.join(JS, "console.mjs")], cwd=JS, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, report


def finish(p, report):
    out, err = p.communicate(timeout=180)
    rep = json.loads(report.read_text()) if report.exists() else {}
    assert p.returncode == 0, f"{err}\n{rep.get('error', '')}"
    # no page of the console logs an error, fails a request or breaks its CSP;
    # the browser logs each refused response (the scenarios provoke 401 and
    # 403 on purpose), and those are the only refusals it sees
    refusals = [m for m in rep["console"] if m.startswith("Failed to load resource: the server responded")]
    assert len(refusals) == len(rep["refused"]), rep
    assert [m for m in rep["console"] if m not in refusals] == [], rep["console"]
    assert rep["pageErrors"] == [] and rep["csp"] == [], rep
    assert all(r.split()[-1] in ("401", "403") for r in rep["refused"]), rep["refused"]
    assert [f for f in rep["failed"] if "favicon" not in f] == [], rep["failed"]
    for name, path in rep["shots"].items():
        assert os.path.getsize(path) > 5000, f"screenshot {name} is (nearly) empty"
    return rep["steps"]


def mint_admin(kr, scope="operator", org=None):
    return kr.cli("admin-token", "mint", "--scope", scope, *(["--org", org] if org else [])).stdout.strip()


def test_console_operator(kr, vendor, tmp_path):
    tok = kr.setup_org("acme", "dev")
    op = mint_admin(kr)
    kr.start()
    for _ in range(2):  # real usage for the charts
        assert call(kr, tok, fake="in=1200 out=100")[0] == 200
    assert call(kr, tok, proto="openai", fake="in=500 out=50")[0] == 200
    s = finish(*browse(kr, tmp_path, "operator", op))

    assert "script-src 'self'" in s["csp_header"] and "default-src 'none'" in s["csp_header"]
    assert "UNAUTHENTICATED" in s["bad_signin"] and s["token_field_after_bad"] == ""
    assert s["who"].startswith("operator") and "Admin tokens" in s["nav"]
    assert s["cookie"] == [{"name": "kr_session", "httpOnly": True, "sameSite": "Strict"}]
    assert "kradm_" not in s["token_in_storage"]  # the admin token is not kept by the page
    assert "acme" in s["orgs"]

    # the org, its hostile display name shown as text
    assert s["org_name_markup"] is False and "<img src=x id=pwned" in s["orgs_after"]
    assert kr.cli("org", "list").stdout.count("beta") == 1

    # the workspace, provisioned, explained
    assert s["ws_heading"] == "beta/dev"
    assert "Route platform" in s["explain"] or "Route byok" in s["explain"], s["explain"]
    assert "codex" in s["explain"] and "gpt-4o" in s["explain"]

    # the token minted in the browser works at the proxy, once shown
    assert s["minted"].startswith("krws_") and s["minted"] not in s["tokens_table"]
    assert call(kr, s["minted"], proto="openai", fake="in=10 out=1")[0] == 200
    # the secret: stored, never shown back, the input cleared
    assert "MINIMAX_API_KEY" in s["secrets_table"] and s["secret_value_field"] == ""
    assert TENANT_MINIMAX_KEY not in s["secrets_html"]
    assert "MINIMAX_API_KEYok" in s["secrets_table"]  # key, state: readable with the master key
    assert kr.cli("secret", "list", "--org", "beta").stdout.count("MINIMAX_API_KEY") == 1
    # credits added from the browser
    assert "25" in s["credits"]
    assert kr.cli("credits", "show", "beta").stdout.startswith("org beta: balance 24.99")  # 25, less the call above
    assert "25.000000" in kr.cli("credits", "history", "beta").stdout

    # usage charts of the real calls: one bar per (day, model)
    assert "claude-sonnet-4-5" in s["usage_table"] and "gpt-4o" in s["usage_table"]
    assert s["chart_tokens_bars"] == 2 and s["chart_cost_bars"] == 2, s
    assert any("claude-sonnet-4-5: 2,600" in t for t in s["chart_tokens_titles"]), s["chart_tokens_titles"]
    assert "No usage in this range" in s["beta_usage"]

    # the audit log shows what the browser did
    for action in ("org.create", "ws.create", "token.mint", "secret.set", "credits.add"):
        assert action in s["audit"], action

    # CSRF: a console change without the session's token is refused, a read is not
    assert s["csrf_missing"]["status"] == 403 and '"CSRF"' in s["csrf_missing"]["body"]
    assert s["csrf_wrong"]["status"] == 403
    assert s["get_without_csrf"]["status"] == 200
    assert "gamma" not in kr.cli("org", "list").stdout
    # signed out: the session is gone on the server too
    assert s["after_signout"]["status"] == 401 and s["after_signout_orgs"]["status"] == 401
    assert s["after_signout_page"] == "Sign in"


def test_console_org_admin(kr, vendor, tmp_path):
    kr.setup_org("acme", "dev")
    kr.setup_org("other", "ops")
    adm = mint_admin(kr, "org", "acme")
    kr.start()
    s = finish(*browse(kr, tmp_path, "orgadmin", adm))
    assert s["landing"].endswith("#/org/acme")
    assert "Admin tokens" not in s["nav"] and "admin of acme" in s["who"]
    assert "dev" in s["workspaces"]
    assert "DENIED" in s["other_org"] and "ops" not in s["other_org"]
    assert "DENIED" in s["admin_tokens"]
    assert s["usage_heading"] == "Usage of acme"
    assert s["api_other"]["status"] == 403
    assert s["credits_add"]["status"] == 403  # adding credits is the operator's
    assert "100" in kr.cli("credits", "show", "acme").stdout


def test_console_forged_and_revoked_sessions(kr, vendor, tmp_path):
    kr.setup_org("acme", "dev")
    op = mint_admin(kr)
    kr.start()
    signal = tmp_path / "signal"
    p, report = browse(kr, tmp_path, "forged", op, KR_SIGNAL=str(signal))
    deadline = time.time() + 60
    while not signal.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert signal.exists(), "the browser never signed in"
    first = kr.cli("admin-token", "list").stdout.splitlines()[1].split()[0]
    kr.cli("admin-token", "revoke", first)
    signal.unlink()
    s = finish(p, report)
    assert s["forged"]["status"] == 401
    assert s["forged_page"] == "Sign in"
    assert s["signed_in"] == 200
    assert s["after_revoke"]["status"] == 401 and "UNAUTHENTICATED" in s["after_revoke"]["body"]
    assert s["after_revoke_page"] == "Sign in"
