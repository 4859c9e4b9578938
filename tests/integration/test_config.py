"""keyrail.conf beyond the settings table (issue 13): the per-provider base
URL override ([provider NAME] base_url, KEYRAIL_PROVIDER_<NAME>_BASE_URL),
seen by the proxy, the provisioner and explain alike; and where an
installed keyrail finds its registry."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import (KEYRAIL, ROOT, TENANT_MINIMAX_KEY, FakeVendor, http)

def env_of(provision_json):
    return {v["key"]: v.get("value") for v in json.loads(provision_json)["env"]}


MSG = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def staging(tmp_path):
    d = tmp_path / "staging"
    d.mkdir()
    v = FakeVendor(str(d))
    yield v
    v.stop()


def test_provider_base_url_override_reaches_the_proxy(kr, vendor, staging):
    """From the file for one provider, from the environment for another: the
    proxy sends each to its overridden root; the registry's URL gets nothing."""
    tok = kr.setup_org()
    kr.extra_config = f"[provider anthropic]\nbase_url = {staging.url}/\n"
    kr.write_config()
    env = kr.env()
    env["KEYRAIL_PROVIDER_OPENAI_BASE_URL"] = staging.url
    kr.env = lambda: env
    kr.start()
    st, _, data = http(kr.port, "POST", "/anthropic/v1/messages", MSG, {"x-api-key": tok})
    assert st == 200, data
    st, _, data = http(kr.port, "POST", "/openai/v1/chat/completions", CHAT,
                       {"authorization": f"Bearer {tok}"})
    assert st == 200, data
    paths = [r["path"] for r in staging.requests()]
    assert vendor.requests() == [], "the registry's base URL was still used"
    assert paths == ["/v1/messages", "/v1/chat/completions"], paths
    log = kr.log_text()
    assert "provider 'anthropic': base_url overridden by the config file" in log
    assert "provider 'OPENAI': base_url overridden by the environment" in log


def test_provider_base_url_override_reaches_provisioning_and_explain(kr, vendor, staging):
    kr.setup_org()
    kr.secret("--org", "acme", "MINIMAX_API_KEY", TENANT_MINIMAX_KEY)
    kr.secret("--org", "acme", "BYOK_ROUTE", "direct")  # the vendor's URL is in the environment
    kr.cli("ws", "create", "acme", "mm", "--model", "MiniMax-M2")
    base = env_of(kr.cli("provision", "acme/mm", "--rebuild", "--format", "json").stdout)
    assert base["ANTHROPIC_BASE_URL"] == vendor.url + "/minimax/anthropic"
    env = kr.env()
    env["KEYRAIL_PROVIDER_MINIMAX_BASE_URL"] = "https://egress.example/minimax"
    p = subprocess.run([KEYRAIL, "provision", "acme/mm", "--rebuild", "--format", "json"], env=env,
                       capture_output=True, text=True, check=True)
    assert env_of(p.stdout)["ANTHROPIC_BASE_URL"] == "https://egress.example/minimax"
    p = subprocess.run([KEYRAIL, "explain", "acme/mm"], env=env, capture_output=True, text=True,
                       check=True)
    assert "https://egress.example" in p.stdout and vendor.url not in p.stdout, p.stdout
    # `keyrail config` shows it, and its dump loads back with it
    p = subprocess.run([KEYRAIL, "config"], env=env, capture_output=True, text=True, check=True)
    assert "[provider minimax]\n# env\nbase_url = https://egress.example/minimax" in p.stdout, p.stdout
    dumped = os.path.join(kr.tmp, "dumped.conf")
    open(dumped, "w").write(p.stdout)
    env2 = kr.env()
    p = subprocess.run([KEYRAIL, "provision", "acme/mm", "--rebuild", "--format", "json", "--config", dumped],
                       env=env2, capture_output=True, text=True, check=True)
    assert env_of(p.stdout)["ANTHROPIC_BASE_URL"] == "https://egress.example/minimax"


def test_bad_provider_overrides_are_refused(kr, vendor, tmp_path):
    kr.setup_org()
    cases = [
        ("[provider nosuch]\nbase_url = https://x.example\n", None, "has no provider 'nosuch'"),
        ("[provider anthropic]\nbase_url = ftp://x.example\n", None, "must be http(s)://"),
        ("[provider anthropic]\nprotocol = openai\n", None, "only base_url"),
        ("", ("KEYRAIL_PROVIDER_NOSUCH_BASE_URL", "https://x.example"), "KEYRAIL_PROVIDER_NOSUCH_BASE_URL"),
        ("", ("KEYRAIL_PROVIDER_ANTHROPIC_BASE_URL", "https://a b.example"), "space"),
    ]
    for extra, var, want in cases:
        kr.extra_config = extra
        kr.write_config()
        env = kr.env()
        if var:
            env[var[0]] = var[1]
        p = subprocess.run([KEYRAIL, "serve"], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and want in p.stderr, (extra, var, p.stderr)
        p = subprocess.run([KEYRAIL, "explain", "acme/boss"], env=env, capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr, (extra, var, p.stderr)
    kr.extra_config = ""
    kr.write_config()


def test_installed_keyrail_finds_its_registry_under_its_prefix(tmp_path):
    """`meson install` puts etc/providers.conf under the prefix's datadir;
    a keyrail binary outside the build tree (an installed one) defaults to
    exactly that path, while the build tree's binary keeps the source tree's
    (make run, the tests)."""
    build = os.path.dirname(KEYRAIL)
    info = json.loads(subprocess.run(["meson", "introspect", build, "--installed"], capture_output=True,
                                     text=True, check=True).stdout)
    src = os.path.join(ROOT, "etc", "providers.conf")
    assert src in info, f"meson install does not install {src}: {info}"
    installed_registry = info[src]
    installed_bin = info[os.path.join(build, "keyrail")]
    assert installed_registry.endswith("/keyrail/providers.conf")

    def registry_file(binary):
        env = {"PATH": os.environ["PATH"]}
        out = subprocess.run([binary, "config"], capture_output=True, text=True, check=True, env=env).stdout
        return [l.split(" = ", 1)[1] for l in out.splitlines() if l.startswith("file = ")][0]

    assert registry_file(KEYRAIL) == src
    # the same binary as installed: outside the build tree
    bindir = tmp_path / "bin"
    bindir.mkdir()
    copy = bindir / os.path.basename(installed_bin)
    shutil.copy2(KEYRAIL, copy)
    assert registry_file(str(copy)) == installed_registry
    ref = subprocess.run([KEYRAIL, "config", "--reference"], capture_output=True, text=True, check=True).stdout
    assert "<datadir>/keyrail/providers.conf" in ref
