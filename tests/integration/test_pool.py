"""Platform key pools (issue 24, part 1, in part): several platform keys per
provider, spread by weight, a session kept on one key, a key the vendor
refuses (401/403) taken out of rotation, a 429 cooled for its retry-after,
and the request retried on another key before any byte reached the client,
with usage exact."""
import hashlib
import json
import os
import time

import pytest

from conftest import MSG, PLATFORM_ANTHROPIC_KEY, Keyrail, call, check_log_clean, http, metrics, sha256, wait_until

KEY_B = "sk-ant-api03-CANARYPOOLKEYB00000000000000000000000000000"
KEY_C = "sk-ant-api03-CANARYPOOLKEYC00000000000000000000000000000"


def fail_auth(key):
    """The fake vendor's fail_auth value for a key: its SHA-256's first 4 bytes."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


class PoolKeyrail(Keyrail):
    def __init__(self, tmp, vendor, keys="KEYRAIL_ANTHROPIC_KEY, KEYRAIL_ANTHROPIC_KEY_B", env=None,
                 base_url=None, fallback=None, extra_config=""):
        self.pool_env = env if env is not None else {"KEYRAIL_ANTHROPIC_KEY_B": KEY_B}
        super().__init__(tmp, vendor, extra_config=extra_config)
        text = open(self.registry).read().replace(
            "platform_key_env = KEYRAIL_ANTHROPIC_KEY\n",
            f"platform_key_env = {keys}\n" + (f"fallback = {fallback}\n" if fallback else ""), 1)
        if base_url:
            text = text.replace(f"base_url = {vendor.url}\n", f"base_url = {base_url}\n", 1)
        open(self.registry, "w").write(text)

    def env(self):
        e = super().env()
        e.update(self.pool_env)
        return e


@pytest.fixture
def make(tmp_path, vendor):
    made = []

    def mk(**kw):
        d = tmp_path / f"k{len(made)}"
        os.makedirs(d)
        k = PoolKeyrail(str(d), vendor, **kw)
        made.append(k)
        return k

    yield mk
    for k in made:
        rc = k.stop()
        check_log_clean(k.log_text())
        assert rc == 0, k.log_text()[-3000:]


def keys_seen(vendor):
    return [r["auth_sha256"] for r in vendor.requests()]


def test_requests_spread_over_the_pool_by_weight(make, vendor):
    k = make(keys="KEYRAIL_ANTHROPIC_KEY*3, KEYRAIL_ANTHROPIC_KEY_B")
    tok = k.setup_org()
    k.start()
    for _ in range(16):
        assert call(k, tok)[0] == 200
    seen = keys_seen(vendor)
    assert seen.count(sha256(PLATFORM_ANTHROPIC_KEY)) == 12 and seen.count(sha256(KEY_B)) == 4, seen
    m = metrics(k.port)
    dep = f'provider="anthropic",deployment="{vendor.url}"'
    assert m[f'keyrail_platform_key_requests_total{{{dep},key="KEYRAIL_ANTHROPIC_KEY_B"}}'] == 4
    assert m[f'keyrail_platform_key_in_rotation{{{dep},key="KEYRAIL_ANTHROPIC_KEY"}}'] == 1
    assert "key KEYRAIL_ANTHROPIC_KEY_B loaded" in k.log_text() and KEY_B not in k.log_text()


def test_a_session_keeps_one_key(make, vendor):
    k = make()
    tok = k.setup_org()
    k.start()
    by_session = {}
    for s in range(6):
        for _ in range(4):
            vendor.clear()
            st, _, _ = http(k.port, "POST", "/anthropic/v1/messages", MSG,
                            {"x-api-key": tok, "x-claude-code-session-id": f"session-{s}"})
            assert st == 200
            by_session.setdefault(s, set()).update(keys_seen(vendor))
    assert all(len(v) == 1 for v in by_session.values()), by_session
    assert len(set().union(*by_session.values())) == 2, "sessions spread over both keys"


@pytest.mark.parametrize("stream", [False, True])
def test_a_429_is_retried_on_another_key_before_any_byte(make, vendor, stream):
    k = make()
    tok = k.setup_org()
    k.start()
    fake = f"mode=status status=429 fail_auth={fail_auth(PLATFORM_ANTHROPIC_KEY)} in=700 out=30"
    for _ in range(6):
        st, h, data = call(k, tok, stream=stream, fake=fake)
        assert st == 200, data
        row = k.wait_usage(h["x-keyrail-request-id"])
        assert (row["input"], row["output"], row["status"]) == (700, 30, "complete")
    seen = keys_seen(vendor)
    # the first request met the 429 and went to B; the key then cools (retry-after: 1)
    assert seen.count(sha256(KEY_B)) == 6 and 1 <= seen.count(sha256(PLATFORM_ANTHROPIC_KEY)) <= 2, seen
    assert len(k.usage()) == 6, "one row per request, none for the refused attempt"
    assert metrics(k.port)["keyrail_upstream_retries_total"] >= 1
    time.sleep(1.2)  # cooled off: back in the round robin
    vendor.clear()
    for _ in range(4):
        assert call(k, tok)[0] == 200
    assert sha256(PLATFORM_ANTHROPIC_KEY) in keys_seen(vendor)


def test_a_refused_key_leaves_the_rotation(make, vendor):
    k = make()
    tok = k.setup_org()
    k.start()
    fake = f"mode=status status=401 fail_auth={fail_auth(KEY_B)}"
    for _ in range(8):
        assert call(k, tok, fake=fake)[0] == 200
    seen = keys_seen(vendor)
    assert seen.count(sha256(KEY_B)) == 1, "refused once, then never used again"
    m = metrics(k.port)
    dep = f'provider="anthropic",deployment="{vendor.url}"'
    assert m[f'keyrail_platform_key_in_rotation{{{dep},key="KEYRAIL_ANTHROPIC_KEY_B"}}'] == 0
    log = k.log_text()
    assert "key KEYRAIL_ANTHROPIC_KEY_B" in log and "out of rotation" in log and KEY_B not in log
    # and the admin API says so
    adm = k.cli("admin-token", "mint", "--scope", "operator").stdout.strip().split()[-1]
    st, _, data = http(k.admin_port, "GET", "/admin/v1/upstream/keys", headers={"authorization": f"Bearer {adm}"})
    assert st == 200, data
    keys = {x["key_env"]: x for x in json.loads(data)["items"] if x["provider"] == "anthropic"}
    assert keys["KEYRAIL_ANTHROPIC_KEY_B"]["state"] == "refused" and keys["KEYRAIL_ANTHROPIC_KEY_B"]["refused_with"] == 401
    assert keys["KEYRAIL_ANTHROPIC_KEY"]["state"] == "in-rotation" and keys["KEYRAIL_ANTHROPIC_KEY"]["requests"] >= 7
    assert KEY_B.encode() not in data


def test_every_key_refusing_passes_the_vendors_answer(make, vendor):
    k = make()
    tok = k.setup_org()
    k.start()
    st, h, data = call(k, tok, fake="mode=status status=429")
    assert st == 429 and h.get("retry-after") == "1", (st, h)
    assert len(vendor.requests()) == 2, "each key tried once, then the vendor's answer"


def test_a_pool_without_one_of_its_keys_set_serves_with_the_rest(make, vendor):
    k = make(keys="KEYRAIL_ANTHROPIC_KEY, KEYRAIL_ANTHROPIC_KEY_NOT_SET")
    tok = k.setup_org()
    k.start()
    for _ in range(4):
        assert call(k, tok)[0] == 200
    assert set(keys_seen(vendor)) == {sha256(PLATFORM_ANTHROPIC_KEY)}
    assert "KEYRAIL_ANTHROPIC_KEY_NOT_SET is not set; the pool goes on without it" in k.log_text()


def test_a_bad_weight_refuses_to_start(make, vendor):
    k = make(keys="KEYRAIL_ANTHROPIC_KEY*0")
    p = k.cli("serve", check=False)
    assert p.returncode == 1 and "weight" in p.stderr


# ---- deployments: a fallback base URL, and a circuit breaker per deployment ----

BREAKER = "[upstream]\nbreaker_failures = 2\nbreaker_cooldown_ms = 700\n"


@pytest.fixture
def vendor_b(tmp_path):
    from conftest import FakeVendor
    d = tmp_path / "vendor-b"
    os.makedirs(d)
    v = FakeVendor(str(d))
    yield v
    v.stop()


def test_a_deployment_that_cannot_be_reached_fails_over(make, vendor):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()  # nothing listens there
    k = make(keys="KEYRAIL_ANTHROPIC_KEY", base_url=f"http://127.0.0.1:{dead}", fallback=vendor.url,
             extra_config=BREAKER)
    tok = k.setup_org()
    k.start()
    for stream in (False, True, False, True, False):
        st, h, data = call(k, tok, stream=stream, fake="in=900 out=20")
        assert st == 200, data
        row = k.wait_usage(h["x-keyrail-request-id"])
        assert (row["input"], row["output"], row["status"]) == (900, 20, "complete")
    assert len(vendor.requests()) == 5 and set(keys_seen(vendor)) == {sha256(PLATFORM_ANTHROPIC_KEY)}
    m = metrics(k.port)
    assert m[f'keyrail_upstream_circuit_open{{provider="anthropic",deployment="http://127.0.0.1:{dead}"}}'] == 1
    assert m["keyrail_upstream_retries_total"] == 2, "two failures opened the circuit: the rest went straight on"
    assert "circuit open" in k.log_text()


def test_an_overloaded_deployment_fails_over_and_its_circuit_half_opens(make, vendor, vendor_b):
    k = make(keys="KEYRAIL_ANTHROPIC_KEY", fallback=f"{vendor_b.url} KEYRAIL_ANTHROPIC_KEY_B",
             extra_config=BREAKER)
    tok = k.setup_org()
    k.start()
    fake = f"mode=status status=529 fail_auth={fail_auth(PLATFORM_ANTHROPIC_KEY)}"
    for _ in range(5):
        assert call(k, tok, fake=fake)[0] == 200
    assert len(vendor.requests()) == 2, "the primary: two 529s, then its circuit opened"
    assert len(vendor_b.requests()) == 5 and set(keys_seen(vendor_b)) == {sha256(KEY_B)}
    wait_until(lambda: len(k.usage()) == 5, timeout=10, what="a usage row per request")
    time.sleep(0.8)  # the cooldown: one probe may go to the primary, which answers again
    vendor.clear()
    for _ in range(4):
        assert call(k, tok)[0] == 200
    assert len(vendor.requests()) >= 1, "the probe went to the primary"
    m = metrics(k.port)
    assert m[f'keyrail_upstream_circuit_open{{provider="anthropic",deployment="{vendor.url}"}}'] == 0
    assert "circuit closed" in k.log_text()
    adm = k.cli("admin-token", "mint", "--scope", "operator").stdout.strip().split()[-1]
    st, _, data = http(k.admin_port, "GET", "/admin/v1/upstream/keys", headers={"authorization": f"Bearer {adm}"})
    items = [x for x in json.loads(data)["items"] if x["provider"] == "anthropic"]
    assert [(x["deployment"], x["fallback"], x["circuit"]) for x in items] == [
        (vendor.url, False, "closed"), (vendor_b.url, True, "closed")]
    out = k.cli("explain", "acme/boss").stdout
    assert f"fallback: {vendor_b.url}" in out, out


def test_fallback_order_and_syntax_are_checked(make, vendor):
    k = make(keys="KEYRAIL_ANTHROPIC_KEY", fallback="ftp://x.example KEYRAIL_ANTHROPIC_KEY")
    p = k.cli("serve", check=False)
    assert p.returncode == 1 and "line" in p.stderr
