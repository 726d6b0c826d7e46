"""taskworkerd@NAME.service: two instances side by side on one queue, each
with its own config and its own credential."""

import re

from .conftest import QUEUE, UNIT

SLOW = {"type": "exec", "command": ["/bin/sh", "-c", "sleep 0.2", "handler"]}


def completed_by(box, unit):
    m = re.search(r"(\d+) completed", box.show(unit, "StatusText")["StatusText"])
    return int(m.group(1)) if m else 0


def test_two_instances_side_by_side(clean):
    box = clean
    units = ["taskworkerd@a.service", "taskworkerd@b.service"]
    # Instance a logs in as its own Redis user, with the password in the
    # credential the template loads for it.
    box.redis("ACL", "SETUSER", "twa", "on", ">a-s3cret", "~*", "&*", "+@all")
    box.run("install -d -m 700 /etc/credstore && (umask 077; echo 'a-s3cret' > "
            "/etc/credstore/taskworkerd@a.redis-password)")
    box.configure("/etc/taskworkerd/a.conf", worker_id="a", handler=SLOW,
                  redis={"username": "twa"}, worker={"concurrency": 2})
    box.configure("/etc/taskworkerd/b.conf", worker_id="b", handler=SLOW,
                  worker={"concurrency": 2})
    try:
        box.run(f"systemctl stop {UNIT} && systemctl start " + " ".join(units))
        pids = set()
        for u in units:
            s = box.show(u, "ActiveState", "MainPID", "ExecStart")
            assert s["ActiveState"] == "active", (u, s)
            name = u.split("@")[1].split(".")[0]
            assert f"/etc/taskworkerd/{name}.conf" in s["ExecStart"], s
            pids.add(s["MainPID"])
        assert len(pids) == 2
        assert set(box.redis("SMEMBERS", f"{QUEUE}:workers").split()) >= {"a", "b"}
        ids = box.add_tasks(40)
        box.wait_completed(ids, timeout=30)
        box.wait(lambda: completed_by(box, units[0]) + completed_by(box, units[1]) == 40, 5,
                 "both instances' STATUS= counts")
        assert completed_by(box, units[0]) > 0 and completed_by(box, units[1]) > 0
        names = box.redis("CLIENT", "LIST")
        assert "user=twa" in names, names
    finally:
        box.run("systemctl stop " + " ".join(units), check=False)
        box.run("rm -f /etc/credstore/taskworkerd@a.redis-password "
                "/etc/taskworkerd/a.conf /etc/taskworkerd/b.conf")
        box.redis("ACL", "DELUSER", "twa")
