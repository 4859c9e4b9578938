"""Fixtures for keyrail's integration tests.

Every test starts the real binaries: `keyrail serve` and `keyrail-fakevendor`
on free loopback ports, with a private store, master key and registry in a
temp directory. Readiness is awaited by polling, never by sleeping. At the
end of each test the keyrail log is checked: no sanitizer report, and none
of the test's canary credentials anywhere in it.
"""
import hashlib
import http.client as httpclient
import json
import os
import threading
import signal
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("KEYRAIL_BUILD", os.path.join(ROOT, "build", "test"))
KEYRAIL = os.path.join(BUILD, "keyrail")
FAKEVENDOR = os.path.join(BUILD, "keyrail-fakevendor")

# Canary credentials: recognisable, so the hygiene checks can find any leak.
PLATFORM_ANTHROPIC_KEY = "sk-ant-api03-CANARYPLATFORMANTHROPIC0000000000000000"
PLATFORM_OPENAI_KEY = "sk-proj-CANARYPLATFORMOPENAI00000000000000000000"
TENANT_OAUTH = "sk-ant-oat01-CANARYTENANTOAUTH000000000000000000000000"
TENANT_ANTHROPIC_KEY = "sk-ant-api03-CANARYTENANTANTHROPIC000000000000000000"
TENANT_OPENAI_KEY = "sk-proj-CANARYTENANTOPENAI0000000000000000000000"
TENANT_MINIMAX_KEY = "mmk-CANARYTENANTMINIMAX000000000000000000"
TENANT_DEEPSEEK_KEY = "sk-CANARYTENANTDEEPSEEK00000000000000000"
TENANT_MOONSHOT_KEY = "sk-CANARYTENANTMOONSHOT00000000000000000"
TENANT_OPENROUTER_KEY = "sk-or-v1-CANARYTENANTOPENROUTER0000000000000"
# an OpenAI key in the legacy shape (sk-…): its shape names no issuer, so the
# launcher lets the payload pair it with the fake vendor standing in for OpenAI
TENANT_OPENAI_LEGACY_KEY = "sk-CANARYTENANTOPENAILEGACY000000000000000000"
PLATFORM_GOOGLE_KEY = "AIzaSyCANARYPLATFORMGOOGLE00000000000000"
TENANT_GOOGLE_KEY = "AIzaSyCANARYTENANTGOOGLE0000000000000000"
TENANT_GOOGLE_DIRECT_KEY = "gk-CANARYTENANTGOOGLEDIRECT000000000000"  # no vendor shape
CANARIES = [PLATFORM_ANTHROPIC_KEY, PLATFORM_OPENAI_KEY, TENANT_OAUTH, TENANT_ANTHROPIC_KEY,
            TENANT_OPENAI_KEY, TENANT_MINIMAX_KEY, TENANT_OPENAI_LEGACY_KEY, TENANT_DEEPSEEK_KEY,
            TENANT_MOONSHOT_KEY, TENANT_OPENROUTER_KEY, PLATFORM_GOOGLE_KEY, TENANT_GOOGLE_KEY,
            TENANT_GOOGLE_DIRECT_KEY]

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "AddressSanitizer:", "ThreadSanitizer")


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each event loop has its own token cache (server.token_cache_ms = 200 in
# these tests): once one loop refuses a revoked or expired token, every other
# loop's cached entry has expired within this long too.
CACHE_SETTLE = 0.3


def wait_until(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def http(port, method, path, body=None, headers=None, timeout=30):
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        hdrs.setdefault("content-type", "application/json")
    c.request(method, path, body=body, headers=hdrs)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


# ---- secret hygiene (issue 7): every response body a test receives is kept
# under the pytest basetemp, in <basetemp>/responses/: errors.log (status >=
# 400, and raw-socket exchanges), ok.log (2xx/3xx), env.log (2xx bodies of
# /v1/workspace/env, which hand a workspace its own credentials by design).
# tests/hygiene.sh scans them, the logs and the store files for canaries.
# minted.log holds the 2xx bodies of the admin API's token mints and alert
# creates, which show a new token or webhook secret once by design. Additive: http() behaves exactly as before.
_RESPONSES_DIR = None


@pytest.fixture(scope="session", autouse=True)
def _keyrail_responses_dir(tmp_path_factory):
    global _RESPONSES_DIR
    d = tmp_path_factory.getbasetemp() / "responses"
    d.mkdir(exist_ok=True)
    _RESPONSES_DIR = str(d)
    yield
    _RESPONSES_DIR = None


def save_body(what, status, data, path=""):
    """Appends one response body to the hygiene files (status None: raw bytes)."""
    if _RESPONSES_DIR is None or data is None:
        return
    bare = path.split("?")[0]
    if status is not None and status < 400:
        name = "env.log" if bare == "/v1/workspace/env" else "ok.log"
        if what.startswith("POST ") and (bare.endswith("/tokens") or bare.endswith("/alerts") or
                                         bare == "/admin/v1/admin-tokens"):
            name = "minted.log"  # a token or a webhook secret shown once, by design
    else:
        name = "errors.log"
    # the test's name without its parameters (ids may hold credentials)
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("[")[0]
    with open(os.path.join(_RESPONSES_DIR, name), "ab") as f:
        f.write(f"\n## {test} | {what} | {status}\n".encode())
        f.write(data if isinstance(data, bytes) else str(data).encode())


_http_unsaved = http


def http(port, method, path, body=None, headers=None, timeout=30):  # noqa: F811 (wraps)
    st, h, data = _http_unsaved(port, method, path, body, headers, timeout)
    save_body(f"{method} {path.split('?')[0]}", st, data, path)
    return st, h, data


def raw_exchange(port, data, timeout=5.0, shut_wr=False):
    """Sends raw bytes on a new connection and reads until the server closes
    it or `timeout` passes. Returns (bytes received, closed by the server).
    The bytes are saved like every other response body."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got, closed = b"", False
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may refuse before taking it all; read what it said
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        s.close()
    save_body("raw", None, got)
    return got, closed


def parse_responses(buf):
    """Splits bytes into HTTP/1.1 responses: [(status, headers, body)]. Bodies
    framed by content-length or chunked; a close-delimited body takes the rest."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {buf[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, buf = rest[:n], rest[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0], 16)
                if n == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            buf = rest
        else:
            body, buf = rest, b""
        out.append((status, hdrs, body))
    return out


# A minimal request per protocol, and one call through keyrail with a fake
# vendor directive (x-fake), for the limits and multi-instance suites.
MSG = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def call(inst, token, proto="anthropic", stream=False, fake="in=1000 out=100", body=None):
    if proto == "anthropic":
        b = dict(body or MSG, stream=stream)
        return http(inst.port, "POST", "/anthropic/v1/messages", b, {"x-api-key": token, "x-fake": fake})
    b = dict(body or CHAT, stream=stream)
    return http(inst.port, "POST", "/openai/v1/chat/completions", b,
                {"authorization": f"Bearer {token}", "x-fake": fake})


def sse_events(data):
    """An SSE body as a list of {"event": …, "data": …} (fields present only)."""
    events = []
    for block in data.decode().split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev["event"] = line[6:].strip()
            elif line.startswith("data:"):
                ev["data"] = line[5:].strip()
        if ev:
            events.append(ev)
    return events


def metrics(port):
    """/metrics as {sample name with labels: value}."""
    st, _, data = http(port, "GET", "/metrics")
    assert st == 200
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


class FakeVendor:
    """The fake vendor. tls=(cert file, key file): it serves HTTPS only, and
    its url is https://<url_host>:PORT (the host keyrail's registry names)."""

    def __init__(self, tmp, tls=None, url_host="localhost"):
        self.tmp = tmp
        self.tls = tls
        self.url_host = url_host
        self.port_file = os.path.join(tmp, "fv.port")
        args = [FAKEVENDOR, "--port-file", self.port_file]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]  # logs its TLS failures
        else:
            args += ["--quiet"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(tmp, "fakevendor.log"), "w"))
        self.port = int(wait_until(lambda: open(self.port_file).read().strip(), what="fakevendor port"))
        wait_until(lambda: self.control("GET", "/_fake/healthz")[0] == 200, what="fakevendor")

    @property
    def url(self):
        if self.tls:
            return f"https://{self.url_host}:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def control(self, method, path):
        """A /_fake/... call. Over TLS the test's own channel does not verify
        the certificate: it may be one keyrail has to refuse."""
        if not self.tls:
            return http(self.port, method, path)
        c = httpclient.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                       context=ssl._create_unverified_context())
        c.request(method, path)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def requests(self):
        st, _, body = self.control("GET", "/_fake/requests")
        assert st == 200
        return json.loads(body)

    def stats(self):
        st, _, body = self.control("GET", "/_fake/stats")
        assert st == 200
        return json.loads(body)

    def clear(self):
        self.control("DELETE", "/_fake/requests")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


class TestPKI:
    """A certificate authority and server certificates made at test time
    (python3-cryptography; nothing is committed). Every pair is written to
    dir as NAME.pem / NAME.key; pair(NAME) returns (cert file, key file).

      ca          the test CA (ca.pem is what keyrail's upstream.ca_file names)
      good        localhost + 127.0.0.1, signed by the CA
      wrong_name  other.example only, signed by the CA
      name_only   localhost only (no IP), signed by the CA
      expired     localhost + 127.0.0.1, signed by the CA, expired 30 days ago
      self_signed localhost + 127.0.0.1, signed by its own key
      unknown_ca  localhost + 127.0.0.1, signed by another CA (other_ca.pem)
    """
    __test__ = False  # not a test class

    def __init__(self, dir):
        import datetime
        import ipaddress
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        self.dir = dir
        now = datetime.datetime.now(datetime.timezone.utc)
        day = datetime.timedelta(days=1)

        def key():
            return ec.generate_private_key(ec.SECP256R1())

        def name(cn):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write(n, cert, k):
            with open(os.path.join(dir, n + ".pem"), "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            with open(os.path.join(dir, n + ".key"), "wb") as f:
                f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))

        def make_ca(cn):
            k = key()
            c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                 .public_key(k.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - day).not_valid_after(now + 30 * day)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                              key_encipherment=False, data_encipherment=False,
                                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                                              encipher_only=False, decipher_only=False), critical=True)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                 .sign(k, hashes.SHA256()))
            return c, k

        def make_leaf(names, issuer, issuer_key, before, after, ips=("127.0.0.1",)):
            k = key()
            san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            b = (x509.CertificateBuilder().subject_name(name(names[0]))
                 .issuer_name(issuer.subject if issuer else name(names[0]))
                 .public_key(k.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(before).not_valid_after(after)
                 .add_extension(x509.SubjectAlternativeName(san), critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
            if issuer:
                b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_key.public_key()), critical=False)
            return b.sign(issuer_key if issuer else k, hashes.SHA256()), k

        ca, ca_key = make_ca("keyrail test CA")
        other, other_key = make_ca("keyrail other test CA")
        write("ca", ca, ca_key)
        write("other_ca", other, other_key)
        self.ca = os.path.join(dir, "ca.pem")
        write("good", *make_leaf(["localhost"], ca, ca_key, now - day, now + 30 * day))
        write("wrong_name", *make_leaf(["other.example"], ca, ca_key, now - day, now + 30 * day, ips=()))
        write("name_only", *make_leaf(["localhost"], ca, ca_key, now - day, now + 30 * day, ips=()))
        write("expired", *make_leaf(["localhost"], ca, ca_key, now - 400 * day, now - 30 * day))
        leaf, k = make_leaf(["localhost"], None, None, now - day, now + 30 * day)
        write("self_signed", leaf, k)
        write("unknown_ca", *make_leaf(["localhost"], other, other_key, now - day, now + 30 * day))

    def pair(self, n):
        return os.path.join(self.dir, n + ".pem"), os.path.join(self.dir, n + ".key")


REGISTRY = """
[provider anthropic]
protocol = anthropic
base_url = {fv}
credential_env = ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN
header = x-api-key
platform = true
platform_key_env = KEYRAIL_ANTHROPIC_KEY
model_prefixes = claude-
key_prefixes = sk-ant-

[provider openai]
protocol = openai
base_url = {fv}
credential_env = OPENAI_API_KEY
header = bearer
platform = true
platform_key_env = KEYRAIL_OPENAI_KEY
model_prefixes = gpt-
key_prefixes = sk-proj-

[provider google]
protocol = gemini
base_url = {fv}/google
credential_env = GEMINI_API_KEY, GOOGLE_API_KEY
header = x-goog-api-key
platform = true
platform_key_env = KEYRAIL_GOOGLE_KEY
model_prefixes = gemini-
key_prefixes = AIza

[provider minimax]
protocol = anthropic
base_url = {fv}/minimax/anthropic
credential_env = MINIMAX_API_KEY
header = bearer
platform = false
model_prefixes = MiniMax-

# the other BYOK vendors of etc/providers.conf, each with its own header shape
[provider deepseek]
protocol = openai
base_url = {fv}/deepseek
credential_env = DEEPSEEK_API_KEY
header = bearer
platform = false
model_prefixes = deepseek-

[provider deepseek-anthropic]
protocol = anthropic
base_url = {fv}/deepseek/anthropic
credential_env = DEEPSEEK_API_KEY
header = x-api-key
platform = false
model_prefixes = deepseek-

[provider moonshot]
protocol = anthropic
base_url = {fv}/moonshot/anthropic
credential_env = MOONSHOT_API_KEY, KIMI_API_KEY
header = bearer
platform = false
model_prefixes = kimi-, moonshot-

[provider openrouter]
protocol = anthropic
base_url = {fv}/openrouter/api
credential_env = OPENROUTER_API_KEY
header = bearer
platform = false
model_prefixes = anthropic/, openai/
key_prefixes = sk-or-

[model MiniMax-M2]
provider = minimax
price_input = 0.30
price_output = 1.20

[model claude-sonnet-4-5]
provider = anthropic
aliases = sonnet
price_input = 3.00
price_output = 15.00
price_cache_read = 0.30
price_cache_write = 3.75

[model claude-haiku-4-5]
provider = anthropic
aliases = haiku
price_input = 1.00
price_output = 5.00

[model claude-unpriced]
provider = anthropic

[model gpt-4o]
provider = openai
aliases = fouro
price_input = 2.50
price_output = 10.00
price_cache_read = 1.25

[model gpt-4o-mini]
provider = openai
price_input = 0.15
price_output = 0.60

[model gpt-unpriced]
provider = openai

# the pinned agents' own default models (Claude Code 2.1.332, Codex 0.171.0)
[model claude-opus-5-5]
provider = anthropic
price_input = 4.00
price_output = 20.00
price_cache_read = 0.20
price_cache_write = 5.00

[model gpt-6.2-sol]
provider = openai
price_input = 2.00
price_output = 10.00
price_cache_read = 0.10

# Gemini: the models the tests ask for, and the ones Gemini CLI 0.61.0 calls
# on its own (its main model, the router's classifier and its utilities)
[model gemini-2.5-flash]
provider = google
aliases = gflash
price_input = 0.30
price_output = 2.50
price_cache_read = 0.03

[model gemini-2.5-pro]
provider = google
price_input = 1.25
price_output = 10.00
price_cache_read = 0.125

[model gemini-2.5-flash-lite]
provider = google
price_input = 0.10
price_output = 0.40
price_cache_read = 0.01

[model gemini-3.1-pro-preview]
provider = google
price_input = 2.00
price_output = 12.00
price_cache_read = 0.20

[model gemini-3.5-flash-lite]
provider = google
price_input = 0.10
price_output = 0.40
price_cache_read = 0.01

[model gemini-unpriced]
provider = google
"""


class Keyrail:
    """A keyrail instance: its files, its CLI, and (once started) its server."""

    def __init__(self, tmp, vendor, store_url=None, extra_config="", name="kr"):
        self.tmp = tmp
        self.vendor = vendor
        self.name = name
        self.db = os.path.join(tmp, "keyrail.db")
        self.store_url = store_url or self.db
        self.key_file = os.path.join(tmp, "master.key")
        self.registry = os.path.join(tmp, "providers.conf")
        self.config = os.path.join(tmp, f"{name}.conf")
        self.log = os.path.join(tmp, f"{name}.log")
        self.journal = os.path.join(tmp, f"{name}-usage.journal")
        self.port = None
        self.proc = None
        if not os.path.exists(self.registry):
            with open(self.registry, "w") as f:
                f.write(REGISTRY.format(fv=vendor.url))
        if not os.path.exists(self.key_file):
            subprocess.run([KEYRAIL, "keygen", self.key_file], check=True, capture_output=True)
        self.extra_config = extra_config
        # two event loops unless a test asks otherwise: every suite runs
        # against the multi-loop server (a request may land on either)
        self.workers = 2
        self.write_config()

    def write_config(self, port=None):
        self.port = port or self.port or free_port()
        self.admin_port = getattr(self, "admin_port", None) or free_port()
        with open(self.config, "w") as f:
            f.write(f"""[store]
url = {self.store_url}
[secrets]
master_key_file = {self.key_file}
[registry]
file = {self.registry}
[server]
listen = 127.0.0.1:{self.port}
public_url = http://127.0.0.1:{self.port}
admin_listen = 127.0.0.1:{self.admin_port}
log_file = {self.log}
header_timeout_ms = 1500
idle_timeout_ms = 5000
upstream_timeout_ms = 2000
upstream_connect_timeout_ms = 2000
token_cache_ms = 200
shutdown_grace_ms = 5000
max_body_bytes = 1048576
log_flush_ms = 0
workers = {self.workers}
{f"usage_journal = {self.journal}" if self.journal else ""}
{self.extra_config}
""")

    def env(self):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("KEYRAIL_"):
                del e[k]
        e["KEYRAIL_CONFIG"] = self.config
        # KR_TEST_UPSTREAM_CLIENT=curl runs the suites with libcurl instead
        # of keyrail's own client (the default), unless a test's config says
        if os.environ.get("KR_TEST_UPSTREAM_CLIENT") and "client =" not in self.extra_config:
            e["KEYRAIL_UPSTREAM_CLIENT"] = os.environ["KR_TEST_UPSTREAM_CLIENT"]
        e["KEYRAIL_ANTHROPIC_KEY"] = PLATFORM_ANTHROPIC_KEY
        e["KEYRAIL_OPENAI_KEY"] = PLATFORM_OPENAI_KEY
        e["KEYRAIL_GOOGLE_KEY"] = PLATFORM_GOOGLE_KEY
        return e

    def cli(self, *args, input=None, check=True):
        p = subprocess.run([KEYRAIL, *args], env=self.env(), input=input, capture_output=True,
                           text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"keyrail {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def start(self):
        self.proc = subprocess.Popen([KEYRAIL, "serve"], env=self.env(),
                                     stdout=subprocess.DEVNULL, stderr=open(self.log + ".stderr", "w"))
        wait_until(lambda: self.proc.poll() is None and
                   http(self.port, "GET", "/readyz", timeout=2)[0] == 200, what="keyrail ready")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        return rc

    # -- helpers --
    def setup_org(self, org="acme", concierge="boss", credits="100"):
        self.cli("org", "create", org)
        if credits:
            self.cli("credits", "add", org, credits)
        self.cli("ws", "create", org, concierge, "--concierge")
        return self.mint(f"{org}/{concierge}")

    def mint(self, ws):
        return self.cli("token", "mint", ws).stdout.strip()

    def secret(self, scope, owner, key, value):
        self.cli("secret", "set", scope, owner, key, input=value)

    def db_rows(self, sql, args=()):
        c = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def usage(self, request_id=None):
        q = ("select request_id, workspace_id, model, input_tokens, output_tokens, cache_read_tokens,"
             " cache_write_tokens, cost_micros, status from usage")
        rows = self.db_rows(q + (" where request_id = ?" if request_id else "") + " order by id",
                            (request_id,) if request_id else ())
        keys = ["request_id", "workspace_id", "model", "input", "output", "cache_read",
                "cache_write", "cost_micros", "status"]
        return [dict(zip(keys, r)) for r in rows]

    def wait_usage(self, request_id, timeout=10):
        return wait_until(lambda: (self.usage(request_id) or [None])[0], timeout,
                          what=f"usage row {request_id}")

    def log_text(self):
        out = ""
        for p in (self.log, self.log + ".stderr"):
            if os.path.exists(p):
                out += open(p, errors="replace").read()
        return out


def check_log_clean(text, label="keyrail log"):
    for m in SANITIZER_MARKERS:
        assert m not in text, f"{label}: sanitizer report:\n{text[-4000:]}"
    for c in CANARIES:
        assert c not in text, f"{label}: a credential leaked into the log ({c[:14]}…)"


class Listener:
    """An attacker for the confinement tests: records every connection (the
    first bytes) and datagram it gets. TCP on host:port (IPv4 or IPv6), UDP,
    or a unix socket (a path, or an abstract name starting with NUL)."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1", kind=socket.SOCK_STREAM, path=None,
                 port=0):
        self.got = []
        if path is not None:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.bind(path)
            if not path.startswith("\0"):
                os.chmod(path, 0o777)
        else:
            self.s = socket.socket(family, kind)
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.s.bind((host, port))
        self.port = self.s.getsockname()[1] if path is None else None
        if kind == socket.SOCK_STREAM:
            self.s.listen(16)
        self.s.settimeout(0.2)
        self.kind = kind
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                if self.kind == socket.SOCK_DGRAM:
                    data, _ = self.s.recvfrom(4096)
                    self.got.append(data)
                    continue
                c, _ = self.s.accept()
                c.settimeout(1)
                try:
                    self.got.append(c.recv(4096) or b"(connected)")
                except OSError:
                    self.got.append(b"(connected)")
                c.close()
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.t.join(2)
        self.s.close()


@pytest.fixture
def vendor(tmp_path):
    v = FakeVendor(str(tmp_path))
    yield v
    v.stop()


@pytest.fixture
def kr(tmp_path, vendor):
    k = Keyrail(str(tmp_path), vendor)
    yield k
    rc = k.stop()
    text = k.log_text()
    check_log_clean(text)
    assert rc == 0, f"keyrail exited {rc}:\n{text[-3000:]}"
