"""Bad input: invalid ids and missing rows go to the dead list; completed
rows are not run again; other rows are left alone; any table works."""

import time

import pytest

from conftest import log_has_line, wait_until

INVALID = ["abc", "", "0", "-5", "9223372036854775808", " 7", "1.5"]


def test_invalid_and_missing_ids_go_dead(tw, taskworkerd):
    ids = tw.insert(10)
    missing = [str(ids[-1] + 1000), "9223372036854775807"]  # valid ids, no rows
    bad = INVALID + missing
    mixed = []
    for i, value in enumerate(bad):
        mixed += [str(ids[i]), value]
    mixed += [str(i) for i in ids[len(bad):]]
    tw.r.rpush("tasks", *mixed)

    d = taskworkerd(worker={"delay_ms": 0, "missing_row_grace_ms": 200})
    tw.wait_completed(ids, 30, daemon=d)
    wait_until(lambda: tw.llen(tw.dead()) >= len(bad), 20,
               f"{len(bad)} ids in the dead list", daemon=d)
    time.sleep(0.5)
    dead = tw.lrange(tw.dead())
    assert sorted(dead) == sorted(bad), f"dead list {dead!r}, expected {bad!r}"
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange("tasks") == []
    assert d.running()

    # the daemon goes on
    more = tw.insert(3)
    tw.push(more)
    tw.wait_completed(more, 20, daemon=d)

    log = d.log()
    for value in ("abc", "9223372036854775808", missing[0]):
        assert log_has_line(log, "dead", value), f"no log line with 'dead' and {value!r}"


def test_garbage_ids_go_dead(tw, taskworkerd):
    """Whatever bytes arrive, they go to the dead list unchanged."""
    garbage = [b"\x00\xff\xfe", b"x" * 100000, b"+5", b"5 ", b"5\n", b"1e3", b"0x10",
               "\u0661\u0662".encode(), b"18446744073709551616", b"-9223372036854775808",
               b"\r\n*1\r\n$4\r\nPING\r\n"]
    ids = tw.insert(3)
    tw.rb.rpush("tasks", ids[0], *garbage, ids[1])
    d = taskworkerd(worker={"delay_ms": 0})
    tw.wait_completed(ids[:2], 30, daemon=d)
    wait_until(lambda: tw.llen(tw.dead()) >= len(garbage), 20,
               f"{len(garbage)} ids in the dead list", daemon=d)
    dead = tw.rb.lrange(tw.dead(), 0, -1)
    assert sorted(dead) == sorted(garbage), \
        f"dead list {[x[:40] for x in dead]!r}"
    tw.push([ids[2]])
    tw.wait_completed(ids[2:], 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)


def test_row_appearing_within_grace_completes(tw, taskworkerd):
    """An id pushed before its row is committed: it is retried, not dead,
    while the row shows up within missing_row_grace_ms."""
    d = taskworkerd(worker={"delay_ms": 0, "missing_row_grace_ms": 10000})
    next_id = tw.db.execute("SELECT last_value + 1 FROM task_id_seq").fetchone()[0]
    # a fresh sequence (RESTART IDENTITY) hands out its start value first
    if not tw.db.execute("SELECT is_called FROM task_id_seq").fetchone()[0]:
        next_id -= 1
    tw.push([next_id])
    time.sleep(1.0)
    assert tw.lrange(tw.dead()) == []
    (row,) = tw.insert(1)
    assert row == next_id
    tw.wait_completed([row], 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange(tw.dead()) == []


def test_completed_row_not_run_again(tw, taskworkerd):
    """A row already completed is acknowledged at once, without the 3 s
    delay: it leaves the processing list while its pending neighbour is
    still waiting out its delay. Rows not pushed keep their status."""
    done, todo, failed, idle = tw.insert(4)
    tw.db.execute("UPDATE task SET status = 'completed' WHERE id = %s", (done,))
    tw.db.execute("UPDATE task SET status = 'failed' WHERE id = %s", (failed,))
    tw.push([done, todo])
    d = taskworkerd(worker={"delay_ms": 3000})

    def done_acked_todo_inflight():
        processing = tw.ids_in(tw.processing())
        return (done not in processing and done not in tw.ids_in("tasks")
                and todo in processing)
    wait_until(done_acked_todo_inflight, 10,
               "the completed row to be acknowledged while the pending one is in flight",
               daemon=d)
    assert tw.statuses([todo]) == {todo: "pending"}, \
        "the pending task finished before its delay"
    tw.wait_completed([todo], 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.statuses() == {done: "completed", todo: "completed",
                             failed: "failed", idle: "pending"}
    assert tw.lrange(tw.dead()) == [] and tw.lrange("tasks") == []


@pytest.fixture
def jobs_table(tw):
    """A schema-qualified table with unusual column names."""
    tw.db.execute("""
        DROP SCHEMA IF EXISTS jobs CASCADE;
        CREATE SCHEMA jobs;
        CREATE TABLE jobs.work (
          "job id"  bigserial PRIMARY KEY,
          "State"   text NOT NULL DEFAULT 'new',
          payload   text,
          extra     int
        );
    """)
    yield "jobs.work"
    tw.db.execute("DROP SCHEMA IF EXISTS jobs CASCADE")


def test_custom_table_and_columns(tw, jobs_table, taskworkerd):
    rows = [r[0] for r in tw.db.execute(
        "INSERT INTO jobs.work (payload, extra) SELECT 'p' || g, g "
        "FROM generate_series(1, 20) g ORDER BY g RETURNING \"job id\"")]
    tw.db.execute('UPDATE jobs.work SET "State" = \'done\' WHERE "job id" = %s', (rows[0],))
    tw.db.execute('UPDATE jobs.work SET "State" = \'held\' WHERE "job id" = %s', (rows[1],))
    pushed = [rows[0]] + rows[2:]
    tw.push(pushed, queue="jobq")
    d = taskworkerd(redis={"queues": ["jobq"]},
                    postgres={"table": jobs_table, "id_column": "job id",
                              "status_column": "State", "columns": ["payload", "extra"],
                              "completed_status": "done"},
                    worker={"delay_ms": 0})

    def states():
        return dict(tw.db.execute('SELECT "job id", "State" FROM jobs.work').fetchall())
    wait_until(lambda: all(states()[i] == "done" for i in pushed), 30,
               "all pushed jobs done", daemon=d)
    tw.wait_empty(tw.processing("jobq"), daemon=d)
    assert states()[rows[1]] == "held"
    assert tw.lrange("jobq") == [] and tw.lrange(tw.dead("jobq")) == []
    assert tw.count("completed") == 0
