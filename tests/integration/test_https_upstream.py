"""HTTPS to vendors (issue 15): the fake vendor serves TLS with certificates
from a CA made at test time (conftest.TestPKI); keyrail's registry names it
as https://localhost:PORT and upstream.ca_file names the test CA.

- with each upstream client (native, the default, and libcurl):
  calls over TLS work, streamed and not, on both protocols, and are metered
  exactly (usage rows == what the vendor records it served); the platform
  key reached the vendor over TLS only (every record says tls, with the SNI
  keyrail sent; the vendor saw no plaintext connection);
- a certificate keyrail cannot verify (another host name, a name the
  certificate lacks, expired, self-signed, signed by a CA keyrail does not
  trust, or the test CA when upstream.ca_file is unset: the system store)
  is a 502 in the protocol's shape naming the cause, with the request id;
  the vendor records no request and saw no plaintext;
- a CA file that cannot be used stops keyrail from starting;
- the fake vendor's HTTP machinery is unchanged over TLS (keep-alive,
  pipelining, HTTP/1.0 close-delimited streams, fault modes), and a broken
  stream through keyrail over TLS is metered as served;
- the launcher (`keyrail run --server https://…`) refuses a server it
  cannot verify, before its token leaves.
"""
import json
import os
import re
import socket
import ssl
import subprocess

import pytest

from conftest import (CANARIES, KEYRAIL, PLATFORM_ANTHROPIC_KEY, PLATFORM_OPENAI_KEY, FakeVendor, Keyrail,
                      TestPKI, call, check_log_clean, save_body, sha256, sse_events, wait_until)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(str(tmp_path_factory.mktemp("pki")))


class Setup:
    """A TLS fake vendor serving one certificate, and keyrail in front of it."""

    def __init__(self, tmp, pki, cert="good", url_host="localhost", ca_file=True, client="native"):
        os.makedirs(tmp, exist_ok=True)
        self.vendor = FakeVendor(tmp, tls=pki.pair(cert), url_host=url_host)
        extra = f"[upstream]\nclient = {client}\n" + (f"ca_file = {pki.ca}\n" if ca_file else "")
        self.kr = Keyrail(tmp, self.vendor, extra_config=extra)
        self.token = self.kr.setup_org()
        self.kr.start()

    def close(self):
        rc = self.kr.stop()
        self.vendor.stop()
        text = self.kr.log_text()
        check_log_clean(text)
        assert rc == 0, f"keyrail exited {rc}:\n{text[-3000:]}"


@pytest.fixture
def setups(tmp_path):
    made = []

    def make(pki, **kw):
        s = Setup(str(tmp_path / f"s{len(made)}"), pki, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def assert_client(s, client):
    """The keyrail under test runs the upstream client the test asked for."""
    want = "upstream client: native" if client == "native" else "upstream client: libcurl"
    assert want in s.kr.log_text(), s.kr.log_text()[-2000:]


def assert_tls_only(vendor, n_requests, sni="localhost"):
    """Every request the vendor recorded came over TLS with keyrail's SNI and
    the platform key; the vendor never saw a plaintext connection."""
    recs = vendor.requests()
    assert len(recs) == n_requests, recs
    for r in recs:
        assert r["tls"] is True and r["sni"] == sni, r
        key = PLATFORM_OPENAI_KEY if "chat/completions" in r["path"] else PLATFORM_ANTHROPIC_KEY
        assert r["auth_sha256"] == sha256(key), r
    assert vendor.stats()["tls"]["plaintext"] == 0
    return recs


# ---- calls over TLS, metered exactly ----

# Both upstream clients: native is the default, libcurl is chosen by
# upstream.client = curl and whenever an egress proxy variable is set, so
# each must verify and refuse alike.
CLIENTS = ("native", "curl")


@pytest.mark.parametrize("client", CLIENTS)
def test_calls_over_tls_are_served_and_metered_exactly(setups, pki, client):
    s = setups(pki, client=client)
    assert_client(s, client)
    got = []
    for proto in ("anthropic", "openai"):
        for stream in (False, True):
            st, h, data = call(s.kr, s.token, proto, stream, "in=1200 out=77 cache_read=5")
            assert st == 200, data
            if stream:
                evs = sse_events(data)
                if proto == "anthropic":
                    assert evs[-1]["event"] == "message_stop"
                else:
                    assert evs[-1]["data"] == "[DONE]"
            else:
                body = json.loads(data)
                assert (body.get("usage") or {}), body
            got.append(h["x-keyrail-request-id"])
    recs = assert_tls_only(s.vendor, 4)
    for rid, rec in zip(got, recs):
        row = s.kr.wait_usage(rid)
        assert row["status"] == "complete", row
        served = rec["served"]
        assert (row["input"], row["output"], row["cache_read"], row["cache_write"]) == \
            (served["input"], served["output"], served["cache_read"], served["cache_write"]), (row, rec)
        assert rec["completed"] is True and rec["planned"]["output"] == 77
    assert s.vendor.stats()["tls"]["handshake_failures"] == 0


# ---- certificates keyrail must refuse ----

TLS_FAILURES = {
    # case: (certificate, host in the registry URL, upstream.ca_file set, cause in the 502)
    "wrong_hostname": ("wrong_name", "localhost", True,
                       r"no alternative certificate subject name matches target host name 'localhost'"),
    "name_not_in_certificate": ("name_only", "127.0.0.1", True,
                                r"no alternative certificate subject name matches target host name '127\.0\.0\.1'"),
    "expired": ("expired", "localhost", True, r"SSL certificate problem: certificate has expired"),
    "self_signed": ("self_signed", "localhost", True, r"SSL certificate problem: self[- ]signed certificate"),
    "unknown_ca": ("unknown_ca", "localhost", True,
                   r"SSL certificate problem: unable to get local issuer certificate"),
    "system_store_does_not_know_the_test_ca": ("good", "localhost", False,
                                               r"SSL certificate problem: unable to get local issuer certificate"),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(TLS_FAILURES))
def test_unverifiable_certificate_is_502_naming_the_cause(setups, pki, case, client):
    cert, host, ca_file, cause = TLS_FAILURES[case]
    s = setups(pki, cert=cert, url_host=host, ca_file=ca_file, client=client)
    assert_client(s, client)
    for proto in ("anthropic", "openai"):
        for stream in (False, True):
            st, h, data = call(s.kr, s.token, proto, stream)
            assert st == 502, data
            assert h["content-type"] == "application/json"
            err = json.loads(data)
            rid = h["x-keyrail-request-id"]
            assert err["request_id"] == rid
            if proto == "openai":
                assert err["error"]["type"] == "api_error" and h["x-request-id"] == rid
                msg = err["error"]["message"]
            else:
                assert err["type"] == "error" and err["error"]["type"] == "api_error"
                assert h["request-id"] == rid
                msg = err["error"]["message"]
            assert "TLS certificate failed verification" in msg, msg
            assert re.search(cause, msg), msg
            assert "the request was not sent" in msg
            for c in CANARIES:
                assert c not in msg
    # nothing reached the vendor, in TLS or in plaintext, and nothing was metered
    assert s.vendor.requests() == []
    assert s.vendor.stats()["tls"]["plaintext"] == 0
    assert s.kr.usage() == []
    if cert in ("expired", "self_signed", "unknown_ca") or not ca_file:
        # the chain was refused inside the handshake: the vendor saw it fail
        wait_until(lambda: s.vendor.stats()["tls"]["handshake_failures"] >= 1, what="failed handshakes")
    # the operator's log names the cause too
    assert re.search(cause, s.kr.log_text()), s.kr.log_text()[-2000:]


def test_https_url_to_a_plaintext_vendor_never_falls_back(tmp_path, pki):
    """The registry says https:// but the vendor speaks plain HTTP: the
    handshake fails, 502 naming it, and the request is not sent in plaintext
    (the plain vendor, which would record it, records nothing)."""
    v = FakeVendor(str(tmp_path))  # plain HTTP
    url = v.url.replace("http://127.0.0.1", "https://localhost")

    class Named:
        pass
    named = Named()
    named.url = url  # the registry's base URL
    k = Keyrail(str(tmp_path), named, extra_config=f"[upstream]\nca_file = {pki.ca}\n")
    try:
        tok = k.setup_org()
        k.start()
        for proto in ("anthropic", "openai"):
            st, h, data = call(k, tok, proto, True)
            assert st == 502, data
            err = json.loads(data)
            msg = err["error"]["message"]
            assert err["request_id"] == h["x-keyrail-request-id"]
            assert msg.startswith("the TLS handshake with the upstream vendor failed ("), msg
            assert "the request was not sent" in msg
        assert v.requests() == [], "nothing in plaintext"
        assert k.usage() == []
    finally:
        rc = k.stop()
        v.stop()
        check_log_clean(k.log_text())
        assert rc == 0


def test_tls_handshake_that_never_completes_is_a_connect_timeout(tmp_path, pki):
    """A vendor that accepts TCP and never answers the ClientHello: the
    connect timeout (2 s in the tests) ends it with a 504; nothing metered."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # never accepted: the kernel completes TCP, nobody speaks TLS

    class Named:
        url = f"https://localhost:{silent.getsockname()[1]}"
    k = Keyrail(str(tmp_path), Named(), extra_config=f"[upstream]\nca_file = {pki.ca}\n")
    try:
        tok = k.setup_org()
        k.start()
        st, h, data = call(k, tok, "anthropic", False)
        assert st == 504, data
        assert json.loads(data)["request_id"] == h["x-keyrail-request-id"]
        assert k.usage() == []
    finally:
        rc = k.stop()
        silent.close()
        check_log_clean(k.log_text())
        assert rc == 0


def test_unusable_ca_file_refuses_to_start(tmp_path, pki):
    v = FakeVendor(str(tmp_path), tls=pki.pair("good"))
    try:
        k = Keyrail(str(tmp_path), v)
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        for path, why in ((str(tmp_path / "missing.pem"), "cannot open"), (str(junk), "holds no PEM certificate")):
            k.extra_config = f"[upstream]\nca_file = {path}\n"
            k.write_config()
            p = subprocess.run([KEYRAIL, "serve"], env=k.env(), capture_output=True, text=True, timeout=60)
            assert p.returncode != 0
            text = k.log_text() + p.stderr
            assert "refusing to start: upstream.ca_file: " in text and why in text, text
            check_log_clean(text)
            open(k.log, "w").close()
        assert v.requests() == []
    finally:
        v.stop()


# ---- the fake vendor's own machinery over TLS ----

def tls_conn(pki, vendor):
    ctx = ssl.create_default_context(cafile=pki.ca)  # verifies, like keyrail does
    raw = socket.create_connection(("127.0.0.1", vendor.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def read_until_closed(s):
    """Reads to the end: "clean" (a TLS close_notify, or a TCP FIN on a plain
    socket) or "cut" (reset, or the TCP connection ended without a
    close_notify)."""
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return got, "cut"
        if not chunk:
            return got, "clean"
        got += chunk


def req(path, body, extra=""):
    b = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            f"{extra}content-length: {len(b)}\r\n\r\n").encode() + b


def test_fake_vendor_keepalive_pipelining_streams_and_faults_over_tls(tmp_path, pki):
    from conftest import parse_responses
    v = FakeVendor(str(tmp_path), tls=pki.pair("good"))
    try:
        msg = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": []}
        # pipelining and keep-alive: three requests in one TLS write, answered in order on one connection
        s = tls_conn(pki, v)
        s.sendall(req("/v1/messages", msg) + req("/v1/messages", dict(msg, stream=True)) +
                  req("/v1/chat/completions", {"model": "gpt-4o"}, "connection: close\r\n"))
        got, how = read_until_closed(s)
        s.close()
        save_body("raw tls", None, got)
        assert how == "clean"
        rs = parse_responses(got)
        assert [r[0] for r in rs] == [200, 200, 200]
        assert json.loads(rs[0][2])["type"] == "message"
        assert sse_events(rs[1][2])[-1]["event"] == "message_stop"
        assert json.loads(rs[2][2])["object"] == "chat.completion"
        # HTTP/1.0: a close-delimited stream, ended by a close_notify (a clean TLS end)
        s = tls_conn(pki, v)
        b = json.dumps(dict(msg, stream=True)).encode()
        s.sendall(b"POST /v1/messages HTTP/1.0\r\ncontent-length: %d\r\n\r\n" % len(b) + b)
        got, how = read_until_closed(s)
        s.close()
        assert how == "clean" and got.endswith(b'data: {"type":"message_stop"}\n\n'), got[-200:]
        # a fault mode: reset after 2 events
        s = tls_conn(pki, v)
        s.sendall(req("/v1/messages", dict(msg, stream=True), "x-fake: mode=reset_mid after=2\r\n"))
        got, how = read_until_closed(s)
        s.close()
        assert how == "cut" and b"message_start" in got and b"message_stop" not in got
        def settled():
            r = v.requests()
            return r if len(r) == 5 and not any(x["pending"] for x in r) else None
        recs = wait_until(settled, what="five finished records")
        assert [r["tls"] for r in recs] == [True] * 5 and {r["sni"] for r in recs} == {"localhost"}
        assert [r["completed"] for r in recs] == [True, True, True, True, False]
        st = v.stats()
        assert st["tls"]["plaintext"] == 0 and st["tls"]["handshake_failures"] == 0
        # a plaintext request on the TLS port is never answered nor recorded, only counted
        s = socket.create_connection(("127.0.0.1", v.port), timeout=10)
        s.sendall(req("/v1/messages", msg))
        got, how = read_until_closed(s)
        s.close()
        assert got == b""
        wait_until(lambda: v.stats()["tls"]["plaintext"] == 1, what="plaintext counted")
        assert len(v.requests()) == 5
        # a client that does not trust the certificate: a failed handshake, counted, no record
        s = socket.create_connection(("127.0.0.1", v.port), timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(s, server_hostname="localhost")
        s.close()
        wait_until(lambda: v.stats()["tls"]["handshake_failures"] == 1, what="failed handshake counted")
        assert len(v.requests()) == 5
    finally:
        v.stop()


def test_stream_broken_over_tls_is_metered_as_served(setups, pki):
    s = setups(pki)
    st, h, data = call(s.kr, s.token, "anthropic", True, "mode=reset_mid after=4 in=300 out=40")
    assert st == 200
    evs = sse_events(data)
    assert evs[-1]["event"] == "error" and "broke off" in evs[-1]["data"]
    row = s.kr.wait_usage(h["x-keyrail-request-id"])
    rec = wait_until(lambda: [r for r in s.vendor.requests() if not r["pending"]], what="record")[0]
    assert row["status"] == "partial" and rec["completed"] is False and rec["tls"] is True
    assert (row["input"], row["output"]) == (rec["served"]["input"], rec["served"]["output"])
    # and the next call over TLS works (a new connection after the reset)
    st, _, _ = call(s.kr, s.token, "openai", True)
    assert st == 200
    assert_tls_only(s.vendor, 2)


# ---- the launcher's connection to the keyrail server ----

def test_launcher_refuses_a_server_it_cannot_verify(tmp_path, pki):
    """`keyrail run --server https://…` verifies the server against the
    system CA store; a certificate it cannot verify stops it before the
    workspace token is sent, and the agent is not started."""
    v = FakeVendor(str(tmp_path), tls=pki.pair("good"))
    try:
        marker = tmp_path / "agent-ran"
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        p = subprocess.run([KEYRAIL, "run", "--server", f"https://localhost:{v.port}", "--token",
                            "krws_" + "a" * 43, "--", "touch", str(marker)],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode != 0
        assert not marker.exists(), "the agent must not start"
        assert "cannot reach the keyrail server" in p.stderr, p.stderr
        assert re.search(r"unable to get local issuer certificate", p.stderr), p.stderr
        assert "krws_" not in p.stderr
        assert v.requests() == [], "the token never left"
        wait_until(lambda: v.stats()["tls"]["handshake_failures"] == 1, what="refused handshake")
    finally:
        v.stop()
