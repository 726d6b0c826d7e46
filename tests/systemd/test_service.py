"""taskworkerd.service under a real systemd: readiness, STATUS=, reload,
a crash, the watchdog, a draining stop and a bad config."""

import re
import time

from .conftest import CONF, QUEUE, UNIT

SLOW = {"type": "exec", "command": ["/bin/sh", "-c", "sleep 0.3", "handler"]}


def test_enabled_ready_and_serving(box):
    # The session started it with `systemctl enable --now taskworkerd`;
    # Type=notify means that returned only after READY=1.
    s = box.show(UNIT, "Type", "ActiveState", "SubState", "UnitFileState")
    assert s == {"Type": "notify", "ActiveState": "active", "SubState": "running",
                 "UnitFileState": "enabled"}, s
    ids = box.add_tasks(20)
    box.wait_completed(ids)
    box.wait(lambda: re.search(r"^serving: 0 in flight, .*\b\d+ completed",
                               box.show(UNIT, "StatusText")["StatusText"]), 5,
             "STATUS= with the completed count")
    status = box.out(f"systemctl status {UNIT} --no-pager")
    assert "Status: \"serving:" in status, status


def test_ready_while_postgres_is_down(clean):
    box = clean
    ids = box.add_tasks(5, push=False)
    box.run("systemctl stop postgresql")
    try:
        start = time.monotonic()
        box.run(f"systemctl restart {UNIT}")
        took = time.monotonic() - start
        # Ready once the loop runs, whatever the servers say; STATUS= says
        # what it waits for.
        assert box.show(UNIT, "ActiveState")["ActiveState"] == "active"
        assert took < 5, took
        box.wait(lambda: box.show(UNIT, "StatusText")["StatusText"]
                 .startswith("waiting for postgres"), 5, "STATUS=waiting for postgres")
        box.redis("RPUSH", QUEUE, *ids)
    finally:
        box.run("systemctl start postgresql")
    box.wait_completed(ids, timeout=30)


def test_reload_good_then_bad(clean):
    box = clean
    pid = box.show(UNIT, "MainPID")["MainPID"]
    c = box.cursor()
    box.configure(worker={"delay_ms": 70})
    box.run(f"systemctl reload {UNIT}")
    box.wait_journal(UNIT, c, "reloaded: delay 70 ms")

    c = box.cursor()
    box.write(CONF, "worker: {\n\tconcurrency = 0;\n};\n")
    box.run(f"systemctl reload {UNIT}")
    box.wait_journal(UNIT, c, "reload failed: keeping the running configuration")
    log = box.journal(UNIT, c)
    assert f"{CONF}:2: worker.concurrency: must be between 1 and" in log, log
    s = box.show(UNIT, "MainPID", "ActiveState")
    assert s == {"MainPID": pid, "ActiveState": "active"}, s
    ids = box.add_tasks(5)
    box.wait_completed(ids)


def test_kill_mid_run_restarts_and_loses_nothing(clean):
    box = clean
    box.configure(handler=SLOW, worker={"concurrency": 4})
    box.run(f"systemctl restart {UNIT}")
    before = box.show(UNIT, "MainPID", "NRestarts")
    ids = box.add_tasks(40)
    box.wait(lambda: box.completed(ids) >= 4, 15, "a few tasks completed")
    box.run(f"systemctl kill -s KILL {UNIT}")

    def restarted():
        s = box.show(UNIT, "NRestarts", "ActiveState", "MainPID")
        return (int(s["NRestarts"]) == int(before["NRestarts"]) + 1 and
                s["ActiveState"] == "active" and s["MainPID"] not in (before["MainPID"], "0"))
    box.wait(restarted, 15, "a restart after SIGKILL")
    assert box.completed(ids) < len(ids), "killed too late to tell"
    box.wait_completed(ids, timeout=30)
    assert box.redis("LLEN", QUEUE) == "0"
    assert box.redis("LLEN", f"{QUEUE}:dead") == "0"
    assert box.redis("ZCARD", f"{QUEUE}:processing:box") == "0"


def test_a_crash_leaves_no_handler_behind(clean):
    # KillMode=mixed: a stop signals the daemon alone, but once it is gone
    # whatever it left running is killed before the restart.
    box = clean
    box.configure(handler={"type": "exec", "command": ["/bin/sh", "-c", "sleep 60", "h"]},
                  worker={"concurrency": 2, "shutdown_timeout_ms": 1000})
    box.run(f"systemctl restart {UNIT}")
    before = box.show(UNIT, "MainPID", "NRestarts")
    box.add_tasks(2)
    old = box.wait(lambda: (lambda p: p if len(p) == 2 else None)(
        box.out("pgrep -x sleep", check=False).split()), 10, "two handlers running")
    box.run(f"kill -KILL {before['MainPID']}")
    box.wait(lambda: int(box.show(UNIT, "NRestarts")["NRestarts"]) ==
             int(before["NRestarts"]) + 1, 15, "the restart")
    # The restarted daemon runs the two tasks again, in new processes.
    new = box.wait(lambda: (lambda p: p if len(p) == 2 else None)(
        box.out("pgrep -x sleep", check=False).split()), 10, "two handlers running again")
    assert not set(old) & set(new), (old, new)


def test_watchdog_restarts_a_stopped_daemon(clean):
    box = clean
    box.write(f"/etc/systemd/system/{UNIT}.d/watchdog.conf", "[Service]\nWatchdogSec=2\n")
    box.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
    s = box.show(UNIT, "WatchdogUSec", "MainPID", "NRestarts")
    assert s["WatchdogUSec"] == "2s", s
    c = box.cursor()
    box.run(f"kill -STOP {s['MainPID']}")
    start = time.monotonic()
    box.wait(lambda: int(box.show(UNIT, "NRestarts")["NRestarts"]) == int(s["NRestarts"]) + 1,
             20, "the watchdog's restart")
    took = time.monotonic() - start
    box.wait(lambda: box.show(UNIT, "ActiveState")["ActiveState"] == "active", 10,
             "active again")
    log = box.journal(UNIT, c)
    assert "Watchdog timeout" in log, log
    assert box.show(UNIT, "MainPID")["MainPID"] != s["MainPID"]
    # WatchdogSec=2, then SIGABRT (and SIGCONT), then RestartSec=2.
    assert took < 10, took
    ids = box.add_tasks(3)
    box.wait_completed(ids)


def test_stop_drains_and_leaves_no_processing_list(clean):
    box = clean
    box.configure(handler={"type": "exec", "command": ["/bin/sh", "-c", "sleep 1", "h"]},
                  worker={"concurrency": 8})
    box.run(f"systemctl restart {UNIT}")
    ids = box.add_tasks(30)
    box.wait(lambda: int(box.redis("ZCARD", f"{QUEUE}:processing:box")) > 0, 10,
             "tasks in flight")
    c = box.cursor()
    box.run(f"systemctl stop {UNIT}", timeout=60)
    s = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
    assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, s
    log = box.journal(UNIT, c)
    assert re.search(r"stopping: [1-9]\d* task\(s\) in flight", log), log
    assert "exiting with status 0" in log, log
    assert box.processing_keys() == []
    # The running handlers finished: none failed, nothing waits for a retry.
    assert box.redis("ZCARD", f"{QUEUE}:retry") == "0"
    done = box.completed(ids)
    assert done > 0
    # Every id is completed or back in the queue, once.
    waiting = sorted(int(x) for x in box.redis("LRANGE", QUEUE, 0, -1).split())
    left = sorted(i for i in ids if box.completed([i]) == 0)
    assert waiting == left, (waiting, left)
    assert done + len(waiting) == len(ids)


def test_bad_config_fails_once(clean):
    box = clean
    box.write(CONF, "worker: {\n\tconcurrency = 0;\n};\n")
    c = box.cursor()
    res = box.run(f"systemctl restart {UNIT}", check=False)
    assert res.returncode != 0
    time.sleep(4)   # twice RestartSec=
    s = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert s == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78",
                 "NRestarts": "0"}, s
    line = f"{CONF}:2: worker.concurrency: must be between 1 and 100000"
    log = box.journal(UNIT, c)
    assert log.count(line) == 1, log
    status = box.run(f"systemctl status {UNIT} --no-pager -l", check=False).stdout
    assert line in status and "status=78" in status, status
    # The same check, run by root outside the unit.
    res = box.run("taskworkerd -t", check=False)
    assert res.returncode == 78 and line in res.stderr, res
