"""The web console (/console, issue 14): its built-in assets, and the console
in a real browser.

The browser is Debian's chromium (scripts/setup.sh installs it; nothing
downloads a browser), driven headless by puppeteer-core (pinned in
tests/js/package.json) from a Node script per scenario (tests/js/console_*.mjs,
see console_lib.mjs for the protocol). Each scenario runs against the real
keyrail the fixtures start; the test answers the script's requests (wait for
usage rows, expire the sessions), then asserts on what it reports: its
checks passed, screenshots with content, no console error and no CSP
violation, and no refused request other than the ones the scenario provoked.
"""
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import threading
import zlib

from conftest import CANARIES, ROOT, TENANT_OPENAI_KEY, http

JS = os.path.join(ROOT, "tests", "js")
CONSOLE_SRC = os.path.join(ROOT, "src", "admin", "console")
CHROMIUM = "/usr/bin/chromium"
TOKEN = re.compile(rb"(?:krws|kradm)_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}


# ---- the assets ----

def test_console_assets_are_built_in_and_served_with_the_csp(kr):
    kr.start()
    files = sorted(os.listdir(CONSOLE_SRC))
    assert "index.html" in files and "app.js" in files
    for name in files:  # every file of src/admin/console is built in (meson.build, console.c)
        st, h, data = http(kr.admin_port, "GET", f"/console/{name}")
        assert st == 200, f"/console/{name} is not built in: {st}"
        assert data == open(os.path.join(CONSOLE_SRC, name), "rb").read(), name
        assert h["content-type"] == TYPES[os.path.splitext(name)[1]], name
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
        assert h["x-content-type-options"] == "nosniff"
    for p in ("/console", "/console/"):
        st, h, data = http(kr.admin_port, "GET", p)
        assert st == 200 and data == open(os.path.join(CONSOLE_SRC, "index.html"), "rb").read()
    st, _, data = http(kr.admin_port, "GET", "/console/nope.js")
    assert st == 404 and json.loads(data)["error"]["code"] == "NOT_FOUND"
    st, _, _ = http(kr.admin_port, "POST", "/console/app.js", b"x", {"content-type": "text/plain"})
    assert st == 405
    # never on the workspace-facing listener
    st, _, _ = http(kr.port, "GET", "/console/")
    assert st == 404


def test_console_sources_keep_to_the_csp_and_never_inject_markup():
    """What the CSP forbids is not in the sources, and no API string can become
    markup: no innerHTML & co., no eval, no inline script, style or handler."""
    names = os.listdir(CONSOLE_SRC)
    # the code without its line comments (which may name what it avoids)
    js = {n: re.sub(r"(?m)(^|\s)//.*$", "", open(os.path.join(CONSOLE_SRC, n)).read())
          for n in names if n.endswith(".js")}
    for n, src in js.items():
        for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                    "new Function", ".style.", "setAttribute(\"style\"", "localStorage",
                    "sessionStorage", "document.cookie"):
            assert bad not in src, f"{n} uses {bad}"
        for imp in re.findall(r'from "\./([^"]+)"', src):  # every module it imports is built in
            assert imp in names, f"{n} imports {imp}, which is not in src/admin/console"
    html = open(os.path.join(CONSOLE_SRC, "index.html")).read()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle\s*=|<style", html), "inline style"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"


# ---- the browser scenarios ----

def _png_has_content(path):
    """A PNG of at least 200x200 whose pixels are not all alike."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    w, h = struct.unpack(">II", data[16:24])
    idat, i = b"", 8
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    pixels = zlib.decompress(idat)
    return w >= 200 and h >= 200 and len(set(pixels)) > 16


def run_scenario(name, tmp_path, env, handlers=None, timeout=300):
    """Runs tests/js/console_<name>.mjs: its inputs on stdin, its requests
    answered, its result returned. The screenshots and the Node log are kept
    under tmp_path/console-<name>/."""
    assert os.access(CHROMIUM, os.X_OK), "Debian's chromium is missing: run scripts/setup.sh"
    assert os.path.isdir(os.path.join(JS, "node_modules", "puppeteer-core")), \
        "puppeteer-core is missing from tests/js: run scripts/setup.sh"
    out = tmp_path / f"console-{name}"
    out.mkdir()
    pages = tmp_path / "console-pages"  # the pages as HTML: tests/hygiene.sh scans them
    pages.mkdir(exist_ok=True)
    home = tmp_path / "browser-home"  # chromium writes nothing outside the test's directory
    home.mkdir(exist_ok=True)
    node_env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYRAIL_", "ASAN_", "UBSAN_"))}
    node_env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"))
    node_log = out / "node.log"
    with open(node_log, "w") as errf:
        p = subprocess.Popen(["node", f"console_{name}.mjs"], cwd=JS, env=node_env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        result = None
        try:
            p.stdin.write(json.dumps(dict(env, out_dir=str(out), pages_dir=str(pages), scenario=name,
                                          chromium=CHROMIUM)) + "\n")
            p.stdin.flush()
            for line in p.stdout:
                msg = json.loads(line)
                if "ask" in msg:
                    try:
                        (handlers or {})[msg["ask"]](msg)
                        reply = {"ok": True}
                    except Exception as e:  # the scenario fails with it
                        reply = {"error": f"{type(e).__name__}: {e}"}
                    p.stdin.write(json.dumps(reply) + "\n")
                    p.stdin.flush()
                elif "done" in msg:
                    result = msg["done"]
            rc = p.wait()
        finally:
            timer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
    text = open(node_log).read()
    assert rc == 0 and result is not None, f"console scenario {name} failed (exit {rc}):\n{text[-4000:]}"
    # the browser kept no credential on disk (cache, cookies, form data): the
    # API's answers are no-store, and the page stores nothing
    secrets = [v for k, v in env.items() if k.endswith(("_token", "_value"))] + CANARIES
    for profile in out.glob("chromium-profile-*"):
        for f in profile.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert not any(s.encode() in data for s in secrets), f"a credential is in the browser's {f.name}"
                assert not TOKEN.search(data), f"a token is in the browser's {f.name}"
        shutil.rmtree(profile)
    return result


def check_report(result, expected_refusals):
    """The page reported nothing wrong: no uncaught error, no CSP violation,
    no failed request, no console message but the browser's own line for each
    refusal the scenario provoked -- and the refusals are exactly those."""
    assert result["checks"] >= 10
    assert result["page_errors"] == [], result["page_errors"]
    assert result["csp"] == [], result["csp"]
    assert result["failed_requests"] == [], result["failed_requests"]
    assert result["glitches"] == [], f"a page shows a JavaScript value: {result['glitches']}"
    got = sorted((r["method"], r["path"], r["status"]) for r in result["refusals"])
    assert got == sorted(expected_refusals), f"refused requests: {got}"
    resource = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
    other = [m for m in result["console"] if not resource.match(m["text"])]
    assert other == [], f"console errors: {other}"
    logged = sorted(int(resource.match(m["text"]).group(1)) for m in result["console"])
    assert all(s in [r[2] for r in expected_refusals] for s in logged), logged
    assert len(logged) <= len(expected_refusals)
    for f in result["screenshots"]:
        assert os.path.getsize(f) > 0 and _png_has_content(f), f"{f} is an empty screenshot"
    assert len(result["pages"]) == len(result["screenshots"])
    for f in result["pages"]:  # each screenshot's page as HTML (tests/hygiene.sh scans them too)
        html = open(f).read()
        assert "</main>" in html
        for c in CANARIES:
            assert c not in html, f"a credential is in the console page {f}"
        assert not re.search(r"(?:krws|kradm)_[A-Za-z0-9_-]{43}", html), f"a token is in the console page {f}"


def test_console_operator_in_a_real_browser(kr, vendor, tmp_path):
    token = kr.cli("admin-token", "mint", "--scope", "operator", "--name", "browser test").stdout.strip()
    kr.start()

    def wait_usage(msg):
        for rid in msg["request_ids"]:
            kr.wait_usage(rid)

    def expire_sessions(msg):
        c = sqlite3.connect(kr.db, timeout=10)
        with c:
            n = c.execute("update admin_sessions set expires_at = 1").rowcount
        c.close()
        assert n == 1, f"{n} sessions"

    def revoke_admin_token(msg):
        (tid,), = kr.db_rows("select id from admin_tokens where name = 'browser test'")
        kr.cli("admin-token", "revoke", str(tid))

    result = run_scenario("operator", tmp_path, {
        "admin_url": f"http://127.0.0.1:{kr.admin_port}",
        "proxy_url": f"http://127.0.0.1:{kr.port}",
        "vendor_url": vendor.url,
        "operator_token": token,
        "secret_value": TENANT_OPENAI_KEY,
    }, {"wait_usage": wait_usage, "expire_sessions": expire_sessions, "revoke_admin_token": revoke_admin_token})
    check_report(result, [
        ("GET", "/admin/v1/session", 401),                 # first visit: nobody signed in
        ("POST", "/admin/v1/session", 401),                # an unknown admin token
        ("POST", "/admin/v1/orgs/acme/workspaces", 422),   # MISSING_MODEL
        ("PUT", "/admin/v1/orgs/acme/secrets/GITHUB_TOKEN", 422),  # FORBIDDEN_KEY
        ("POST", "/admin/v1/orgs", 403), ("POST", "/admin/v1/orgs", 403),  # no / wrong CSRF token
        ("GET", "/admin/v1/orgs", 401),                    # the expired session
        ("GET", "/admin/v1/session", 401),                 # the signed-out session's cookie
        ("GET", "/admin/v1/orgs", 401),                    # the session of a revoked admin token (usage page)
        ("POST", "/admin/v1/session", 401),                # signing in with it
    ])
    assert len(result["screenshots"]) == 7
    # what the console did is what the store holds, and the audit log says so
    assert kr.db_rows("select slug, name from orgs") == [("acme", "Acme <b>Rockets</b>")]
    (n,), = kr.db_rows("select count(*) from audit where action = 'secret.set' and outcome = 'FORBIDDEN_KEY'")
    assert n == 1
    # the expired session and the signed-out one are gone or dead: none is live
    assert all(e <= 1 for (e,) in kr.db_rows("select expires_at from admin_sessions"))
    assert [u["model"] for u in kr.usage()] == ["claude-sonnet-4-5", "gpt-4o"]


def test_console_org_admin_and_refusals_in_a_real_browser(kr, vendor, tmp_path):
    kr.cli("org", "create", "acme")
    kr.cli("org", "create", "globex")
    kr.cli("ws", "create", "acme", "dev", "--model", "claude-sonnet-4-5")
    kr.cli("ws", "create", "globex", "prod", "--model", "claude-sonnet-4-5")
    token = kr.cli("admin-token", "mint", "--scope", "org", "--org", "acme").stdout.strip()
    kr.start()
    result = run_scenario("org_admin", tmp_path, {
        "admin_url": f"http://127.0.0.1:{kr.admin_port}",
        "org_admin_token": token,
    })
    denied = [("GET", "/admin/v1/orgs/globex"), ("GET", "/admin/v1/orgs/globex/secrets"),
              ("GET", "/admin/v1/orgs/globex/workspaces/prod/explain"), ("GET", "/admin/v1/usage"),
              ("GET", "/admin/v1/audit"), ("PUT", "/admin/v1/orgs/globex/secrets/TEAM_NOTE"),
              ("POST", "/admin/v1/orgs/globex/workspaces/prod/tokens"), ("POST", "/admin/v1/orgs/acme/credits"),
              ("GET", "/admin/v1/admin-tokens")]
    check_report(result, [
        ("GET", "/admin/v1/session", 401),                   # first visit
        ("GET", "/admin/v1/orgs/globex/workspaces", 403),    # the other org's page
        *[(m, p, 403) for m, p in denied],
        ("GET", "/admin/v1/session", 401),                   # the forged cookie's first visit
        ("GET", "/admin/v1/orgs/acme", 401),                 # the forged cookie
        ("PUT", "/admin/v1/orgs/acme/secrets/TEAM_NOTE", 401),
        ("GET", "/admin/v1/orgs/acme", 401),                 # the signed-out session's cookie
        ("GET", "/admin/v1/session", 401),                   # and the reload after it
    ])
    # nothing of globex changed, and the refused changes are audited
    assert kr.db_rows("select count(*) from secrets where key = 'TEAM_NOTE'") == [(0,)]
    assert kr.db_rows("select count(*) from tokens") == [(0,)]
    rows = kr.db_rows("select action, outcome from audit where target like 'globex%'")
    assert ("secret.set", "DENIED") in rows and ("token.mint", "DENIED") in rows, rows
