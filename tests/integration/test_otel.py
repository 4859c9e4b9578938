"""OpenTelemetry traces (issue 24, part 3): one span per proxied request,
exported over OTLP/HTTP (JSON) to a collector the test starts, with the GenAI
semantic conventions and keyrail's ids; W3C traceparent honoured and passed
upstream as keyrail's own; never a credential or prompt text in a span."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (CANARIES, CHAT, MSG, Keyrail, call, check_log_clean, free_port, http, metrics,
                      wait_until)

PROMPT = "PROMPT-CANARY-the-secret-plan-7d1f"


class Collector:
    """A local OTLP/HTTP receiver: keeps every export request's JSON body."""

    def __init__(self, status=200):
        self.bodies, self.raw, self.status = [], [], status
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                data = self.rfile.read(n)
                outer.raw.append((self.path, self.headers.get("content-type"), data))
                if self.path == "/v1/traces" and outer.status == 200:
                    outer.bodies.append(json.loads(data))
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def spans(self):
        out = []
        for b in self.bodies:
            for rs in b["resourceSpans"]:
                svc = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        s = dict(s)
                        s["attrs"] = {a["key"]: next(iter(a["value"].values())) for a in s["attributes"]}
                        s["service"] = svc["service.name"]["stringValue"]
                        out.append(s)
        return out

    def close(self):
        self.srv.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def traced(tmp_path, vendor, endpoint):
    return Keyrail(str(tmp_path), vendor, extra_config=f"[otel]\ntraces_endpoint = {endpoint}\n"
                                                       "batch_ms = 50\nservice_name = kr-test\n")


@pytest.fixture
def ktr(tmp_path, vendor, collector):
    k = traced(tmp_path, vendor, f"http://127.0.0.1:{collector.port}/v1/traces")
    yield k
    rc = k.stop()
    check_log_clean(k.log_text())
    assert rc == 0, k.log_text()[-3000:]


def span_for(collector, rid):
    return wait_until(lambda: next((s for s in collector.spans() if s["attrs"].get("keyrail.request_id") == rid),
                                   None), timeout=10, what=f"the span of {rid}")


def test_one_span_per_proxied_request_with_the_genai_attributes(ktr, vendor, collector):
    tok = ktr.setup_org()
    ktr.start()
    t0 = time.time_ns()
    rids = []
    for proto, stream in (("anthropic", False), ("anthropic", True), ("openai", False), ("openai", True)):
        st, h, _ = call(ktr, tok, proto, stream, fake="in=1234 out=56")
        assert st == 200
        rids.append((proto, stream, h["x-keyrail-request-id"]))
    st, h, _ = http(ktr.port, "POST", "/anthropic/v1/messages/count_tokens", MSG, {"x-api-key": tok})
    assert st == 200
    count_rid = h["x-keyrail-request-id"]
    (org_id,), = ktr.db_rows("select id from orgs")
    (ws_id,), = ktr.db_rows("select id from workspaces")
    for proto, stream, rid in rids:
        s = span_for(collector, rid)
        a = s["attrs"]
        assert s["service"] == "kr-test" and s["kind"] == 3
        model = "claude-sonnet-4-5" if proto == "anthropic" else "gpt-4o"
        assert s["name"] == f"chat {model}"
        assert a["gen_ai.system"] == proto and a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == model
        row = ktr.wait_usage(rid)
        assert int(a["gen_ai.usage.input_tokens"]) == row["input"] == 1234
        assert int(a["gen_ai.usage.output_tokens"]) == row["output"] == 56
        assert int(a["keyrail.cost_micros"]) == row["cost_micros"]
        assert int(a["keyrail.org_id"]) == org_id and int(a["keyrail.workspace_id"]) == ws_id
        assert a["keyrail.route"] == "platform" and a["keyrail.stream"] is stream
        assert int(a["http.response.status_code"]) == 200 and "error.type" not in a
        assert re.fullmatch(r"[0-9a-f]{32}", s["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", s["spanId"])
        assert "parentSpanId" not in s, "no traceparent came in: a new trace"
        start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
        assert t0 - 10**9 < start <= end < time.time_ns() + 10**9
    c = span_for(collector, count_rid)
    assert c["attrs"]["gen_ai.operation.name"] == "count_tokens"
    # every span's vendor request carried keyrail's traceparent: the span's trace and id
    sent = {r["traceparent"] for r in vendor.requests()}
    for s in collector.spans():
        assert f"00-{s['traceId']}-{s['spanId']}-01" in sent
    assert len(collector.spans()) == 5, "one span per proxied request"
    assert collector.raw[0][1] == "application/json"
    m = metrics(ktr.port)
    assert m['keyrail_otel_spans_total{result="exported"}'] == 5
    assert m['keyrail_otel_spans_total{result="dropped"}'] == 0


def test_the_clients_traceparent_is_honoured_and_replaced_upstream(ktr, vendor, collector):
    tok = ktr.setup_org()
    ktr.start()
    tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    st, h, _ = http(ktr.port, "POST", "/anthropic/v1/messages", MSG,
                    {"x-api-key": tok, "traceparent": f"00-{tid}-{pid}-01", "tracestate": "vendor=abc"})
    assert st == 200
    s = span_for(collector, h["x-keyrail-request-id"])
    assert s["traceId"] == tid and s["parentSpanId"] == pid and s["spanId"] != pid
    rec = vendor.requests()[-1]
    assert rec["traceparent"] == f"00-{tid}-{s['spanId']}-01", "the vendor sees keyrail's span as parent"
    assert "tracestate" in rec["headers"], "tracestate travels with a valid traceparent"
    # invalid ones start a new trace and are never forwarded
    for bad in (f"00-{tid.upper()}-{pid}-01", f"00-{'0' * 32}-{pid}-01", f"00-{tid}-{'0' * 16}-01",
                f"00-{tid}-{pid}-01-extra", f"ff-{tid}-{pid}-01", "garbage", f"00-{tid}-{pid}"):
        vendor.clear()
        st, h, _ = http(ktr.port, "POST", "/anthropic/v1/messages", MSG,
                        {"x-api-key": tok, "traceparent": bad, "tracestate": "vendor=abc"})
        assert st == 200
        s = span_for(collector, h["x-keyrail-request-id"])
        assert s["traceId"] != tid and "parentSpanId" not in s, bad
        rec = vendor.requests()[-1]
        assert rec["traceparent"] == f"00-{s['traceId']}-{s['spanId']}-01", bad
        assert "tracestate" not in rec["headers"], "no tracestate without a valid traceparent"


def test_spans_hold_no_credential_and_no_prompt(ktr, vendor, collector):
    tok = ktr.setup_org()
    ktr.start()
    body = dict(MSG, messages=[{"role": "user", "content": PROMPT}])
    assert call(ktr, tok, "anthropic", body=body)[0] == 200
    assert call(ktr, tok, "openai", body=dict(CHAT, messages=[{"role": "user", "content": PROMPT}]))[0] == 200
    # refused before forwarding: no span (nothing was proxied)
    st, _, _ = http(ktr.port, "POST", "/anthropic/v1/messages", body, {"x-api-key": "krws_" + "x" * 43})
    assert st == 401
    wait_until(lambda: len(collector.spans()) == 2, timeout=10, what="two spans")
    time.sleep(0.2)
    assert len(collector.spans()) == 2
    raw = b"".join(r[2] for r in collector.raw)
    for secret in [tok, PROMPT, "krws_"] + CANARIES:
        assert secret.encode() not in raw, secret[:12]


def test_an_upstream_failure_is_an_error_span(ktr, vendor, collector):
    tok = ktr.setup_org()
    ktr.start()
    st, h, _ = call(ktr, tok, "anthropic", fake="mode=status status=529")
    assert st == 529
    s = span_for(collector, h["x-keyrail-request-id"])
    assert int(s["attrs"]["http.response.status_code"]) == 529
    assert s["attrs"]["error.type"] == "upstream_status" and s["status"]["code"] == 2


def test_a_collector_that_is_down_costs_nothing_but_spans(tmp_path, vendor):
    dead = free_port()
    k = traced(tmp_path, vendor, f"http://127.0.0.1:{dead}/v1/traces")
    try:
        tok = k.setup_org()
        k.start()
        for _ in range(5):
            assert call(k, tok, "anthropic")[0] == 200
        wait_until(lambda: metrics(k.port)['keyrail_otel_spans_total{result="dropped"}'] == 5, timeout=10,
                   what="the spans counted as dropped")
        assert metrics(k.port)['keyrail_otel_spans_total{result="exported"}'] == 0
    finally:
        assert k.stop() == 0
    text = k.log_text()
    check_log_clean(text)
    assert text.count("export to the trace collector failed") == 1, "one warning, not one per batch"


def test_off_by_default_the_clients_traceparent_passes_unchanged(kr, vendor):
    tok = kr.setup_org()
    kr.start()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    st, _, _ = http(kr.port, "POST", "/anthropic/v1/messages", MSG, {"x-api-key": tok, "traceparent": tp})
    assert st == 200
    assert vendor.requests()[-1]["traceparent"] == tp
    assert not any(k.startswith("keyrail_otel") for k in metrics(kr.port))


def test_a_bad_endpoint_refuses_to_start(tmp_path, vendor):
    k = traced(tmp_path, vendor, "ftp://collector/v1/traces")
    p = k.cli("serve", check=False)
    assert p.returncode == 1 and "otel.traces_endpoint" in p.stderr
