"""Servers that move: a Redis master that fails over under Sentinel (by
SENTINEL FAILOVER and by kill -9) and a PostgreSQL primary replaced by its
promoted standby, each during a run. Every id pushed and acknowledged by
Redis (WAIT 1) ends completed; the time from the new master or primary to
the first completion it serves is printed."""

import threading
import time

import pytest
import redis

from conftest import wait_until
from ha import SentinelCluster

N_SENTINEL = 20000
BATCH = 100


class Producer(threading.Thread):
    """Pushes IDS in batches to whatever master the sentinels name, each
    batch followed by WAIT 1 1000: a batch not confirmed on a replica is
    pushed again (a copy pushed twice completes once). Notes when each
    batch was confirmed, and on which master."""

    def __init__(self, cluster, ids, pace=0.02):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.batches = [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]
        self.pace = pace
        self.confirmed = []     # (monotonic, master port, batch)
        self.repushed = 0
        self.error = None

    def master(self):
        host, port = self.cluster.master_addr()
        return port, redis.Redis(host=host, port=port, socket_timeout=2,
                                 decode_responses=True)

    def run(self):
        try:
            port, r = self.master()
            for batch in self.batches:
                while True:
                    try:
                        r.rpush("tasks", *batch)
                        if r.execute_command("WAIT", 1, 1000) >= 1:
                            self.confirmed.append((time.monotonic(), port, batch))
                            break
                    except (redis.ConnectionError, redis.TimeoutError,
                            redis.ResponseError):
                        pass
                    self.repushed += 1
                    time.sleep(0.1)
                    try:
                        port, r = self.master()
                    except Exception:   # the sentinels are electing
                        pass
                time.sleep(self.pace)
        except Exception as e:  # reported by the test
            self.error = e


def completed_ids(tw, ids):
    rows = tw.db.execute("SELECT id FROM task WHERE status = 'completed' AND id = ANY(%s)",
                         (list(ids),)).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def cluster2():
    """A master with two replicas, so that WAIT 1 still has one to wait
    for after the master is killed."""
    cluster = SentinelCluster(replicas=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.mark.parametrize("how", ["failover", "kill9"])
def test_redis_sentinel_failover_loses_no_id(tw, taskworkerd, cluster2, how):
    cluster = cluster2
    redis_cfg = dict(cluster.config(), host=None, port=None)
    worker = {"concurrency": 200}
    daemons = [taskworkerd(redis=redis_cfg, worker=dict(worker, id=f"fo{i}"))
               for i in range(3)]
    ids = tw.insert(N_SENTINEL)
    markers = tw.insert(10)
    prod = Producer(cluster, ids)
    prod.start()
    wait_until(lambda: len(prod.confirmed) * BATCH >= N_SENTINEL // 3, 60,
               "a third of the ids pushed", daemon=daemons[0])
    old = cluster.master_addr()
    if how == "failover":
        new = cluster.failover()
    else:
        new = cluster.kill_master()
    elected = time.monotonic()
    assert new != old
    # Pushed straight to the head of the queue on the new master: how
    # soon the daemons serve it.
    redis.Redis(host=new[0], port=new[1]).lpush("tasks", *markers)
    wait_until(lambda: completed_ids(tw, markers), 30,
               "a task pushed to the new master completed", daemon=daemons[0])
    took = time.monotonic() - elected
    prod.join(timeout=180)
    assert not prod.is_alive() and prod.error is None, prod.error
    assert any(port == new[1] for t, port, b in prod.confirmed), \
        "no batch was pushed to the new master"
    print(f"\n{how}: a task pushed to the new master completed {took:.2f}s "
          f"after the sentinels agreed on it (pushes repeated: {prod.repushed})")
    assert took < 5, took
    everything = ids + markers
    wait_until(lambda: tw.count("completed", everything) == len(everything), 120,
               f"all {len(everything)} ids completed", daemon=daemons[0])
    for d in daemons:
        assert d.running()
    m = cluster.master_client()
    wait_until(lambda: m.llen("tasks") == 0, 30, "the queue empty", daemon=daemons[0])
    for i in range(3):
        wait_until(lambda: m.zcard(f"tasks:processing:fo{i}") == 0, 30,
                   f"fo{i}'s processing set empty", daemon=daemons[0])
    assert m.llen("tasks:dead") == 0


def test_pg_failover_to_promoted_standby(tw, taskworkerd, pg_standby):
    """The primary stops (-m immediate) during a run and its standby is
    promoted: with both hosts in the conninfo (target_session_attrs
    read-write) the daemon follows, and every task completes."""
    pair = pg_standby
    db = pair.connect(pair.primary)
    db.autocommit = True
    # A commit returns once the standby has it: what the daemon wrote is
    # there after the promotion (asynchronous replication may drop it).
    db.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
    db.execute("SELECT pg_reload_conf()")
    n = 3000
    ids = [r[0] for r in db.execute(
        "INSERT INTO task (name) SELECT 'fo-' || g FROM generate_series(1, %s) g "
        "RETURNING id", (n,)).fetchall()]
    d = taskworkerd(postgres={"conninfo": pair.conninfo_multi(), "connections": 2,
                              "connect_timeout_ms": 2000},
                    worker={"delay_ms": 20, "concurrency": 100})
    half = ids[:n // 2]
    tw.push(half)

    def done(conn):
        return conn.execute("SELECT count(*) FROM task WHERE status = 'completed'"
                            ).fetchone()[0]
    wait_until(lambda: done(db) >= n // 4, 60, "a quarter completed", daemon=d)
    pair.wait_replayed()
    pair.stop_primary_immediate()
    db.close()
    pair.promote(wait=True)
    promoted = time.monotonic()
    db = pair.connect(pair.standby)
    db.autocommit = True
    base = done(db)
    tw.push(ids[n // 2:])
    wait_until(lambda: done(db) > base, 30, "a completion on the promoted standby",
               daemon=d)
    print(f"\npostgres failover: first completion {time.monotonic() - promoted:.2f}s "
          "after the promotion")
    wait_until(lambda: done(db) == n, 120, f"all {n} rows completed", daemon=d)
    wait_until(lambda: tw.r.zcard(tw.processing()) == 0, 30, "nothing held", daemon=d)
    assert tw.r.llen("tasks:dead") == 0
    db.close()


def test_pg_host_list_with_the_standby_first(tw, taskworkerd, pg_standby):
    """A conninfo that names the standby before the primary, and says
    nothing of target_session_attrs: libpq is to pass the standby over
    within one connect, since a session on it is of no use."""
    pair = pg_standby
    info = (f"host={pair.standby.host},{pair.primary.host} "
            f"port={pair.standby.port},{pair.primary.port} "
            f"dbname={pair.dbname} user=postgres")
    db = pair.connect(pair.primary)
    ids = [r[0] for r in db.execute(
        "INSERT INTO task (name) SELECT 'sf-' || g FROM generate_series(1, 20) g "
        "RETURNING id").fetchall()]
    d = taskworkerd(postgres={"conninfo": info, "connections": 2})
    tw.push(ids)
    wait_until(lambda: db.execute("SELECT count(*) FROM task WHERE status = 'completed' "
                                  "AND id = ANY(%s)", (ids,)).fetchone()[0] == len(ids),
               30, "every task completed on the primary", daemon=d)
    db.close()


def test_pg_host_list_past_a_host_that_never_answers(tw, servers, taskworkerd):
    """The first host of the list takes the connection and never answers
    (a machine gone, its packets swallowed): the connect timeout ends that
    try, and the next try begins the list at the other host."""
    import re
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)       # never accepted: connects hang in the backlog
    try:
        info = servers.pg.conninfo
        port = re.search(r"port=(\d+)", info).group(1)
        info = re.sub(r"host=\S+", "host=127.0.0.1,127.0.0.1", info)
        info = re.sub(r"port=\d+", f"port={silent.getsockname()[1]},{port}", info)
        d = taskworkerd(postgres={"conninfo": info, "connect_timeout_ms": 1000},
                        wait_ready=False)
        ids = tw.insert(5)
        tw.push(ids)
        tw.wait_completed(ids, 30, daemon=d)
    finally:
        silent.close()
