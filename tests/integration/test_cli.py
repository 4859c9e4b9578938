"""The command line against input a careless or hostile operator (or a
script fed by a tenant) gives it (issue 13): names, values, lifetimes, and
what the CLI prints back. Errors are one line, escaped, non-zero; nothing is
written when something is refused."""
import subprocess

import pytest

from conftest import KEYRAIL, TENANT_OAUTH


def one_line_error(p):
    """A refusal: exit 1 or 2, nothing on stdout, exactly one escaped line on stderr."""
    assert p.returncode in (1, 2), (p.returncode, p.stdout, p.stderr)
    assert p.stdout == "", p.stdout
    err = p.stderr
    assert err.startswith("keyrail: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert all(c >= " " and c != "\x7f" for c in err[:-1]), f"raw control byte in {err!r}"
    assert "\u202e" not in err and "\x9b" not in err
    return err


def run_bytes(kr, *args, input=None):
    """The CLI with bytes in and out (for NUL bytes and raw escapes)."""
    p = subprocess.run([KEYRAIL, *args], env=kr.env(), input=input, capture_output=True, timeout=60)
    return p


BAD_NAMES = ["../x", "a/b", "", ".", "..", "x\ny", "x\x1b[31m", "Boss", "a b", "a_b", "-a",
             "x" * 10240, "r\u202eevil"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[f"n{i}" for i in range(len(BAD_NAMES))])
def test_workspace_names_are_validated_like_org_slugs(kr, vendor, name):
    kr.setup_org()
    before = kr.db_rows("select id, name from workspaces order by id")
    err = one_line_error(kr.cli("ws", "create", "acme", name, check=False))
    assert "workspace name" in err and "[a-z0-9-]" in err, err
    assert kr.db_rows("select id, name from workspaces order by id") == before
    # every other place a name enters refuses it the same way
    for args in (["token", "mint", f"acme/{name}"], ["token", "list", f"acme/{name}"],
                 ["provision", f"acme/{name}"], ["explain", f"acme/{name}"],
                 ["secret", "list", "--ws", f"acme/{name}"], ["limits", "show", "--ws", f"acme/{name}"],
                 ["usage", "--ws", f"acme/{name}"]):
        err = one_line_error(kr.cli(*args, check=False))
        assert "not a workspace name" in err or "not an org slug" in err, (args, err)
    assert kr.db_rows("select count(*) from tokens") == [(1,)], "only setup_org's token"


def test_org_part_of_a_reference_is_validated(kr, vendor):
    kr.setup_org()
    for ref in ("acme/", "/boss", "ACME/boss", "a\x1bc/boss", "acme/boss/x"):
        err = one_line_error(kr.cli("token", "mint", ref, check=False))
        assert "workspace reference" in err, err
    for org in ("Acme", "a\nb", "../acme"):
        one_line_error(kr.cli("ws", "list", org, check=False))
        one_line_error(kr.cli("credits", "show", org, check=False))
    assert kr.db_rows("select count(*) from tokens") == [(1,)]


def test_secret_value_with_a_nul_byte_is_refused(kr, vendor):
    kr.setup_org()
    for value in (b"\x00leading", b"cut\x00here", b"trailing\x00\n"):
        p = run_bytes(kr, "secret", "set", "--org", "acme", "SOME_VALUE", input=value)
        assert p.returncode == 1 and p.stdout == b""
        assert p.stderr == b"keyrail: secret set: the value holds a NUL byte; secret values are text\n"
    assert kr.db_rows("select key from secrets where key = 'SOME_VALUE'") == []
    # without the NUL the same value is stored whole
    p = run_bytes(kr, "secret", "set", "--org", "acme", "SOME_VALUE", input=b"cut here\n")
    assert p.returncode == 0, p.stderr
    assert "SOME_VALUE" in kr.cli("secret", "list", "--org", "acme").stdout


@pytest.mark.parametrize("ttl", ["0d", "0h", "0m", "-1d", "3651d", "87601h", "99999999999999999999999d",
                                 "18446744073709551616d", "1.5d", "10", "10s"])
def test_token_lifetime_must_be_positive_and_sane(kr, vendor, ttl):
    kr.setup_org()
    err = one_line_error(kr.cli("token", "mint", "acme/boss", "--ttl", ttl, check=False))
    assert "--ttl" in err, err
    assert kr.db_rows("select count(*) from tokens") == [(1,)], "nothing minted"


def test_token_mint_prints_the_token_alone_on_stdout(kr, vendor):
    kr.setup_org()
    p = kr.cli("token", "mint", "acme/boss", "--ttl", "3650d")
    assert p.stderr == "", "nothing of the token (nor anything else) on stderr"
    tok = p.stdout
    assert tok.endswith("\n") and tok.count("\n") == 1 and tok.startswith("krws_"), tok
    assert len(tok.strip()) == 48
    (exp,), = kr.db_rows("select expires_at - created_at from tokens order by id desc limit 1")
    assert exp == 3650 * 86400000
    assert "alone" in kr.cli("token", "--help").stdout


def test_errors_escape_what_they_quote(kr, vendor):
    kr.setup_org()
    for key in ("BAD\nKEY", "ESC\x1b[2JKEY", "lower", "RLO\u202eKEY"):
        err = one_line_error(kr.cli("secret", "set", "--org", "acme", key, "--value", "v", check=False))
        assert "not a valid name" in err, err
    err = one_line_error(kr.cli("secret", "set", "--org", "acme", "BAD\nKEY", "--value", "v", check=False))
    assert "BAD\\nKEY" in err, err
    err = one_line_error(kr.cli("secret", "set", "--org", "acme", "ESC\x1b[2JKEY", "--value", "v",
                                check=False))
    assert "ESC\\x1b[2JKEY" in err, err
    # --set KEY=VALUE echoes its argument escaped too
    err = one_line_error(kr.cli("ws", "create", "acme", "dev", "--set", "no-equals\x1b]0;title\x07",
                                check=False))
    assert "\\x1b]0;title\\x07" in err, err
    # the usage of a command keeps its lines (it is keyrail's own text)
    p = kr.cli("token", check=False)
    assert p.returncode == 2 and p.stderr.startswith("keyrail: usage: keyrail token mint")
    assert p.stderr.count("\n") > 1


def test_org_names_cannot_forge_rows(kr, vendor):
    kr.cli("org", "create", "acme")
    for name in ("Evil\n2      forged                   Forged Inc", "Esc\x1b[2J", ""):
        one_line_error(kr.cli("org", "create", "evil", "--name", name, check=False))
    assert kr.db_rows("select slug from orgs") == [("acme",)]
    # a name that reached the store behind keyrail's back is shown escaped: one row per org
    import sqlite3
    c = sqlite3.connect(kr.db)
    c.execute("insert into orgs (slug, name, status, created_at) values"
              " ('evil', 'Evil' || char(10) || '99     forged  Forged' || char(27) || '[31m', 'active', 0)")
    c.commit()
    c.close()
    out = kr.cli("org", "list").stdout
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert "\x1b" not in out and "Evil\\n99" in lines[2] and "\\x1b[31m" in lines[2], out


@pytest.mark.parametrize("key", ["SECRETS_ENCRYPTION_KEY", "ADMIN_TOKEN", "KEYRAIL_MASTER_KEY",
                                 "KEYRAIL_SECRETS_MASTER_KEY_FILE", "MASTER_KEY", "ENCRYPTION_KEY"])
def test_operator_secret_names_are_forbidden(kr, vendor, key):
    kr.setup_org()
    for scope in (("--org", "acme"), ("--ws", "acme/boss")):
        err = one_line_error(kr.cli("secret", "set", *scope, key, "--value", TENANT_OAUTH, check=False))
        assert "FORBIDDEN_KEY" in err and key in err and TENANT_OAUTH not in err, err
    err = one_line_error(kr.cli("ws", "create", "acme", "dev", "--set", f"{key}=x", check=False))
    assert "FORBIDDEN_KEY" in err or "forbidden" in err, err
    assert kr.db_rows("select key from secrets where key = ?", (key,)) == []


def test_global_options_go_before_or_after_the_command(kr, vendor, tmp_path):
    """--config, --db and --registry are accepted before the command word too, as git does."""
    kr.setup_org()
    other = str(tmp_path / "other.db")
    env = kr.env()
    del env["KEYRAIL_CONFIG"]

    def run(*args):
        p = subprocess.run([KEYRAIL, *args], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    assert "acme" in run("--config", kr.config, "org", "list")
    assert run("--config", kr.config, "org", "list") == run("org", "list", "--config", kr.config)
    assert "boss" in run("--config=" + kr.config, "ws", "list", "acme")
    # --db before the command wins over the config's store, like after it
    run("--config", kr.config, "--db", other, "org", "create", "elsewhere")
    assert "elsewhere" in run("--db", other, "org", "list") and "acme" not in run("--db", other, "org", "list")
    assert "elsewhere" not in run("--config", kr.config, "org", "list")
    # given in both places, the one after the command wins
    assert "elsewhere" in run("--db", kr.db, "org", "list", "--db", other)
    assert "route: platform" in run("--config", kr.config, "--registry", kr.registry, "explain", "acme/boss")
    p = subprocess.run([KEYRAIL, "--bogus", "org", "list"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "unknown option '--bogus' before the command" in one_line_error(p)
    p = subprocess.run([KEYRAIL, "--db"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "--db needs a value" in one_line_error(p)
