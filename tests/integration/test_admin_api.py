"""Issue 14: the admin HTTP API. The access matrix is generated from the
OpenAPI document the server derives from its operations table, so a new
route cannot be missed: every route x every kind of caller gets the status
its scope promises. Also: secrets are write-only, every mutation is audited
in the same transaction, the audit log is append-only, idempotency keys,
pagination, stable error codes with request ids, the separate listener, and
credential classes that open the wrong door."""
import json
import sqlite3

import pytest

from conftest import (TENANT_ANTHROPIC_KEY, TENANT_OAUTH, http, wait_until)

SECRET_VALUE = "CANARY-admin-secret-value-0123456789"  # a value no response may ever hold


def api(kr, method, path, token=None, body=None, headers=None):
    h = dict(headers or {})
    if token:
        h["authorization"] = f"Bearer {token}"
    return http(kr.admin_port, method, "/admin/v1" + path, body, h)


def mint_admin(kr, scope="operator", org=None):
    args = ["admin-token", "mint", "--scope", scope] + (["--org", org] if org else [])
    return kr.cli(*args).stdout.strip()


@pytest.fixture
def world(kr, vendor):
    """Two orgs, a workspace each, and one caller of every kind."""
    ws_token = kr.setup_org("acme", "dev")
    kr.setup_org("other", "ops")
    kr.cli("ws", "create", "acme", "worker", "--model", "claude-sonnet-4-5")
    callers = {
        "none": None,
        "workspace": ws_token,
        "revoked": mint_admin(kr),
        "other-org": mint_admin(kr, "org", "other"),
        "org-admin": mint_admin(kr, "org", "acme"),
        "operator": mint_admin(kr),
    }
    first = kr.cli("admin-token", "list").stdout.splitlines()[1].split()
    assert first[1] == callers["revoked"][:12]  # the first minted: the one to revoke
    kr.cli("admin-token", "revoke", first[0])
    kr.start()
    return callers


SEQ = [0]


def unique(prefix):
    SEQ[0] += 1
    return f"{prefix}{SEQ[0]}"


def sample(kr, op, operator):
    """(path params, query, body) for one call of an operation on org acme;
    resources an operation consumes are made fresh for each call."""
    p = {"org": "acme", "ws": "dev"}
    name = op["operationId"]
    if name == "org.create":
        return p, {}, {"org": unique("org")}
    if name == "ws.create":
        return p, {}, {"ws": unique("ws"), "model": "claude-sonnet-4-5"}
    if name == "secret.set":
        return dict(p, key="SOME_KEY"), {}, {"value": SECRET_VALUE}
    if name == "secret.unset":
        kr.secret("--org", "acme", "GONE_KEY", "x")
        return dict(p, key="GONE_KEY"), {}, None
    if name == "token.mint":
        return p, {}, {"ttl": "1d"}
    if name == "token.revoke":
        kr.mint("acme/dev")
        tid = max(int(l.split()[0]) for l in kr.cli("token", "list", "acme/dev").stdout.splitlines()[1:])
        return dict(p, id=tid), {}, None
    if name == "credits.add":
        return p, {}, {"amount": "1.5", "reason": "test"}
    if name == "credits.cap":
        return p, {}, {"amount": "2"}
    if name in ("limits.set", "ws.limits.set"):
        return p, {}, {"rpm": 100}
    if name == "admin_token.mint":
        return p, {}, {"scope": "org", "org": "acme", "name": "matrix"}
    if name == "admin_token.revoke":
        st, _, data = api(kr, "POST", "/admin-tokens", operator, {"scope": "operator"})
        assert st == 201, data
        return {"id": json.loads(data)["id"]}, {}, None
    if name == "session.create":
        return p, {}, {"token": operator}
    if name == "ws.provision":
        return p, {}, {"rebuild": True}
    if name == "alert.create":
        return p, {}, {"kind": "budget", "budget": "10", "url": "https://hooks.example/k"}
    if name == "alert.delete":
        st, _, data = api(kr, "POST", "/orgs/acme/alerts", operator,
                          {"kind": "balance", "threshold": "1", "url": "https://hooks.example/k"})
        assert st == 201, data
        return dict(p, id=json.loads(data)["id"]), {}, None
    if name in ("org.list", "org.get", "ws.list", "ws.explain", "secret.list", "token.list",
                "credits.show", "credits.history", "limits.show", "ws.limits.show", "usage",
                "audit.list", "admin_token.list", "session.get", "session.delete", "openapi",
                "alert.list", "alert.deliveries", "upstream.keys"):
        return p, {}, None
    raise AssertionError(f"the access matrix has no sample call for {name}: add one")


def expected(op, caller):
    """The status a caller must get from an operation, by its declared scope."""
    scope = op["x-keyrail-scope"]
    if scope == "public":
        return "2xx"
    if caller in ("none", "workspace", "revoked"):
        return 401
    if scope == "operator":
        return "2xx" if caller == "operator" else 403
    if scope == "org":  # the path names org acme
        return "2xx" if caller in ("operator", "org-admin") else 403
    return "2xx"  # any-admin: every admin, an org admin sees its own org's part


def routes(kr):
    st, _, data = api(kr, "GET", "/openapi.json")
    assert st == 200
    doc = json.loads(data)
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            out.append((path, method.upper(), op))
    return doc, out


def test_access_matrix_from_the_route_table(kr, world):
    doc, rs = routes(kr)
    names = {op["operationId"] for _, _, op in rs}
    # the document is the table: the operations the CLI knows are all there
    assert {"org.create", "ws.create", "secret.set", "token.mint", "credits.add", "limits.set",
            "usage", "audit.list", "admin_token.mint", "ws.explain"} <= names
    assert "ws.provision" in names, "the platform builds workspace containers over HTTP"
    checked = 0
    for path, method, op in rs:
        for caller, token in world.items():
            if op["operationId"] == "session.create" and caller != "operator":
                continue  # signing in takes the token in the body; tested below
            p, query, body = sample(kr, op, world["operator"])
            url = path
            for k, v in p.items():
                url = url.replace("{" + k + "}", str(v))
            st, h, data = api(kr, method, url, token, body)
            want = expected(op, caller)
            ok = 200 <= st < 300 if want == "2xx" else st == want
            assert ok, f"{method} {url} as {caller}: {st} (want {want}) {data[:300]!r}"
            assert "x-keyrail-request-id" in h
            if st >= 400:
                err = json.loads(data)
                assert err["request_id"] == h["x-keyrail-request-id"] and err["error"]["code"]
            checked += 1
    assert checked >= len(rs) * 5


def test_secrets_are_write_only_everywhere(kr, world):
    op = world["operator"]
    st, _, _ = api(kr, "PUT", "/orgs/acme/secrets/SOME_KEY", op, {"value": SECRET_VALUE})
    assert st == 200
    st, _, _ = api(kr, "PUT", "/orgs/acme/secrets/ANTHROPIC_API_KEY", op,
                   {"value": TENANT_ANTHROPIC_KEY, "workspace": "worker"})
    assert st == 200
    seen = []
    for path in ("/orgs/acme/secrets", "/orgs/acme/secrets?workspace=worker", "/orgs/acme/workspaces",
                 "/orgs/acme/workspaces/worker/explain", "/orgs/acme/workspaces/dev/explain", "/audit"):
        st, _, data = api(kr, "GET", path, op)
        assert st == 200, (path, data)
        seen.append(data)
    blob = b"".join(seen)
    assert SECRET_VALUE.encode() not in blob and TENANT_ANTHROPIC_KEY.encode() not in blob
    items = json.loads(seen[1])["items"]
    assert items[0]["class"] == "anthropic-api-key" and len(items[0]["fingerprint"]) == 8
    # nor in the audit table, nor in the log
    assert SECRET_VALUE not in json.dumps(kr.db_rows("select * from audit"))
    assert SECRET_VALUE not in kr.log_text()


def test_every_mutation_is_audited_in_its_transaction(kr, world):
    op = world["operator"]
    before = kr.db_rows("select count(*) from audit")[0][0]
    st, h, _ = api(kr, "POST", "/orgs", op, {"org": "audited"})
    assert st == 201
    rows = kr.db_rows("select actor, actor_scope, action, target, request_id, outcome from audit"
                      " order by id desc limit 1")
    assert rows[0][2:] == ("org.create", "audited", h["x-keyrail-request-id"], "ok")
    assert rows[0][0].startswith("admin:kradm_") and rows[0][1] == "operator"
    # a refused change is audited, and changes nothing
    st, h, data = api(kr, "PUT", "/orgs/acme/secrets/GITHUB_TOKEN", world["org-admin"], {"value": "x"})
    assert st == 422 and json.loads(data)["error"]["code"] == "FORBIDDEN_KEY"
    row = kr.db_rows("select action, outcome, request_id from audit order by id desc limit 1")[0]
    assert row == ("secret.set", "FORBIDDEN_KEY", h["x-keyrail-request-id"])
    assert kr.db_rows("select count(*) from secrets where key = 'GITHUB_TOKEN'") == [(0,)]
    # a failed create writes neither the workspace nor anything it would have
    st, _, data = api(kr, "POST", "/orgs/acme/workspaces", op, {"ws": "nomodel"})
    assert st == 422 and json.loads(data)["error"]["code"] == "MISSING_MODEL"
    assert kr.db_rows("select count(*) from workspaces where name = 'nomodel'") == [(0,)]
    assert kr.db_rows("select count(*) from audit")[0][0] == before + 3
    # the CLI's changes are audited as the CLI
    kr.cli("credits", "add", "acme", "3")
    assert kr.db_rows("select actor, action from audit order by id desc limit 1")[0][1] == "credits.add"
    # GET /audit filters, paginates, and shows an org admin only its org
    st, _, data = api(kr, "GET", "/audit?limit=2", op)
    page = json.loads(data)
    assert len(page["items"]) == 2 and page["next_cursor"]
    st, _, data = api(kr, "GET", f"/audit?limit=2&cursor={page['next_cursor']}", op)
    assert json.loads(data)["items"][0]["id"] < page["items"][-1]["id"]
    st, _, data = api(kr, "GET", "/audit?limit=1000", world["org-admin"])
    assert st == 200 and all(r["target"] != "audited" for r in json.loads(data)["items"])
    st, _, _ = api(kr, "GET", "/audit?org=other", world["org-admin"])
    assert st == 403
    # an org admin's attempt on another org is that org's audit entry, the
    # actor's org named by slug
    st, h, _ = api(kr, "PUT", "/orgs/other/secrets/EXTRA", world["org-admin"], {"value": "x"})
    assert st == 403
    st, _, data = api(kr, "GET", "/audit?org=other&action=secret.set", op)
    rows = [r for r in json.loads(data)["items"] if r["request_id"] == h["x-keyrail-request-id"]]
    assert len(rows) == 1 and rows[0]["outcome"] == "DENIED" and rows[0]["target"] == "other", rows
    assert kr.db_rows("select actor_scope from audit where request_id = ?",
                      (h["x-keyrail-request-id"],)) == [("org:acme",)]


def test_audit_log_is_append_only(kr, world):
    api(kr, "POST", "/orgs", world["operator"], {"org": "x1"})
    c = sqlite3.connect(kr.db)
    for sql in ("update audit set outcome = 'forged'", "delete from audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            c.execute(sql)
    c.close()


def test_idempotency_keys_and_pagination(kr, world):
    op = world["operator"]
    key = {"idempotency-key": "create-org-42"}
    a = api(kr, "POST", "/orgs", op, {"org": "idem"}, key)
    b = api(kr, "POST", "/orgs", op, {"org": "idem"}, key)
    # a replay is the first answer whole: status, body, the headers describing it
    assert a[0] == 201 and b[0] == 201 and json.loads(a[2]) == json.loads(b[2])
    assert b[1]["content-type"] == a[1]["content-type"] == "application/json"
    assert b[1].get("idempotent-replayed") == "true" and "idempotent-replayed" not in a[1]
    assert kr.db_rows("select count(*) from orgs where slug = 'idem'") == [(1,)]
    c = api(kr, "POST", "/orgs", op, {"org": "other-idem"}, key)
    assert c[0] == 409 and json.loads(c[2])["error"]["code"] == "EXISTS"
    # a minted token is shown once: a replay does not show it again
    k2 = {"idempotency-key": "mint-1"}
    m1 = json.loads(api(kr, "POST", "/orgs/acme/workspaces/dev/tokens", op, {}, k2)[2])
    m2 = json.loads(api(kr, "POST", "/orgs/acme/workspaces/dev/tokens", op, {}, k2)[2])
    assert m1["token"].startswith("krws_") and m2["token"] is None and m2["id"] == m1["id"]
    assert m1["token"] not in json.dumps(kr.db_rows("select * from idempotency"))
    # pages
    for i in range(5):
        api(kr, "POST", "/orgs", op, {"org": f"page{i}"})
    seen, cursor = [], None
    while True:
        st, _, data = api(kr, "GET", "/orgs?limit=3" + (f"&cursor={cursor}" if cursor else ""), op)
        page = json.loads(data)
        seen += [o["slug"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == kr.db_rows("select count(*) from orgs")[0][0]
    assert api(kr, "GET", "/orgs?limit=0", op)[0] == 400


def test_stable_error_codes_and_shapes(kr, world):
    op = world["operator"]
    cases = [
        ("POST", "/orgs", {"org": "Bad Slug"}, 400, "INVAL"),
        ("POST", "/orgs", {"org": "acme"}, 409, "EXISTS"),
        ("GET", "/orgs/nosuch/workspaces", None, 404, "NOTFOUND"),
        ("POST", "/orgs/acme/workspaces", {"ws": "c2", "concierge": True}, 409, "CONCIERGE_EXISTS"),
        ("POST", "/orgs/acme/workspaces", {"ws": "q", "model": "no-such-model"}, 422, "UNKNOWN_MODEL"),
        ("POST", "/orgs", {"org": "x", "bogus": 1}, 400, "INVAL"),
        ("POST", "/orgs", {"org": 12}, 400, "INVAL"),
        ("PUT", "/orgs/acme/secrets/SOME", {"value": "a\u0000b"}, 400, "INVAL"),
        ("GET", "/nothing/here", None, 404, "NOT_FOUND"),
        ("DELETE", "/orgs", None, 405, "METHOD"),
    ]
    for method, path, body, status, code in cases:
        st, h, data = api(kr, method, path, op, body)
        err = json.loads(data)
        assert (st, err["error"]["code"]) == (status, code), (method, path, st, data)
        assert err["request_id"] == h["x-keyrail-request-id"]
    st, _, data = http(kr.admin_port, "POST", "/admin/v1/orgs", b'{"org":"plain"}',
                       {"authorization": f"Bearer {op}", "content-type": "text/plain"})
    assert st == 415


def test_credentials_open_only_their_own_door(kr, world):
    # a workspace token on the admin API; an OAuth token; an admin token on the LLM routes
    st, _, data = api(kr, "GET", "/orgs", world["workspace"])
    assert st == 401 and b"workspace-token" in data and world["workspace"].encode() not in data
    st, _, data = api(kr, "GET", "/orgs", TENANT_OAUTH)
    assert st == 401 and b"oauth" in data and TENANT_OAUTH.encode() not in data
    st, _, data = http(kr.port, "POST", "/anthropic/v1/messages",
                       {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
                       {"x-api-key": world["operator"]})
    assert st == 401 and b"admin-token" in data and world["operator"].encode() not in data
    # the proxy's listener does not serve the admin API or the console
    for path in ("/admin/v1/orgs", "/console"):
        st, _, _ = http(kr.port, "GET", path, headers={"authorization": f"Bearer {world['operator']}"})
        assert st == 404


def test_openapi_matches_the_implemented_routes(kr, world):
    doc, rs = routes(kr)
    assert doc["openapi"].startswith("3.1")
    for path, method, op in rs:
        st, _, _ = api(kr, method, path.replace("{org}", "acme").replace("{ws}", "dev")
                       .replace("{key}", "K").replace("{id}", "999999"), world["operator"],
                       {} if method in ("POST", "PUT") else None)
        assert st not in (404, 405) or op["operationId"] in ("token.revoke", "admin_token.revoke",
                                                            "secret.unset", "alert.delete"), (method, path, st)
        for p in op.get("parameters", []):
            assert p["in"] in ("path", "query", "header") and "schema" in p
    # and nothing else answers
    for method, path in (("GET", "/secrets"), ("PATCH", "/orgs"), ("GET", "/orgs/acme/env")):
        assert api(kr, method, path, world["operator"])[0] in (404, 405)


def test_session_cookie_csrf_and_sign_out(kr, world):
    st, h, data = api(kr, "POST", "/session", body={"token": world["org-admin"]})
    assert st == 200
    cookie = h["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    sess = cookie.split(";")[0]
    csrf = json.loads(data)["csrf"]
    assert json.loads(data)["org"] == "acme"
    # reads need only the cookie; changes need the CSRF token too
    assert api(kr, "GET", "/orgs/acme/secrets", headers={"cookie": sess})[0] == 200
    st, _, data = api(kr, "PUT", "/orgs/acme/secrets/K1", body={"value": "v"}, headers={"cookie": sess})
    assert st == 403 and json.loads(data)["error"]["code"] == "CSRF"
    st, _, _ = api(kr, "PUT", "/orgs/acme/secrets/K1", body={"value": "v"},
                   headers={"cookie": sess, "x-csrf-token": "0" * 64})
    assert st == 403
    st, _, _ = api(kr, "PUT", "/orgs/acme/secrets/K1", body={"value": "v"},
                   headers={"cookie": sess, "x-csrf-token": csrf})
    assert st == 200
    # another org is refused; a forged session is unknown
    assert api(kr, "GET", "/orgs/other/secrets", headers={"cookie": sess})[0] == 403
    assert api(kr, "GET", "/orgs/acme/secrets", headers={"cookie": "kr_session=forged"})[0] == 401
    # behind TLS the cookie is Secure
    st, h, _ = api(kr, "POST", "/session", body={"token": world["operator"]},
                   headers={"x-forwarded-proto": "https"})
    assert "Secure" in h["set-cookie"]
    # sign-out ends the session
    assert api(kr, "DELETE", "/session", headers={"cookie": sess, "x-csrf-token": csrf})[0] == 200
    assert api(kr, "GET", "/orgs/acme/secrets", headers={"cookie": sess})[0] == 401
    # a revoked token's sessions end with it
    st, h, data = api(kr, "POST", "/session", body={"token": world["org-admin"]})
    sess = h["set-cookie"].split(";")[0]
    tid = [t["id"] for t in json.loads(api(kr, "GET", "/admin-tokens", world["operator"])[2])["items"]
           if t["scope"] == "org" and t["org"] == "acme"][0]
    assert api(kr, "DELETE", f"/admin-tokens/{tid}", world["operator"])[0] == 200
    assert api(kr, "GET", "/orgs/acme/secrets", headers={"cookie": sess})[0] == 401
    assert api(kr, "POST", "/session", body={"token": "kradm_" + "x" * 43})[0] == 401
    assert api(kr, "POST", "/session", body={"token": world["workspace"]})[0] == 401


def test_provision_over_http_holds_no_credential_value(kr, world):
    """The platform that runs the fleet builds each workspace's container from
    POST …/provision: the workspace token is the launcher's placeholder, a
    BYOK workspace (through the proxy) holds no vendor key, and one that chose
    direct BYOK gets the variable's name and class, never its value. Scoped
    like the other workspace operations and audited."""
    op, org_admin = world["operator"], world["org-admin"]
    minimax = "mmk-CANARYTENANTMINIMAX000000000000000000"
    kr.secret("--org", "acme", "MINIMAX_API_KEY", minimax)
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    kr.cli("ws", "create", "acme", "mmd", "--model", "MiniMax-M2", "--set", "BYOK_ROUTE=direct")
    env = lambda doc: {v["key"]: v for v in doc["env"]}
    # platform, rebuilt: the placeholder, the proxy, nothing withheld
    st, h, data = api(kr, "POST", "/orgs/acme/workspaces/dev/provision", org_admin, {"rebuild": True})
    assert st == 200, data
    doc = json.loads(data)
    e = env(doc)
    assert e["ANTHROPIC_AUTH_TOKEN"]["value"] == "${KEYRAIL_WORKSPACE_TOKEN}"
    assert e["ANTHROPIC_BASE_URL"]["value"].startswith("http://127.0.0.1:")
    assert doc["withheld"] == [] and "ANTHROPIC_AUTH_TOKEN='${KEYRAIL_WORKSPACE_TOKEN}'" in doc["env_file"]
    # the same environment the command line rebuilds (which holds values itself)
    cli = json.loads(kr.cli("provision", "acme/dev", "--rebuild", "--format", "json").stdout)
    assert {v["key"]: v["value"] for v in cli["env"]} == {k: v["value"] for k, v in e.items()}
    # BYOK through the proxy: no vendor key at all
    doc = json.loads(api(kr, "POST", "/orgs/acme/workspaces/mm/provision", op, {"rebuild": True})[2])
    assert minimax not in json.dumps(doc) and doc["withheld"] == []
    assert env(doc)["ANTHROPIC_AUTH_TOKEN"]["value"] == "${KEYRAIL_WORKSPACE_TOKEN}"
    # direct BYOK: named and classed, never its value
    st, _, data = api(kr, "POST", "/orgs/acme/workspaces/mmd/provision", op, {"rebuild": True})
    assert st == 200 and minimax.encode() not in data, data
    doc = json.loads(data)
    held = env(doc)["ANTHROPIC_AUTH_TOKEN"]
    assert held["withheld"] is True and "value" not in held and held["class"] != "none", held
    assert {"key": "ANTHROPIC_AUTH_TOKEN", "class": held["class"]} in doc["withheld"]
    assert "ANTHROPIC_AUTH_TOKEN withheld" in doc["env_file"] and minimax not in doc["env_file"]
    # a token is never filled in over HTTP
    st, _, data = api(kr, "POST", "/orgs/acme/workspaces/dev/provision", op,
                      {"rebuild": True, "token": "krws_" + "a" * 43})
    assert st == 400 and b"command line only" in data, data
    # scope: another org's admin is refused; every call is audited
    assert api(kr, "POST", "/orgs/other/workspaces/ops/provision", org_admin, {"rebuild": True})[0] == 403
    rows = kr.db_rows("select target, outcome, detail from audit where action = 'ws.provision' order by id")
    assert any("mmd" in r[0] and r[1:] == ("ok", "rebuild, credentials withheld") for r in rows), rows
    assert any(r[1] == "DENIED" for r in rows), rows
    assert minimax not in json.dumps(kr.db_rows("select * from audit"))
