"""The SQL handler's work commits exactly once per row, however often its
transaction is sent: a lost or reset session sends every unanswered
request again, and the backend that had it may still commit it. The
guarded completion runs first, so a copy of the transaction that finds
the row completed runs nothing; and a forced shutdown gives back no id
whose completion is still being committed."""

import signal
import time

import pytest

from conftest import fast_retry, wait_until

SLOW_SQL = {"type": "sql", "statement": "SELECT tw_slow_log($1)"}


@pytest.fixture
def slow_log(tw, sql_teardown):
    """tw_slow_log(id): logs the id and the backend's pid, then sleeps 3 s."""
    tw.db.execute("""
        DROP TABLE IF EXISTS tw_log;
        CREATE TABLE tw_log (task_id bigint, pid int);
        CREATE FUNCTION tw_slow_log(bigint) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO tw_log VALUES ($1, pg_backend_pid());
          PERFORM pg_sleep(3);
        END $$;
    """)
    sql_teardown.append("DROP TABLE IF EXISTS tw_log")
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_slow_log(bigint)")


def log_rows(tw, task_id):
    return tw.db.execute("SELECT pid FROM tw_log WHERE task_id = %s",
                         (task_id,)).fetchall()


def wait_running(tw, daemon):
    """Until a session of the daemon is inside tw_slow_log; its pid."""
    def pid():
        row = tw.db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'taskworkerd' "
            "AND state = 'active' AND wait_event = 'PgSleep'").fetchone()
        return row[0] if row else None
    wait_until(lambda: pid() is not None, 15, "the statement to be running", daemon=daemon)
    return pid()


def settle(tw, d, task_id):
    tw.wait_completed([task_id], 20, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)
    # Any second run would need another 3 s.
    time.sleep(4)


def test_sql_once_across_session_reset_on_reload(tw, slow_log, taskworkerd):
    """A reload that changes postgres.connections resets every session
    while the statement sleeps: the transaction is sent again on a new
    session; the work is done once, the id acknowledged."""
    (task_id,) = tw.insert(1)
    d = taskworkerd(handler=dict(SLOW_SQL), retry=fast_retry(3),
                    postgres={"connections": 1})
    tw.push([task_id])
    wait_running(tw, d)
    cfg = d.config
    cfg["postgres"]["connections"] = 2
    d.reload(cfg)
    settle(tw, d, task_id)
    rows = log_rows(tw, task_id)
    assert len(rows) == 1, f"the work ran {len(rows)} times: backends {rows}"
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []
    assert tw.r.hgetall("tasks:attempts") == {}


def test_sql_once_across_terminated_backend(tw, slow_log, taskworkerd):
    """The backend running the statement is terminated: nothing of it
    commits, the transaction runs again on a new session, once."""
    (task_id,) = tw.insert(1)
    d = taskworkerd(handler=dict(SLOW_SQL), retry=fast_retry(3),
                    postgres={"connections": 1})
    tw.push([task_id])
    pid = wait_running(tw, d)
    tw.db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    settle(tw, d, task_id)
    rows = log_rows(tw, task_id)
    assert len(rows) == 1, f"the work ran {len(rows)} times: backends {rows}"
    assert rows[0][0] != pid


def test_sql_row_completed_meanwhile_runs_nothing(tw, slow_log, taskworkerd):
    """A row completed by someone else between load and run: the guard
    changes nothing, the statement does not run, the id is acknowledged
    as completed already."""
    (task_id,) = tw.insert(1)
    d = taskworkerd(handler=dict(SLOW_SQL), worker={"delay_ms": 1500})
    tw.push([task_id])
    wait_until(lambda: tw.llen(tw.processing()) == 1, 10, "the id to be taken", daemon=d)
    time.sleep(0.5)
    tw.db.execute("UPDATE task SET status = 'completed' WHERE id = %s", (task_id,))
    tw.wait_empty(tw.processing(), 10, daemon=d)
    assert log_rows(tw, task_id) == []
    assert tw.lrange(tw.dead()) == [] and tw.lrange("tasks") == []


@pytest.fixture
def slow_completion(tw, sql_teardown):
    """Every UPDATE of a row to 'completed' takes 3 s (a trigger)."""
    tw.db.execute("""
        CREATE FUNCTION tw_slow_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_sleep(3);
          RETURN NEW;
        END $$;
        CREATE TRIGGER tw_slow_update BEFORE UPDATE ON task FOR EACH ROW
          WHEN (NEW.status = 'completed') EXECUTE FUNCTION tw_slow_update();
    """)
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_slow_update()")
    sql_teardown.append("DROP TRIGGER IF EXISTS tw_slow_update ON task")


def test_forced_shutdown_waits_for_a_completion_sent(tw, sql_teardown, slow_completion,
                                                      taskworkerd):
    """Out of time at shutdown while completions are being committed: their
    ids are not given back before the answer (another worker would load
    the row as pending and run it again); they are acknowledged instead.
    Only a completion never sent goes back."""
    ids = tw.insert(3)
    d = taskworkerd(worker={"shutdown_timeout_ms": 300})
    tw.push(ids)
    wait_until(lambda: tw.db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'taskworkerd' "
        "AND wait_event = 'PgSleep'").fetchone()[0] > 0, 10,
        "the completion to be running", daemon=d)
    d.send_signal(signal.SIGTERM)
    assert d.wait(20) == 0
    still = tw.db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'taskworkerd' "
        "AND state = 'active'").fetchone()[0]
    assert still == 0, f"exited with {still} completion(s) still running"
    time.sleep(3.5)     # anything sent has committed by now
    completed = set(tw.completed(ids))
    back = set(tw.ids_in("tasks"))
    assert completed & back == set(), \
        "ids whose rows were being completed went back to the queue"
    # A completion never sent (both sessions busy) goes back, pending.
    assert completed | back == set(ids)
    assert tw.statuses(list(back)) == {i: "pending" for i in back}
    assert tw.lrange(tw.processing()) == []
