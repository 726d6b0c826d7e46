"""100,000 tasks in flight at once: the window the daemon is built for,
not only the default one. Correctness at that size, with timing bounds
loose enough for a shared machine (speed is for scripts/bench)."""

import pytest

from conftest import EX_OK, scaled, wait_until

N = 100_000


def insert_many(tw, n):
    rows = tw.db.execute(
        "INSERT INTO task (name) SELECT 'bulk-' || g FROM generate_series(1, %s) g "
        "ORDER BY g RETURNING id", (n,)).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.slow
def test_hundred_thousand_in_flight_complete_once(tw, completion_order, taskworkerd):
    """100,000 ids, delay 1 s, concurrency 100000: all are held at once,
    each row is completed exactly once, and nothing is left anywhere."""
    ids = insert_many(tw, N)
    d = taskworkerd(worker={"delay_ms": 1000, "concurrency": N})
    tw.push(ids)
    # Many held at once; how many depends on the machine's speed (the
    # figures belong to scripts/bench --only inflight).
    peak = wait_until(lambda: (n := tw.llen(tw.processing())) >= N // 4 and n, 30,
                      "a quarter of the ids in flight at once", daemon=d)
    tw.wait_completed(ids, 60, daemon=d)
    order = completion_order()
    assert len(order) == N and len(set(order)) == N, "a row completed twice"
    tw.wait_empty(tw.processing(), timeout=30, daemon=d)
    assert tw.llen("tasks") == 0 and tw.llen(tw.dead()) == 0
    assert peak >= N // 4


@pytest.mark.slow
def test_hundred_thousand_in_flight_back_in_order(tw, taskworkerd):
    """100,000 in flight with a long delay: SIGTERM puts them all back at
    the head of the queue in their order (ahead of what was still
    queued); kill -9 then leaves them in the processing set, and the next
    start gives them back and completes every one."""
    ids = insert_many(tw, N + 10)
    cfg = {"worker": {"delay_ms": 600000, "concurrency": N,
                      "shutdown_timeout_ms": 500}}
    tw.push(ids)
    d = taskworkerd(**cfg)
    wait_until(lambda: tw.llen(tw.processing()) == N, 60, "100,000 ids in flight", daemon=d)
    assert d.terminate(timeout=scaled(60)) == EX_OK
    assert tw.llen(tw.processing()) == 0
    assert tw.ids_in("tasks") == ids, "the ids did not go back in their order"

    d2 = taskworkerd(name="again", **cfg)
    wait_until(lambda: tw.llen(tw.processing()) == N, 60, "100,000 ids in flight again",
               daemon=d2)
    d2.kill()
    assert tw.llen(tw.processing()) == N
    d3 = taskworkerd(name="third", worker={"delay_ms": 0, "concurrency": N})
    tw.wait_completed(ids, 90, daemon=d3)
    tw.wait_empty(tw.processing(), timeout=30, daemon=d3)
