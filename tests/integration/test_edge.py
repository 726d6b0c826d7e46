"""Edge cases: duplicate ids, a queue key of the wrong type, a huge queue,
and shutting down while a server is away."""

import time

import pytest
import redis

from conftest import EX_OK, WRAPPER, scaled, wait_until


def test_duplicate_ids(tw, taskworkerd):
    """The same id several times: it completes, every copy is acknowledged,
    nothing is left in processing and nothing goes dead."""
    a, b = tw.insert(2)
    tw.push([a, a, b, a, b])
    d = taskworkerd(worker={"delay_ms": 300, "concurrency": 10})
    tw.wait_completed([a, b], 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    tw.wait_empty("tasks", daemon=d)
    assert tw.lrange(tw.dead()) == []


def test_queue_of_wrong_type_survived(tw, taskworkerd):
    """A queue key holding a string instead of a list: the daemon keeps
    running, and works once the key is a list again."""
    tw.r.set("tasks", "not a list")
    d = taskworkerd(wait_ready=False)
    time.sleep(1.5)
    assert d.running()
    assert tw.r.get("tasks") == "not a list", "the daemon changed a key it does not own"
    tw.r.delete("tasks")
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_huge_queue_backpressure(tw, taskworkerd):
    """200,000 ids waiting and concurrency 10: the daemon takes no more than
    its window, and its memory does not follow the queue's length."""
    n = 200000
    with tw.r.pipeline(transaction=False) as p:
        for i in range(1, n + 1, 10000):
            p.rpush("tasks", *range(i, min(i + 10000, n + 1)))
        p.execute()
    ids = tw.insert(10)  # rows 1..10: the first ids are real
    d = taskworkerd(worker={"delay_ms": 60000, "concurrency": 10,
                            "shutdown_timeout_ms": 500})
    wait_until(lambda: tw.llen(tw.processing()) >= 10, 10, "10 ids in flight", daemon=d)
    time.sleep(1.0)
    assert tw.llen(tw.processing()) <= 11
    assert tw.llen("tasks") >= n - 11
    if not WRAPPER:
        rss = rss_kib(d.pid)
        assert rss < 64 * 1024, f"RSS {rss} KiB with 10 tasks in flight"
    assert d.terminate(timeout=10) == EX_OK
    assert tw.llen("tasks") == n
    assert tw.ids_in(tw.processing()) == []
    assert [int(x) for x in tw.r.lrange("tasks", 0, 19)] == list(range(1, 21))
    assert tw.completed(ids) == []


@pytest.mark.slow
def test_sigterm_while_postgres_is_down(tw, servers, taskworkerd):
    """Tasks stuck retrying against a stopped PostgreSQL: SIGTERM still
    exits 0 within the shutdown timeout and puts every id back in order."""
    ids = tw.insert(20)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 1500, "concurrency": 5,
                            "shutdown_timeout_ms": 1000, "retry_max_ms": 500})
    wait_until(lambda: tw.llen(tw.processing()) >= 5, 10, "5 ids in flight", daemon=d)
    tw.db.close()
    servers.pg.stop("fast")
    try:
        time.sleep(2.0)  # the delays run out; the UPDATEs fail and retry
        assert d.running()
        t0 = time.monotonic()
        rc = d.terminate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        servers.pg.start()
        tw.reconnect_db()
    assert rc == EX_OK
    assert elapsed < scaled(5), f"took {elapsed:.1f}s with shutdown_timeout_ms = 1000"
    assert tw.lrange(tw.processing()) == []
    assert tw.ids_in("tasks") == ids
    assert tw.completed(ids) == []


@pytest.mark.slow
def test_sigterm_while_redis_is_down(tw, aof_redis, taskworkerd):
    """Redis away at SIGTERM: the daemon still exits (0), the ids stay in
    its processing list, and the next start runs them all."""
    r = redis.Redis(port=aof_redis.port, decode_responses=True)
    ids = tw.insert(20)
    r.rpush("tasks", *ids)
    cfg = {"redis": {"port": aof_redis.port},
           "worker": {"delay_ms": 60000, "concurrency": 5, "shutdown_timeout_ms": 1000,
                      "retry_max_ms": 500}}
    d = taskworkerd(**cfg)
    wait_until(lambda: r.zcard(tw.processing()) >= 5, 10, "5 ids in flight", daemon=d)
    aof_redis.stop()
    time.sleep(0.5)
    rc = d.terminate(timeout=20)
    assert rc == EX_OK
    aof_redis.start()
    assert set(r.zrange(tw.processing(), 0, -1)) | set(r.lrange("tasks", 0, -1)) \
        == {str(i) for i in ids}
    cfg["worker"]["delay_ms"] = 0
    d2 = taskworkerd(**cfg)
    tw.wait_completed(ids, 30, daemon=d2)
    wait_until(lambda: r.zcard(tw.processing()) == 0, 10, "processing set empty", daemon=d2)
    r.close()
