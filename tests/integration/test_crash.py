"""kill -9 mid-run: nothing is lost, a restart with the same worker.id
finishes everything."""

import time

import pytest

from conftest import WORKER_ID, scaled, wait_until


@pytest.mark.slow
def test_kill9_and_restart(tw, taskworkerd):
    ids = tw.insert(200)
    tw.push(ids)
    worker = {"delay_ms": 200, "concurrency": 20}
    d = taskworkerd(worker=worker)
    for target in (40, 120):
        wait_until(lambda: tw.count("completed", ids) >= target
                   and tw.llen(tw.processing()) > 0, 60,
                   f"{target} completed with ids in flight", daemon=d)
        d.kill()
        left = tw.ids_in(tw.processing())
        assert left, "nothing in the processing list right after kill -9"
        queued = tw.ids_in("tasks")
        completed = tw.completed(ids)
        assert set(left) | set(queued) | set(completed) == set(ids), \
            "ids lost at kill -9"
        d = taskworkerd(worker=worker)  # same worker.id
    tw.wait_completed(ids, 60, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange("tasks") == []
    assert tw.lrange(tw.dead()) == []


def workers_registered(tw, queue="tasks"):
    key = f"{queue}:workers"
    kind = tw.r.type(key)
    if kind == "set":
        return tw.r.smembers(key)
    if kind == "zset":
        return set(tw.r.zrange(key, 0, -1))
    if kind == "hash":
        return set(tw.r.hkeys(key))
    return set()


@pytest.mark.slow
def test_dead_workers_ids_reclaimed(tw, taskworkerd):
    """A worker killed for good: once its heartbeat expires, a live worker
    puts its ids back and they complete; the dead one is forgotten."""
    ids = tw.insert(20)
    tw.push(ids)
    a = taskworkerd(worker={"id": "wa", "delay_ms": 60000, "concurrency": 5,
                            "heartbeat_ttl_ms": 1000})
    key_a = tw.processing(worker="wa")
    wait_until(lambda: tw.llen(key_a) >= 5, 10, "5 ids in flight at wa", daemon=a)
    a.kill()
    held = tw.ids_in(key_a)
    b = taskworkerd(worker={"id": "wb", "delay_ms": 0, "concurrency": 5,
                            "heartbeat_ttl_ms": 1000})
    tw.wait_completed(ids, 30, daemon=b)
    assert tw.llen(key_a) == 0
    wait_until(lambda: "wa" not in workers_registered(tw), 10, "wa to be forgotten",
               daemon=b)
    assert set(held) <= set(tw.completed(ids))
    tw.wait_empty(tw.processing(worker="wb"), daemon=b)
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []


@pytest.mark.slow
def test_live_workers_ids_not_reclaimed(tw, taskworkerd):
    """A slow but live worker keeps its ids, however long it holds them."""
    ids = tw.insert(5)
    tw.push(ids)
    a = taskworkerd(worker={"id": "wa", "delay_ms": 60000, "concurrency": 5,
                            "heartbeat_ttl_ms": 1000, "shutdown_timeout_ms": 500})
    key_a = tw.processing(worker="wa")
    wait_until(lambda: tw.llen(key_a) == 5, 10, "5 ids in flight at wa", daemon=a)
    b = taskworkerd(worker={"id": "wb", "delay_ms": 0, "heartbeat_ttl_ms": 1000})
    time.sleep(scaled(3))
    assert sorted(tw.ids_in(key_a)) == ids, "a live worker's ids were taken away"
    assert tw.completed(ids) == []
    assert a.running() and b.running()
    assert {"wa", "wb"} <= workers_registered(tw)


def test_clean_exit_removes_heartbeat(tw, taskworkerd):
    d = taskworkerd(worker={"heartbeat_ttl_ms": 5000})
    wait_until(lambda: WORKER_ID in workers_registered(tw), 5, "registration", daemon=d)
    assert tw.r.exists(f"tasks:heartbeat:{WORKER_ID}")
    assert d.terminate(timeout=10) == 0
    assert not tw.r.exists(f"tasks:heartbeat:{WORKER_ID}")
    assert WORKER_ID not in workers_registered(tw)
