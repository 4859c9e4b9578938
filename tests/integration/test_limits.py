"""Credits, prices, allow-lists and rate limits at the proxy (issue 5)."""
import json
import threading
import time

import pytest

from conftest import CHAT, MSG, call, wait_until


def body_json(data):
    return json.loads(data)


def err_type(proto, data):
    j = body_json(data)
    return j["error"]["type"]


def away_from_minute_end():
    """Rate windows are UTC minutes: keep a test inside one."""
    wait_until(lambda: time.time() % 60 < 50, timeout=15, what="the start of a minute")


@pytest.mark.parametrize("proto", ["anthropic", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_402_after_a_request_crosses_the_cap(kr, vendor, proto, stream):
    tok = kr.setup_org(credits="0.000500")  # 500 micros; one call costs far more
    kr.start()
    st, h, data = call(kr, tok, proto, stream)
    assert st == 200, data
    row = kr.wait_usage(h["x-keyrail-request-id"])
    assert row["status"] == "complete" and row["cost_micros"] > 500, "debited in full"
    st, h, data = call(kr, tok, proto, stream)
    assert st == 402, data
    assert err_type(proto, data) == "billing_error"
    if proto == "openai":
        assert body_json(data)["error"]["code"] == "insufficient_quota"
    (bal,), = kr.db_rows("select balance_micros from credits")
    assert bal == 500 - row["cost_micros"]
    assert len(vendor.requests()) == 1, "the refused request never reached the vendor"
    # a top-up lets it through again (within the token cache lifetime)
    kr.cli("credits", "add", "acme", "1")
    wait_until(lambda: call(kr, tok, proto, stream)[0] == 200, timeout=5, what="top-up seen")


def test_overage_cap_extends_admission(kr, vendor):
    tok = kr.setup_org(credits="")
    kr.start()
    assert call(kr, tok, "anthropic")[0] == 402, "no credits, no cap: refused"
    kr.cli("credits", "cap", "acme", "0.01")
    wait_until(lambda: call(kr, tok, "anthropic")[0] == 200, timeout=5, what="cap seen")
    out = kr.cli("credits", "show", "acme").stdout
    assert "balance -0.0" in out and "overage cap 0.010000" in out, out


@pytest.mark.parametrize("proto,model", [("anthropic", "claude-unpriced"), ("openai", "gpt-unpriced")])
def test_422_for_an_unpriced_platform_model(kr, vendor, proto, model):
    tok = kr.setup_org()
    kr.start()
    base = MSG if proto == "anthropic" else CHAT
    st, _, data = call(kr, tok, proto, body=dict(base, model=model))
    assert st == 422 and b"no price" in data
    assert vendor.requests() == []


@pytest.mark.parametrize("proto", ["anthropic", "openai"])
def test_403_outside_the_allow_list_even_by_alias(kr, vendor, proto):
    tok = kr.setup_org()
    if proto == "anthropic":
        kr.cli("limits", "set", "--org", "acme", "--models", "claude-haiku-4-5,sonnet")
        kr.cli("limits", "set", "--ws", "acme/boss", "--models", "haiku")
        ok, alias_ok, bad = "claude-haiku-4-5", "haiku", "claude-sonnet-4-5"
    else:
        kr.cli("limits", "set", "--ws", "acme/boss", "--models", "gpt-4o-mini")
        ok, alias_ok, bad = "gpt-4o-mini", "gpt-4o-mini", "fouro"
    kr.start()
    base = MSG if proto == "anthropic" else CHAT
    assert call(kr, tok, proto, body=dict(base, model=ok))[0] == 200
    assert call(kr, tok, proto, body=dict(base, model=alias_ok))[0] == 200
    st, _, data = call(kr, tok, proto, body=dict(base, model=bad))
    assert st == 403 and b"allow-list" in data, "the org allows it, the workspace does not"
    st, _, _ = call(kr, tok, proto, stream=True, body=dict(base, model=bad))
    assert st == 403
    assert len(vendor.requests()) == 2


@pytest.mark.parametrize("proto", ["anthropic", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_429_requests_per_minute_with_retry_after(kr, vendor, proto, stream):
    tok = kr.setup_org()
    kr.cli("limits", "set", "--ws", "acme/boss", "--rpm", "2")
    kr.start()
    away_from_minute_end()
    assert call(kr, tok, proto, stream)[0] == 200
    assert call(kr, tok, proto, stream)[0] == 200
    st, h, data = call(kr, tok, proto, stream)
    now = time.time()
    assert st == 429, data
    assert err_type(proto, data) == "rate_limit_error"
    ra = int(h["retry-after"])
    assert abs(ra - (60 - int(now) % 60)) <= 1, (ra, now)
    assert len(vendor.requests()) == 2


def test_429_tokens_per_minute_settles_to_real_usage(kr, vendor):
    tok = kr.setup_org()
    kr.cli("limits", "set", "--org", "acme", "--tpm", "10000")
    kr.start()
    away_from_minute_end()
    big = dict(MSG, max_tokens=6000)
    # admitted on the estimate (~6000), settled to the real use (in=1000 out=100)
    assert call(kr, tok, "anthropic", body=big)[0] == 200
    assert call(kr, tok, "anthropic", body=big)[0] == 200, "the first estimate was settled down"
    # now ~2200 used: a 9000-token estimate does not fit
    st, h, _ = call(kr, tok, "anthropic", body=dict(MSG, max_tokens=9000))
    assert st == 429 and int(h["retry-after"]) >= 1


def test_rate_state_is_in_the_store(kr, vendor):
    tok = kr.setup_org()
    kr.cli("limits", "set", "--ws", "acme/boss", "--rpm", "100")
    kr.start()
    away_from_minute_end()
    for _ in range(3):
        assert call(kr, tok, "anthropic")[0] == 200
    wait_until(lambda: kr.db_rows("select requests from rate_windows where scope='workspace'") == [(3,)],
               timeout=5, what="the window in the store")


def test_concurrent_requests_overdraw_at_most_what_is_in_flight(kr, vendor):
    tok = kr.setup_org(credits="0.001000")  # 1000 micros; each call costs 4500
    kr.start()
    n = 12
    results = []

    def one():
        results.append(call(kr, tok, "anthropic", stream=True, fake="in=1000 out=100 mode=drip interval_ms=30"))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r[0] == 200]
    assert len(ok) >= 1 and all(r[0] in (200, 402) for r in results)
    wait_until(lambda: len(kr.usage()) == len(ok), what="all rows")
    rows = kr.usage()
    (bal,), = kr.db_rows("select balance_micros from credits")
    spent = sum(r["cost_micros"] for r in rows)
    assert bal == 1000 - spent
    # documented bound: only requests admitted while the balance was positive
    assert bal >= 1000 - n * 4500 and bal < 0
    assert call(kr, tok, "anthropic")[0] == 402


def test_ledger_sums_equal_usage_rows_and_reports(kr, vendor):
    tok = kr.setup_org(credits="5")
    kr.cli("ws", "create", "acme", "second", "--model", "claude-haiku-4-5")
    tok2 = kr.mint("acme/second")
    kr.start()
    for i in range(4):
        call(kr, tok, "anthropic", stream=bool(i % 2), fake=f"in={100 + i} out={10 + i}")
        call(kr, tok2, "anthropic", body=dict(MSG, model="claude-haiku-4-5"), fake=f"in={200 + i} out=5")
        call(kr, tok, "openai", stream=bool(i % 2), fake=f"in={300 + i} out=7")
    wait_until(lambda: len(kr.usage()) == 12, what="12 rows")
    rows = kr.usage()
    ledger = kr.db_rows("select sum(delta_micros) from credit_ledger where reason = 'usage'")[0][0]
    assert ledger == -sum(r["cost_micros"] for r in rows)
    (bal,), = kr.db_rows("select balance_micros from credits")
    assert bal == 5_000_000 + ledger
    daily = kr.db_rows("select sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_micros) from usage_daily")[0]
    assert daily == (12, sum(r["input"] for r in rows), sum(r["output"] for r in rows),
                     sum(r["cost_micros"] for r in rows))
    csv = kr.cli("usage", "--by", "workspace,model", "--format", "csv").stdout.strip().splitlines()
    assert csv[0] == "workspace,model,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost"
    total_in = sum(int(l.split(",")[3]) for l in csv[1:])
    assert total_in == sum(r["input"] for r in rows) and len(csv) == 4
    # orgs and workspaces by the names --org / --ws take, not numeric ids, in name order
    assert [l.split(",")[:2] for l in csv[1:]] == [["acme/boss", "claude-sonnet-4-5"], ["acme/boss", "gpt-4o"],
                                                  ["acme/second", "claude-haiku-4-5"]], csv
    table = kr.cli("usage", "--org", "acme").stdout
    assert "claude-haiku-4-5" in table and "gpt-4o" in table
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["org", "workspace"]
    assert all(l.split()[:2] in (["acme", "acme/boss"], ["acme", "acme/second"]) for l in lines[1:]), table
    by_org = kr.cli("usage", "--by", "org", "--format", "csv", "--ws", "acme/second").stdout.splitlines()
    assert by_org[1].startswith("acme,4,"), by_org
    hist = kr.cli("credits", "history", "acme", "--limit", "50").stdout.splitlines()
    assert len(hist) == 1 + 12 + 1 and "topup" in hist[-1]
