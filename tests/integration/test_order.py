"""Order: queue priority, and crash leftovers going first on restart.

Completion order comes from a trigger (conftest.completion_order) that
numbers rows from a sequence as their status turns to 'completed'.
"""

import time

from conftest import wait_until


def test_queue_priority(tw, completion_order, taskworkerd):
    """queues = ["high", "low"]: while `high` has ids, `low` waits."""
    high = tw.insert(30)
    low = tw.insert(30)
    tw.push(low, queue="low")
    tw.push(high, queue="high")
    d = taskworkerd(redis={"queues": ["high", "low"]},
                    worker={"delay_ms": 0, "concurrency": 1})
    tw.wait_completed(high + low, 60, daemon=d)
    order = completion_order()
    assert sorted(order) == sorted(high + low)
    first_low = min(order.index(i) for i in low)
    last_high = max(order.index(i) for i in high)
    assert last_high < first_low, \
        f"a low id completed before a high one: order {order}"
    assert order[:len(high)] == high, "high ids not completed in queue order"
    for q in ("high", "low"):
        tw.wait_empty(tw.processing(q), daemon=d)
        assert tw.lrange(q) == [] and tw.lrange(tw.dead(q)) == []


def test_queue_priority_new_high_ids_go_first(tw, completion_order, taskworkerd):
    """An id pushed onto `high` while `low` is being drained is taken next."""
    low = tw.insert(40)
    high = tw.insert(3)
    tw.push(low, queue="low")
    d = taskworkerd(redis={"queues": ["high", "low"]},
                    worker={"delay_ms": 100, "concurrency": 1})
    wait_until(lambda: len(completion_order()) >= 3, 30, "3 low tasks to complete", daemon=d)
    tw.push(high, queue="high")
    tw.wait_completed(high, 30, daemon=d)
    order = completion_order()
    low_done = [i for i in order if i in low]
    # high ids were pushed with most low ids still queued: they complete
    # before the rest of `low` (allow for the low ids in flight)
    assert len(low_done) < len(low) - 10, \
        f"high ids waited for the low queue: order {order}"
    positions = [order.index(i) for i in high]
    assert positions == sorted(positions), "high ids out of order"
    tw.wait_completed(high + low, 60, daemon=d)


def test_crash_leftovers_go_first(tw, completion_order, taskworkerd):
    """Ids left in the processing list by kill -9 go back to the head of
    the queue in their original order and run before anything else."""
    ids = tw.insert(12)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 60000, "concurrency": 3})
    wait_until(lambda: tw.llen(tw.processing()) >= 3, 15,
               "3 ids in the processing list", daemon=d)
    time.sleep(0.2)
    d.kill()
    taken = tw.ids_in(tw.processing())
    n = len(taken)
    assert 3 <= n <= 4, f"concurrency 3 but {n} ids in the processing list"
    assert sorted(taken) == ids[:n], f"the daemon took {taken}, not the first {n} of {ids}"
    assert tw.ids_in("tasks") == ids[n:]

    d2 = taskworkerd(worker={"delay_ms": 0, "concurrency": 1})
    tw.wait_completed(ids, 30, daemon=d2)
    assert completion_order() == ids, "recovered ids did not run first, in original order"
    tw.wait_empty(tw.processing(), daemon=d2)
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []


def test_other_workers_processing_list_untouched(tw, taskworkerd):
    """Recovery takes back only this worker's list, not another worker's."""
    ids = tw.insert(4)
    other = tw.processing(worker="someone-else")
    tw.hold(ids[:2], worker="someone-else")
    tw.push(ids[2:])
    d = taskworkerd(worker={"delay_ms": 0})
    tw.wait_completed(ids[2:], 30, daemon=d)
    assert tw.ids_in(other) == ids[:2]
    assert tw.statuses(ids[:2]) == {i: "pending" for i in ids[:2]}


def test_processing_list_of_an_older_version_goes_back(tw, completion_order,
                                                      taskworkerd):
    """A processing *list* (the shape before it became a sorted set), left
    by an older taskworkerd: at start its ids go back to the head of the
    queue in their order, before the queue's own, and all complete; the
    key is a sorted set from then on."""
    ids = tw.insert(6)
    tw.r.rpush(tw.processing(), *ids[:3])
    tw.push(ids[3:])
    d = taskworkerd(worker={"delay_ms": 0, "concurrency": 1})
    tw.wait_completed(ids, 20, daemon=d)
    assert completion_order() == ids, "the old list's ids did not go first, in order"
    assert lines_with_back(d), "no log line about the ids that went back"
    assert tw.r.type(tw.processing()) in ("zset", "none", b"zset", b"none")
    tw.wait_empty(tw.processing(), daemon=d)


def lines_with_back(d):
    return [line for line in d.log_lines() if "went back to the head" in line]
