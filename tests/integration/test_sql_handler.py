"""The SQL handler: the statement and the status UPDATE in one transaction
per task (both commit or neither), pipelined on one session; a statement
error fails the attempt with 'SQLSTATE XXXXX: message'."""

import pytest

from conftest import (EX_CONFIG, EX_OK, REPO, fast_retry, line_number, reason_text,
                      refuse_completing,
                      render_config, wait_dead, wait_until, zset)

EXAMPLE_SQL = REPO / "conf" / "examples" / "process_task.sql"
SQL_HANDLER = {"type": "sql", "statement": "SELECT process_task($1)"}


@pytest.fixture
def example_sql(tw, sql_teardown):
    """conf/examples/process_task.sql loaded: task_log and process_task()."""
    tw.db.execute("DROP TABLE IF EXISTS task_log")
    sql_teardown.append("DROP TABLE IF EXISTS task_log")
    sql_teardown.append("DROP FUNCTION IF EXISTS process_task(bigint)")
    tw.db.execute(EXAMPLE_SQL.read_text())


def insert_named(tw, *names):
    return [tw.db.execute("INSERT INTO task (name) VALUES (%s) RETURNING id",
                          (n,)).fetchone()[0] for n in names]


def logged(tw, ids):
    """{task_id: [result, ...]} from task_log for IDS."""
    out = {}
    for task_id, result in tw.db.execute(
            "SELECT task_id, result FROM task_log WHERE task_id = ANY(%s) ORDER BY task_id",
            (list(ids),)):
        out.setdefault(task_id, []).append(result)
    return out


def assert_work_done_once(tw, ids):
    """Each of IDS has one task_log row (its name upper-cased), written by
    the same transaction as its status (the same xmin)."""
    names = dict(tw.db.execute("SELECT id, name FROM task WHERE id = ANY(%s)",
                               (list(ids),)).fetchall())
    assert logged(tw, ids) == {i: [names[i].upper()] for i in ids}
    rows = tw.db.execute(
        "SELECT t.id, t.xmin::text, l.xmin::text FROM task t "
        "JOIN task_log l ON l.task_id = t.id WHERE t.id = ANY(%s)", (list(ids),)).fetchall()
    apart = [(i, a, b) for i, a, b in rows if a != b]
    assert apart == [], ("the work and the status were committed in different "
                         f"transactions (id, task xmin, task_log xmin): {apart[:10]}")


def assert_clean(tw, d):
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.r.zcard("tasks:retry") == 0, tw.r.zrange("tasks:retry", 0, -1)
    assert tw.r.hgetall("tasks:attempts") == {}


def test_sql_example_work_and_status_commit_together(tw, example_sql, taskworkerd):
    ids = tw.insert(20)
    tw.push(ids)
    d = taskworkerd(handler=SQL_HANDLER, retry=fast_retry(1))
    tw.wait_completed(ids, 20, daemon=d)
    assert_work_done_once(tw, ids)
    assert tw.lrange(tw.dead()) == [] and tw.lrange("tasks") == []
    assert_clean(tw, d)


@pytest.mark.slow
def test_sql_error_commits_nothing(tw, example_sql, taskworkerd):
    """process_task() raises for one row (after its INSERT): neither the work
    nor a status change is committed; while its retry waits the row is
    pending and in tasks:retry; after the last attempt it is 'failed', the
    reason 'attempt 2/2: SQLSTATE P0001: <message>', still no task_log row."""
    good = tw.insert(5)
    (bad,) = insert_named(tw, "please fail")
    tw.push(good[:3] + [bad] + good[3:])
    d = taskworkerd(handler=SQL_HANDLER,
                    retry={"attempts": 2, "min_ms": 1500, "max_ms": 1500})
    tw.wait_completed(good, 20, daemon=d)
    assert_work_done_once(tw, good)

    wait_until(lambda: tw.r.hget("tasks:attempts", str(bad)) == "1", 10,
               "the first attempt of the failing row to be counted", daemon=d)
    assert tw.statuses([bad]) == {bad: "pending"}
    assert str(bad) in zset(tw, "tasks:retry"), "the failed attempt is not in tasks:retry"
    assert logged(tw, [bad]) == {}, "the failed attempt's work was committed"

    wait_dead(tw, [bad], 10, daemon=d)
    text = reason_text(tw, bad)
    assert text.startswith("attempt 2/2: SQLSTATE P0001: "), text
    assert f"task {bad}: cannot process 'please fail'" in text, text
    assert tw.statuses([bad]) == {bad: "failed"}
    assert logged(tw, [bad]) == {}, "the failed attempt's work was committed"
    assert_clean(tw, d)


def test_sql_statement_error_reason(tw, taskworkerd):
    """Any statement works; its error's SQLSTATE and message are the reason."""
    ids = tw.insert(6)
    bad = ids[2]
    tw.push(ids)
    d = taskworkerd(handler={"type": "sql", "statement": f"SELECT 1 / ($1 - {bad})"},
                    retry=fast_retry(1))
    good = [i for i in ids if i != bad]
    tw.wait_completed(good, 20, daemon=d)
    wait_dead(tw, [bad], 20, daemon=d)
    text = reason_text(tw, bad)
    assert text.startswith("attempt 1/1: SQLSTATE 22012: "), text
    assert "division by zero" in text, text
    assert tw.statuses([bad]) == {bad: "failed"}
    assert_clean(tw, d)


def test_sql_update_error_rolls_back_work(tw, example_sql, sql_teardown, taskworkerd):
    """The statement succeeds but the row's status UPDATE raises (a
    trigger): the work is rolled back with it; the row ends 'failed'."""
    ids = tw.insert(10)
    bad = ids[4]
    refuse_completing(tw, sql_teardown, bad)
    tw.push(ids)
    d = taskworkerd(handler=SQL_HANDLER, retry=fast_retry(1))
    good = [i for i in ids if i != bad]
    tw.wait_completed(good, 20, daemon=d)
    assert_work_done_once(tw, good)
    wait_dead(tw, [bad], 20, daemon=d)
    text = reason_text(tw, bad)
    assert text.startswith("attempt 1/1: "), text
    assert f"no completing {bad}" in text, text
    assert tw.statuses([bad]) == {bad: "failed"}
    assert logged(tw, [bad]) == {}, "the work was committed although the UPDATE failed"
    assert_clean(tw, d)


def test_sql_pipelined_one_failure(tw, example_sql, taskworkerd):
    """100 tasks at concurrency 100 on one session, one of them failing:
    the 99 others are completed with their work, the failing one is
    'failed' with no work and 'attempt 1/1: SQLSTATE P0001: ...'."""
    names = [f"task-{k}" for k in range(100)]
    names[57] = "this one will fail"
    ids = insert_named(tw, *names)
    bad = ids[57]
    good = [i for i in ids if i != bad]
    tw.push(ids)
    d = taskworkerd(handler=SQL_HANDLER, retry=fast_retry(1),
                    postgres={"connections": 1}, worker={"concurrency": 100})
    tw.wait_completed(good, 30, daemon=d)
    assert_work_done_once(tw, good)
    wait_dead(tw, [bad], 20, daemon=d)
    assert tw.lrange(tw.dead()) == [str(bad)]
    text = reason_text(tw, bad)
    assert text.startswith("attempt 1/1: SQLSTATE P0001: "), text
    assert "cannot process" in text, text
    assert tw.statuses([bad]) == {bad: "failed"}
    assert logged(tw, [bad]) == {}
    assert tw.count("completed") == 99
    assert_clean(tw, d)


# ---- -t -----------------------------------------------------------------------------

def test_check_config_sql(tw, taskworkerd, run_bin):
    """-t: a sql handler with a statement is OK; without one it is an
    error naming handler.statement (exit 78)."""
    d = taskworkerd(start=False, handler=SQL_HANDLER)
    res = run_bin("-t", "-c", str(d.config_path))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout

    for statement in (None, ""):
        d = taskworkerd(start=False, handler={"type": "sql", "statement": statement})
        res = run_bin("-t", "-c", str(d.config_path))
        assert res.returncode == EX_CONFIG, (statement, res.returncode, res.stdout, res.stderr)
        assert "handler.statement" in res.stderr, res.stderr
        assert "unknown" not in res.stderr.lower(), res.stderr
        if statement is not None:
            line = line_number(render_config(d.config), "statement =")
            assert f"{d.config_path}:{line}:" in res.stderr, res.stderr
