"""Secrets through systemd credentials, as README tells an operator to give
them: the Redis password (requirepass) and a pgpass file for a PostgreSQL
role with a SCRAM password, with no file anyone else can read."""

import shlex

from .conftest import CONF, README_SECRET_IN_PLACE, README_SECRETS, UNIT


def give(box, name, secret):
    """Runs README's lines for credential NAME, with SECRET in them."""
    placeholder, lines = README_SECRETS[name]
    for line in lines:
        box.run(line.replace(f"'{placeholder}'", shlex.quote(secret)))


def assert_private(box, path):
    # Mode and owner as `ls -ld` shows them, for the directory and the file.
    out = box.out(f"stat -c '%a %U %n' /etc/credstore {path}").splitlines()
    assert out == [f"700 root /etc/credstore", f"600 root {path}"], out


def test_redis_password_from_a_credential(clean):
    box = clean
    path = "/etc/credstore/taskworkerd.redis-password"
    give(box, "redis-password", "r3dis s3cret")
    box.redis("CONFIG", "SET", "requirepass", "r3dis s3cret")
    box.redis_password = "r3dis s3cret"
    try:
        assert_private(box, path)
        box.run(f"systemctl restart {UNIT}")
        ids = box.add_tasks(5)
        box.wait_completed(ids)
        # A reload reads the credential again: the password is unchanged,
        # and a reconnect afterwards still authenticates.
        c = box.cursor()
        box.run(f"systemctl reload {UNIT}")
        box.wait_journal(UNIT, c, "reloaded:")
        c = box.cursor()
        box.redis("CLIENT", "KILL", "TYPE", "normal")
        box.wait_journal(UNIT, c, "redis command connection: connected")
        ids = box.add_tasks(5)
        box.wait_completed(ids)
        log = box.journal(UNIT, c)
        assert "WRONGPASS" not in log and "NOAUTH" not in log, log
        # root outside the unit checks the same config.
        assert box.out("taskworkerd -t") == "configuration OK"

        # Without the credential the unit still starts; Redis refuses it.
        box.run(f"rm {path} && systemctl restart {UNIT}")
        assert box.show(UNIT, "ActiveState")["ActiveState"] == "active"
        box.wait(lambda: "NOAUTH" in box.show(UNIT, "StatusText")["StatusText"], 10,
                 "STATUS= naming the refusal")
    finally:
        box.redis("CONFIG", "SET", "requirepass", "")
        box.redis_password = None
        box.run(f"rm -f {path}")


def test_pgpass_from_a_credential(clean):
    box = clean
    path = "/etc/credstore/taskworkerd.pgpass"
    box.sql("CREATE ROLE twscram LOGIN PASSWORD 'pg s3cret'; "
            "GRANT SELECT, UPDATE ON task TO twscram;")
    try:
        stored = box.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'twscram'")
        assert stored.startswith("SCRAM-SHA-256$"), stored
        box.configure(postgres={"conninfo": "host=127.0.0.1 dbname=tasks user=twscram"})
        give(box, "pgpass", "127.0.0.1:5432:tasks:twscram:pg s3cret")
        assert_private(box, path)
        c = box.cursor()
        box.run(f"systemctl restart {UNIT}")
        ids = box.add_tasks(5)
        box.wait_completed(ids)
        log = box.journal(UNIT, c)
        assert "PGPASSFILE: the credential pgpass" in log, log
        assert box.out("taskworkerd -t") == "configuration OK"

        # Without it the password is missing, and STATUS= says so.
        box.run(f"rm {path} && systemctl restart {UNIT}")
        box.wait(lambda: "no password supplied" in box.show(UNIT, "StatusText")["StatusText"],
                 15, "STATUS= naming the missing password")
    finally:
        box.run(f"rm -f {path}")
        box.configure()
        box.run(f"systemctl restart {UNIT}")
        box.sql("DROP OWNED BY twscram; DROP ROLE twscram;")


def test_a_root_only_password_file_fails_once(clean):
    # Why the secrets moved to credentials: a mode 600 file root owns is
    # out of the dynamic user's reach, and the daemon says so, once.
    box = clean
    box.write("/etc/taskworkerd/redis.pass", "x\n", mode="600")
    box.configure(redis={"password_file": "/etc/taskworkerd/redis.pass"})
    try:
        c = box.cursor()
        assert box.run(f"systemctl restart {UNIT}", check=False).returncode != 0
        log = box.journal(UNIT, c)
        assert (f"{CONF}:3: redis.password_file: cannot read /etc/taskworkerd/redis.pass: "
                "Permission denied") in log, log
        s = box.show(UNIT, "ExecMainStatus", "NRestarts")
        assert s == {"ExecMainStatus": "78", "NRestarts": "0"}, s
    finally:
        box.run("rm -f /etc/taskworkerd/redis.pass")


def test_a_drop_in_loads_the_password_file_where_it_is(clean):
    # The file the operator had, mode 600, handed over by systemd.
    box = clean
    box.write("/etc/taskworkerd/redis.pass", "in pl4ce\n", mode="600")
    box.write(f"/etc/systemd/system/{UNIT}.d/secrets.conf",
              f"[Service]\n{README_SECRET_IN_PLACE}\n")
    box.redis("CONFIG", "SET", "requirepass", "in pl4ce")
    box.redis_password = "in pl4ce"
    try:
        box.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
        ids = box.add_tasks(5)
        box.wait_completed(ids)
    finally:
        box.redis("CONFIG", "SET", "requirepass", "")
        box.redis_password = None
        box.run("rm -f /etc/taskworkerd/redis.pass")
