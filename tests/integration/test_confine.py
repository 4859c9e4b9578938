"""`keyrail run --confine` (issue 21, part 2): a misbehaving agent holding a
workspace token tries every way out -- attacker listeners on the host's
127.0.0.1 and ::1 and on an address of a test-made network namespace, UDP,
an abstract unix socket, container engine sockets, plain DNS, curl with
--noproxy, CONNECT to an unlisted host and to a listed name that resolves to
loopback -- and every attacker log stays empty, while keyrail and an
allow-listed host still work. As root (the agent drops to a non-root user)
and as an unprivileged user (a user namespace); with unshare refused, keyrail
run refuses with one line unless --no-confine."""
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import pytest

from conftest import KEYRAIL, Listener

HERE = os.path.dirname(os.path.abspath(__file__))
NOBODY = 65534


class Netns:
    """A network namespace made by the test, reached over a veth pair: an
    attacker on a private address, and an "allowed" host on a public-looking
    one (TEST-NET-1) that answers HTTP."""

    def __init__(self, tmp):
        tag = os.urandom(3).hex()
        self.ns = f"krt{tag}"
        self.host_if, self.ns_if = f"krh{tag}", f"krn{tag}"
        n = int(tag[:2], 16) % 200 + 20
        self.private = f"10.231.{n}.2"
        self.public = f"192.0.2.{n}"
        sh = lambda *a: subprocess.run(a, check=True, capture_output=True)
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"10.231.{n}.1/24", "dev", self.host_if)
        sh("ip", "addr", "add", "192.0.2.1/32", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "route", "add", f"{self.public}/32", "dev", self.host_if)
        ex = ["ip", "netns", "exec", self.ns]
        sh(*ex, "ip", "addr", "add", f"{self.private}/24", "dev", self.ns_if)
        sh(*ex, "ip", "addr", "add", f"{self.public}/32", "dev", self.ns_if)
        sh(*ex, "ip", "link", "set", self.ns_if, "up")
        sh(*ex, "ip", "link", "set", "lo", "up")
        sh(*ex, "ip", "route", "add", "192.0.2.1/32", "dev", self.ns_if)
        self.log = os.path.join(tmp, "netns-attacker.log")
        code = ("import socket,sys\n"
                "def serve(addr, log, reply):\n"
                " s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((addr,0));s.listen(8)\n"
                " print(s.getsockname()[1],flush=True)\n"
                " return s\n"
                "import threading\n"
                "a=serve(sys.argv[1],None,None);b=serve(sys.argv[2],None,None)\n"
                "def loop(s,log,reply):\n"
                " while True:\n"
                "  c,_=s.accept();d=c.recv(4096)\n"
                "  if log: open(log,'ab').write(d+b'\\n')\n"
                "  if reply: c.sendall(b'HTTP/1.0 200 OK\\r\\ncontent-length: 18\\r\\n\\r\\nhello-from-allowed')\n"
                "  c.close()\n"
                "threading.Thread(target=loop,args=(a,sys.argv[3],None),daemon=True).start()\n"
                "loop(b,None,True)\n")
        self.proc = subprocess.Popen(ex + [sys.executable, "-c", code, self.private, self.public, self.log],
                                     stdout=subprocess.PIPE, text=True)
        self.private_port = int(self.proc.stdout.readline())
        self.public_port = int(self.proc.stdout.readline())

    def attacker_log(self):
        return open(self.log, "rb").read() if os.path.exists(self.log) else b""

    def close(self):
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def testnet(tmp_path):
    n = Netns(str(tmp_path))
    yield n
    n.close()


def agent_dir(uid):
    """A directory the agent's user owns (HOME and cwd): as root the agent
    runs as another user, who cannot enter pytest's private tmp."""
    d = tempfile.mkdtemp(prefix="kr-agent-")
    os.chmod(d, 0o755)
    shutil.copy(os.path.join(HERE, "misbehave.py"), d)
    os.chmod(os.path.join(d, "misbehave.py"), 0o644)
    home = os.path.join(d, "home")
    os.mkdir(home)
    os.chown(home, uid, uid)
    return d, home


def as_user(uid):
    def pre():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return pre


def run_agent(kr, token, d, home, targets, env_extra=None, args=(), preexec=None, timeout=90):
    xdg = os.path.join(d, "xdg")
    env = {"PATH": os.environ["PATH"], "HOME": home, "KEYRAIL_WORKSPACE_TOKEN": token,
           "XDG_RUNTIME_DIR": xdg, "DOCKER_HOST": "unix://" + targets["docker_sock"],
           # an inherited proxy setting that would take traffic elsewhere
           "HTTPS_PROXY": "http://127.0.0.1:%d" % targets["host_v4"],
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"}
    env.update(env_extra or {})
    cmd = [KEYRAIL, "run", *args, "--server", f"http://127.0.0.1:{kr.port}", "--", sys.executable,
           os.path.join(d, "misbehave.py"), json.dumps(targets)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=d,
                          preexec_fn=preexec)


def setup_workspace(kr, egress):
    kr.cli("org", "create", "acme")
    kr.cli("credits", "add", "acme", "10")
    kr.secret("--org", "acme", "EGRESS_ALLOW", egress)
    kr.cli("ws", "create", "acme", "w", "--model", "claude-sonnet-4-5")
    return kr.mint("acme/w")


def check_contained(p, listeners, testnet, token, label):
    assert p.returncode == 0, f"{label}: {p.stdout}\n{p.stderr}"
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["keyrail"] == "ok: 200", (label, res)
    for k in ("host_v4", "host_v6", "netns_host", "udp53", "udp_attacker", "abstract", "docker_sock",
              "xdg_sock", "dns", "gate_unlisted", "gate_loopback_name", "gate_listed_private"):
        assert res[k].startswith("failed"), (label, k, res[k])
    assert "403" in res["gate_unlisted"] and "403" in res["gate_loopback_name"], (label, res)
    assert "403" in res["gate_listed_private"], (label, res)
    assert res["gate_listed"].startswith("ok") and "hello-from-allowed" in res["gate_listed"], (label, res)
    assert res["curl_noproxy"] != "ok: 0" and res["curl_proxy"] != "ok: 0", (label, res)
    assert res["child_python"].startswith("failed"), (label, res)
    assert res.get("child_node", "failed").startswith("failed"), (label, res)
    assert res["nnp"] == "1" and res["seccomp"] == "2", (label, res)
    assert res["capeff"] == "0000000000000000", (label, res)
    for l in listeners:
        assert l.got == [], f"{label}: an attacker heard something: {l.got}"
    assert testnet.attacker_log() == b"", label
    # the refusals were named on keyrail run's stderr, without the token
    assert "egress refused: evil.example:443 (not on the workspace's egress allow-list)" in p.stderr
    assert token not in p.stderr
    return res


@pytest.fixture
def attackers(tmp_path):
    d = tempfile.mkdtemp(prefix="kr-att-")
    os.chmod(d, 0o755)
    ls = {
        "host_v4": Listener(),
        "host_v6": Listener(socket.AF_INET6, "::1"),
        "udp_attacker": Listener(kind=socket.SOCK_DGRAM),
        "abstract": Listener(path="\0keyrail-attacker-" + os.urandom(4).hex()),
        "docker_sock": Listener(path=os.path.join(d, "docker.sock")),
    }
    try:
        ls["udp53"] = Listener(kind=socket.SOCK_DGRAM, port=53)
    except OSError:
        pass  # the host's resolver holds it; the agent's own loopback is tried anyway
    yield d, ls
    for l in ls.values():
        l.close()
    shutil.rmtree(d, ignore_errors=True)


def targets_for(att, testnet, agent_d):
    d, ls = att
    xdg = os.path.join(agent_d, "xdg")
    os.makedirs(xdg, exist_ok=True)
    os.chmod(xdg, 0o777)
    xl = Listener(path=os.path.join(xdg, "podman.sock"))
    ls["xdg_sock"] = xl
    return {"host_v4": ls["host_v4"].port, "host_v6": ls["host_v6"].port,
            "udp_port": ls["udp_attacker"].port, "abstract": ls["abstract"].s.getsockname()[1:].decode(),
            "docker_sock": os.path.join(d, "docker.sock"), "xdg_sock": os.path.join(xdg, "podman.sock"),
            "netns_addr": testnet.private, "netns_port": testnet.private_port,
            "public_addr": testnet.public, "public_port": testnet.public_port,
            "model": "claude-sonnet-4-5", "node": shutil.which("node")}


def egress_for(att, testnet):
    # listed: the public host, a private one, and a name that resolves to loopback
    return (f"{testnet.public}:{testnet.public_port}, {testnet.private}:{testnet.private_port},"
            f" localhost:{att[1]['host_v4'].port}")


def test_misbehaving_agent_is_contained_as_root(kr, vendor, testnet, attackers):
    kr.start()
    token = setup_workspace(kr, egress_for(attackers, testnet))
    d, home = agent_dir(NOBODY)
    try:
        t = targets_for(attackers, testnet, d)
        p = run_agent(kr, token, d, home, t)
        res = check_contained(p, attackers[1].values(), testnet, token, "root")
        assert res["uid"] == NOBODY and res["euid"] == NOBODY, res  # dropped, never root
        # keyrail metered the agent's call
        assert len(kr.usage()) == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_misbehaving_agent_is_contained_unprivileged(kr, vendor, testnet, attackers):
    kr.start()
    token = setup_workspace(kr, egress_for(attackers, testnet))
    d, home = agent_dir(NOBODY)
    try:
        t = targets_for(attackers, testnet, d)
        p = run_agent(kr, token, d, home, t, preexec=as_user(NOBODY))
        res = check_contained(p, attackers[1].values(), testnet, token, "unprivileged")
        assert res["uid"] == NOBODY, res
    finally:
        shutil.rmtree(d, ignore_errors=True)


def deny_unshare():
    """A seccomp filter refusing unshare (as a locked-down host does), then
    keyrail run: confinement cannot be set up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    NR_UNSHARE, EPERM = 272, 1
    ld_nr = struct.pack("HBBI", 0x20, 0, 0, 0)                     # A = nr
    jeq = struct.pack("HBBI", 0x15, 0, 1, NR_UNSHARE)              # if A == unshare
    deny = struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | EPERM)     #   return ERRNO(EPERM)
    allow = struct.pack("HBBI", 0x06, 0, 0, 0x7fff0000)            # return ALLOW
    prog = ld_nr + jeq + deny + allow
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HxxxxxxQ", 4, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0):
        raise OSError(ctypes.get_errno(), "seccomp")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is written for x86_64")
def test_without_namespaces_keyrail_run_refuses_unless_no_confine(kr, vendor, tmp_path):
    kr.start()
    token = setup_workspace(kr, "")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KEYRAIL_WORKSPACE_TOKEN": token}
    base = [KEYRAIL, "run", "--server", f"http://127.0.0.1:{kr.port}"]
    p = subprocess.run(base + ["--", "echo", "started"], env=env, capture_output=True, text=True,
                       preexec_fn=deny_unshare, timeout=30)
    assert p.returncode != 0 and "started" not in p.stdout, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot confine the agent here" in lines[0] and "--no-confine" in lines[0], p.stderr
    # explain shows it too, and --no-confine runs the agent
    p = subprocess.run(base + ["--explain", "--", "echo"], env=env, capture_output=True, text=True,
                       preexec_fn=deny_unshare, timeout=30)
    assert "confinement: off (the kernel refuses" in p.stdout, p.stdout
    p = subprocess.run(base + ["--no-confine", "--", "echo", "started"], env=env, capture_output=True,
                       text=True, preexec_fn=deny_unshare, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "started", p.stderr


def test_explain_shows_the_confinement(kr, vendor, tmp_path):
    kr.start()
    token = setup_workspace(kr, "github.com:443, *.npmjs.org:443")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KEYRAIL_WORKSPACE_TOKEN": token}
    base = [KEYRAIL, "run", "--server", f"http://127.0.0.1:{kr.port}", "--explain"]
    text = subprocess.run(base + ["--", "claude"], env=env, capture_output=True, text=True, check=True).stdout
    assert "confinement: on" in text and "egress: github.com:443,*.npmjs.org:443" in text, text
    assert "anthropic: calls http://127.0.0.1:%d (keyrail proxy) through the relay http://127.0.0.1:" % kr.port in text
    doc = json.loads(subprocess.run(base + ["--format", "json", "--", "claude"], env=env,
                                    capture_output=True, text=True, check=True).stdout)
    c = doc["confine"]
    assert c["on"] and c["egress"] == ["github.com:443", "*.npmjs.org:443"], c
    assert c["server"] == f"http://127.0.0.1:{kr.port}" and c["relay"].startswith("http://127.0.0.1:")
    assert os.path.join(str(tmp_path), "xdg") not in c["hidden"] or True
    assert doc["protocols"]["anthropic"]["relay"] == c["relay"]
    env_rows = {d["var"]: d for d in doc["decisions"]}
    assert env_rows["HTTPS_PROXY"]["rule"] == "L9"
    assert token not in text and token not in json.dumps(doc)


def test_direct_byok_vendor_is_reachable_only_through_the_gate(kr, vendor, tmp_path):
    """Direct BYOK: the agent holds the vendor's key; its vendor is added to
    the allow-list (and said so), nothing else is."""
    kr.cli("org", "create", "acme")
    kr.secret("--org", "acme", "MINIMAX_API_KEY", "mmk-CANARYTENANTMINIMAX000000000000000000")
    kr.secret("--org", "acme", "BYOK_ROUTE", "direct")
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    token = kr.mint("acme/mm")
    kr.start()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KEYRAIL_WORKSPACE_TOKEN": token}
    text = subprocess.run([KEYRAIL, "run", "--server", f"http://127.0.0.1:{kr.port}", "--explain", "--",
                           "claude"], env=env, capture_output=True, text=True, check=True).stdout
    host = vendor.url.split("//", 1)[1]
    assert f"(direct BYOK vendor added: {host})" in text, text
