"""Tasks go through: many, overlapping, within the concurrency window."""

import os
import socket
import subprocess
import threading
import time

import pytest

import redis

from conftest import count_members, REPO, scaled, wait_until


def test_thousand_tasks_complete(tw, taskworkerd):
    ids = tw.insert(1000)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 0, "concurrency": 50})
    tw.wait_completed(ids, 60, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange("tasks") == []
    assert tw.lrange(tw.dead()) == []
    assert tw.count("completed") == 1000
    assert tw.count("pending") == 0


def test_tasks_pushed_while_running_complete(tw, taskworkerd):
    """Ids pushed after the daemon is up (it waits on an empty queue)."""
    d = taskworkerd(worker={"delay_ms": 0})
    ids = tw.insert(30)
    for i in ids:
        tw.push([i])
    tw.wait_completed(ids, 30, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []


@pytest.mark.slow
def test_tasks_overlap(tw, taskworkerd):
    """50 tasks of 500 ms with concurrency 50 run at once: far less than the
    25 s they would take one after the other, and not less than the delay."""
    d = taskworkerd(worker={"delay_ms": 500, "concurrency": 50})
    ids = tw.insert(50)
    t0 = time.monotonic()
    tw.push(ids)
    tw.wait_completed(ids, 30, daemon=d)
    elapsed = time.monotonic() - t0
    limit = scaled(10)
    assert elapsed < limit, f"50 x 500 ms tasks took {elapsed:.1f}s (limit {limit}s)"
    assert elapsed >= 0.45, f"tasks completed after {elapsed:.2f}s, before their 500 ms delay"
    tw.wait_empty(tw.processing(), daemon=d)



@pytest.mark.slow
@pytest.mark.parametrize("queues", [["tasks"], ["high", "low"]], ids=["1-queue", "2-queues"])
def test_concurrency_honoured(tw, taskworkerd, queues):
    """concurrency = 5: never more than 5 (+1 per queue for a fetch under
    way) ids in the processing lists, and all complete. With two queues the
    ids arrive while the daemon waits on both."""
    concurrency, nqueues = 5, len(queues)
    ids = tw.insert(20)
    if nqueues == 1:
        tw.push(ids, queue=queues[0])
    d = taskworkerd(start=False, redis={"queues": queues},
                    worker={"delay_ms": 300, "concurrency": concurrency})
    keys = [tw.processing(q) for q in queues]
    samples = []
    done = threading.Event()

    def sample():
        r = redis.Redis(host="127.0.0.1", port=tw.servers.redis.port)
        while not done.is_set():
            with r.pipeline(transaction=True) as p:
                for k in keys:
                    count_members(p, k)
                samples.append(sum(p.execute()))
            time.sleep(0.01)
        r.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        d.start()
        if nqueues > 1:
            time.sleep(0.2)  # both queues are being waited on
            for i in range(0, len(ids), 2):
                tw.push([ids[i]], queue="low")
                tw.push([ids[i + 1]], queue="high")
        tw.wait_completed(ids, 30, daemon=d)
    finally:
        done.set()
        sampler.join()
    for k in keys:
        tw.wait_empty(k, daemon=d)
    assert max(samples) <= concurrency + nqueues, \
        f"processing lists reached {max(samples)} ids with concurrency {concurrency}"
    assert max(samples) >= 2, \
        f"the processing lists {keys} never held several ids: {sorted(set(samples))}"
    for q in queues:
        assert tw.lrange(q) == [] and tw.lrange(tw.dead(q)) == []


def test_enqueue_script(tw, servers):
    """scripts/enqueue inserts N pending rows and pushes their ids in order."""
    env = dict(os.environ, REDIS_PORT=str(servers.redis.port),
               PG_CONNINFO=servers.pg.conninfo)
    res = subprocess.run([str(REPO / "scripts" / "enqueue"), "25"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "25" in res.stdout
    ids = tw.ids_in("tasks")
    assert len(ids) == 25 and ids == sorted(ids)
    assert tw.statuses(ids) == {i: "pending" for i in ids}
    names = {r[0] for r in tw.db.execute("SELECT name FROM task")}
    assert names == {f"task-{k}" for k in range(1, 26)}


def test_default_worker_id_is_hostname(tw, taskworkerd):
    """worker.id = "" (the default): the processing list is named after
    the host."""
    ids = tw.insert(3)
    tw.push(ids)
    d = taskworkerd(worker={"id": None, "delay_ms": 60000, "shutdown_timeout_ms": 500})
    key = tw.processing(worker=socket.gethostname())
    wait_until(lambda: tw.llen(key) == 3, 10, f"3 ids in {key}", daemon=d)
    assert d.terminate(timeout=10) == 0
    assert tw.ids_in("tasks") == ids
    assert tw.llen(key) == 0


@pytest.mark.slow
def test_two_workers_share_a_queue(tw, taskworkerd):
    """Two daemons with different worker ids on one queue: every task is
    completed, each worker's processing list ends empty, nothing is dead."""
    ids = tw.insert(600)
    tw.push(ids)
    a = taskworkerd(worker={"id": "worker-a", "delay_ms": 5, "concurrency": 20})
    b = taskworkerd(worker={"id": "worker-b", "delay_ms": 5, "concurrency": 20})
    tw.wait_completed(ids, 60, daemon=a)
    for w in ("worker-a", "worker-b"):
        tw.wait_empty(tw.processing(worker=w), daemon=b)
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []
    assert a.running() and b.running()

