"""The Redis side at its edges: servers that fail at once, keys of the
wrong type, the same id twice, two daemons with one worker id, recovery
that fails, OOM. No id may be lost, whatever the keys hold."""

import os
import signal
import socket
import time

import pytest
import redis

from conftest import (EX_CONFIG, EX_OK, WORKER_ID, exec_handler, fast_retry,
                      redis_now_ms, scaled, wait_dead, wait_until, write_script)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stays_up(d, seconds=1.5):
    """The daemon is alive SECONDS from now, saying it waits for Redis."""
    time.sleep(scaled(seconds))
    assert d.running(), f"exited with {d.returncode}:\n{d.log()[-3000:]}"
    assert any(line.startswith("STATUS=waiting for redis") for line in d.notify.lines())


# ---- a server that fails at once ------------------------------------------------

@pytest.mark.parametrize("how", ["missing socket", "no such name", "refused",
                                 "auth refused", "select refused"])
def test_redis_fails_at_start(tw, taskworkerd, how):
    redis_cfg = {
        "missing socket": {"host": None, "port": None, "unix_socket": "/nonexistent.sock"},
        "no such name": {"host": "no-such-host.invalid"},
        "refused": {"port": free_port()},
        "auth refused": {"password": "not-configured"},
        "select refused": {"database": 9999},
    }[how]
    d = taskworkerd(wait_ready=False, redis=redis_cfg)
    stays_up(d)
    assert d.terminate() == EX_OK


def test_redis_permission_denied_at_start(tw, taskworkerd, tmp_path):
    # root reads any file; a socket path through a file is ENOTDIR instead,
    # which fails connect() at once the same way.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    d = taskworkerd(wait_ready=False, redis={"host": None, "port": None,
                                             "unix_socket": str(blocker / "redis.sock")})
    stays_up(d)
    assert d.terminate() == EX_OK


def test_redis_max_clients_at_start_and_reconnect(tw, taskworkerd, redis_factory):
    rs = redis_factory("--maxclients", "4")
    hogs = [socket.create_connection(("127.0.0.1", rs.port)) for _ in range(4)]
    d = taskworkerd(wait_ready=False, redis={"port": rs.port},
                    worker={"retry_min_ms": 50, "retry_max_ms": 300})
    stays_up(d)
    for h in hogs:
        h.close()
    d.wait_ready()
    client = redis.Redis(port=rs.port)
    ids = tw.insert(5)
    client.rpush("tasks", *ids)
    tw.wait_completed(ids, 20, daemon=d)


def test_redis_refuses_at_reconnect(tw, taskworkerd):
    d = taskworkerd()
    tw.r.config_set("requirepass", "now-required")
    admin = redis.Redis(port=tw.servers.redis.port, password="now-required",
                        decode_responses=True)
    try:
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        time.sleep(scaled(1.5))
        assert d.running()
    finally:
        admin.config_set("requirepass", "")
        admin.close()
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 30, daemon=d)


# ---- keys of the wrong type: every id stays where it was ------------------------

def test_due_ids_stay_while_queue_has_wrong_type(tw, taskworkerd):
    ids = tw.insert(2)
    now = redis_now_ms(tw)
    d = taskworkerd()
    tw.r.set("tasks", "oops")
    tw.r.zadd("tasks:scheduled", {str(i): now for i in ids})
    tw.r.zadd("tasks:retry", {"77": now})
    time.sleep(scaled(1.5))
    assert sorted(tw.r.zrange("tasks:scheduled", 0, -1)) == sorted(str(i) for i in ids)
    assert tw.r.zrange("tasks:retry", 0, -1) == ["77"]
    assert tw.r.get("tasks") == "oops"
    assert "cannot move due ids of tasks" in d.log()
    tw.r.zrem("tasks:retry", "77")
    tw.r.delete("tasks")
    tw.wait_completed(ids, 10, daemon=d)


def test_wrong_typed_retry_set_does_not_hold_up_scheduled(tw, taskworkerd):
    ids = tw.insert(3)
    d = taskworkerd()
    tw.r.set("tasks:retry", "x")
    tw.r.zadd("tasks:scheduled", {str(i): redis_now_ms(tw) for i in ids})
    try:
        tw.wait_completed(ids, 10, daemon=d)
    finally:
        tw.r.delete("tasks:retry")


@pytest.mark.parametrize("key,value", [("tasks:processing:" + WORKER_ID, "oops"),
                                       ("tasks:attempts", "oops")])
def test_fetch_leaves_ids_in_queue_when_a_key_has_the_wrong_type(tw, taskworkerd, key, value):
    ids = tw.insert(20)
    d = taskworkerd()
    tw.r.set(key, value)
    tw.push(ids)
    time.sleep(scaled(1.5))
    assert tw.ids_in("tasks") == ids, "ids left the queue"
    assert tw.count("completed") == 0
    tw.r.delete(key)
    tw.wait_completed(ids, 15, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)


@pytest.mark.parametrize("key", ["tasks:retry", "tasks:attempts"])
def test_retry_move_waits_while_a_key_has_the_wrong_type(tw, taskworkerd, tmp_path, key):
    script = write_script(tmp_path, "fail.sh", "sleep 0.5; exit 3\n")
    ids = tw.insert(1)
    d = taskworkerd(handler=exec_handler([str(script)]), retry=fast_retry(attempts=2))
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing()) == 1, 5, "the id taken", daemon=d)
    tw.r.set(key, "oops")
    time.sleep(scaled(2))
    assert tw.lrange(tw.processing()) == [str(ids[0])], "the id left processing"
    tw.r.delete(key)
    wait_dead(tw, [str(ids[0])], 20, daemon=d)
    assert tw.llen(tw.processing()) == 0


def test_dead_letter_waits_while_dead_list_has_the_wrong_type(tw, taskworkerd, tmp_path):
    script = write_script(tmp_path, "fail.sh", "sleep 0.5; exit 3\n")
    ids = tw.insert(1)
    d = taskworkerd(handler=exec_handler([str(script)]), retry=fast_retry(attempts=1))
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing()) == 1, 5, "the id taken", daemon=d)
    tw.r.set("tasks:dead", "oops")
    time.sleep(scaled(2))
    assert tw.lrange(tw.processing()) == [str(ids[0])], "the id left processing"
    tw.r.delete("tasks:dead")
    wait_dead(tw, [str(ids[0])], 20, daemon=d)
    assert tw.llen(tw.processing()) == 0


def test_recovery_error_is_retried_before_fetching(tw, taskworkerd):
    held = tw.insert(5)
    tw.hold([str(i) for i in held])
    tw.r.set("tasks", "oops")
    d = taskworkerd(wait_ready=False)
    time.sleep(scaled(2))
    assert sorted(tw.ids_in(tw.processing())) == held
    tw.r.delete("tasks")
    tw.wait_completed(held, 15, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)


# ---- the dead list ----------------------------------------------------------------

def test_trim_keeps_reason_of_id_that_died_again(tw, taskworkerd):
    d = taskworkerd(redis={"dead_max": 3})
    for v in ("x-val", "y-val", "x-val", "z-val"):
        tw.push([v])
        # Its reason may read as before (stamped to the millisecond): the
        # list's newest entry tells that it died again.
        wait_until(lambda: tw.r.lrange("tasks:dead", -1, -1) == [v] and
                   tw.r.hget("tasks:dead:reason", v) is not None, 10,
                   f"{v} dead", daemon=d)
    assert tw.r.lrange("tasks:dead", 0, -1) == ["y-val", "x-val", "z-val"]
    assert tw.r.hget("tasks:dead:reason", "x-val") is not None


# ---- the same id twice -------------------------------------------------------------

def run_log_handler(tmp_path, sleep=0):
    log = tmp_path / "runs.log"
    script = write_script(tmp_path, "run.sh",
                          f'echo "$TASK_ID" >> {log}\nsleep {sleep}\n')
    return log, exec_handler([str(script)])


def test_same_id_twice_in_one_fetch_runs_once(tw, taskworkerd, tmp_path):
    log, handler = run_log_handler(tmp_path)
    ids = tw.insert(10)
    tw.push([i for i in ids for _ in (0, 1)])
    d = taskworkerd(handler=handler)
    tw.wait_completed(ids, 15, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    time.sleep(scaled(0.5))
    runs = log.read_text().split()
    assert sorted(int(x) for x in runs) == ids, runs
    assert tw.llen("tasks") == 0


def test_same_id_pushed_while_running_joins(tw, taskworkerd, tmp_path):
    log, handler = run_log_handler(tmp_path, sleep=1)
    ids = tw.insert(1)
    d = taskworkerd(handler=handler)
    tw.push(ids)
    wait_until(lambda: log.exists(), 10, "the handler to start", daemon=d)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    wait_until(lambda: tw.llen("tasks") == 0, 5, "the queue empty", daemon=d)
    time.sleep(scaled(1.5))
    assert log.read_text().split() == [str(ids[0])]


def test_row_read_ahead_does_not_widen_the_window(tw, taskworkerd):
    """The id that wakes an idle daemon has its row read ahead; the fetch
    that follows is held back (CLIENT PAUSE) until that row is in. Handing
    the first fetched id its row at once frees no slot: the daemon holds
    exactly its window, not the window plus a second fetch."""
    d = taskworkerd(worker={"delay_ms": 60000, "concurrency": 3, "shutdown_timeout_ms": 300})
    time.sleep(scaled(0.5))   # idle, waiting on the queue
    ids = tw.insert(10)
    with tw.r.pipeline(transaction=False) as p:
        p.rpush("tasks", *ids)
        p.execute_command("CLIENT", "PAUSE", 400, "WRITE")
        p.execute()
    wait_until(lambda: tw.r.zcard(tw.processing()) >= 3, 10,
               "3 ids in the processing set", daemon=d)
    time.sleep(scaled(0.5))
    assert tw.r.zcard(tw.processing()) == 3
    assert tw.llen("tasks") == 7


# ---- one worker id, two daemons ----------------------------------------------------

def test_second_daemon_with_same_worker_id_exits_78(tw, taskworkerd):
    first = taskworkerd(worker={"heartbeat_ttl_ms": 1500})
    held = tw.insert(3)
    tw.hold([str(i) for i in held])   # as if FIRST held them
    second = taskworkerd(wait_ready=False, worker={"heartbeat_ttl_ms": 1500})
    assert second.wait(15) == EX_CONFIG
    log = second.log()
    assert f"pid={first.pid}" in log and socket.gethostname() in log
    assert sorted(tw.ids_in(tw.processing())) == held, "the second touched ids"
    assert first.running()
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=first)


def test_heartbeat_of_gone_holder_is_taken_over(tw, taskworkerd):
    held = tw.insert(3)
    tw.hold([str(i) for i in held])
    tw.r.set(f"tasks:heartbeat:{WORKER_ID}", "host=elsewhere pid=1 at=1", px=2500)
    t0 = time.monotonic()
    d = taskworkerd(wait_ready=False, worker={"heartbeat_ttl_ms": 2500})
    time.sleep(scaled(1))
    assert sorted(tw.ids_in(tw.processing())) == held, "ids touched while held"
    tw.wait_completed(held, 15, daemon=d)
    assert time.monotonic() - t0 >= 2.0


def test_heartbeat_of_own_previous_life_is_taken_over_at_once(tw, taskworkerd):
    held = tw.insert(3)
    tw.hold([str(i) for i in held])
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    pidns = os.stat("/proc/self/ns/pid").st_ino
    tw.r.set(f"tasks:heartbeat:{WORKER_ID}",
             f"host={socket.gethostname()} pid={gone} boot={boot} pidns={pidns} "
             "nonce=0123456789abcdef at=1", px=60000)
    d = taskworkerd(wait_ready=False)
    tw.wait_completed(held, 5, daemon=d)
    assert "taking it over" in d.log()


# ---- shutdown ------------------------------------------------------------------------

def test_shutdown_during_recovery_gives_everything_back(tw, taskworkerd):
    held = [str(i) for i in tw.insert(200)]
    tw.hold(held)
    tw.r.execute_command("CLIENT", "PAUSE", int(scaled(2) * 1000), "WRITE")
    d = taskworkerd(wait_ready=False, postgres={"conninfo": "host=127.0.0.1 port=1"})
    time.sleep(scaled(0.7))
    d.send_signal(signal.SIGTERM)
    assert d.wait(20) == EX_OK
    assert tw.llen(tw.processing()) == 0
    assert tw.lrange("tasks") == held
    assert not tw.r.sismember("tasks:workers", WORKER_ID)
    assert not tw.r.exists(f"tasks:heartbeat:{WORKER_ID}")


def test_failed_give_back_at_shutdown_stays_registered(tw, taskworkerd):
    ids = tw.insert(3)
    d = taskworkerd(worker={"delay_ms": 60000, "shutdown_timeout_ms": 200})
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing()) == 3, 10, "ids held", daemon=d)
    tw.r.set("tasks", "oops")
    try:
        assert d.terminate() == EX_OK
        assert sorted(tw.ids_in(tw.processing())) == ids
        assert tw.r.sismember("tasks:workers", WORKER_ID), "unregistered with ids held"
    finally:
        tw.r.delete("tasks")


# ---- an idle daemon whose fetch connection is down -----------------------------------

def test_idle_daemon_polls_while_fetch_connection_down(tw, taskworkerd):
    d = taskworkerd()
    time.sleep(scaled(0.3))
    clients = tw.r.client_list()
    fetch = [c for c in clients if c.get("name", "").endswith(":fetch")]
    assert fetch
    # the fetch connection cannot come back; the command connection stays
    tw.r.config_set("maxclients", len(clients) - 1)
    try:
        tw.r.execute_command("CLIENT", "KILL", "ID", fetch[0]["id"])
        time.sleep(scaled(0.5))
        ids = tw.insert(5)
        tw.push(ids)
        tw.wait_completed(ids, 8, daemon=d)
        assert not any(c.get("name", "").endswith(":fetch") for c in tw.r.client_list())
    finally:
        tw.r.config_set("maxclients", 10000)


# ---- OOM and hostile counts ------------------------------------------------------------

def test_heartbeat_survives_oom(tw, taskworkerd, redis_factory):
    rs = redis_factory("--maxmemory-policy", "noeviction")
    client = redis.Redis(port=rs.port, decode_responses=True)
    d = taskworkerd(redis={"port": rs.port}, worker={"heartbeat_ttl_ms": 1000})
    key = f"tasks:heartbeat:{WORKER_ID}"
    wait_until(lambda: client.exists(key), 5, "a heartbeat", daemon=d)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 200000)
    with pytest.raises(redis.exceptions.ResponseError):
        for i in range(10000):
            client.set(f"fill:{i}", "x" * 1000)
    assert not d.exited()
    time.sleep(scaled(2.5))
    assert client.exists(key), "the heartbeat lapsed under OOM"
    client.config_set("maxmemory", 0)


def test_huge_attempt_count_is_bounded(tw, taskworkerd, tmp_path):
    script = write_script(tmp_path, "fail.sh", "exit 3\n")
    ids = tw.insert(1)
    tw.r.hset("tasks:attempts", str(ids[0]), "1e30")
    d = taskworkerd(handler=exec_handler([str(script)]), retry=fast_retry(attempts=3))
    tw.push(ids)
    wait_dead(tw, [str(ids[0])], 15, daemon=d)
    reason = tw.r.hget("tasks:dead:reason", str(ids[0]))
    assert "attempt 1000001/3" in reason, reason


def test_shutdown_while_heartbeat_fails_exits(tw, taskworkerd):
    tw.r.set("tasks:workers", "oops")
    try:
        d = taskworkerd(wait_ready=False, worker={"shutdown_timeout_ms": 500})
        wait_until(lambda: "heartbeat on tasks failed" in d.log(), 10,
                   "the heartbeat to fail", daemon=d)
        assert d.terminate(timeout=10) == EX_OK
    finally:
        tw.r.delete("tasks:workers")


def test_ack_with_wrong_typed_attempts_completes(tw, taskworkerd):
    ids = tw.insert(20)
    d = taskworkerd(worker={"delay_ms": 1000})
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing()) == 20, 5, "ids taken", daemon=d)
    tw.r.set("tasks:attempts", "oops")
    try:
        tw.wait_completed(ids, 15, daemon=d)
        tw.wait_empty(tw.processing(), daemon=d)
    finally:
        tw.r.delete("tasks:attempts")


def test_completed_id_leaves_no_attempt_count(tw, taskworkerd):
    """A copy pushed twice failed an attempt elsewhere (its count is
    recorded); the copy that completes takes the count with it."""
    ids = tw.insert(5)
    d = taskworkerd()
    tw.r.hset("tasks:attempts", mapping={str(i): 1 for i in ids})
    tw.push(ids)
    tw.wait_completed(ids, 15, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    wait_until(lambda: not tw.r.exists("tasks:attempts"), 5, "the counts gone", daemon=d)
