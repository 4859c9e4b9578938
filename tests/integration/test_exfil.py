"""No exfiltration (issue 7): nothing a tenant sends can make keyrail take the
platform key anywhere but the registry's upstream, reach a model the
registry does not serve, or echo a token it should not.

A second fake vendor plays "evil" on another port; every tenant-controlled
input names it; it must receive nothing, and the real vendor must see the
platform key and exactly the model keyrail priced.

Defences: src/proxy/routes.c forward() (the URL is the registry's base_url +
a fixed protocol path; ?beta=true is the only query passed), header_forwarded()
(Host, X-Forwarded-*, Forwarded, credentials, hop-by-hop dropped),
kr_registry_model/claim (src/registry/registry.c), CURLOPT_FOLLOWLOCATION 0
and CURLOPT_PROTOCOLS_STR http,https; auth.c / errors.c (refusals name the
problem, never the token).
"""
import hashlib
import json
import time
import os
import sqlite3

import pytest

from conftest import (CACHE_SETTLE, CANARIES, PLATFORM_ANTHROPIC_KEY, PLATFORM_OPENAI_KEY, TENANT_OAUTH, FakeVendor,
                      http, parse_responses, raw_exchange, sha256, wait_until)

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def evil(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    v = FakeVendor(str(d))
    yield v
    v.stop()


def anthropic(kr, tok, body=None, headers=None, path="/anthropic/v1/messages"):
    h = {"x-api-key": tok, "anthropic-version": "2023-06-01"}
    h.update(headers or {})
    return http(kr.port, "POST", path, body if body is not None else MSG, h)


def openai(kr, tok, body=None, headers=None, path="/openai/v1/chat/completions"):
    h = {"authorization": f"Bearer {tok}"}
    h.update(headers or {})
    return http(kr.port, "POST", path, body if body is not None else CHAT, h)


def assert_platform_key_only_at_vendor(vendor, evil, n):
    recs = vendor.requests()
    assert len(recs) == n, (len(recs), n)
    for r in recs:
        key = PLATFORM_OPENAI_KEY if r["path"].endswith("/chat/completions") else PLATFORM_ANTHROPIC_KEY
        assert r["auth_sha256"] == sha256(key) and not r.get("auth_multiple"), r
        assert r["path"] in ("/v1/messages", "/v1/chat/completions", "/v1/messages/count_tokens"), r
    assert evil.requests() == [], "the evil upstream was reached"


def test_tenant_headers_cannot_move_the_upstream(kr, vendor, evil):
    tok = kr.setup_org()
    kr.start()
    e = f"127.0.0.1:{evil.port}"
    headers = [
        {"host": e}, {"x-forwarded-host": e}, {"x-forwarded-server": e}, {"x-host": e},
        {"forwarded": f"host={e};proto=http"}, {"x-original-url": f"http://{e}/v1/messages"},
        {"x-rewrite-url": f"http://{e}/v1/messages"}, {"x-http-host-override": e},
        {"x-forwarded-proto": "http", "x-forwarded-port": str(evil.port)},
        {"authority": e}, {"x-upstream": f"http://{e}"}, {"x-base-url": f"http://{e}"},
        {"anthropic-base-url": f"http://{e}"}, {"destination": f"http://{e}/"},
        {"proxy": f"http://{e}"}, {"x-proxy-url": f"http://{e}"},
    ]
    for h in headers:
        st, _, data = anthropic(kr, tok, headers=h)
        assert st == 200, (h, data)
    st, _, _ = openai(kr, tok, headers={"host": e, "x-forwarded-host": e, "openai-base-url": f"http://{e}"})
    assert st == 200
    assert_platform_key_only_at_vendor(vendor, evil, len(headers) + 1)
    for r in vendor.requests():
        names = [n.lower() for n in r["headers"]]
        for bad in ("x-forwarded-host", "forwarded", "x-forwarded-proto"):
            assert bad not in names


def test_pseudo_header_authority_is_refused(kr, vendor, evil):
    """HTTP/2-style ':authority' is not an HTTP/1.1 header name: refused."""
    tok = kr.setup_org()
    kr.start()
    b = json.dumps(MSG).encode()
    req = (f"POST /anthropic/v1/messages HTTP/1.1\r\nHost: k\r\n:authority: 127.0.0.1:{evil.port}\r\n"
           f"x-api-key: {tok}\r\ncontent-length: {len(b)}\r\n\r\n").encode() + b
    got, closed = raw_exchange(kr.port, req)
    (st, _, _), = parse_responses(got)
    assert st == 400 and closed
    assert vendor.requests() == [] and evil.requests() == []


def test_body_fields_cannot_move_the_upstream(kr, vendor, evil):
    tok = kr.setup_org()
    kr.start()
    url = f"http://127.0.0.1:{evil.port}"
    fields = ["base_url", "baseURL", "api_base", "url", "endpoint", "host", "upstream", "proxy",
              "metadata"]
    for f in fields:
        body = dict(MSG, **{f: url if f != "metadata" else {"base_url": url, "user_id": url}})
        st, _, data = anthropic(kr, tok, body)
        assert st == 200, (f, data)
    st, _, _ = openai(kr, tok, dict(CHAT, base_url=url, api_base=url))
    assert st == 200
    assert_platform_key_only_at_vendor(vendor, evil, len(fields) + 1)


QUERIES = ["base_url=http://127.0.0.1:{p}", "beta=true&url=http://127.0.0.1:{p}",
           "url=http://127.0.0.1:{p}&beta=true", "beta=true%26host=127.0.0.1:{p}", "beta=TRUE",
           "beta=true#frag", "host=127.0.0.1:{p}", "beta=true&beta=true", "beta=true;host=x"]


def test_query_strings_cannot_move_the_upstream(kr, vendor, evil):
    tok = kr.setup_org()
    kr.start()
    for query in QUERIES:
        q = query.format(p=evil.port)
        st, _, data = anthropic(kr, tok, path=f"/anthropic/v1/messages?{q}")
        # only ?beta=true is meaningful; anything else is refused, not dropped
        assert st == 400, (q, data)
    st, _, _ = anthropic(kr, tok, path="/anthropic/v1/messages?beta=true")
    assert st == 200
    assert_platform_key_only_at_vendor(vendor, evil, 1)
    assert vendor.requests()[0]["query"] == "beta=true"


PATHS = ["/anthropic/v1/messages/../../v1/messages", "/anthropic/../openai/v1/chat/completions",
         "/anthropic/v1/messages/", "/anthropic//v1/messages", "/ANTHROPIC/v1/messages",
         "/anthropic/v1/messages%2f..%2fcount_tokens", "/anthropic/v1/messages;x=1",
         "/anthropic/v1/messages/http://127.0.0.1:{p}/v1/messages", "/v1/messages",
         "/anthropic/v1/complete", "/openai/v1/completions", "/openai/v1/embeddings"]


def test_path_tricks_do_not_route(kr, vendor, evil):
    tok = kr.setup_org()
    kr.start()
    for path in PATHS:
        st, _, _ = anthropic(kr, tok, path=path.format(p=evil.port))
        assert st == 404, path
    assert vendor.requests() == [] and evil.requests() == []


MODELS = [
    ("http://127.0.0.1:{p}/", 403), ("https://127.0.0.1:{p}/v1/messages", 403),
    ("//127.0.0.1:{p}/claude", 403), ("127.0.0.1:{p}", 403), ("claude-sonnet-4-5@127.0.0.1:{p}", 422),
    ("claude-sonnet-4-5/../../127.0.0.1:{p}", 422), ("claude-sonnet-4-5 http://127.0.0.1:{p}", 422),
    ("claude-sonnet-4-5\r\nHost: 127.0.0.1:{p}", 422), ("claude-" + "x" * 200, 400),
    ("MiniMax-M2", 403), ("gpt-4o", 403), ("claude-unpriced", 422), ("SONNET", 403), (" sonnet", 403),
    ("sonnet ", 403), ("", 400),
]


def test_model_names_cannot_reach_elsewhere(kr, vendor, evil):
    """Model names are looked up in the registry, never used as an address;
    one that is not a priced platform model is refused before any upstream."""
    tok = kr.setup_org()
    kr.start()
    for model, status in MODELS:
        st, _, data = anthropic(kr, tok, dict(MSG, model=model.format(p=evil.port)))
        assert st == status, (model, data)
    st, _, _ = anthropic(kr, tok, dict(MSG, model=123))
    assert st == 400
    assert vendor.requests() == [] and evil.requests() == []


def test_model_vendor_receives_is_the_model_priced(kr, vendor, evil):
    """Escapes and NULs in the model name: whatever keyrail resolved (and
    bills) is exactly what the vendor is asked for -- never a cheap model
    billed and another served."""
    tok = kr.setup_org()
    kr.start()
    raw_models = ['"claude-sonnet-4-5\\u0000claude-opus-4"', '"sonnet\\u0000"',
                  '"claude-haiku-4-5\\u0000x"', '"\\u0063laude-sonnet-4-5"', '"son\\u006eet"',
                  '"haiku\\u0000sonnet"', '"claude-haiku-4-5\\"', '"claude-haiku-4-5\\/"']
    served = 0
    for m in raw_models:
        body = '{"model":%s,"max_tokens":5,"messages":[{"role":"user","content":"x"}]}' % m
        st, h, data = anthropic(kr, tok, body)
        if st != 200:
            assert st in (400, 403, 422), (m, st, data)
            assert len(vendor.requests()) == served, m
            continue
        served += 1
        row = kr.wait_usage(h["x-keyrail-request-id"])
        rec = vendor.requests()[-1]
        assert rec["model"] == row["model"], (m, rec["model"], row["model"])
    assert evil.requests() == []


def test_aliases_reach_only_their_own_models(kr, vendor, evil):
    tok = kr.setup_org()
    kr.start()
    for alias, canonical in (("sonnet", "claude-sonnet-4-5"), ("haiku", "claude-haiku-4-5")):
        st, h, _ = anthropic(kr, tok, dict(MSG, model=alias))
        assert st == 200
        assert vendor.requests()[-1]["model"] == canonical
        assert kr.wait_usage(h["x-keyrail-request-id"])["model"] == canonical
    # an alias is not a prefix match, and a model of another protocol is not reachable through it
    for m in ("sonnet-4", "haikus", "sonnet/..", "gpt-4o", "claude-sonnet-4-5-20250101"):
        st, _, _ = anthropic(kr, tok, dict(MSG, model=m))
        assert st in (403, 422), m
    st, _, _ = openai(kr, tok, dict(CHAT, model="sonnet"))
    assert st == 403, "an anthropic model through the openai route"
    assert len(vendor.requests()) == 2 and evil.requests() == []


def test_upstream_redirect_is_not_followed(kr, vendor, evil):
    """A 3xx from the vendor goes back to the client as it is; keyrail does
    not follow it (the platform key would go wherever Location points)."""
    tok = kr.setup_org()
    kr.start()
    for status in (301, 302, 307, 308):
        st, _, _ = anthropic(kr, tok, headers={"x-fake": f"mode=status status={status}"})
        assert st == status
    assert_platform_key_only_at_vendor(vendor, evil, 4)


# ---- tokens: expired or revoked ones are never echoed ----

def test_expired_and_revoked_tokens_never_echoed(kr, vendor, evil, tmp_path):
    tok = kr.setup_org()
    old = kr.mint("acme/boss")
    kr.start()
    assert anthropic(kr, tok)[0] == 200 and anthropic(kr, old)[0] == 200
    kr.cli("token", "revoke", tok[:12])
    c = sqlite3.connect(kr.db)
    (tid,), = c.execute("select id from tokens where hash = ?", (token_hash(old),)).fetchall()
    c.execute("update tokens set expires_at = 1 where id = ?", (tid,))
    c.commit()
    c.close()
    wait_until(lambda: anthropic(kr, tok)[0] == 401 and anthropic(kr, old)[0] == 401, timeout=5,
               what="revocation and expiry seen")
    time.sleep(CACHE_SETTLE)  # every event loop's token cache
    bodies = []
    for t in (tok, old):
        for h in ({"x-api-key": t}, {"authorization": f"Bearer {t}"}):
            for path, body in (("/anthropic/v1/messages", MSG), ("/anthropic/v1/messages/count_tokens", MSG)):
                st, hd, data = http(kr.port, "POST", path, body, h)
                assert st == 401
                bodies.append(data + json.dumps(hd).encode())
            st, hd, data = http(kr.port, "GET", "/v1/workspace/env", headers=h)
            assert st == 401
            bodies.append(data + json.dumps(hd).encode())
            st, hd, data = http(kr.port, "GET", "/anthropic/v1/models", headers=h)
            assert st == 401
            bodies.append(data + json.dumps(hd).encode())
        st, _, data = openai(kr, t)
        assert st == 401
        bodies.append(data)
    assert any(b"revoked" in b for b in bodies) and any(b"expired" in b for b in bodies)
    for b in bodies:
        for t in (tok, old):
            assert t.encode() not in b and t[5:20].encode() not in b
    log = kr.log_text()
    for t in (tok, old):
        assert t not in log and t[5:20] not in log, "a token (or a large part of it) in the log"
        listing = kr.cli("token", "list", "acme/boss").stdout
        assert t not in listing
    # the store keeps hashes: the raw bytes of the store files never hold a token
    for f in os.listdir(kr.tmp):
        if f.startswith("keyrail.db"):
            raw = open(os.path.join(kr.tmp, f), "rb").read()
            for t in (tok, old):
                assert t.encode() not in raw, f"a token in plaintext in {f}"
    assert vendor.requests()[-1]["auth_sha256"] == sha256(PLATFORM_ANTHROPIC_KEY)
    assert evil.requests() == []


def token_hash(tok):
    return hashlib.blake2b(tok.encode(), digest_size=32).hexdigest()


def test_workspace_env_never_holds_platform_keys(kr, vendor, evil):
    """The environment a platform workspace fetches holds its proxy URL and
    its own token -- never the platform keys, never a direct vendor
    credential stored for the org."""
    tok = kr.setup_org()
    kr.secret("--org", "acme", "CLAUDE_CODE_OAUTH_TOKEN", TENANT_OAUTH)
    kr.start()
    st, _, data = http(kr.port, "GET", "/v1/workspace/env", headers={"x-api-key": tok})
    assert st == 200
    text = data.decode()
    for c in CANARIES:
        assert c not in text, f"{c[:14]}… in a platform workspace's environment"
    assert f"127.0.0.1:{kr.port}" in text and f"127.0.0.1:{evil.port}" not in text
