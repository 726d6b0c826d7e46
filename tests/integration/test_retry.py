"""Retries, scheduled ids and dead reasons: the backoff between attempts,
the attempt count (kept across kill -9), QUEUE:retry and QUEUE:scheduled
moved exactly once by racing workers, the attempts/error columns,
redis.dead_max, and a row whose own UPDATE raises."""

import collections
import re
import shlex
import time

import pytest

from conftest import (read_members, exec_handler, fast_retry, log_has_line, read_lines, reason_text,
                      refuse_completing,
                      redis_now_ms, scaled, split_reason, wait_dead, wait_until, write_script, zset)


def q(path):
    return shlex.quote(str(path))


def assert_clean(tw, d, worker="itest"):
    tw.wait_empty(tw.processing(worker=worker), daemon=d)
    assert tw.r.zcard("tasks:retry") == 0, zset(tw, "tasks:retry")
    assert tw.r.hgetall("tasks:attempts") == {}


# ---- the schedule of attempts ---------------------------------------------------------

def test_retry_schedule_and_attempt_count(tw, taskworkerd, tmp_path):
    """attempts = 3, backoff 100..400 ms, a handler that always exits 1:
    runs 1, 2, 3 at least min_ms apart (and not much more than max_ms);
    then 'failed', in tasks:dead with 'attempt 3/3: exit 1', no field left
    in tasks:attempts, tasks:retry empty."""
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$TASK_ATTEMPT $(date +%s%N)" >> {q(runs)}
        exit 1
    """)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script),
                    retry={"attempts": 3, "min_ms": 100, "max_ms": 400})
    tw.push([i])
    wait_dead(tw, [i], 15, daemon=d)
    lines = [line.split() for line in read_lines(runs)]
    assert [a for a, _ in lines] == ["1", "2", "3"], f"runs: {lines}"
    times = [int(t) / 1e6 for _, t in lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    for k, gap in enumerate(gaps, 1):
        assert gap >= 100 - 15, f"attempt {k + 1} ran {gap:.0f} ms after attempt {k} " \
                                "(retry.min_ms = 100)"
        assert gap <= 400 + scaled(0.5) * 1000, f"attempt {k + 1} ran {gap:.0f} ms after attempt {k} " \
                                 "(retry.max_ms = 400)"
    assert tw.statuses([i]) == {i: "failed"}
    assert tw.lrange(tw.dead()) == [str(i)]
    assert reason_text(tw, i) == "attempt 3/3: exit 1"
    assert not tw.r.hexists("tasks:attempts", str(i))
    assert tw.lrange("tasks") == []
    assert_clean(tw, d)


@pytest.mark.slow
def test_retry_pending_state(tw, taskworkerd, tmp_path):
    """While a retry waits, the row is still 'pending' and the id is in
    tasks:retry (not in the queue, processing or dead) with a due time
    about backoff ms ahead on the Redis clock; tasks:attempts says 1."""
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$TASK_ATTEMPT" >> {q(runs)}
        exit 1
    """)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script),
                    retry={"attempts": 2, "min_ms": 1500, "max_ms": 1500})
    tw.push([i])
    t0 = time.monotonic()
    wait_until(lambda: tw.r.hget("tasks:attempts", str(i)) == "1", 10,
               "tasks:attempts to count the first failure", daemon=d)
    with tw.r.pipeline(transaction=True) as p:
        p.zscore("tasks:retry", str(i))
        p.lrange("tasks", 0, -1)
        read_members(p, tw.processing())
        p.lrange(tw.dead(), 0, -1)
        p.time()
        due, queued, processing, dead, (sec, usec) = p.execute()
    now = sec * 1000 + usec // 1000
    assert due is not None, f"not in tasks:retry: {zset(tw, 'tasks:retry')}"
    assert now < due <= now + 1500 + 50, f"due at {due}, now {now}, backoff 1500 ms"
    assert str(i) not in queued + processing + dead, (queued, processing, dead)
    assert tw.statuses([i]) == {i: "pending"}
    assert read_lines(runs) == ["1"]

    wait_dead(tw, [i], 10, daemon=d)
    elapsed = time.monotonic() - t0
    assert read_lines(runs) == ["1", "2"]
    assert elapsed >= 1.4, f"the second attempt came {elapsed:.2f}s after the push"
    assert reason_text(tw, i) == "attempt 2/2: exit 1"
    assert tw.statuses([i]) == {i: "failed"}
    assert_clean(tw, d)


@pytest.mark.slow
def test_attempts_kept_across_kill9(tw, taskworkerd, tmp_path):
    """Attempts 1 and 2 fail; kill -9 while the id waits in tasks:retry;
    after the restart the next run is attempt 3, which succeeds."""
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$TASK_ATTEMPT" >> {q(runs)}
        [ "$TASK_ATTEMPT" -ge 3 ] || exit 1
        exit 0
    """)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script),
                    retry={"attempts": 5, "min_ms": 1500, "max_ms": 1500})
    tw.push([i])
    wait_until(lambda: tw.r.hget("tasks:attempts", str(i)) == "2", 10,
               "two failed attempts", daemon=d)
    d.kill()
    assert read_lines(runs) == ["1", "2"]
    assert str(i) in zset(tw, "tasks:retry")
    assert tw.statuses([i]) == {i: "pending"}
    d.start()
    tw.wait_completed([i], 10, daemon=d)
    assert read_lines(runs) == ["1", "2", "3"]
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


# ---- the mover --------------------------------------------------------------------------

@pytest.mark.slow
def test_mover_exactly_once_with_three_workers(tw, taskworkerd, tmp_path):
    """Three daemons race to move 300 scheduled ids and 100 due retries:
    each id is taken once and run once (a retried one as attempt 2), all
    complete, every key ends empty."""
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "$TASK_ID $TASK_ATTEMPT" >> {q(runs)}
        sleep 0.2
    """)
    ids = tw.insert(400)
    scheduled, retried = ids[:300], ids[300:]
    workers = ["w1", "w2", "w3"]
    daemons = [taskworkerd(name=w, worker={"id": w, "concurrency": 64},
                           handler=exec_handler(script, max_processes=64),
                           retry=fast_retry(3))
               for w in workers]
    due = redis_now_ms(tw) + 500
    with tw.r.pipeline(transaction=True) as p:
        p.zadd("tasks:scheduled", {str(i): due for i in scheduled})
        p.zadd("tasks:retry", {str(i): due for i in retried})
        p.hset("tasks:attempts", mapping={str(i): 1 for i in retried})
        p.execute()
    tw.wait_completed(ids, 30, daemon=daemons[0])
    for d in daemons:
        assert d.running(), f"{d.name} exited with {d.returncode}"
    time.sleep(0.5)  # a second copy of an id would show up by now

    got = collections.Counter()
    for line in read_lines(runs):
        task_id, attempt = line.split()
        got[(int(task_id), attempt)] += 1
    want = collections.Counter({(i, "1"): 1 for i in scheduled})
    want.update({(i, "2"): 1 for i in retried})
    assert got == want, (f"runs differ: extra {dict(list((got - want).items())[:10])}, "
                         f"missing {dict(list((want - got).items())[:10])}")
    taken = collections.Counter()
    for d in daemons:
        for m in re.finditer(r"task (\d+): taken from tasks\b", d.log()):
            taken[int(m.group(1))] += 1
    assert taken == collections.Counter(ids), \
        f"ids taken more than once: {[i for i, n in taken.items() if n > 1][:10]}"
    assert tw.r.zcard("tasks:scheduled") == 0 and tw.r.zcard("tasks:retry") == 0
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []
    for w, d in zip(workers, daemons):
        assert_clean(tw, d, worker=w)


@pytest.mark.slow
def test_scheduled_not_run_before_due(tw, taskworkerd):
    """An idle daemon: an id scheduled 1.5 s ahead is not run at 1 s and is
    completed by 3 s; one scheduled in the past runs at once."""
    d = taskworkerd()
    late, past = tw.insert(2)
    now = redis_now_ms(tw)
    t0 = time.monotonic()
    tw.r.zadd("tasks:scheduled", {str(late): now + 1500, str(past): now - 1000})
    tw.wait_completed([past], 1, daemon=d)
    time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert tw.statuses([late]) == {late: "pending"}, "ran before its due time"
    assert zset(tw, "tasks:scheduled") == {str(late): now + 1500}
    assert str(late) not in tw.lrange("tasks") + tw.lrange(tw.processing())
    tw.wait_completed([late], max(0.1, t0 + 3.0 - time.monotonic()), daemon=d)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.45, f"the scheduled id completed {elapsed:.2f}s after, due at 1.5 s"
    assert tw.r.zcard("tasks:scheduled") == 0
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


# ---- the row's columns -------------------------------------------------------------------

@pytest.mark.slow
def test_attempts_and_error_columns(tw, task_columns, taskworkerd, tmp_path):
    """postgres.attempts_column and error_column get each failed attempt's
    number and reason; failed_status is what the row gets at the end."""
    task_columns("attempts", "int")
    task_columns("last_error", "text")
    script = write_script(tmp_path, "handler.sh", """
        echo "bad input" >&2
        exit 4
    """)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script),
                    retry={"attempts": 2, "min_ms": 1000, "max_ms": 1000},
                    postgres={"attempts_column": "attempts", "error_column": "last_error",
                              "failed_status": "broken"})
    tw.push([i])

    def row():
        return tw.db.execute("SELECT status, attempts, last_error FROM task WHERE id = %s",
                             (i,)).fetchone()
    wait_until(lambda: row()[1] == 1, 10, f"attempts = 1 (row: {row()})", daemon=d)
    status, attempts, error = row()
    assert status == "pending"
    assert error and "exit 4" in error, f"last_error after attempt 1: {error!r}"
    # The row is written first, then the move to tasks:retry records the
    # count: the two may be read between them.
    wait_until(lambda: tw.r.hget("tasks:attempts", str(i)) == "1", 5,
               "tasks:attempts to count the first failure", daemon=d)

    wait_dead(tw, [i], 10, daemon=d)
    status, attempts, error = row()
    assert (status, attempts) == ("broken", 2), row()
    assert error and "exit 4" in error, f"last_error after attempt 2: {error!r}"
    assert reason_text(tw, i) == "attempt 2/2: exit 4"
    assert_clean(tw, d)


# ---- dead ids and their reasons ------------------------------------------------------------

def test_not_an_id_and_missing_row_reasons(tw, taskworkerd):
    """Values that are not ids and ids without a row are dead at once, each
    with its reason in tasks:dead:reason."""
    (row,) = tw.insert(1)
    missing = str(row + 1000)
    tw.r.rpush("tasks", "abc", missing, str(row))
    d = taskworkerd(worker={"missing_row_grace_ms": 200})
    tw.wait_completed([row], 10, daemon=d)
    wait_dead(tw, ["abc", missing], 10, daemon=d)
    assert reason_text(tw, "abc").startswith("not an id"), reason_text(tw, "abc")
    assert "no row with that id" in reason_text(tw, missing), reason_text(tw, missing)
    assert set(tw.r.hkeys("tasks:dead:reason")) == {"abc", missing}
    assert_clean(tw, d)


def test_dead_max_trims_oldest(tw, taskworkerd):
    """redis.dead_max = 5 and 8 values dying one after the other: tasks:dead
    keeps the 5 newest with their reasons, the 3 oldest go with theirs, and
    the trim is logged."""
    d = taskworkerd(redis={"dead_max": 5})
    values = [f"x{k}" for k in range(1, 9)]
    for v in values:
        tw.r.rpush("tasks", v)
        wait_dead(tw, [v], 10, daemon=d)
    newest, oldest = values[3:], values[:3]
    assert sorted(tw.lrange(tw.dead())) == sorted(newest)
    reasons = tw.r.hgetall("tasks:dead:reason")
    assert not set(oldest) & set(reasons), f"reasons of dropped ids kept: {sorted(reasons)}"
    assert sorted(reasons) == sorted(newest), f"reasons kept for {sorted(reasons)}"
    for v in newest:
        assert split_reason(reasons[v])[1].startswith("not an id"), reasons[v]
    wait_until(lambda: any("tasks:dead" in line and re.search(r"trim|drop|oldest", line, re.I)
                           for line in d.log_lines()), 5,
               "a log line about trimming tasks:dead", daemon=d)
    assert_clean(tw, d)


def test_row_whose_update_raises(tw, sql_teardown, taskworkerd):
    """One row among 200 cannot be completed (a trigger raises on its
    UPDATE): the 199 others complete promptly; it is retried, then
    'failed' and dead with the trigger's message."""
    ids = tw.insert(200)
    bad = ids[123]
    refuse_completing(tw, sql_teardown, bad)
    d = taskworkerd(retry=fast_retry(2), worker={"delay_ms": 0})
    good = [i for i in ids if i != bad]
    t0 = time.monotonic()
    tw.push(ids)
    tw.wait_completed(good, 10, daemon=d)
    elapsed = time.monotonic() - t0
    assert elapsed < scaled(5), f"the 199 good rows took {elapsed:.1f}s"
    wait_dead(tw, [bad], 10, daemon=d)
    text = reason_text(tw, bad)
    assert text.startswith("attempt 2/2: "), text
    assert f"no completing {bad}" in text, text
    assert tw.statuses([bad]) == {bad: "failed"}
    assert tw.lrange(tw.dead()) == [str(bad)]
    assert log_has_line(d.log(), "dead", str(bad))
    assert_clean(tw, d)
