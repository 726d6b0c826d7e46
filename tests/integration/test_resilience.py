"""Servers going away under the daemon: dropped connections and restarts of
Redis and PostgreSQL lose no id, and the daemon reconnects by itself."""

import time

import pytest
import redis

import twservers
from conftest import is_serving, merge_config, wait_until

WORKER = {"delay_ms": 50, "concurrency": 20, "retry_max_ms": 1000}


def finish(tw, ids, d, r=None, timeout=90):
    tw.wait_completed(ids, timeout, daemon=d)
    r = r or tw.r
    wait_until(lambda: r.zcard(tw.processing()) == 0, 10, "processing set empty", daemon=d)
    assert r.lrange("tasks", 0, -1) == []
    assert r.lrange(tw.dead(), 0, -1) == []
    assert d.running()


def kill_redis_clients(tw):
    """Every client but ours, from the server side; how many."""
    return tw.r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


def kill_postgres_sessions(tw):
    """Every client backend but ours, from the server side; how many."""
    return tw.db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = 'tasks' AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [kill_redis_clients, kill_postgres_sessions],
                         ids=["redis", "postgres"])
def test_connections_killed(tw, taskworkerd, kill):
    ids = tw.insert(300)
    tw.push(ids)
    d = taskworkerd(worker=WORKER)
    for target in (50, 150):
        wait_until(lambda: tw.count("completed", ids) >= target, 30,
                   f"{target} completed", daemon=d)
        assert kill(tw) >= 1, "the daemon had no connection to kill"
    finish(tw, ids, d)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "kill"])
def test_redis_restart(tw, aof_redis, taskworkerd, how):
    r = redis.Redis(host="127.0.0.1", port=aof_redis.port, decode_responses=True)
    ids = tw.insert(300)
    r.rpush("tasks", *ids)
    d = taskworkerd(redis={"port": aof_redis.port}, worker=WORKER)
    wait_until(lambda: tw.count("completed", ids) >= 60, 30, "60 completed", daemon=d)
    if how == "kill":
        aof_redis.kill()
        aof_redis.start()
    else:
        aof_redis.restart()
    finish(tw, ids, d, r=r)
    r.close()


def test_redis_reconnect_wait_cut_by_a_lowered_retry_max(tw, aof_redis, taskworkerd):
    """Redis goes away under a daemon whose reconnects wait 30-60 s
    (worker.retry_min_ms = retry_max_ms = 60000); it is back, and a reload
    lowers retry_max_ms to 300: the reconnect already waiting is cut to the
    new bound, and the ids pushed meanwhile complete within seconds."""
    r = redis.Redis(host="127.0.0.1", port=aof_redis.port, decode_responses=True)
    first = tw.insert(3)
    r.rpush("tasks", *first)
    d = taskworkerd(redis={"port": aof_redis.port},
                    worker={"retry_min_ms": 60000, "retry_max_ms": 60000})
    tw.wait_completed(first, 20, daemon=d)
    aof_redis.stop()
    time.sleep(2.0)     # lost, one try at once refused: now waiting 30-60 s
    aof_redis.start()
    ids = tw.insert(3)
    r.rpush("tasks", *ids)
    time.sleep(1.0)
    assert tw.count("completed", ids) == 0, "reconnected before the reload: nothing was cut"
    cfg = d.config
    cfg["worker"]["retry_min_ms"] = 100
    cfg["worker"]["retry_max_ms"] = 300
    t0 = time.monotonic()
    d.reload(cfg)
    finish(tw, ids, d, r=r, timeout=15)
    assert time.monotonic() - t0 < 10, "the old reconnect wait was waited out"
    r.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgres_restart(tw, servers, taskworkerd, mode):
    ids = tw.insert(300)
    tw.push(ids)
    d = taskworkerd(worker=WORKER)
    wait_until(lambda: tw.count("completed", ids) >= 60, 30, "60 completed", daemon=d)
    tw.db.close()
    servers.pg.restart(mode)
    tw.reconnect_db()
    finish(tw, ids, d)


@pytest.mark.slow
def test_redis_down_at_start(tw, taskworkerd):
    """Started while Redis is away, the daemon waits (not serving) and
    begins when Redis comes up."""
    rs = twservers.RedisServer().start()
    try:
        port = rs.port
        rs.stop()
        d = taskworkerd(redis={"port": port}, worker=WORKER, wait_ready=False)
        time.sleep(1.5)
        assert d.running(), "exited while Redis was down"
        assert d.notify.find(is_serving) is None, "claimed serving without Redis"
        rs.start()
        d.wait_ready(timeout=20)
        r = redis.Redis(port=port)
        ids = tw.insert(50)
        r.rpush("tasks", *ids)
        finish(tw, ids, d, r=r)
        r.close()
    finally:
        rs.cleanup()


@pytest.mark.slow
def test_postgres_down_at_start(tw, servers, taskworkerd):
    ids = tw.insert(50)
    tw.push(ids)
    tw.db.close()
    servers.pg.stop("fast")
    try:
        d = taskworkerd(worker=WORKER, wait_ready=False)
        time.sleep(1.5)
        assert d.running(), "exited while PostgreSQL was down"
        assert d.notify.find(is_serving) is None, "claimed serving without PostgreSQL"
        assert tw.llen("tasks") == 50, "took ids while PostgreSQL was down"
    finally:
        servers.pg.start()
        tw.reconnect_db()
    d.wait_ready(timeout=20)
    finish(tw, ids, d)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["redis", "postgres"])
def test_reload_reconnects_with_tasks_in_flight(tw, taskworkerd, change):
    """A reload that changes connection settings reconnects and loses
    nothing that was in flight."""
    ids = tw.insert(200)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 300, "concurrency": 50})
    wait_until(lambda: tw.count("completed", ids) >= 20 and tw.llen(tw.processing()) > 0,
               30, "20 completed", daemon=d)
    if change == "redis":
        new = {"redis": {"command_timeout_ms": 9000}}
    else:
        new = {"postgres": {"connections": 3}}
    mark = d.reload(merge_config(d.config, new))
    d.notify.wait_for(lambda line: line == "RELOADING=1", 10, "RELOADING=1", since=mark,
                      daemon=d)
    finish(tw, ids, d)
