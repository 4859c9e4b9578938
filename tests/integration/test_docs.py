"""Docs move with code: the settings reference in docs/CONFIG.md is exactly
what `keyrail config --reference` prints, and every command has --help."""
import os
import subprocess

from conftest import KEYRAIL, ROOT


def test_config_reference_is_current():
    ref = subprocess.run([KEYRAIL, "config", "--reference"], capture_output=True, text=True, check=True).stdout
    doc = open(os.path.join(ROOT, "docs", "CONFIG.md")).read()
    assert ref in doc, "docs/CONFIG.md is stale: paste the output of `keyrail config --reference`"


def test_every_command_has_help():
    top = subprocess.run([KEYRAIL, "--help"], capture_output=True, text=True, check=True).stdout
    cmds = [l.split()[0] for l in top.split("commands:")[1].strip().splitlines()]
    assert {"serve", "org", "ws", "secret", "token", "provision", "explain", "run", "credits", "limits",
            "usage", "config", "keygen"} <= set(cmds)
    for c in cmds:
        p = subprocess.run([KEYRAIL, c, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.startswith("usage: keyrail " + c), (c, p.stdout, p.stderr)


def test_errors_are_one_line_and_nonzero():
    p = subprocess.run([KEYRAIL, "org", "create", "Bad Slug!"], capture_output=True, text=True,
                       env={"KEYRAIL_STORE_URL": "/nonexistent/dir/x.db", "PATH": os.environ["PATH"]})
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("keyrail: ")
    p = subprocess.run([KEYRAIL, "nosuchcommand"], capture_output=True, text=True)
    assert p.returncode != 0 and p.stderr.startswith("keyrail: unknown command")


def test_config_dump_loads_back(tmp_path):
    env = {"PATH": os.environ["PATH"], "KEYRAIL_SERVER_MAX_HEADERS": "33"}
    dump = subprocess.run([KEYRAIL, "config"], capture_output=True, text=True, check=True, env=env).stdout
    f = tmp_path / "dumped.conf"
    f.write_text(dump)
    again = subprocess.run([KEYRAIL, "config", "--config", str(f)], capture_output=True, text=True,
                           check=True, env={"PATH": os.environ["PATH"]}).stdout
    assert "max_headers = 33" in again
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("#")]
    assert strip(again) == strip(dump)


def test_readme_keeps_workspace_tokens_out_of_argv():
    """ps shows every process's arguments: the README hands the launcher its
    token through KEYRAIL_WORKSPACE_TOKEN, never as --token on a command line."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    runs = [l for l in readme.splitlines() if l.lstrip().startswith("keyrail run")]
    assert runs and not [l for l in runs if "--token" in l], runs
    assert "export KEYRAIL_WORKSPACE_TOKEN=" in readme
