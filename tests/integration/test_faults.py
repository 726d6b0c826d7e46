"""Fault injection against real servers: kill -9 at random moments, stalled
(SIGSTOPped) Redis and PostgreSQL, a fetch reply lost with its connection,
a worker that dies for good, hostile input and a producer that pushes
before it commits.

Every test ends in check_invariants(): each pushed id is completed in its
table or sits in QUEUE:dead (only the ids expected there, each with a log
line giving the reason); no row was written 'completed' more than once;
every QUEUE:processing:* list is empty; the daemons that were not killed on
purpose still run and serve (and the fixture checks that they exit 0 on
SIGTERM at teardown).
"""

import collections
import os
import random
import signal
import time

import psycopg
import pytest

from conftest import read_members, WORKER_ID, scaled, wait_until

CMD_CLIENT_NAME = "taskworkerd:{worker}:cmd"


# ---- helpers ------------------------------------------------------------------

COUNTER_SQL = """
    ALTER TABLE {table} ADD COLUMN IF NOT EXISTS completions int NOT NULL DEFAULT 0;
    CREATE OR REPLACE FUNCTION tw_count_completions() RETURNS trigger
      LANGUAGE plpgsql AS $$
    BEGIN
      -- Every write of 'completed' counts, not only a change to it: the
      -- daemon's UPDATE skips rows that are completed already, so a second
      -- write (a 2 here) means a row was completed twice.
      IF NEW.status = 'completed' THEN
        NEW.completions := OLD.completions + 1;
      END IF;
      RETURN NEW;
    END $$;
    DROP TRIGGER IF EXISTS tw_count_completions ON {table};
    CREATE TRIGGER tw_count_completions BEFORE UPDATE ON {table}
      FOR EACH ROW EXECUTE FUNCTION tw_count_completions();
"""


def add_completion_counter(db, table="task"):
    db.execute(COUNTER_SQL.format(table=table))


@pytest.fixture
def counted(tw):
    """task.completions: how many UPDATEs wrote status = 'completed'."""
    add_completion_counter(tw.db, "task")
    yield
    tw.db.execute("""
        DROP TRIGGER IF EXISTS tw_count_completions ON task;
        ALTER TABLE task DROP COLUMN IF EXISTS completions;
        DROP FUNCTION IF EXISTS tw_count_completions() CASCADE;
    """)


def processing_keys(r):
    return sorted(r.scan_iter(match="*:processing:*", count=1000))


def last_status(d):
    st = [line for line in d.notify.lines() if line.startswith("STATUS=")]
    return st[-1] if st else None


def warning_lines(d, *words):
    """Log lines at warning level (or worse) containing every one of WORDS."""
    out = []
    for line in d.log_lines():
        if "[warning]" not in line and "[error]" not in line:
            continue
        low = line.lower()
        if all(w.lower() in low for w in words):
            out.append(line)
    return out


def lines_with(d, *words):
    return [line for line in d.log_lines()
            if all(w.lower() in line.lower() for w in words)]


def snapshot(tw, keys):
    """The contents of KEYS (lists) read atomically, as one Counter."""
    with tw.r.pipeline(transaction=True) as p:
        for k in keys:
            read_members(p, k)
        lists = p.execute()
    return collections.Counter(v for lst in lists for v in lst)


def all_accounted_for(tw, ids, queue="tasks", table="task"):
    """With no daemon running: every id is queued, being processed or done."""
    where = set(tw.lrange(queue))
    for k in processing_keys(tw.r):
        if k.startswith(queue + ":"):
            where |= set(tw.lrange(k))
    done = {str(r[0]) for r in tw.db.execute(
        f"SELECT id FROM {table} WHERE status = 'completed' AND id = ANY(%s)",
        (list(ids),))}
    return {str(i) for i in ids} - where - done


def redis_state(tw, queues):
    keys = list(queues) + [f"{q}:dead" for q in queues] + processing_keys(tw.r)
    return "redis: " + ", ".join(f"{k} ({tw.r.type(k)}) = "
                                 f"{tw.lrange(k)[:10] if tw.r.type(k) == 'list' else '-'}"
                                 for k in keys)


def completed_in(tw, table, ids):
    return [r[0] for r in tw.db.execute(
        f"SELECT id FROM {table} WHERE status = 'completed' AND id = ANY(%s)", (list(ids),))]


def check_invariants(tw, live, ids, dead=None, queues=("tasks",), table="task",
                     timeout=60):
    """The end state every test here must reach.

    LIVE: the daemons that must still run and serve. IDS: the ids pushed
    that must complete. DEAD: {queue: [(value bytes, reason), ...]}, the
    values that must end in QUEUE:dead, and nothing else may."""
    dead = {q: list(v) for q, v in (dead or {}).items()}
    ids = sorted(set(ids))
    daemon = live[0] if live else None

    def gone():
        for d in live:
            if d.exited():
                raise AssertionError(f"{d.name} exited with {d.returncode}")

    # 1. everything completes, every list drains
    def done():
        gone()
        n = tw.db.execute(f"SELECT count(*) FROM {table} WHERE status = 'completed' "
                          "AND id = ANY(%s)", (ids,)).fetchone()[0]
        return n == len(ids)
    try:
        wait_until(done, timeout, f"{len(ids)} rows of {table} to complete",
                   daemon=daemon)
    except AssertionError as e:
        raise AssertionError(f"{e}; {redis_state(tw, queues)}; not completed: "
                             f"{sorted(set(ids) - set(completed_in(tw, table, ids)))[:20]}"
                             ) from None

    def drained():
        gone()
        if any(tw.llen(k) for k in processing_keys(tw.r)):
            return False
        if any(tw.llen(q) for q in queues):
            return False
        return all(tw.llen(f"{q}:dead") >= len(dead.get(q, [])) for q in queues)
    try:
        wait_until(drained, 20, "queues and processing lists to drain", daemon=daemon)
    except AssertionError as e:
        raise AssertionError(f"{e}; {redis_state(tw, queues)}") from None
    time.sleep(0.2)  # anything still on its way to a dead list arrives

    # 2. processing lists empty (SCAN), queues empty
    left = {k: tw.lrange(k)[:20] for k in processing_keys(tw.r) if tw.llen(k)}
    assert left == {}, f"ids left in processing lists: {left}"
    for q in queues:
        assert tw.lrange(q) == [], f"{q} not empty: {tw.lrange(q)[:20]}"

    # 3. only the expected values are dead, each with a log line and reason
    logs = "\n".join(d.log() for d in live)
    for q in queues:
        got = sorted(tw.rb.lrange(f"{q}:dead", 0, -1))
        want = sorted(v for v, _ in dead.get(q, []))
        assert got == want, (f"{q}:dead holds {[x[:40] for x in got]}, "
                             f"expected {[x[:40] for x in want]}")
        by_reason = collections.Counter(reason for _, reason in dead.get(q, []))
        for reason, n in by_reason.items():
            lines = [ln for ln in logs.splitlines()
                     if "dead" in ln.lower() and reason.lower() in ln.lower()
                     and q in ln]
            assert len(lines) >= n, \
                f"{len(lines)} log line(s) with 'dead' and {reason!r}, expected {n}"
        for value, reason in dead.get(q, []):
            head = value[:16]
            if all(32 <= b < 127 and b not in b'"\\' for b in head):
                assert any(head.decode() in ln and reason.lower() in ln.lower()
                           and "dead" in ln.lower() for ln in logs.splitlines()), \
                    f"no log line with 'dead', {reason!r} and {head!r}"

    # 4. each completed row was written 'completed' once
    rows = tw.db.execute(f"SELECT id, status, completions FROM {table} "
                         "WHERE completions <> 0 OR id = ANY(%s)", (ids,)).fetchall()
    twice = {i: n for i, st, n in rows if n > 1}
    assert twice == {}, f"rows completed more than once: {dict(list(twice.items())[:20])}"
    never = [i for i, st, n in rows if i in set(ids) and n != 1]
    assert never == [], f"completed rows without exactly one completing UPDATE: {never[:20]}"
    extra = sorted(i for i, st, n in rows if n and i not in set(ids))
    assert extra == [], f"rows completed that were never pushed: {extra[:20]}"

    # 5. the daemons still run and serve
    for d in live:
        assert d.running(), f"{d.name} is not running"
        wait_until(lambda: (last_status(d) or "").startswith("STATUS=serving"), 10,
                   f"{d.name} to say serving (last: {last_status(d)})", daemon=d)


# ---- 1. kill -9 at random moments ------------------------------------------------

@pytest.mark.slow
def test_kill9_at_random_moments(tw, counted, taskworkerd):
    """12000 tasks, kill -9 ten times at random moments (seeded), restarted
    each time with the same worker.id: no id is lost at any kill, and in the
    end every row is completed exactly once."""
    rng = random.Random(0x7A5C)
    # 3000 tasks of 20 ms at concurrency 64 take about a second here, less
    # than three of the ten kill intervals: 12000 keep the daemon busy
    # through all of them.
    ids = tw.insert(12000)
    tw.push(ids)
    worker = {"delay_ms": 20, "concurrency": 64, "retry_max_ms": 1000}
    d = taskworkerd(worker=worker, wait_ready=False)
    kills = in_flight_kills = 0
    while kills < 10:
        time.sleep(rng.uniform(0.1, 0.6))
        assert d.running(), f"taskworkerd exited with {d.returncode} before kill {kills + 1}"
        d.kill()
        kills += 1
        in_flight_kills += tw.llen(tw.processing()) > 0
        lost = all_accounted_for(tw, ids)
        assert not lost, f"after kill {kills}: ids lost: {sorted(lost)[:20]}"
        mark = d.notify.mark()
        d.start(wait_ready=False)
    print(f"{in_flight_kills} of {kills} kills with ids in flight; "
          f"{tw.count('completed', ids)} completed before the last restart; "
          f"{len(lines_with(d, 'already completed'))} ran again and were found done")
    assert in_flight_kills >= 8, \
        f"only {in_flight_kills} of {kills} kills hit the daemon with ids in flight"
    d.wait_ready(since=mark)
    check_invariants(tw, [d], ids, timeout=90)


# ---- 2. stalled Redis -------------------------------------------------------------

@pytest.mark.slow
def test_redis_stalled(tw, counted, servers, taskworkerd):
    """redis-server SIGSTOPped for 3 s with tasks in flight: the daemon sees
    no answer within command_timeout_ms, drops the connection, reconnects
    after SIGCONT and completes everything."""
    ids = tw.insert(300)
    tw.push(ids)
    d = taskworkerd(redis={"command_timeout_ms": 1000, "connect_timeout_ms": 1000},
                    worker={"delay_ms": 200, "concurrency": 50, "retry_max_ms": 1000})
    wait_until(lambda: tw.count("completed", ids) >= 50 and tw.llen(tw.processing()) > 0,
               30, "50 completed with ids in flight", daemon=d)
    mark = d.notify.mark()
    pid = servers.redis.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert d.running(), "the daemon exited while Redis was stalled"
    assert lines_with(d, "redis", "no answer within 1000 ms"), \
        "no log line about the stalled Redis ('no answer within 1000 ms')"
    assert any(line.startswith("STATUS=waiting for redis") for line in d.notify.lines(mark)), \
        f"STATUS never said it waits for redis: {d.notify.lines(mark)}"
    check_invariants(tw, [d], ids)


# ---- 3. stalled PostgreSQL backends ---------------------------------------------------

@pytest.mark.slow
def test_postgres_backends_stalled(tw, counted, taskworkerd):
    """The daemon's PostgreSQL backends SIGSTOPped for 3 s (one may hold
    row locks meanwhile): it times the statements out, opens new sessions
    and completes everything once the old backends go on."""
    ids = tw.insert(300)
    tw.push(ids)
    d = taskworkerd(postgres={"command_timeout_ms": 1000, "connections": 2},
                    worker={"delay_ms": 200, "concurrency": 50, "retry_max_ms": 1000})
    wait_until(lambda: tw.count("completed", ids) >= 50, 30, "50 completed", daemon=d)

    def backends():
        return [r[0] for r in tw.db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'taskworkerd'")]
    pids = wait_until(lambda: len(backends()) == 2 and backends(), 10,
                      "the daemon's 2 backends", daemon=d)
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        time.sleep(3.0)
        assert d.running(), "the daemon exited while PostgreSQL was stalled"
        assert lines_with(d, "postgres connection", "no answer within 1000 ms"), \
            "no log line about the stalled PostgreSQL backends"
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    check_invariants(tw, [d], ids)


# ---- 4. a lost fetch reply: reconciliation after the reconnect ------------------------

def test_lost_reply_reconciled_on_reconnect(tw, counted, taskworkerd):
    """An id the server moved into the processing list but whose reply was
    lost (put there by hand): while connected the daemon leaves it alone;
    when its command connection is killed, the reconnect puts it back on
    the queue and it completes."""
    d = taskworkerd(worker={"delay_ms": 0, "retry_max_ms": 1000})
    stray, good = tw.insert(2)
    tw.hold([stray])
    tw.push([good])
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        held = tw.ids_in(tw.processing())   # read once: it moves meanwhile
        assert held == [stray] or sorted(held) == [stray, good], \
            f"processing list {held}"
        assert tw.completed([stray]) == [], "the stray id ran without a reconnect"
        time.sleep(0.1)
    tw.wait_completed([good], 10, daemon=d)
    assert tw.ids_in(tw.processing()) == [stray], \
        "the daemon touched an id it does not hold while connected"
    assert tw.lrange("tasks") == []

    name = CMD_CLIENT_NAME.format(worker=WORKER_ID)
    cmd = [c for c in tw.r.client_list() if c.get("name") == name]
    assert len(cmd) == 1, f"no single client named {name}: {tw.r.client_list()}"
    assert tw.r.client_kill_filter(_id=cmd[0]["id"]) == 1
    tw.wait_completed([stray], 15, daemon=d)
    assert lines_with(d, "went back to the head", tw.processing()), \
        "no log line about ids going back from the processing list"
    check_invariants(tw, [d], [stray, good])


# ---- 5. a worker killed for good --------------------------------------------------

def workers_set(tw, queue="tasks"):
    return tw.r.smembers(f"{queue}:workers")


@pytest.mark.slow
def test_dead_worker_reclaimed_under_load(tw, counted, taskworkerd):
    """Workers wa and wb share a queue of 1000; wa is killed mid-run and
    never comes back. Its ids stay put while its heartbeat lives, then wb
    puts them back; all complete exactly once, no id is ever listed twice
    and wa is forgotten."""
    ids = tw.insert(1000)
    tw.push(ids)
    common = {"delay_ms": 100, "concurrency": 20, "heartbeat_ttl_ms": 1500,
              "retry_max_ms": 1000}
    a = taskworkerd(name="wa", worker=dict(common, id="wa"))
    b = taskworkerd(name="wb", worker=dict(common, id="wb"))
    key_a, key_b = tw.processing(worker="wa"), tw.processing(worker="wb")
    keys = ["tasks", key_a, key_b]
    wait_until(lambda: tw.count("completed", ids) >= 200 and tw.llen(key_a) > 0
               and tw.llen(key_b) > 0, 30, "200 completed, both busy", daemon=b)
    a.kill()
    held = tw.lrange(key_a)
    assert held, "wa held nothing when killed"

    # While wa's heartbeat lives its list is left alone; no id is ever
    # listed twice across the queue and both processing lists.
    hb = "tasks:heartbeat:wa"
    t_end = time.monotonic() + scaled(30)
    seen_expired = False
    while time.monotonic() < t_end:
        with tw.r.pipeline(transaction=True) as p:
            p.exists(hb)
            for k in keys:
                read_members(p, k)
            alive, *lists = p.execute()
        if alive:
            assert lists[1] == held, "wa's ids were taken while its heartbeat lived"
        else:
            seen_expired = True
        dup = [v for v, n in collections.Counter(v for lst in lists for v in lst).items()
               if n > 1]
        assert not dup, f"ids listed twice: {dup[:20]}"
        if seen_expired and not lists[1] and tw.count("completed", ids) == len(ids):
            break
        assert b.running(), f"wb exited with {b.returncode}"
        time.sleep(0.05)
    assert seen_expired, "wa's heartbeat never expired"
    line = wait_until(lambda: lines_with(b, "worker wa has no heartbeat"), 10,
                      "wb's log line about wa", daemon=b)
    assert len(line) == 1, f"wa reclaimed more than once: {line}"
    check_invariants(tw, [b], ids)
    assert tw.llen(key_a) == 0 and tw.llen(key_b) == 0
    assert "wa" not in workers_set(tw), f"wa still registered: {workers_set(tw)}"
    assert "wb" in workers_set(tw)


@pytest.mark.slow
def test_dead_worker_reclaimed_once_by_racing_workers(tw, counted, taskworkerd):
    """wa is dead (registered, no heartbeat) with 500 ids in its list;
    wb, wc and wd start together and all find it dead: its ids go back
    exactly once (one log line, never two copies of an id anywhere) and
    each row is completed once."""
    ids = tw.insert(500)
    key_a = tw.processing(worker="wa")
    tw.hold(ids, worker="wa")
    tw.r.sadd("tasks:workers", "wa")
    names = ["wb", "wc", "wd"]
    keys = ["tasks", key_a] + [tw.processing(worker=w) for w in names]
    ds = [taskworkerd(name=w, wait_ready=False,
                      worker={"id": w, "delay_ms": 50, "concurrency": 30,
                              "heartbeat_ttl_ms": 1500, "retry_max_ms": 1000})
          for w in names]
    t_end = time.monotonic() + scaled(30)
    while time.monotonic() < t_end:
        seen = snapshot(tw, keys)
        dup = [v for v, n in seen.items() if n > 1]
        assert not dup, f"ids listed twice: {dup[:20]}"
        assert set(seen) | {str(i) for i in tw.completed(ids)} == {str(i) for i in ids}, \
            "ids lost"
        if not seen:
            break
        for d in ds:
            assert not d.exited(), f"{d.name} exited with {d.returncode}"
        time.sleep(0.02)
    for d in ds:
        d.wait_ready()
    lines = [ln for d in ds for ln in lines_with(d, "worker wa has no heartbeat")]
    assert len(lines) == 1, f"wa reclaimed {len(lines)} times: {lines}"
    assert "500 id(s)" in lines[0], lines[0]
    check_invariants(tw, ds, ids)
    assert "wa" not in workers_set(tw)


# ---- 6. hostile input ------------------------------------------------------------

def test_hostile_values_go_dead(tw, counted, taskworkerd):
    """A 1 MiB value, binary bytes and SQL text on the queue, between good
    ids pushed while the daemon runs: the bad ones are dead with a short,
    printable log line; the good ones complete; the table is untouched."""
    d = taskworkerd(worker={"delay_ms": 10, "concurrency": 20})
    ids = tw.insert(60)
    huge = b"9" * (1 << 20)
    binary = b"\x00\xff"
    sql = b"1; DROP TABLE task"
    tw.push(ids[:20])
    tw.rb.rpush("tasks", huge, *ids[20:30], binary, *ids[30:40], sql)
    tw.push(ids[40:])
    dead = {"tasks": [(huge, "out of range"), (binary, "not a decimal number"),
                      (sql, "not a decimal number")]}
    check_invariants(tw, [d], ids, dead=dead)

    raw = d.log_path.read_bytes()
    dead_lines = [ln for ln in raw.splitlines() if b"dead" in ln.lower()
                  and b"[debug]" not in ln]
    assert len(dead_lines) >= 3, dead_lines
    for ln in dead_lines:
        assert all(32 <= c < 127 or c == 9 for c in ln), f"unprintable log line {ln[:200]!r}"
    big = [ln for ln in dead_lines if b"out of range" in ln]
    assert big and all(len(ln) < 1000 for ln in big), \
        f"log line for the 1 MiB value is {max(map(len, big), default=0)} bytes"
    assert max(len(ln) for ln in raw.splitlines()) < 2100, "an unbounded log line"
    assert tw.db.execute("SELECT count(*) FROM task").fetchone()[0] == 60


def test_queue_holding_a_hash(tw, counted, taskworkerd):
    """queues = ["bad", "tasks"] with bad a hash: logged once (not every
    second), tasks served meanwhile; once bad is a list again its ids run."""
    tw.r.hset("bad", "x", "y")
    d = taskworkerd(redis={"queues": ["bad", "tasks"]},
                    worker={"delay_ms": 0, "retry_max_ms": 1000})
    first = tw.insert(10)
    tw.push(first)
    tw.wait_completed(first, 15, daemon=d)
    time.sleep(3.0)
    more = tw.insert(10)
    tw.push(more)
    tw.wait_completed(more, 15, daemon=d)
    wrong = warning_lines(d, "bad", "WRONGTYPE")
    assert 1 <= len(wrong) <= 2, f"{len(wrong)} warnings about bad in ~3 s: {wrong}"
    assert tw.r.type("bad") == "hash" and tw.r.hgetall("bad") == {"x": "y"}, \
        "the daemon changed a key it does not own"
    fixed = tw.insert(10)
    with tw.r.pipeline(transaction=True) as p:
        p.delete("bad")
        p.rpush("bad", *fixed)
        p.execute()
    check_invariants(tw, [d], first + more + fixed, queues=("bad", "tasks"))


@pytest.mark.parametrize("queues", [["bad", "tasks"], ["bad"]], ids=["2-queues", "1-queue"])
def test_queue_fixed_later_while_idle(tw, counted, taskworkerd, queues):
    """The operator deletes the bad key; ids are pushed to it only seconds
    later, while the daemon is idle: they run (within one BLMOVE round)."""
    tw.r.hset("bad", "x", "y")
    d = taskworkerd(redis={"queues": queues},
                    worker={"delay_ms": 0, "retry_max_ms": 1000})
    first = []
    if "tasks" in queues:
        first = tw.insert(5)
        tw.push(first)
        tw.wait_completed(first, 15, daemon=d)
    wait_until(lambda: warning_lines(d, "bad", "WRONGTYPE"), 5, "the warning about bad",
               daemon=d)
    tw.r.delete("bad")
    time.sleep(2.5)  # longer than the 1 s recheck of a bad queue
    fixed = tw.insert(5)
    tw.push(fixed, queue="bad")
    check_invariants(tw, [d], first + fixed, queues=queues, timeout=8)


@pytest.fixture
def nope_table(tw):
    tw.db.execute("DROP TABLE IF EXISTS nope")
    yield "nope"
    tw.db.execute("DROP TABLE IF EXISTS nope")


def test_missing_table(tw, counted, nope_table, taskworkerd):
    """postgres.table names a table that does not exist: the daemon stays up
    saying why, takes nothing; once the table is created it goes on by
    itself and completes the ids."""
    n = 20
    tw.push(range(1, n + 1))
    d = taskworkerd(postgres={"table": nope_table},
                    worker={"delay_ms": 0, "retry_max_ms": 1000}, wait_ready=False)
    d.notify.wait_for(lambda ln: ln.startswith("STATUS=waiting for postgres")
                      and "nope" in ln, 10, "STATUS=waiting for postgres ... nope", daemon=d)
    time.sleep(2.0)
    assert d.running()
    status = last_status(d)
    assert status.startswith("STATUS=waiting for postgres") and "nope" in status, status
    assert d.notify.find(lambda ln: ln.startswith("STATUS=serving")) is None
    assert tw.ids_in("tasks") == list(range(1, n + 1)), "ids were taken without a table"
    assert tw.lrange(tw.processing()) == [] and tw.lrange(tw.dead()) == []
    noisy = warning_lines(d, "nope")
    assert len(noisy) <= 4, f"{len(noisy)} warnings about the missing table in 2 s"

    mark = d.notify.mark()
    tw.db.execute("CREATE TABLE nope (LIKE task INCLUDING DEFAULTS)")
    add_completion_counter(tw.db, "nope")
    tw.db.execute("INSERT INTO nope (id, name) SELECT g, 'n' || g "
                  "FROM generate_series(1, %s) g", (n,))
    d.wait_ready(since=mark, timeout=5)  # retry_max_ms = 1000
    check_invariants(tw, [d], list(range(1, n + 1)), table="nope", timeout=20)
    assert tw.count("completed") == 0, "rows of task were touched"


@pytest.fixture
def limited_role(tw, servers):
    def drop():
        if tw.db.execute("SELECT 1 FROM pg_roles WHERE rolname = 'limited'").fetchone():
            tw.db.execute("REVOKE ALL ON task FROM limited")
            tw.db.execute("DROP ROLE limited")
    drop()
    tw.db.execute("CREATE ROLE limited LOGIN")
    tw.db.execute("GRANT SELECT ON task TO limited")
    yield f"host=127.0.0.1 port={servers.pg.port} dbname=tasks user=limited"
    drop()


def test_update_permission_denied(tw, counted, limited_role, taskworkerd):
    """A role that may read but not update the table: rows load, the UPDATE
    is refused; that is logged once, not per retry; the ids wait in the
    processing list (not dead, not lost); after GRANT UPDATE they complete."""
    ids = tw.insert(30)
    d = taskworkerd(postgres={"conninfo": limited_role},
                    worker={"delay_ms": 0, "retry_max_ms": 1000})
    tw.push(ids)
    wait_until(lambda: lines_with(d, "permission denied"), 10,
               "a log line saying permission denied", daemon=d)
    wait_until(lambda: sorted(tw.ids_in(tw.processing())) == ids, 10,
               "every id in the processing list", daemon=d)
    time.sleep(3.0)
    denied = warning_lines(d, "permission denied")
    assert 1 <= len(denied) <= 2, f"{len(denied)} warnings in ~3 s: {denied}"
    assert sorted(tw.ids_in(tw.processing())) == ids
    assert tw.lrange(tw.dead()) == [] and tw.lrange("tasks") == []
    assert tw.completed(ids) == []
    assert d.running()
    assert (last_status(d) or "").startswith("STATUS=serving"), last_status(d)
    tw.db.execute("GRANT UPDATE ON task TO limited")
    check_invariants(tw, [d], ids, timeout=20)


# ---- 7. the producer pushes before it commits, under load --------------------------

def test_ids_pushed_before_rows_under_load(tw, counted, servers, taskworkerd):
    """200 ids pushed 500 ms before their rows are committed (in one
    transaction), among 1000 ordinary tasks: within missing_row_grace_ms
    they all complete and none is dead."""
    d = taskworkerd(worker={"delay_ms": 20, "concurrency": 64,
                            "missing_row_grace_ms": 3000, "retry_max_ms": 1000})
    ready = tw.insert(1000)
    base = ready[-1] + 1
    early = list(range(base, base + 200))
    mixed = []
    for i in range(200):
        mixed += ready[i * 5:(i + 1) * 5] + [early[i]]
    tw.push(mixed)
    time.sleep(0.5)
    assert tw.lrange(tw.dead()) == []
    with psycopg.connect(servers.pg.conninfo) as db:  # one transaction
        db.execute("INSERT INTO task (id, name) SELECT g, 'late-' || g "
                   "FROM generate_series(%s::bigint, %s::bigint) g", (base, base + 199))
    check_invariants(tw, [d], ready + early)

