"""Budget alerts (issue 24, part 2): thresholds on spend per period and on
an org's balance; each crossing POSTed once to a webhook, HMAC-signed with
the alert's own secret, retried with backoff, in the delivery log of the
admin API; exactly once across several instances on PostgreSQL."""
import hashlib
import hmac
import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Keyrail, call, check_log_clean, free_port, http, wait_until

FAST = "[alerts]\ninterval_ms = 100\nallow_private_urls = 1\n"


class Hook:
    """A webhook receiver: keeps (headers, body) of every POST; answers the
    statuses it is told, in order, then 200."""

    def __init__(self, statuses=()):
        self.got, self.statuses, self.lock = [], list(statuses), threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                    st = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(st)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def bodies(self):
        with self.lock:
            return [json.loads(b) for _, b, _ in self.got]

    def close(self):
        self.srv.shutdown()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def ka(tmp_path, vendor):
    k = Keyrail(str(tmp_path), vendor, extra_config=FAST)
    yield k
    rc = k.stop()
    check_log_clean(k.log_text())
    assert rc == 0, k.log_text()[-3000:]


def create(k, *args):
    out = k.cli("alert", *args).stdout
    assert "shown once: whsec_" in out, out
    return int(out.split()[1]), out.rsplit(": ", 1)[1].strip()


def verify(secret, headers, body):
    sig = dict(p.split("=", 1) for p in headers["x-keyrail-signature"].split(","))
    want = hmac.new(secret.encode(), f"{sig['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sig["v1"], want), "the signature does not verify"
    assert abs(int(sig["t"]) - time.time()) < 60


def test_budget_percents_each_cross_once_signed(ka, vendor, hook):
    tok = ka.setup_org(credits="100")
    # one request costs 1000 input x 3 $/M + 100 output x 15 $/M = 0.0045
    aid, secret = create(ka, "budget", "acme", "--budget", "0.01", "--percents", "40,80,100",
                         "--period", "day", "--url", hook.url)
    ka.start()
    assert call(ka, tok)[0] == 200  # 45 %: crosses 40
    wait_until(lambda: len(hook.got) == 1, timeout=10, what="the 40 % webhook")
    assert call(ka, tok)[0] == 200  # 90 %: crosses 80
    wait_until(lambda: len(hook.got) == 2, timeout=10, what="the 80 % webhook")
    assert call(ka, tok)[0] == 200  # 135 %: crosses 100
    wait_until(lambda: len(hook.got) == 3, timeout=10, what="the 100 % webhook")
    assert call(ka, tok)[0] == 200  # nothing new to cross
    time.sleep(1.0)
    assert len(hook.got) == 3, "each crossing once"
    b = hook.bodies()
    assert [x["percent"] for x in b] == [40, 80, 100]
    assert all(x["type"] == "budget.crossed" and x["alert_id"] == aid and x["org"] == "acme"
               and x["period"] == "day" and x["budget"] == "0.010000" for x in b)
    assert b[0]["spend"] == "0.004500" and b[2]["spend"] == "0.013500"
    for headers, body, _ in hook.got:
        verify(secret, headers, body)
        assert headers["x-keyrail-event"] == "budget.crossed"
        assert headers["content-type"] == "application/json"
    # the delivery log: three delivered, each on its first attempt
    out = ka.cli("alert", "deliveries", "acme").stdout
    assert out.count("delivered") == 3, out
    assert secret not in ka.log_text()


def test_balance_below_fires_and_rearms_after_a_top_up(ka, vendor, hook):
    tok = ka.setup_org(credits="0.007")
    create(ka, "balance", "acme", "--threshold", "0.005", "--url", hook.url)
    ka.start()
    assert call(ka, tok)[0] == 200  # 0.007 - 0.0045 = 0.0025 < 0.005
    wait_until(lambda: len(hook.got) == 1, timeout=10, what="the balance webhook")
    b = hook.bodies()[0]
    assert b["type"] == "balance.below" and b["threshold"] == "0.005000" and b["balance"] == "0.002500"
    assert hook.got[0][0]["x-keyrail-event"] == "balance.below"
    time.sleep(0.5)
    assert len(hook.got) == 1, "still below: no second notice"
    ka.cli("credits", "add", "acme", "1")  # re-armed
    time.sleep(0.5)
    ka.cli("credits", "add", "acme", "-0.999")  # below again: a second crossing
    wait_until(lambda: len(hook.got) == 2, timeout=10, what="the second crossing")
    assert hook.bodies()[1]["crossing"] == 2


def test_a_failing_endpoint_is_retried_with_backoff_and_logged(tmp_path, vendor):
    hook = Hook(statuses=[500, 503])
    k = Keyrail(str(tmp_path), vendor, extra_config=FAST)
    try:
        tok = k.setup_org(credits="100")
        create(k, "budget", "acme", "--budget", "0.001", "--url", hook.url)
        k.start()
        assert call(k, tok)[0] == 200
        wait_until(lambda: len(hook.got) == 3, timeout=20, what="two retries")
        t = [g[2] for g in hook.got]
        assert t[1] - t[0] >= 0.9 and t[2] - t[1] >= 1.9, f"backoff 1 s then 2 s: {t}"
        assert hook.got[0][1] == hook.got[1][1] == hook.got[2][1], "the same bytes each time"
        st, _, data = http(k.port, "GET", "/metrics")
        admin = k.cli("admin-token", "mint", "--scope", "operator").stdout.strip().split()[-1]
        st, _, data = http(k.admin_port, "GET", "/admin/v1/orgs/acme/alert-deliveries",
                           headers={"authorization": f"Bearer {admin}"})
        assert st == 200, data
        d = json.loads(data)["items"][0]
        assert d["status"] == "delivered" and d["attempts"] == 3 and d["last_status"] == 200
    finally:
        assert k.stop() == 0
        hook.close()
    assert "the endpoint answered 500" in k.log_text()


def test_gives_up_after_max_attempts(tmp_path, vendor):
    hook = Hook(statuses=[500] * 10)
    k = Keyrail(str(tmp_path), vendor, extra_config=FAST + "max_attempts = 2\n")
    try:
        tok = k.setup_org(credits="100")
        create(k, "budget", "acme", "--budget", "0.001", "--url", hook.url)
        k.start()
        assert call(k, tok)[0] == 200
        wait_until(lambda: "failed" in k.cli("alert", "deliveries", "acme").stdout, timeout=20,
                   what="the delivery given up")
        time.sleep(1.5)
        assert len(hook.got) == 2
    finally:
        assert k.stop() == 0
        hook.close()


def test_private_addresses_are_refused_unless_allowed(tmp_path, vendor, hook):
    k = Keyrail(str(tmp_path), vendor, extra_config="[alerts]\ninterval_ms = 100\n")
    try:
        tok = k.setup_org(credits="100")
        create(k, "budget", "acme", "--budget", "0.001", "--url", hook.url)
        k.start()
        assert call(k, tok)[0] == 200
        wait_until(lambda: "private" in k.cli("alert", "deliveries", "acme").stdout, timeout=10,
                   what="the refusal in the delivery log")
        assert hook.got == [], "a webhook reached a loopback address"
    finally:
        assert k.stop() == 0


def test_admin_api_org_admin_scope_and_validation(ka, vendor, hook):
    ka.setup_org()
    ka.cli("org", "create", "other")
    ka.start()
    adm = ka.cli("admin-token", "mint", "--scope", "org", "--org", "acme").stdout.strip().split()[-1]
    h = {"authorization": f"Bearer {adm}"}
    st, _, data = http(ka.admin_port, "POST", "/admin/v1/orgs/acme/alerts",
                       {"kind": "budget", "budget": "50", "percents": "50,100", "url": hook.url}, h)
    assert st == 201, data
    j = json.loads(data)
    assert j["secret"].startswith("whsec_") and j["percents"] == [50, 100] and j["period"] == "month"
    st, _, data = http(ka.admin_port, "GET", "/admin/v1/orgs/acme/alerts", headers=h)
    assert st == 200 and "secret" not in json.loads(data)["items"][0], "the secret is shown once"
    st, _, _ = http(ka.admin_port, "GET", "/admin/v1/orgs/other/alerts", headers=h)
    assert st == 403
    for bad in ({"kind": "budget", "budget": "50", "percents": "80,50", "url": hook.url},
                {"kind": "budget", "budget": "0", "url": hook.url},
                {"kind": "budget", "budget": "5", "url": "ftp://x/y"},
                {"kind": "balance", "threshold": "5", "percents": "50", "url": hook.url},
                {"kind": "weekly", "budget": "5", "url": hook.url}):
        st, _, data = http(ka.admin_port, "POST", "/admin/v1/orgs/acme/alerts", bad, h)
        assert st == 400, (bad, data)
    st, _, _ = http(ka.admin_port, "DELETE", f"/admin/v1/orgs/acme/alerts/{j['id']}", headers=h)
    assert st == 200
    audit = ka.cli("audit").stdout
    assert "alert.create" in audit and "alert.delete" in audit and j["secret"] not in audit


@pytest.fixture
def pg():
    from test_multi import PgStore
    st = PgStore()
    yield st.url
    st.drop()


def test_exactly_once_across_instances_on_postgres(tmp_path, vendor, pg, hook):
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    a = Keyrail(str(tmp_path / "a"), vendor, store_url=pg, extra_config=FAST, name="kr-a")
    b = Keyrail(str(tmp_path / "b"), vendor, store_url=pg, extra_config=FAST, name="kr-b")
    shutil.copy(a.key_file, b.key_file)  # one master key for both
    try:
        tok = a.setup_org(credits="100")
        create(a, "budget", "acme", "--budget", "0.002", "--percents", "50,100", "--period", "day",
               "--url", hook.url)
        create(a, "balance", "acme", "--threshold", "99.99", "--url", hook.url)
        a.start()
        b.start()
        for i in range(6):
            assert call(a if i % 2 else b, tok)[0] == 200
        wait_until(lambda: len(hook.got) >= 3, timeout=15, what="three webhooks")
        time.sleep(1.5)  # both instances kept checking: nothing more may come
        kinds = sorted((x["type"], x.get("percent", x.get("crossing"))) for x in hook.bodies())
        assert kinds == [("balance.below", 1), ("budget.crossed", 50), ("budget.crossed", 100)], kinds
    finally:
        assert a.stop() == 0 and b.stop() == 0
