"""Master key rotation, `keyrail rekey` (issue 8), with the real binaries.

On a live PostgreSQL store with two instances (the fixtures of
test_multi.py: a fresh database per test, KR_TEST_PG_URL required): a dry
run changes nothing; a secret that does not open under the old key aborts
the rotation with nothing changed; the rotation re-encrypts every secret of
every scope while the instances run; from then on the old key opens nothing
(the CLI reports every secret UNREADABLE, a second rotation from it is
refused, and an instance still holding it refuses -- fail closed -- a token it
has to resolve); restarted with the new key, both instances serve every
workspace again. The same on SQLite with one instance.
"""
import os
import subprocess

from conftest import KEYRAIL, check_log_clean
from test_multi import call, cluster, pg_store  # noqa: F401 (fixtures)


def secret_rows(store):
    return store.rows("select scope, owner_id, key, ciphertext from secrets order by scope, owner_id, key")


def secret_states(k, *scopes):
    """{(scope, owner, key): STATE} from `keyrail secret list`."""
    out = {}
    for flag, owner in scopes:
        lines = k.cli("secret", "list", flag, owner).stdout.strip().splitlines()[1:]
        for line in lines:
            f = line.split()
            out[(flag, owner, f[0])] = f[1]
    return out


def restart_with_key(k, key_file):
    assert k.stop() == 0, k.log_text()[-3000:]
    k.key_file = key_file
    k.write_config()
    k.start()


def test_rekey_on_a_live_postgres_store_with_two_instances(cluster, tmp_path):
    a, b, store = cluster.a, cluster.b, cluster.store
    toks = [a.setup_org("acme", "boss", credits="100"), a.setup_org("beta", "boss", credits="100")]
    a.cli("ws", "create", "acme", "dev", "--model", "claude-sonnet-4-5")
    toks.append(a.mint("acme/dev"))
    a.secret("--org", "acme", "ORG_NOTE", "acme-note")
    a.secret("--org", "beta", "ORG_NOTE", "beta-note")
    a.secret("--ws", "acme/dev", "DEV_SETTING", "dev-value")
    scopes = [("--org", "acme"), ("--org", "beta"), ("--ws", "acme/boss"), ("--ws", "beta/boss"),
              ("--ws", "acme/dev")]
    cluster.start()
    for tok in toks:
        for k in (a, b):
            assert call(k, tok, fake="in=10 out=1")[0] == 200
    before = secret_rows(store)
    assert len(before) >= 6 and {r[0] for r in before} == {"org", "workspace"}
    assert set(secret_states(a, *scopes).values()) == {"ok"}
    new_key = os.path.join(str(tmp_path), "new.key")
    a.cli("keygen", new_key)
    rekey = ["rekey", "--old-key-file", a.key_file, "--new-key-file", new_key]

    # a dry run reports every secret and changes nothing
    p = a.cli(*rekey, "--dry-run")
    assert p.stdout.count("would re-encrypt ") == len(before), p.stdout
    assert "workspace acme/dev DEV_SETTING" in p.stdout and "org beta ORG_NOTE" in p.stdout
    assert f"dry run: {len(before)} secret(s) would be re-encrypted; nothing was changed" in p.stdout
    assert secret_rows(store) == before

    # one secret that does not open under the old key aborts the whole rotation
    owner = store.one("select id from orgs where slug = 'beta'")
    store.rows("insert into secrets (scope, owner_id, key, ciphertext, enc_version, created_at, updated_at)"
               f" values ('org', {owner}, 'FOREIGN', 'AQIDBAUGBwgJ', 1, 0, 0)")
    p = a.cli(*rekey, check=False)
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keyrail: rekey: ")
    assert "FOREIGN" in err and "org scope" in err and "org beta" in err and "nothing was changed" in err, err
    p = a.cli(*rekey, "--dry-run", check=False)
    assert p.returncode == 1 and "UNREADABLE org beta FOREIGN" in p.stdout
    store.rows("delete from secrets where key = 'FOREIGN'")
    assert secret_rows(store) == before, "not half rotated"

    # the rotation, with both instances running
    p = a.cli(*rekey)
    assert f"{len(before)} secret(s) re-encrypted under the new key in one transaction" in p.stdout
    after = secret_rows(store)
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert all(x[3] != y[3] for x, y in zip(after, before)), "every ciphertext was rewritten"

    # the old key opens nothing any more
    states = secret_states(a, *scopes)  # a's config still names the old key
    assert len(states) == len(before) and set(states.values()) == {"UNREADABLE"}, states
    p = a.cli(*rekey, check=False)
    assert p.returncode == 1 and "already rotated" in p.stderr, p.stderr
    fresh = a.mint("acme/dev")  # in no token cache: the instances must resolve it
    for k in (a, b):
        st, _, data = call(k, fresh, fake="in=10 out=1")
        assert st == 503 and b"SECRET_UNREADABLE" in data, (k.name, st, data)

    # restarted with the new key, both serve every workspace again
    for k in (a, b):
        restart_with_key(k, new_key)
    for tok in toks + [fresh]:
        for k in (a, b):
            st, _, data = call(k, tok, fake="in=10 out=1")
            assert st == 200, (k.name, st, data)
    assert set(secret_states(a, *scopes).values()) == {"ok"}
    assert secret_rows(store) == after


def test_rekey_on_sqlite_then_serve(kr, vendor, tmp_path):
    tok = kr.setup_org(credits="100")
    kr.secret("--org", "acme", "ORG_NOTE", "note")
    kr.start()
    assert call(kr, tok, fake="in=10 out=1")[0] == 200
    assert kr.stop() == 0
    before = kr.db_rows("select scope, owner_id, key, ciphertext from secrets order by 1, 2, 3")
    new_key = os.path.join(str(tmp_path), "new.key")
    kr.cli("keygen", new_key)
    # the new key from the environment, the old one from its file
    env = kr.env()
    env["KEYRAIL_MASTER_KEY"] = open(new_key).read().strip()
    p = subprocess.run([KEYRAIL, "rekey", "--old-key-file", kr.key_file], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"{len(before)} secret(s) re-encrypted" in p.stdout
    after = kr.db_rows("select scope, owner_id, key, ciphertext from secrets order by 1, 2, 3")
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert all(x[3] != y[3] for x, y in zip(after, before))
    assert set(secret_states(kr, ("--org", "acme"), ("--ws", "acme/boss")).values()) == {"UNREADABLE"}
    kr.key_file = new_key
    kr.write_config()
    kr.start()
    assert call(kr, tok, fake="in=10 out=1")[0] == 200
    assert set(secret_states(kr, ("--org", "acme"), ("--ws", "acme/boss")).values()) == {"ok"}
    check_log_clean(kr.log_text())
