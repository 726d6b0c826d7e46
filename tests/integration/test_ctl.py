"""taskworkerctl, the operator's command line: every command in text and
JSON, its exit statuses, and its moves while daemons run (requeue of one
id and of thousands, purge, retry now, pause under load) without an id
lost or run twice."""

import collections
import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from conftest import (BIN, WRAPPER, base_config, exec_handler, merge_config, read_lines,
                      redis_now_ms, render_config, scaled, wait_dead, wait_until, write_script,
                      zset)

CTL = os.environ.get("TASKWORKERCTL_BIN") or str(Path(BIN).resolve().parent.parent / "ctl" /
                                                 "taskworkerctl")
EX_OK, EX_FAIL, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 64, 69, 78


def q(path):
    return shlex.quote(str(path))


class Ctl:
    """Runs taskworkerctl against a config file of its own (or a daemon's)."""

    def __init__(self, tmp_path, servers):
        self.dir = tmp_path
        self.servers = servers
        self.path = self.write(name="ctl")

    def write(self, name="ctl", text=None, **overrides):
        """A config file: the tests' base config with OVERRIDES, or TEXT."""
        path = self.dir / f"{name}.conf"
        if text is None:
            text = render_config(merge_config(base_config(self.servers), overrides))
        path.write_text(text)
        return path

    def run(self, *args, config=None, timeout=30):
        cmd = WRAPPER + [CTL, "-c", str(config or self.path), *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=scaled(timeout), cwd=self.dir)
        for marker in ("Sanitizer", "runtime error:", "Invalid read", "Invalid write"):
            assert marker not in res.stderr, f"{args}: {res.stderr}"
        return res

    def ok(self, *args, **kw):
        res = self.run(*args, **kw)
        assert res.returncode == EX_OK, f"{args}: exit {res.returncode}: {res.stderr}"
        return res.stdout

    def json(self, *args, expect=EX_OK, **kw):
        res = self.run("--json", *args, **kw)
        assert res.returncode == expect, f"{args}: exit {res.returncode}: {res.stderr}"
        return json.loads(res.stdout)


@pytest.fixture
def ctl(tmp_path, servers, tw):
    return Ctl(tmp_path, servers)


def put_dead(tw, ids, reason="attempt 5/5: exit 3", attempts=None, queue="tasks",
             stamp="2026-12-02T01:02:03.456Z"):
    """Puts IDS in QUEUE:dead as the daemon leaves them: pushed oldest
    first, a reason each, optionally a count in QUEUE:attempts."""
    ids = [str(i) for i in ids]
    with tw.r.pipeline(transaction=False) as p:
        for k in range(0, len(ids), 1000):
            chunk = ids[k:k + 1000]
            p.rpush(f"{queue}:dead", *chunk)
            p.hset(f"{queue}:dead:reason", mapping={i: f"{stamp} {reason}" for i in chunk})
            if attempts is not None:
                p.hset(f"{queue}:attempts", mapping={i: attempts for i in chunk})
        p.execute()


def assert_redis_clean(tw, queue="tasks", workers=("itest",)):
    for w in workers:
        assert tw.r.zcard(f"{queue}:processing:{w}") == 0, zset(tw, f"{queue}:processing:{w}")
    for key in (queue, f"{queue}:dead"):
        assert tw.r.llen(key) == 0, (key, tw.r.lrange(key, 0, 20))
    for key in (f"{queue}:retry", f"{queue}:scheduled"):
        assert tw.r.zcard(key) == 0, (key, zset(tw, key))
    for key in (f"{queue}:dead:reason", f"{queue}:attempts"):
        assert tw.r.hlen(key) == 0, (key, tw.r.hgetall(key))


def completion_counter(tw, sql_teardown):
    """task.completions, +1 each time a row's status turns to 'completed'."""
    tw.db.execute("""
        ALTER TABLE task ADD COLUMN completions int NOT NULL DEFAULT 0;
        CREATE FUNCTION tw_count_completion() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'completed' THEN
            NEW.completions := OLD.completions + 1;
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER tw_count_completion BEFORE UPDATE ON task
          FOR EACH ROW EXECUTE FUNCTION tw_count_completion();
    """)
    sql_teardown.append("ALTER TABLE task DROP COLUMN IF EXISTS completions")
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_count_completion()")
    sql_teardown.append("DROP TRIGGER IF EXISTS tw_count_completion ON task")

    def counts():
        return dict(tw.db.execute("SELECT id, completions FROM task").fetchall())
    return counts


def no_second_runs(daemons):
    """No daemon took an id whose row was already completed."""
    for d in daemons:
        line = next((ln for ln in d.log_lines() if "already completed" in ln), None)
        assert line is None, f"{d.name} took a completed id again: {line}"


# ---- command line ------------------------------------------------------------------

def test_help_lists_every_command_and_option(ctl):
    res = subprocess.run([CTL, "-h"], capture_output=True, text=True)
    assert res.returncode == EX_OK, res.stderr
    for words in ("status", "dead list", "dead requeue", "dead purge", "retry list",
                  "retry now", "scheduled list", "pause", "resume", "--config", "--json",
                  "--queue", "--limit", "--all", "--version", "--help", "64", "69", "78"):
        assert words in res.stdout, f"{words!r} missing from -h:\n{res.stdout}"
    res = subprocess.run([CTL, "-V"], capture_output=True, text=True)
    assert res.returncode == EX_OK
    assert re.fullmatch(r"taskworkerctl \S+\n", res.stdout), res.stdout


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["dead"], ["dead", "bogus"], ["dead", "requeue"], ["dead", "purge"],
    ["retry", "now"], ["retry", "now", "--all"], ["dead", "requeue", "--all", "5"],
    ["status", "--limit", "3"], ["dead", "list", "--limit", "x"], ["dead", "list", "-n", "-1"],
    ["--bogus", "status"], ["pause", "tasks", "extra"], ["dead", "list", "tasks", "7"],
    ["-q", "", "pause"],
], ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_exit_64(ctl, args):
    res = ctl.run(*args)
    assert res.returncode == EX_USAGE, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith(("taskworkerctl: ", CTL)), res.stderr
    assert res.stdout == ""


def test_several_queues_need_a_queue(ctl, tw):
    path = ctl.write("two", redis={"queues": ["high", "low"]})
    res = ctl.run("dead", "list", config=path)
    assert res.returncode == EX_USAGE, res
    assert res.stderr == f"taskworkerctl: {path} has 2 queues (high, low): name one\n"
    res = ctl.run("dead", "requeue", "5", config=path)
    assert res.returncode == EX_USAGE, res
    put_dead(tw, [5], queue="low")
    assert "5  " in ctl.ok("dead", "list", "low", config=path)
    # status covers every queue of the config
    names = [x["queue"] for x in ctl.json("status", config=path)["queues"]]
    assert names == ["high", "low"]


def test_queue_not_in_config_is_used_with_a_warning(ctl, tw):
    put_dead(tw, [9], queue="other")
    res = ctl.run("--json", "dead", "list", "other")
    assert res.returncode == EX_OK, res.stderr
    assert [x["id"] for x in json.loads(res.stdout)["ids"]] == ["9"]
    assert res.stderr == (f"taskworkerctl: warning: queue other is not in redis.queues "
                          f"of {ctl.path}\n")
    assert ctl.run("dead", "list", "tasks").stderr == ""


def test_queues_that_share_keys_are_refused(ctl, tw):
    """A config whose queues share a key is refused (exit 78, as -t); a
    queue named on the command line that shares a key with one of the
    config, or with another named, is refused (64) before anything moves:
    "dead requeue jobs:dead -a" would push onto the dead list of jobs."""
    path = ctl.write("clash", redis={"queues": ["jobs", "jobs:dead", "jobs:retry"]})
    res = ctl.run("status", config=path)
    assert res.returncode == EX_CONFIG, res
    assert f'{path}:' in res.stderr and '"jobs:dead" and redis.queues[0] "jobs" share a key' \
        in res.stderr, res.stderr
    daemon = subprocess.run(WRAPPER + [BIN, "-t", "-c", str(path)], capture_output=True,
                            text=True)
    assert daemon.returncode == EX_CONFIG and daemon.stderr == res.stderr

    path = ctl.write("jobs", redis={"queues": ["jobs"]})
    put_dead(tw, ["7", "8"], queue="jobs:dead")
    tw.r.rpush("jobs:dead", "1")
    for args in (["dead", "requeue", "jobs:dead", "-a"], ["-q", "jobs:dead", "dead", "purge", "7"],
                 ["dead", "list", "jobs:processing"], ["status", "jobs:heartbeat:x"],
                 ["status", "other", "other:paused"], ["pause", "jobs:retry"]):
        res = ctl.run(*args, config=path)
        assert res.returncode == EX_USAGE, (args, res)
        assert res.stdout == "" and "would share a key" in res.stderr, (args, res.stderr)
    assert tw.lrange("jobs:dead") == ["1"] and tw.lrange("jobs:dead:dead") == ["7", "8"]
    assert tw.r.exists("jobs:retry:paused", "other:paused:paused") == 0
    assert "other2:dead: 0 dead ids" in ctl.ok("dead", "list", "other2", config=path)


def test_config_errors_exit_78_as_the_daemon_prints_them(ctl):
    path = ctl.write("bad", text='redis: {\n  port = "x";\n  bogus = 1;\n};\n')
    res = ctl.run("status", config=path)
    assert res.returncode == EX_CONFIG, res
    lines = res.stderr.splitlines()
    assert any(ln.startswith(f"{path}:2: ") and "redis.port" in ln for ln in lines), lines
    assert any(ln.startswith(f"{path}:3: ") and "bogus" in ln for ln in lines), lines
    daemon = subprocess.run(WRAPPER + [BIN, "-t", "-c", str(path)], capture_output=True,
                            text=True)
    assert daemon.returncode == EX_CONFIG and daemon.stderr == res.stderr
    res = ctl.run("status", config=ctl.dir / "missing.conf")
    assert res.returncode == EX_CONFIG and "missing.conf" in res.stderr, res


def test_redis_unreachable_exits_69(ctl):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    path = ctl.write("down", redis={"port": port, "connect_timeout_ms": 500})
    for args in (["status"], ["dead", "requeue", "--all"], ["pause"]):
        res = ctl.run(*args, config=path)
        assert res.returncode == EX_UNAVAILABLE, res
        assert res.stderr.startswith(f"taskworkerctl: cannot connect to Redis at "
                                     f"127.0.0.1:{port}: "), res.stderr
        assert res.stdout == ""


@pytest.fixture
def acl_user(tw):
    tw.r.execute_command("ACL", "SETUSER", "ctluser", "on", ">s3cret", "~*", "+@all")
    yield "ctluser"
    tw.r.execute_command("ACL", "DELUSER", "ctluser")


def test_auth_and_select_as_the_daemon_does(ctl, tw, acl_user):
    wrong = ctl.write("wrong", redis={"username": acl_user, "password": "nope"})
    res = ctl.run("status", config=wrong)
    assert res.returncode == EX_UNAVAILABLE, res
    assert "AUTH failed" in res.stderr and res.stderr.startswith("taskworkerctl: ")
    pwfile = ctl.dir / "redis.pass"
    pwfile.write_text("s3cret\n")
    pwfile.chmod(0o600)
    right = ctl.write("right", redis={"username": acl_user, "password_file": str(pwfile),
                                      "database": 3})
    r3 = redis.Redis(host="127.0.0.1", port=ctl.servers.redis.port, db=3,
                     decode_responses=True)
    try:
        r3.rpush("tasks:dead", "77")
        out = ctl.json("dead", "list", config=right)
        assert [x["id"] for x in out["ids"]] == ["77"]
        assert ctl.json("dead", "list")["ids"] == []  # database 0
    finally:
        r3.flushdb()
        r3.close()


# ---- status ------------------------------------------------------------------------

def test_status_shows_sizes_pause_and_every_worker(ctl, tw):
    now = redis_now_ms(tw)
    tw.push([1, 2, 3])
    tw.r.zadd("tasks:retry", {"4": now + 60000})
    tw.r.zadd("tasks:scheduled", {"5": now + 60000, "6": now + 70000})
    put_dead(tw, [7])
    tw.r.sadd("tasks:workers", "new", "old", "gone")
    tw.r.set("tasks:heartbeat:new", f"host=hostA pid=4242 at={now - 1500}", px=15000)
    tw.r.set("tasks:heartbeat:old", "pid 77", px=9000)
    tw.r.zadd("tasks:processing:new", {"10": 1, "11": 2})
    tw.r.zadd("tasks:processing:gone", {"12": 1})
    tw.r.zadd("tasks:processing:stray", {"13": 1, "14": 2, "15": 3})
    # another queue's sets do not count, nor a queue whose name is a prefix
    tw.r.zadd("tasks2:processing:x", {"16": 1})
    tw.r.set("tasks:paused", f"at={now - 5000} by=alice@hostB")

    st = ctl.json("status")
    assert abs(st["time_ms"] - now) < scaled(5000)
    (qs,) = st["queues"]
    assert {k: qs[k] for k in ("queue", "configured", "length", "processing", "retry",
                               "scheduled", "dead", "paused", "paused_at_ms", "paused_by")} == {
        "queue": "tasks", "configured": True, "length": 3, "processing": 6, "retry": 1,
        "scheduled": 2, "dead": 1, "paused": True, "paused_at_ms": now - 5000,
        "paused_by": "alice@hostB"}
    w = {x["worker"]: x for x in qs["workers"]}
    assert set(w) == {"new", "old", "gone", "stray"}
    assert w["new"]["registered"] and w["new"]["alive"]
    assert (w["new"]["host"], w["new"]["pid"], w["new"]["processing"]) == ("hostA", 4242, 2)
    assert w["new"]["heartbeat_at_ms"] == now - 1500
    assert 1500 <= w["new"]["heartbeat_age_ms"] < 1500 + scaled(5000)
    assert (w["old"]["host"], w["old"]["pid"], w["old"]["heartbeat_age_ms"]) == (None, 77, None)
    assert 0 < w["old"]["heartbeat_ttl_ms"] <= 9000
    assert (w["gone"]["alive"], w["gone"]["processing"], w["gone"]["pid"]) == (False, 1, None)
    assert (w["stray"]["registered"], w["stray"]["processing"]) == (False, 3)

    text = ctl.ok("status")
    assert re.search(r"^queue tasks: PAUSED since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(5\.\d+s ago\) "
                     r"by alice@hostB$", text, re.M), text
    assert "waiting 3, processing 6, retry 1, scheduled 2, dead 1" in text
    assert re.search(r"worker new: processing 2, host hostA, pid 4242, heartbeat 1\.\ds ago",
                     text), text
    assert re.search(r"worker old: processing 0, pid 77, heartbeat expires in", text), text
    assert "worker gone: processing 1, no heartbeat" in text
    assert "worker stray: processing 3, not registered in tasks:workers" in text


def test_status_of_live_daemons_and_pause(ctl, tw, taskworkerd):
    d1 = taskworkerd(worker={"id": "w1"})
    d2 = taskworkerd(worker={"id": "w2"})
    ctl.ok("pause")
    st = ctl.json("status", config=d1.config_path)["queues"][0]
    assert st["paused"] is True
    assert re.fullmatch(r"at=\d{13} by=\S+@\S+", st["paused_value"]), st["paused_value"]
    w = {x["worker"]: x for x in st["workers"]}
    assert set(w) == {"w1", "w2"}
    for name, d in (("w1", d1), ("w2", d2)):
        assert w[name]["alive"] and w[name]["registered"], w[name]
        assert w[name]["pid"] == d.pid, w[name]
        if "host=" in w[name]["heartbeat"]:     # the heartbeat of 0.2
            assert w[name]["host"] == socket.gethostname()
            assert 0 <= w[name]["heartbeat_age_ms"] <= 15000 / 3 + scaled(2000), w[name]
    text = ctl.ok("status")
    assert "PAUSED" in text and f"pid {d1.pid}" in text and f"pid {d2.pid}" in text, text
    ctl.ok("resume")
    assert ctl.json("status")["queues"][0]["paused"] is False
    assert "tasks: taking ids" in ctl.ok("status")


# ---- lists -------------------------------------------------------------------------

def test_dead_list_text_and_json(ctl, tw):
    put_dead(tw, [11], reason="attempt 5/5: exit 3", stamp="2026-12-02T01:02:03.456Z")
    put_dead(tw, [12], reason="no row after 3000 ms", stamp="2026-12-02T01:02:04.000Z")
    odd = 'bad "id"\x01\\\xe9'
    tw.r.rpush("tasks:dead", odd)
    tw.r.hset("tasks:dead:reason", odd, "2026-12-02T01:02:05.000Z not an id: \"quoted\"\n")
    tw.rb.rpush("tasks:dead", b"\xff\xfe")  # not UTF-8, no reason

    out = ctl.json("dead", "list")
    assert out["queue"] == "tasks" and out["total"] == 4
    assert out["ids"][:3] == [
        {"id": "11", "time": "2026-12-02T01:02:03.456Z", "time_ms": 1796173323456,
         "reason": "attempt 5/5: exit 3"},
        {"id": "12", "time": "2026-12-02T01:02:04.000Z", "time_ms": 1796173324000,
         "reason": "no row after 3000 ms"},
        {"id": odd, "time": "2026-12-02T01:02:05.000Z", "time_ms": 1796173325000,
         "reason": 'not an id: "quoted"\n'},
    ]
    assert out["ids"][3] == {"id": "\u00ff\u00fe", "time": None, "time_ms": None,
                             "reason": None}
    newest = ctl.json("dead", "list", "--limit", "2")["ids"]
    assert [x["id"] for x in newest] == [odd, "\u00ff\u00fe"]
    assert ctl.json("dead", "list", "-n", "2")["total"] == 4

    text = ctl.ok("dead", "list").splitlines()
    assert text[0] == "tasks:dead: 4 dead ids, oldest first"
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1796173323))
    assert text[1] == f"11  {local}  attempt 5/5: exit 3"
    assert text[3].startswith('bad "id"\\x01\\x5c') and text[3].endswith('"quoted"\\x0a'), text
    assert text[4] == "\\xff\\xfe  -  (no reason recorded)"
    assert len(text) == 5
    assert ctl.ok("dead", "list", "-n", "1").splitlines()[0] == \
        "tasks:dead: 4 dead ids, the newest 1 shown, oldest first"


def test_text_escapes_c1_controls(ctl, tw):
    """U+0080..U+009F (UTF-8 C2 80..C2 9F) are controls a terminal obeys
    (U+009B is CSI): escaped in text and in JSON, like C0; U+00A0 is not."""
    odd = "a\u009b31mred\u0085b\u00a0c\u00e9"
    put_dead(tw, [odd], reason="why \u009d0;title\u009c")
    text = ctl.ok("dead", "list").splitlines()
    assert text[1].startswith("a\\xc2\\x9b31mred\\xc2\\x85b\u00a0c\u00e9  "), text
    assert text[1].endswith("why \\xc2\\x9d0;title\\xc2\\x9c"), text
    res = ctl.run("--json", "dead", "list")
    assert res.returncode == EX_OK, res
    assert "\\u009b31mred\\u0085b" in res.stdout and "\\u009c" in res.stdout, res.stdout
    assert not any(0x80 <= ord(ch) <= 0x9f for ch in res.stdout), res.stdout
    assert json.loads(res.stdout)["ids"][0]["id"] == odd


def test_retry_and_scheduled_lists(ctl, tw):
    now = redis_now_ms(tw)
    tw.r.zadd("tasks:retry", {"21": now - 4000, "22": now + 90000, "23": now + 3000})
    tw.r.hset("tasks:attempts", mapping={"21": 1, "22": 3, "23": 2})
    tw.r.zadd("tasks:scheduled", {"31": now + 3600 * 1000 + 500})

    out = ctl.json("retry", "list")
    assert out["total"] == 3 and abs(out["now_ms"] - now) < scaled(5000)
    assert [(x["id"], x["due_ms"], x["attempts_failed"]) for x in out["ids"]] == [
        ("21", now - 4000, 1), ("23", now + 3000, 2), ("22", now + 90000, 3)]
    assert out["ids"][0]["due_in_ms"] < -3000 and out["ids"][2]["due_in_ms"] > 80000
    assert [x["id"] for x in ctl.json("retry", "list", "-n", "1")["ids"]] == ["21"]

    text = ctl.ok("retry", "list").splitlines()
    assert text[0] == "tasks:retry: 3 ids, soonest due first"
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((now - 4000) // 1000))
    assert re.fullmatch(rf"21  {local}  overdue by [4-9]\.\ds  \(1 failed attempt\)", text[1]), text
    assert re.fullmatch(r"23  \S+ \S+  in [0-3]\.\ds  \(2 failed attempts\)", text[2]), text
    assert re.fullmatch(r"22  \S+ \S+  in 1m(2\d|30)s  \(3 failed attempts\)", text[3]), text

    out = ctl.json("scheduled", "list")
    assert [(x["id"], x["due_ms"]) for x in out["ids"]] == [("31", now + 3600 * 1000 + 500)]
    assert "attempts_failed" not in out["ids"][0]
    text = ctl.ok("scheduled", "list").splitlines()
    assert text[0] == "tasks:scheduled: 1 id, soonest due first"
    # Seconds pass on a loaded machine: the wording, not the clock, is tested.
    assert re.fullmatch(r"31  \S+ \S+  in (1h00m|59m[0-5]\ds)", text[1]), text
    assert ctl.ok("scheduled", "list", "other").startswith("other:scheduled: 0 ids\n")


# ---- dead requeue and purge -----------------------------------------------------------

def test_dead_requeue_one_id_runs_it_again(ctl, tw, taskworkerd, tmp_path):
    """A task that failed for good (exec handler, attempts 1) is requeued
    by id while the daemon runs: it runs again as attempt 1 and completes;
    another dead id stays; an id not dead is reported, exit 1."""
    flag = tmp_path / "fail"
    flag.touch()
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$1 $TASK_ATTEMPT" >> {q(runs)}
        test -e {q(flag)} && exit 3
        exit 0
    """)
    a, b = tw.insert(2)
    d = taskworkerd(handler=exec_handler(script), retry={"attempts": 2, "min_ms": 20,
                                                           "max_ms": 50})
    tw.push([a, b])
    wait_dead(tw, [a, b], 15, daemon=d)
    assert tw.statuses([a, b]) == {a: "failed", b: "failed"}
    flag.unlink()

    res = ctl.run("dead", "requeue", a, 999999, config=d.config_path)
    assert res.returncode == EX_FAIL, res
    assert res.stdout == "requeued 1 id\n"
    assert res.stderr == "taskworkerctl: 999999: not in tasks:dead\n"
    tw.wait_completed([a], 10, daemon=d)
    lines = read_lines(runs)
    assert sorted(lines[:4]) == sorted([f"{a} 1", f"{b} 1", f"{a} 2", f"{b} 2"]), lines
    assert lines[4:] == [f"{a} 1"], lines
    assert tw.lrange("tasks:dead") == [str(b)]
    assert set(tw.r.hkeys("tasks:dead:reason")) == {str(b)}
    assert tw.r.hgetall("tasks:attempts") == {}
    assert tw.statuses([b]) == {b: "failed"}
    # and by JSON, -q naming the queue
    out = ctl.json("-q", "tasks", "dead", "requeue", b, config=d.config_path)
    assert out == {"queue": "tasks", "requeued": 1, "not_found": []}
    tw.wait_completed([b], 10, daemon=d)
    assert read_lines(runs)[-1] == f"{b} 1"
    tw.wait_empty(tw.processing(), daemon=d)
    assert_redis_clean(tw)


def test_dead_requeue_all_keeps_order_in_chunks(ctl, tw):
    """2,500 dead ids (three chunks) go to the tail of the queue, oldest
    first, behind what waits there; reasons and attempt counts go."""
    tw.push(["1", "2"])
    dead = [str(i) for i in range(100, 2600)]
    put_dead(tw, dead, attempts=5)
    tw.r.hset("tasks:attempts", "1", 2)     # a waiting retry's count stays
    res = ctl.run("dead", "requeue", "--all")
    assert res.returncode == EX_OK, res
    assert res.stdout == "requeued 2500 ids\n"
    assert tw.lrange("tasks") == ["1", "2"] + dead
    assert tw.r.llen("tasks:dead") == 0 and tw.r.hlen("tasks:dead:reason") == 0
    assert tw.r.hgetall("tasks:attempts") == {"1": "2"}
    assert ctl.json("dead", "requeue", "--all") == {"queue": "tasks", "requeued": 0,
                                                    "not_found": []}


def test_dead_requeue_keeps_duplicates_and_odd_values(ctl, tw):
    """An id dead twice goes back twice; a value that is not an id can be
    requeued by -q; none of it is created when absent."""
    put_dead(tw, ["5", "6", "5", "junk"])
    out = ctl.json("dead", "requeue", "5", "5", "7", expect=EX_FAIL)
    assert out == {"queue": "tasks", "requeued": 2, "not_found": ["7"]}
    assert tw.lrange("tasks") == ["5", "5"]
    assert tw.lrange("tasks:dead") == ["6", "junk"]
    ctl.ok("-q", "tasks", "dead", "requeue", "junk")
    assert tw.lrange("tasks") == ["5", "5", "junk"]
    assert set(tw.r.hkeys("tasks:dead:reason")) == {"6"}


def test_dead_purge(ctl, tw):
    put_dead(tw, ["41", "42", "43", "oops"])
    res = ctl.run("dead", "purge", "42", "44")
    assert res.returncode == EX_FAIL and res.stdout == "purged 1 id\n", res
    assert res.stderr == "taskworkerctl: 44: not in tasks:dead\n"
    assert tw.lrange("tasks:dead") == ["41", "43", "oops"]
    assert set(tw.r.hkeys("tasks:dead:reason")) == {"41", "43", "oops"}
    assert ctl.json("dead", "purge", "-q", "tasks", "oops") == {
        "queue": "tasks", "purged": 1, "not_found": []}
    put_dead(tw, range(1000, 3100))
    assert ctl.json("dead", "purge", "--all") == {"queue": "tasks", "purged": 2102,
                                                  "not_found": []}
    assert tw.r.exists("tasks:dead", "tasks:dead:reason") == 0
    assert tw.lrange("tasks") == []
    assert ctl.ok("dead", "purge", "--all") == "purged 0 ids\n"


def test_moves_onto_wrong_typed_keys_change_nothing(ctl, tw):
    """Redis does not roll back a script that fails halfway: a requeue
    onto a queue that is a string once removed the id and then failed to
    push it. Every script checks the type of every key it writes before
    the first write: nothing moves, nothing is lost, exit 1."""
    put_dead(tw, ["1", "2", "3"], attempts=4)
    before = (tw.lrange("tasks:dead"), tw.r.hgetall("tasks:dead:reason"))
    tw.r.set("tasks", "oops")
    for args in (["dead", "requeue", "1", "2"], ["dead", "requeue", "--all"]):
        res = ctl.run(*args)
        assert res.returncode == EX_FAIL, (args, res)
        assert "tasks is a string, not a list: nothing was changed" in res.stderr, res.stderr
        assert (tw.lrange("tasks:dead"), tw.r.hgetall("tasks:dead:reason")) == before
        out = ctl.json(*args, expect=EX_FAIL)
        assert list(out) == ["error"] and "tasks is a string" in out["error"], out
    tw.r.delete("tasks")
    tw.r.set("tasks:attempts", "oops")
    res = ctl.run("dead", "requeue", "3")
    assert res.returncode == EX_FAIL and "tasks:attempts is a string" in res.stderr, res
    assert tw.r.exists("tasks") == 0 and tw.lrange("tasks:dead") == before[0]
    tw.r.delete("tasks:attempts")
    tw.r.set("tasks:dead:reason", "oops")
    for args in (["dead", "purge", "1"], ["dead", "purge", "--all"]):
        res = ctl.run(*args)
        assert res.returncode == EX_FAIL and "tasks:dead:reason is a string" in res.stderr, res
        assert tw.lrange("tasks:dead") == before[0]
    tw.r.set("tasks:dead", "oops")
    res = ctl.run("dead", "requeue", "1")
    assert res.returncode == EX_FAIL and "tasks:dead is a string, not a list" in res.stderr, res
    tw.r.rpush("tasks:retry", "5")
    res = ctl.run("retry", "now", "5")
    assert res.returncode == EX_FAIL and "tasks:retry is a list, not a zset" in res.stderr, res
    assert tw.lrange("tasks:retry") == ["5"]
    tw.r.rpush("tasks:paused", "x")
    res = ctl.run("pause")
    assert res.returncode == EX_FAIL and "tasks:paused is a list" in res.stderr, res
    assert tw.lrange("tasks:paused") == ["x"]


def test_requeue_by_id_does_not_hold_a_long_dead_list(ctl, tw):
    """dead requeue of 100 ids spread over a 1,000,000-entry dead list:
    no script runs for long (it took 2 s, one LREM over the whole list
    per id), the ids leave their places and reach the queue in order."""
    n = 1_000_000
    with tw.r.pipeline(transaction=False) as p:
        for k in range(0, n, 20_000):
            p.rpush("tasks:dead", *range(k + 10, k + 20_010))
        p.execute()
    wanted = [str(10 + k * (n // 100)) for k in range(100)]
    tw.r.hset("tasks:dead:reason", mapping={i: "x" for i in wanted + ["11"]})
    tw.r.config_set("slowlog-log-slower-than", 100_000)
    tw.r.slowlog_reset()
    try:
        out = ctl.json("dead", "requeue", *wanted, timeout=120)
        slow = [e for e in tw.r.slowlog_get(128)]
    finally:
        tw.r.config_set("slowlog-log-slower-than", 10_000)
    assert out == {"queue": "tasks", "requeued": 100, "not_found": []}
    assert slow == [], [(e["duration"], e["command"][:80]) for e in slow]
    assert tw.lrange("tasks") == wanted
    assert tw.r.llen("tasks:dead") == n - 100
    assert tw.r.lindex("tasks:dead", 0) == "11" and tw.r.hkeys("tasks:dead:reason") == ["11"]
    assert ctl.json("dead", "purge", "11", "12", str(n + 9)) == {
        "queue": "tasks", "purged": 3, "not_found": []}
    assert tw.r.lrange("tasks:dead", 0, 1) == ["13", "14"]


def test_json_is_whole_and_odd_values_are_tamed(ctl, tw):
    """A wrong-typed key gives a whole JSON object (an error, or the value
    left out and said on stderr), never half of one; attempt counts are
    escaped or null; infinite and huge times are never, invalid or null,
    not nonsense."""
    tw.r.set("tasks:dead", "oops")
    res = ctl.run("--json", "dead", "list")
    assert res.returncode == EX_FAIL, res
    assert json.loads(res.stdout) == {"error": "tasks:dead is a string, not a list"}
    tw.r.delete("tasks:dead")
    put_dead(tw, ["1", "2"])
    tw.r.delete("tasks:dead:reason")
    tw.r.set("tasks:dead:reason", "oops")
    res = ctl.run("--json", "dead", "list")
    assert res.returncode == EX_OK, res
    assert [x["reason"] for x in json.loads(res.stdout)["ids"]] == [None, None]
    assert "tasks:dead:reason is a string, not a hash" in res.stderr

    now = redis_now_ms(tw)
    tw.r.zadd("tasks:retry", {"5": float("inf"), "6": float("-inf"), "7": 1e300,
                              "8": now + 60_000, "9": now})
    tw.r.hset("tasks:attempts", mapping={"8": "\x1b[31mred\u009b", "9": "99999999999999999999",
                                         "6": "2"})
    out = ctl.json("retry", "list")
    got = {x["id"]: (x["due_ms"], x["due_in_ms"], x["attempts_failed"]) for x in out["ids"]}
    assert got["5"] == (None, None, None) and got["7"] == (None, None, None)
    assert got["6"] == (None, None, 2)
    assert got["8"][0] == now + 60_000 and got["8"][2] is None
    assert got["9"][2] is None
    text = ctl.ok("retry", "list")
    assert "\x1b" not in text and "\u009b" not in text, text
    lines = {ln.split()[0]: ln for ln in text.splitlines()[1:]}
    assert lines["5"] == "5  never (score inf)", lines
    assert lines["6"] == "6  invalid due time (score -inf)  (2 failed attempts)", lines
    assert lines["7"].startswith("7  never (score 1"), lines
    assert lines["8"].endswith("(failed attempts: \\x1b[31mred\\xc2\\x9b)"), lines
    tw.r.set("tasks:attempts", "oops")
    res = ctl.run("--json", "retry", "list")
    assert res.returncode == EX_OK and "tasks:attempts is a string" in res.stderr, res
    assert {x["attempts_failed"] for x in json.loads(res.stdout)["ids"]} == {None}
    tw.r.zadd("tasks:scheduled", {"31": float("inf")})
    assert ctl.json("scheduled", "list")["ids"] == [{"id": "31", "due_ms": None,
                                                     "due_in_ms": None}]

    tw.r.sadd("tasks:workers", "w1", "w2", "w3")
    tw.r.set("tasks:heartbeat:w1", "host=h pid=1 at=1e300")
    tw.r.set("tasks:heartbeat:w2", "host=h pid=99999999999999999999 at=99999999999999999999")
    tw.r.set("tasks:heartbeat:w3", f"host=h pid=3 at={now}")
    tw.r.set("tasks:paused", "at=-5 by=x")
    st = ctl.json("status")["queues"][0]
    ws = {w["worker"]: w for w in st["workers"]}
    assert ws["w1"]["heartbeat_at_ms"] is None and ws["w1"]["heartbeat_age_ms"] is None
    assert ws["w2"]["pid"] is None and ws["w2"]["heartbeat_age_ms"] is None
    assert ws["w3"]["heartbeat_at_ms"] == now and 0 <= ws["w3"]["heartbeat_age_ms"] < 60_000
    assert st["paused_at_ms"] is None and st["attempts"] is None
    text = ctl.ok("status")
    assert "worker w3: processing 0, host h, pid 3, heartbeat " in text, text
    assert "worker w1: processing 0, host h, pid 1\n" in text, text


# ---- retry now ---------------------------------------------------------------------

def test_retry_now(ctl, tw, taskworkerd):
    a, b = tw.insert(2)
    now = redis_now_ms(tw)
    later = now + 3600 * 1000
    tw.r.zadd("tasks:retry", {str(a): later, str(b): later})
    tw.r.hset("tasks:attempts", mapping={str(a): 1, str(b): 1})
    d = taskworkerd()
    res = ctl.run("retry", "now", a, 424242)
    assert res.returncode == EX_FAIL, res
    assert res.stdout == "made 1 id due now\n"
    assert res.stderr == "taskworkerctl: 424242: not in tasks:retry\n"
    assert tw.r.zscore("tasks:retry", "424242") is None  # not created
    tw.wait_completed([a], 5, daemon=d)
    assert zset(tw, "tasks:retry") == {str(b): later}
    assert tw.statuses([b]) == {b: "pending"}
    assert ctl.json("retry", "now", b) == {"queue": "tasks", "due_now": 1, "not_found": []}
    tw.wait_completed([b], 5, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert_redis_clean(tw)


# ---- pause -------------------------------------------------------------------------

def test_pause_and_resume_record_who_and_when(ctl, tw):
    before = redis_now_ms(tw)
    out = ctl.json("pause")
    after = redis_now_ms(tw)
    value = tw.r.get("tasks:paused")
    m = re.fullmatch(r"at=(\d+) by=(\S+)@(\S+)", value or "")
    assert m, value
    assert before <= int(m.group(1)) <= after
    assert m.group(3) == socket.gethostname()
    assert out == {"queue": "tasks", "paused": True, "already": False,
                   "at_ms": int(m.group(1)), "by": f"{m.group(2)}@{m.group(3)}",
                   "value": value}
    again = ctl.ok("pause")
    assert again.startswith("already paused: tasks (paused since ") and \
        again.endswith(f", by {m.group(2)}@{m.group(3)})\n"), again
    assert tw.r.get("tasks:paused") == value  # the first pause is kept
    assert ctl.ok("resume").startswith("resumed tasks (paused since ")
    assert tw.r.exists("tasks:paused") == 0
    assert ctl.ok("resume") == "not paused: tasks\n"
    assert ctl.json("resume") == {"queue": "tasks", "paused": False, "was_paused": False,
                                  "at_ms": None, "by": None, "value": None}
    path = ctl.write("two", redis={"queues": ["high", "low"]})
    ctl.ok("pause", "low", config=path)
    assert tw.r.exists("low:paused") == 1 and tw.r.exists("high:paused") == 0
    assert ctl.json("resume", "low", config=path)["was_paused"] is True


@pytest.mark.slow
def test_pause_under_load_three_daemons(ctl, tw, sql_teardown, taskworkerd):
    """Three daemons on one queue; pause: within 1 s nothing more is taken,
    the tasks in flight finish, the queue keeps its length; resume: all
    complete, each exactly once, nothing left in Redis."""
    counts = completion_counter(tw, sql_teardown)
    ids = tw.insert(1500)
    workers = [taskworkerd(worker={"id": f"w{k}", "delay_ms": 300, "concurrency": 20})
               for k in range(3)]
    tw.push(ids)
    wait_until(lambda: tw.count("completed") >= 150, 20, "150 completions")
    ctl.ok("pause", config=workers[0].config_path)
    paused_at = time.monotonic()
    time.sleep(1.0)
    length = tw.r.llen("tasks")
    assert length > 300, f"only {length} left: pause came too late to tell"
    # in-flight tasks finish, nothing new is taken
    wait_until(lambda: all(tw.r.zcard(tw.processing(worker=f"w{k}")) == 0 for k in range(3)),
               5, "the processing sets to drain")
    done = tw.count("completed")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert tw.r.llen("tasks") == length, \
            f"ids taken {time.monotonic() - paused_at:.1f}s after the pause"
        time.sleep(0.05)
    assert tw.count("completed") == done
    assert done + length == len(ids)
    st = ctl.json("status")["queues"][0]
    assert st["paused"] and st["length"] == length and st["processing"] == 0
    assert {w["worker"] for w in st["workers"] if w["alive"]} == {"w0", "w1", "w2"}

    ctl.ok("resume")
    tw.wait_completed(ids, 30)
    for k in range(3):
        tw.wait_empty(tw.processing(worker=f"w{k}"), daemon=workers[k])
    assert set(counts().values()) == {1}, collections.Counter(counts().values())
    no_second_runs(workers)
    assert_redis_clean(tw, workers=("w0", "w1", "w2"))


@pytest.mark.slow
def test_requeue_all_of_thousands_while_three_daemons_run(ctl, tw, taskworkerd, tmp_path):
    """4,000 failed tasks, dead with reasons and attempt counts, requeued
    with --all while three exec daemons take ids: each runs exactly once,
    as attempt 1, and completes; nothing is left in Redis."""
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$1 $TASK_ATTEMPT" >> {q(runs)}
    """)
    ids = tw.insert(4000, status="failed")
    put_dead(tw, ids, attempts=5)
    busy = tw.insert(1000)
    workers = [taskworkerd(worker={"id": f"w{k}"}, handler=exec_handler(script))
               for k in range(3)]
    tw.push(busy)   # the daemons are taking ids while the dead move
    res = ctl.run("dead", "requeue", "--all", config=workers[1].config_path)
    assert res.returncode == EX_OK, res
    assert res.stdout == "requeued 4000 ids\n"
    tw.wait_completed(ids + busy, 60)
    for k in range(3):
        tw.wait_empty(tw.processing(worker=f"w{k}"), daemon=workers[k])
    lines = read_lines(runs)
    per_id = collections.Counter(int(ln.split()[0]) for ln in lines)
    assert set(per_id) == set(ids + busy)
    twice = {i: n for i, n in per_id.items() if n != 1}
    assert twice == {}, f"{len(twice)} ids ran more than once: {sorted(twice.items())[:10]}"
    assert {ln.split()[1] for ln in lines} == {"1"}, "a requeued id kept its attempt count"
    no_second_runs(workers)
    assert_redis_clean(tw, workers=("w0", "w1", "w2"))
