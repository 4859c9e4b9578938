"""Request smuggling and protocol abuse against a real keyrail (issue 7).

Every malformed request below carries a valid workspace token and a valid
JSON body, so that a parser which let it through would forward it: each must
get its error status (400, or 413/431/501/505 where that is the right code),
the connection must be closed by keyrail, and nothing may reach the vendor.
Defence: src/proxy/http1.c (the strict parser) and src/proxy/server.c
(respond_parse_error + lingering close); header forwarding rules in
src/proxy/routes.c (header_forwarded).

One keyrail + fake vendor serve the whole module (the cases are many and
each is quick); the log is checked after every test and the exit status at
the end, as the conftest fixtures do.
"""
import json

import pytest

from conftest import FakeVendor, Keyrail, check_log_clean, http, parse_responses, raw_exchange

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(MSG).encode()
PATH = "/anthropic/v1/messages"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("smuggling"))
    vendor = FakeVendor(tmp)
    # long client timeouts, so that "closed by keyrail" below can only mean the
    # close after the error reply, never a timer expiring
    kr = Keyrail(tmp, vendor, extra_config="header_timeout_ms = 15000\nidle_timeout_ms = 20000\n")
    tok = kr.setup_org()
    kr.start()
    yield kr, vendor, tok
    rc = kr.stop()
    vendor.stop()
    text = kr.log_text()
    check_log_clean(text)
    assert rc == 0, f"keyrail exited {rc}:\n{text[-3000:]}"


@pytest.fixture
def ctx(env):
    kr, vendor, tok = env
    vendor.clear()
    log_at = len(kr.log_text())
    yield kr, vendor, tok
    assert kr.proc.poll() is None, "keyrail died"
    check_log_clean(kr.log_text()[log_at:])


def head(tok, *lines, version="HTTP/1.1", method="POST", target=PATH):
    h = f"{method} {target} {version}\r\n"
    if version != "HTTP/1.0":
        h += "Host: keyrail\r\n"
    h += f"x-api-key: {tok}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
    for ln in lines:
        h += ln + "\r\n"
    return (h + "\r\n").encode()


def chunked(body, size=16):
    parts = []
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        parts.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    return b"".join(parts) + b"0\r\n\r\n"


def served_once(kr, data):
    """A well-formed request (sent with Connection: close): its one response."""
    got, closed = raw_exchange(kr.port, data, timeout=6)
    resps = parse_responses(got)
    assert len(resps) == 1 and closed, got[:600]
    return resps[0]


SEEN_IDS = set()


def refused(kr, vendor, data, status):
    """Sends data; expects exactly one error response with `status`, in the
    Anthropic error shape, then the connection closed by keyrail; nothing at
    the vendor."""
    got, closed = raw_exchange(kr.port, data, timeout=5)
    resps = parse_responses(got)
    assert len(resps) == 1, f"expected one response, got {len(resps)}: {got[:600]!r}"
    st, hdrs, body = resps[0]
    assert st == status, f"expected {status}, got {st}: {body!r}"
    err = json.loads(body)
    assert err["type"] == "error"
    assert err["error"]["type"] == ("request_too_large" if status == 413 else "invalid_request_error")
    # like every response, a refusal before routing carries a request id (SECURITY.md §3),
    # the same in both headers and the body, never seen before
    rid = hdrs.get("x-keyrail-request-id")
    assert rid and rid.startswith("req_") and hdrs.get("request-id") == rid == err.get("request_id"), hdrs
    assert rid not in SEEN_IDS, "request ids are unique"
    SEEN_IDS.add(rid)
    assert hdrs.get("connection") == "close"
    assert closed, "keyrail must close the connection after refusing a malformed request"
    assert vendor.requests() == [], "a refused request reached the vendor"
    return err["error"]["message"]


# ---- the baseline: the same requests, well-formed, do reach the vendor ----

def test_wellformed_baselines_are_forwarded(ctx):
    """The refusals below are meaningful: their well-formed twins pass."""
    kr, vendor, tok = ctx
    for data in (head(tok, f"Content-Length: {len(BODY)}", "Connection: close") + BODY,
                 head(tok, "Transfer-Encoding: chunked", "Connection: close") + chunked(BODY),
                 head(tok, f"Content-Length: {len(BODY)}", version="HTTP/1.0") + BODY):
        st, _, body = served_once(kr, data)
        assert st == 200, body
    recs = vendor.requests()
    assert len(recs) == 3 and all(r["body_bytes"] == len(BODY) for r in recs)


# ---- framing conflicts ----

@pytest.mark.parametrize("lines,status", [
    ([f"Content-Length: {len(BODY) + 5}", "Transfer-Encoding: chunked"], 400),
    (["Transfer-Encoding: chunked", f"Content-Length: {len(BODY) + 5}"], 400),
    (["Transfer-Encoding: chunked", "Content-Length: 0"], 400),
    ([f"Content-Length: {len(BODY) + 5}", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], 400),
    (["Transfer-Encoding: chunked", "Transfer-Encoding: identity"], 400),
], ids=["cl-then-te", "te-then-cl", "te-cl0", "cl-te-te", "te-twice"])
def test_content_length_and_transfer_encoding(ctx, lines, status):
    kr, vendor, tok = ctx
    msg = refused(kr, vendor, head(tok, *lines) + chunked(BODY), status)
    assert "Transfer-Encoding" in msg or "Content-Length" in msg


@pytest.mark.parametrize("a,b", [(len(BODY), len(BODY)), (len(BODY), 5), (5, len(BODY))],
                         ids=["equal", "different", "different-rev"])
def test_two_content_lengths(ctx, a, b):
    kr, vendor, tok = ctx
    msg = refused(kr, vendor, head(tok, f"Content-Length: {a}", f"Content-Length: {b}") + BODY, 400)
    assert "multiple Content-Length" in msg


@pytest.mark.parametrize("value", ["5, 5", "+%d", "-1", "0x10", " %d x", "%d.0", "99999999999999999999999"],
                         ids=["list", "plus", "negative", "hex", "junk", "decimal", "overflow"])
def test_bad_content_length(ctx, value):
    kr, vendor, tok = ctx
    v = value % len(BODY) if "%d" in value else value
    refused(kr, vendor, head(tok, f"Content-Length: {v}") + BODY, 400)


@pytest.mark.parametrize("te,status", [
    ("gzip, chunked", 501), ("chunked, chunked", 501), ("identity", 501), ("xchunked", 501),
    ("chunked;q=1", 501), ("", 400),
])
def test_unsupported_transfer_encodings(ctx, te, status):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, f"Transfer-Encoding: {te}") + chunked(BODY), status)


def test_transfer_encoding_in_http10(ctx):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, "Transfer-Encoding: chunked", version="HTTP/1.0") + chunked(BODY), 400)


# ---- header syntax ----

@pytest.mark.parametrize("lines", [
    ["X-Pad: a", " folded", f"Content-Length: {len(BODY)}"],
    ["Transfer-Encoding:", " chunked"],
    [f"Content-Length: {len(BODY)}", "\tX-Folded: y"],
], ids=["fold-space", "fold-te", "fold-tab"])
def test_obs_fold(ctx, lines):
    kr, vendor, tok = ctx
    body = chunked(BODY) if "chunked" in lines[-1] else BODY
    assert "line folding" in refused(kr, vendor, head(tok, *lines) + body, 400)


@pytest.mark.parametrize("line,why", [
    ("X-A: a\x00b", "NUL"),
    ("X-A: a\rb", "bare CR"),
    ("X-A: a\nX-B: b", "bare LF"),
    ("X-A: a\x7fb", "control character"),
    ("X-A: a\x01b", "control character"),
    ("Transfer-Encoding : chunked", "whitespace before colon"),
    ("X A: b", "whitespace before colon"),
    ("X\x00A: b", "invalid character"),
    ("X(A): b", "invalid character"),
    (": empty", "empty header name"),
    ("no colon here", "without colon"),
], ids=["nul", "bare-cr", "bare-lf", "del", "ctl", "space-before-colon-te", "space-in-name",
        "nul-in-name", "paren-in-name", "empty-name", "no-colon"])
def test_bad_header_bytes(ctx, line, why):
    kr, vendor, tok = ctx
    msg = refused(kr, vendor, head(tok, line, f"Content-Length: {len(BODY)}") + BODY, 400)
    assert why.lower() in msg.lower(), msg


def test_bare_lf_line_endings(ctx):
    kr, vendor, tok = ctx
    data = head(tok, f"Content-Length: {len(BODY)}").replace(b"\r\n", b"\n") + BODY
    assert "bare LF" in refused(kr, vendor, data, 400)


def test_host_rules(ctx):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, "Host: evil.example", f"Content-Length: {len(BODY)}") + BODY, 400)
    data = head(tok, f"Content-Length: {len(BODY)}").replace(b"Host: keyrail\r\n", b"") + BODY
    assert "missing Host" in refused(kr, vendor, data, 400)


# ---- chunked bodies ----

@pytest.mark.parametrize("chunks,status", [
    (b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", 400),                        # non-hex
    (b"-%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),             # negative
    (b" %x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),             # leading space
    (b"%x \r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),             # space before CRLF
    (b"0x%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),            # 0x prefix
    (b"1%016x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),          # 17 digits: overflow
    (b"10000000000000000\r\n" + BODY + b"\r\n0\r\n\r\n", 400),           # 2^64
    (b"ffffffffffffffff\r\n" + BODY + b"\r\n0\r\n\r\n", 413),            # 2^64-1: over max_body
    (b"%x\r\n" % len(BODY) + BODY + b"XX0\r\n\r\n", 400),                # no CRLF after data
    (b"%x\r\n" % len(BODY) + BODY + b"\n0\r\n\r\n", 400),                # LF only after data
    (b"%x\r\n" % (len(BODY) - 4) + BODY + b"\r\n0\r\n\r\n", 400),        # size too small
    (b"%x\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),                # bare LF after size
    (b"%x;ext=\x00\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", 400),     # NUL in extension
    (b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX: a\r\n b\r\n\r\n", 400),  # folded trailer
    (b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nbad trailer\r\n\r\n", 400),
], ids=["non-hex", "negative", "leading-space", "trailing-space", "0x", "17-digits", "2^64",
        "2^64-1", "no-crlf", "lf-only", "short-size", "bare-lf-size", "nul-ext", "folded-trailer",
        "bad-trailer"])
def test_bad_chunks(ctx, chunks, status):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, "Transfer-Encoding: chunked") + chunks, status)


def test_chunk_extensions_and_trailers_are_fine(ctx):
    kr, vendor, tok = ctx
    chunks = b"%x;name=value\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    st, _, _ = served_once(kr, head(tok, "Transfer-Encoding: chunked", "Connection: close") + chunks)
    assert st == 200
    rec, = vendor.requests()
    assert rec["body_bytes"] == len(BODY) and "x-trailer" not in rec["headers"]


# ---- request line ----

@pytest.mark.parametrize("target", [
    "http://127.0.0.1/anthropic/v1/messages", "http://evil.example/anthropic/v1/messages",
    "https://evil.example:443/anthropic/v1/messages", "//evil.example/anthropic/v1/messages",
    "evil.example:443", "anthropic/v1/messages",
], ids=["absolute-local", "absolute-evil", "absolute-https", "scheme-relative", "authority", "relative"])
def test_non_origin_form_targets(ctx, target):
    kr, vendor, tok = ctx
    if target.startswith("//"):
        # origin-form syntactically ("/" first): routed, and no route matches
        st, _, _ = served_once(kr, head(tok, f"Content-Length: {len(BODY)}", "Connection: close",
                                        target=target) + BODY)
        assert st == 404 and vendor.requests() == []
        return
    data = head(tok, f"Content-Length: {len(BODY)}", target=target) + BODY
    assert "origin-form" in refused(kr, vendor, data, 400)


def test_connect_method(ctx):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, method="CONNECT", target="evil.example:443"), 400)


@pytest.mark.parametrize("version,status", [
    ("HTTP/2.0", 505), ("HTTP/2", 400), ("HTTP/1.2", 505), ("HTTP/3.0", 505), ("HTTP/0.9", 505),
    ("http/1.1", 400), ("HTTP/1.1 ", 400), ("HTTP/11", 400),
])
def test_http_versions(ctx, version, status):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, f"Content-Length: {len(BODY)}", version=version) + BODY, status)


def test_h2_prior_knowledge_preface(ctx):
    kr, vendor, tok = ctx
    # "PRI * HTTP/2.0": the asterisk form is refused before the version (400)
    refused(kr, vendor, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400)


def test_http10_post_without_length(ctx):
    kr, vendor, tok = ctx
    msg = refused(kr, vendor, head(tok, version="HTTP/1.0") + BODY, 400)
    assert "without Content-Length" in msg


# ---- limits ----

def test_oversized_head_is_431(ctx):
    kr, vendor, tok = ctx
    big = "X-Big: " + "a" * (70 * 1024)  # max_header_bytes is 65536 by default
    refused(kr, vendor, head(tok, big, f"Content-Length: {len(BODY)}") + BODY, 431)


def test_long_request_line_is_431(ctx):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, f"Content-Length: {len(BODY)}", target="/" + "a" * 70000) + BODY, 431)


def test_too_many_headers_is_431(ctx):
    kr, vendor, tok = ctx
    many = [f"X-H{i}: v" for i in range(65)]  # max_headers is 64 by default
    refused(kr, vendor, head(tok, *many, f"Content-Length: {len(BODY)}") + BODY, 431)


def test_body_over_limit_is_413(ctx):
    kr, vendor, tok = ctx
    refused(kr, vendor, head(tok, "Content-Length: 1048577") + BODY, 413)
    big = json.dumps(dict(MSG, pad="x" * 1048576)).encode()
    refused(kr, vendor, head(tok, "Transfer-Encoding: chunked") + chunked(big, 4096), 413)


def test_refusal_on_an_openai_route_is_in_the_openai_shape(ctx):
    """Once the head named an OpenAI route, a refusal (here: the body is over
    the limit) is in the OpenAI error shape, with its id in x-request-id."""
    kr, vendor, tok = ctx
    data = (f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: keyrail\r\n"
            f"authorization: Bearer {tok}\r\ncontent-type: application/json\r\n"
            f"Content-Length: 1048577\r\n\r\n").encode() + BODY
    got, closed = raw_exchange(kr.port, data, timeout=5)
    (st, hdrs, body), = parse_responses(got)
    err = json.loads(body)
    assert st == 413 and closed and hdrs.get("connection") == "close"
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] is None, err
    rid = hdrs.get("x-keyrail-request-id")
    assert rid and hdrs.get("x-request-id") == rid == err["request_id"], hdrs
    assert vendor.requests() == []


# ---- pipelining: a body is a body ----

def test_request_hidden_in_content_length_body_is_body(ctx):
    """A CL body holding a complete second request: keyrail answers once
    (the body is not JSON: 400), and the hidden request never runs. The
    next request on the connection gets the next answer (no desync)."""
    kr, vendor, tok = ctx
    hidden = head(tok, f"Content-Length: {len(BODY)}") + BODY
    data = head(tok, f"Content-Length: {len(hidden)}") + hidden
    probe = b"GET /healthz HTTP/1.1\r\nHost: keyrail\r\nConnection: close\r\n\r\n"
    got, closed = raw_exchange(kr.port, data + probe, timeout=6)
    resps = parse_responses(got)
    assert [r[0] for r in resps] == [400, 200], got[:800]
    assert json.loads(resps[1][2]) == {"status": "ok"}
    assert closed and vendor.requests() == []


def test_request_hidden_in_chunked_body_is_body(ctx):
    kr, vendor, tok = ctx
    hidden = head(tok, f"Content-Length: {len(BODY)}") + BODY
    data = head(tok, "Transfer-Encoding: chunked") + b"%x\r\n" % len(hidden) + hidden + b"\r\n0\r\n\r\n"
    probe = b"GET /healthz HTTP/1.1\r\nHost: keyrail\r\nConnection: close\r\n\r\n"
    got, closed = raw_exchange(kr.port, data + probe, timeout=6)
    assert [r[0] for r in parse_responses(got)] == [400, 200], got[:800]
    assert closed and vendor.requests() == []


def test_smuggled_prefix_after_short_content_length(ctx):
    """CL shorter than what follows: the rest is the next request, parsed
    on its own (a garbage request line: 400 and close) -- never glued to
    the first request's body and never forwarded."""
    kr, vendor, tok = ctx
    data = head(tok, f"Content-Length: {len(BODY)}") + BODY + b"GPOST / HTTP/1.1\r\n\r\n"
    got, closed = raw_exchange(kr.port, data, timeout=6)
    resps = parse_responses(got)
    assert [r[0] for r in resps] == [200, 400], got[:800]
    assert closed
    rec, = vendor.requests()
    assert rec["body_bytes"] == len(BODY)


def test_pipelined_requests_answered_in_order_once_each(ctx):
    kr, vendor, tok = ctx
    one = head(tok, f"Content-Length: {len(BODY)}") + BODY
    probe = b"GET /healthz HTTP/1.1\r\nHost: keyrail\r\nConnection: close\r\n\r\n"
    got, closed = raw_exchange(kr.port, one + one + probe, timeout=10)
    assert [r[0] for r in parse_responses(got)] == [200, 200, 200]
    assert closed and len(vendor.requests()) == 2


# ---- header names with underscores are not forwarded ----

def test_underscore_headers_are_not_forwarded(ctx):
    kr, vendor, tok = ctx
    data = head(tok, f"Content-Length: {len(BODY)}", "Content_Length: 0",
                "Transfer_Encoding: chunked", "X_Forwarded_Host: evil.example",
                "X-Fine-Header: ok", "Connection: close") + BODY
    st, _, body = served_once(kr, data)
    assert st == 200, body
    rec, = vendor.requests()
    names = [h.lower() for h in rec["headers"]]
    assert not [h for h in names if "_" in h], names
    assert "x-fine-header" in names  # ordinary headers do pass
    assert rec["body_bytes"] == len(BODY)


def test_hop_by_hop_headers_are_not_forwarded(ctx):
    kr, vendor, tok = ctx
    data = head(tok, f"Content-Length: {len(BODY)}", "Connection: close, X-Secret-Hop",
                "X-Secret-Hop: 1", "Keep-Alive: timeout=5", "TE: trailers", "Upgrade: h2c",
                "Proxy-Authorization: Basic Zm9vOmJhcg==", "Trailer: X-T", "Forwarded: for=1.2.3.4",
                "X-Real-IP: 1.2.3.4", "X-Forwarded-Proto: https", "HTTP2-Settings: AAAA") + BODY
    st, _, _ = served_once(kr, data)
    assert st == 200
    names = [h.lower() for h in vendor.requests()[0]["headers"]]
    for h in ("x-secret-hop", "keep-alive", "te", "upgrade", "proxy-authorization", "trailer",
              "forwarded", "x-real-ip", "x-forwarded-proto", "http2-settings"):
        assert h not in names, (h, names)


def test_keyrail_still_serves_after_the_abuse(ctx):
    kr, vendor, tok = ctx
    st, _, _ = http(kr.port, "POST", PATH, MSG, {"x-api-key": tok})
    assert st == 200
