"""The sandbox at run time: what an exec handler may and may not do inside
the shipped unit, the drop-in README gives to relax it, the SQL handler,
and `systemd-analyze security` against the running manager."""

import re

from .conftest import README_DROPIN, SUMMARY, UNIT

# Runs as the exec handler and says, line by line, what it could do.
PROBE = r"""#!/bin/sh
probe() {
	what=$1; shift
	if "$@" >/dev/null 2>&1; then echo "probe $what: yes"; else echo "probe $what: no"; fi
}
py() { /usr/bin/python3 -c "$1"; }
probe user sh -c 'test "$(id -un)" = taskworkerd && test "$(id -u)" -ge 61184'
probe read-etc test -r /etc/os-release
probe read-home ls /root
probe write-tmp sh -c 'echo x > /tmp/probe'
probe write-etc sh -c 'echo x > /etc/probe'
probe write-var-tmp sh -c 'echo x > /var/tmp/probe'
probe write-state sh -c 'echo x > /var/lib/taskworkerd-app/probe'
probe run-programs sh -c '/bin/true | /bin/cat'
probe inet py 'import socket; socket.create_connection(("127.0.0.1", 6379)).close()'
probe netlink py 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)'
probe renice py 'import os; os.nice(1)'
probe wx-memory py 'import mmap; mmap.mmap(-1, 4096, prot=7)'
probe setuid py 'import os; os.setuid(0)'
probe read-credential sh -c 'test -r "$CREDENTIALS_DIRECTORY/pgpass"'
echo "probe done"
"""

STRICT = {
    "user": "yes", "read-etc": "yes", "read-home": "no", "write-tmp": "yes",
    "write-etc": "no", "write-var-tmp": "yes", "write-state": "no",
    "run-programs": "yes", "inet": "yes", "netlink": "no", "renice": "no",
    "wx-memory": "no", "setuid": "no", "read-credential": "yes",
}


def run_probe(box):
    c = box.cursor()
    ids = box.add_tasks(1)
    box.wait_completed(ids)
    box.wait_journal(UNIT, c, "probe done")
    found = dict(re.findall(r"probe ([a-z-]+): (yes|no)", box.journal(UNIT, c)))
    return found


def test_exec_handler_inside_the_sandbox(clean):
    box = clean
    box.write("/opt/probe.sh", PROBE, mode="755")
    # A credential the handler can read, as the daemon's own user can.
    box.run("install -d -m 700 /etc/credstore && (umask 077; echo '*:*:*:nobody:x' > "
            "/etc/credstore/taskworkerd.pgpass)")
    box.configure(handler={"type": "exec", "command": ["/opt/probe.sh"]})
    try:
        box.run(f"systemctl restart {UNIT}")
        assert run_probe(box) == STRICT

        # README's drop-in: a state directory of its own, and W+X memory.
        box.write(f"/etc/systemd/system/{UNIT}.d/handler.conf", README_DROPIN)
        box.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
        relaxed = dict(STRICT, **{"write-state": "yes", "wx-memory": "yes"})
        assert run_probe(box) == relaxed
    finally:
        box.run("rm -f /etc/credstore/taskworkerd.pgpass")


def test_sql_handler_inside_the_sandbox(clean):
    box = clean
    box.run("runuser -u postgres -- psql -q tasks -c 'SET ROLE taskworkerd' "
            "-f /usr/share/taskworkerd/examples/process_task.sql")
    box.configure(handler={"type": "sql", "statement": "SELECT process_task($1)"})
    box.run(f"systemctl restart {UNIT}")
    ids = box.add_tasks(10, name="sql")
    box.wait_completed(ids)
    assert box.sql("SELECT count(*) FROM task_log") == "10"


def test_security_exposure(box):
    out = box.out(f"systemd-analyze security {UNIT} --no-pager")
    line = [x for x in out.splitlines() if "Overall exposure level" in x]
    assert line, out
    SUMMARY.append("systemd-analyze security: " + line[0].split("→")[-1].strip())
    score = float(re.search(r": (\d+\.\d+)", line[0]).group(1))
    assert score <= 2.0, line[0]
