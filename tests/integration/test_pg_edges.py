"""PostgreSQL at the edges: a completion that changes no row, a column
whose type changes under prepared statements, statement timeouts, and
reloads that change the table or its columns while rows are in flight."""

import contextlib
import time

import pytest

from conftest import (exec_handler, fast_retry, read_lines, reason_text, wait_dead,
                      wait_until, write_script)


def skip_update_of(tw, sql_teardown, bad):
    """A BEFORE UPDATE trigger that returns NULL for row BAD: its UPDATE
    silently changes nothing."""
    tw.db.execute(f"""
        CREATE FUNCTION tw_skip_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RETURN NULL;
        END $$;
        CREATE TRIGGER tw_skip_update BEFORE UPDATE ON task FOR EACH ROW
          WHEN (OLD.id = {bad}) EXECUTE FUNCTION tw_skip_update();
    """)
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_skip_update()")
    sql_teardown.append("DROP TRIGGER IF EXISTS tw_skip_update ON task")


@pytest.mark.parametrize("handler", [{"type": "none"},
                                     {"type": "sql", "statement": "SELECT $1"}])
def test_pg_completion_that_changes_no_row_fails(tw, sql_teardown, taskworkerd, handler):
    """A trigger turns one row's completion into no change: that row is a
    failed attempt ('the completion changed no row'), not acknowledged as
    completed while it stays pending; the others complete."""
    ids = tw.insert(6)
    bad = ids[3]
    skip_update_of(tw, sql_teardown, bad)
    tw.push(ids)
    d = taskworkerd(handler=handler, retry=fast_retry(2))
    good = [i for i in ids if i != bad]
    tw.wait_completed(good, 20, daemon=d)
    wait_dead(tw, [bad], 20, daemon=d)
    assert reason_text(tw, bad) == "attempt 2/2: the completion changed no row"
    assert tw.statuses([bad]) == {bad: "pending"}
    tw.wait_empty(tw.processing(), daemon=d)


@pytest.fixture
def rls_role(tw, servers, sql_teardown):
    """A role under row-level security that may update every row but one."""
    def make(bad):
        tw.db.execute(f"""
            DROP ROLE IF EXISTS tw_rls;
            CREATE ROLE tw_rls LOGIN;
            GRANT SELECT, UPDATE ON task TO tw_rls;
            ALTER TABLE task ENABLE ROW LEVEL SECURITY;
            CREATE POLICY tw_sel ON task FOR SELECT TO tw_rls USING (true);
            CREATE POLICY tw_upd ON task FOR UPDATE TO tw_rls USING (id <> {bad});
        """)
        sql_teardown.append("DROP ROLE IF EXISTS tw_rls")
        sql_teardown.append("REVOKE ALL ON task FROM tw_rls")
        sql_teardown.append("ALTER TABLE task DISABLE ROW LEVEL SECURITY")
        sql_teardown.append("DROP POLICY IF EXISTS tw_upd ON task")
        sql_teardown.append("DROP POLICY IF EXISTS tw_sel ON task")
        return servers.pg.conninfo.replace("user=postgres", "user=tw_rls")
    return make


def test_pg_completion_refused_by_row_level_security(tw, sql_teardown, rls_role, taskworkerd):
    ids = tw.insert(4)
    bad = ids[1]
    conninfo = rls_role(bad)
    tw.push(ids)
    d = taskworkerd(retry=fast_retry(1), postgres={"conninfo": conninfo})
    good = [i for i in ids if i != bad]
    tw.wait_completed(good, 20, daemon=d)
    wait_dead(tw, [bad], 20, daemon=d)
    assert reason_text(tw, bad) == "attempt 1/1: the completion changed no row"
    assert tw.statuses([bad]) == {bad: "pending"}


def test_pg_column_type_changed_under_prepared_statements(tw, taskworkerd):
    """ALTER COLUMN ... TYPE makes the prepared load fail with 'cached plan
    must not change result type' (0A000): the sessions prepare again and
    loads go on."""
    first = tw.insert(5)
    tw.push(first)
    d = taskworkerd(postgres={"columns": ["name"], "connections": 1})
    tw.wait_completed(first, 20, daemon=d)
    tw.db.execute("ALTER TABLE task ALTER COLUMN name TYPE text")
    try:
        more = tw.insert(5)
        tw.push(more)
        tw.wait_completed(more, 20, daemon=d)
    finally:
        tw.db.execute("ALTER TABLE task ALTER COLUMN name TYPE varchar(255)")
    assert tw.lrange(tw.dead()) == []


def timing_out(servers, taskworkerd, attempts, worker):
    """A daemon whose statements time out after 200 ms (57014)."""
    conninfo = servers.pg.conninfo + " options='-c statement_timeout=200'"
    return taskworkerd(retry=fast_retry(attempts), worker=worker,
                       postgres={"conninfo": conninfo})


@contextlib.contextmanager
def table_locked(tw):
    """The task table locked by the test's session while the block runs."""
    lock = tw.db.cursor()
    tw.db.autocommit = False
    try:
        lock.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        tw.db.rollback()
        tw.db.autocommit = True


def test_pg_statement_timeout_is_bounded(tw, servers, taskworkerd):
    """Every load hits statement_timeout (57014) while the table is locked:
    after a few tries the attempt fails with that reason, instead of being
    retried without end; once the lock is gone the rest completes."""
    ids = tw.insert(2)
    d = timing_out(servers, taskworkerd, 1, {"retry_min_ms": 50, "retry_max_ms": 100})
    with table_locked(tw):
        tw.push(ids)
        wait_until(lambda: set(tw.lrange(tw.dead())) == {str(i) for i in ids}, 30,
                   "the tasks to be dead", daemon=d)
    for i in ids:
        text = reason_text(tw, i)
        assert text.startswith("attempt 1/1: SQLSTATE 57014: "), text
    more = tw.insert(3)
    tw.push(more)
    tw.wait_completed(more, 20, daemon=d)


def test_pg_step_retry_waiting_out_a_lowered_max_is_cut(tw, servers, taskworkerd):
    """A load times out (57014) and its step retry waits 60 s
    (worker.retry_min_ms = retry_max_ms = 60000); once the lock is gone a
    reload lowers retry_max_ms to 300: the wait already armed is cut to the
    new bound, and the row completes at once, not a minute later."""
    ids = tw.insert(2)
    d = timing_out(servers, taskworkerd, 3, {"retry_min_ms": 60000, "retry_max_ms": 60000})
    with table_locked(tw):
        tw.push(ids)
        wait_until(lambda: tw.llen(tw.processing()) == len(ids), 10,
                   "the ids to be taken", daemon=d)
        time.sleep(1.0)     # each load timed out after 200 ms: waiting 30-60 s
    time.sleep(1.0)
    assert tw.statuses(ids) == {i: "pending" for i in ids}, \
        "the rows completed before the reload: no wait was cut"
    cfg = d.config
    cfg["worker"]["retry_min_ms"] = 100
    cfg["worker"]["retry_max_ms"] = 300
    t0 = time.monotonic()
    d.reload(cfg)
    tw.wait_completed(ids, 15, daemon=d)
    assert time.monotonic() - t0 < 10, "the old 60 s wait was waited out"
    assert tw.llen(tw.dead()) == 0 and tw.r.hlen("tasks:attempts") == 0, \
        "a timed-out load counted as a failed attempt"


@pytest.fixture
def task2(tw, sql_teardown):
    tw.db.execute("DROP TABLE IF EXISTS task2; CREATE TABLE task2 (LIKE task INCLUDING ALL)")
    sql_teardown.append("DROP TABLE IF EXISTS task2")


def wait_taken(tw, ids, d):
    wait_until(lambda: tw.llen(tw.processing()) == len(ids), 10, "the ids to be taken",
               daemon=d)
    time.sleep(0.5)     # loaded, waiting out the delay


def test_pg_reload_of_table_finishes_rows_where_loaded(tw, task2, taskworkerd):
    """postgres.table changes while rows loaded from the old table wait out
    their delay: they are completed in their own table, and the new table's
    rows with the same ids are not touched."""
    ids = tw.insert(5)
    tw.db.execute("INSERT INTO task2 SELECT * FROM task")
    d = taskworkerd(worker={"delay_ms": 2500})
    tw.push(ids)
    wait_taken(tw, ids, d)
    cfg = d.config
    cfg["postgres"]["table"] = "task2"
    d.reload(cfg)
    tw.wait_completed(ids, 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    st2 = dict(tw.db.execute("SELECT id, status FROM task2").fetchall())
    assert st2 == {i: "pending" for i in ids}, "rows of the new table were completed"
    # New work goes to the new table.
    tw.push(ids[:2])
    wait_until(lambda: tw.db.execute(
        "SELECT count(*) FROM task2 WHERE status = 'completed'").fetchone()[0] == 2,
        20, "the new table's rows to complete", daemon=d)


def test_pg_reload_of_columns_keeps_the_row_names(tw, task_columns, taskworkerd, tmp_path):
    """postgres.columns changes order while a row loaded under the old list
    waits out its delay: the handler sees each value under its own name."""
    task_columns("color", "text")
    (task_id,) = tw.insert(1)
    tw.db.execute("UPDATE task SET name = 'alice', color = 'red' WHERE id = %s", (task_id,))
    out = tmp_path / "seen"
    script = write_script(tmp_path, "show.sh", f"""
        echo "$TASK_ID name=$TASK_NAME color=$TASK_COLOR" >> {out}
    """)
    d = taskworkerd(handler=exec_handler(script), worker={"delay_ms": 2500},
                    postgres={"columns": ["name", "color"]})
    tw.push([task_id])
    wait_taken(tw, [task_id], d)
    cfg = d.config
    cfg["postgres"]["columns"] = ["color", "name"]
    d.reload(cfg)
    tw.wait_completed([task_id], 20, daemon=d)
    assert read_lines(out) == [f"{task_id} name=alice color=red"]


def read_only(tw, sql_teardown, db):
    """The server refuses writes as a standby does: an UPDATE of a task
    raises SQLSTATE 25006, and new sessions of DB are read-only."""
    tw.db.execute("""
        CREATE FUNCTION tw_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'cannot execute UPDATE in a read-only transaction'
            USING ERRCODE = '25006';
        END $$;
        CREATE TRIGGER tw_read_only BEFORE UPDATE ON task FOR EACH ROW
          EXECUTE FUNCTION tw_read_only();
    """)
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_read_only()")
    sql_teardown.append("DROP TRIGGER IF EXISTS tw_read_only ON task")
    sql_teardown.append(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
    tw.db.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')


def test_pg_read_only_server_is_left_for_a_primary(tw, sql_teardown, taskworkerd):
    """A server that refuses writes (SQLSTATE 25006, as a standby or a
    primary being demoted does) wrote nothing: the daemon drops that
    session and looks for a primary; a session that comes up read-only
    (default_transaction_read_only, in_hot_standby) is not used. The tasks
    wait, lose no attempt, and complete once a writable server is back."""
    db = tw.db.execute("SELECT current_database()").fetchone()[0]
    d = taskworkerd(retry=fast_retry(2))
    warm = tw.insert(3)
    tw.push(warm)
    tw.wait_completed(warm, 15, daemon=d)
    read_only(tw, sql_teardown, db)
    ids = tw.insert(5)
    tw.push(ids)
    wait_until(lambda: "read-only (SQLSTATE 25006)" in d.log(), 15,
               "the session dropped for a read-only server", daemon=d)
    # Refused by libpq (target_session_attrs read-write) or by the daemon.
    wait_until(lambda: "session is read-only" in d.log()
               or "standby or read-only" in d.log(), 15,
               "a read-only session refused at connect", daemon=d)
    time.sleep(1)
    assert tw.statuses(ids) == {i: "pending" for i in ids}
    assert tw.r.llen(tw.dead()) == 0
    tw.db.execute("DROP TRIGGER tw_read_only ON task")
    tw.db.execute(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
    tw.wait_completed(ids, 20, daemon=d)
    assert tw.r.llen(tw.dead()) == 0
    assert not tw.r.exists("tasks:retry")


def test_pg_stop_while_the_server_is_read_only(tw, sql_teardown, taskworkerd):
    """Completions a read-only server refused (SQLSTATE 25006) wrote
    nothing: a stop does not wait for a writable server to answer them,
    but ends within shutdown_timeout_ms, their ids back in the queue."""
    db = tw.db.execute("SELECT current_database()").fetchone()[0]
    d = taskworkerd(retry=fast_retry(2), worker={"shutdown_timeout_ms": 1000})
    read_only(tw, sql_teardown, db)
    ids = tw.insert(5)
    tw.push(ids)
    wait_until(lambda: "read-only (SQLSTATE 25006)" in d.log(), 15,
               "the session dropped for a read-only server", daemon=d)
    assert d.terminate(timeout=10) == 0
    assert tw.statuses(ids) == {i: "pending" for i in ids}
    assert sorted(int(v) for v in tw.r.lrange("tasks", 0, -1)) == ids
    assert tw.r.zcard(tw.processing()) == 0
