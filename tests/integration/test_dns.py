"""Names the daemon resolves itself (c-ares on the loop), against a DNS
server of the test's own (ha.py's fake_dns, the daemon in a mount namespace
where it is the only name server):

  - a name server that goes silent while a reconnect waits on it: /metrics
    keeps answering at once, the tasks under way complete, and once the
    name answers again the acks land (Redis, then PostgreSQL);
  - a name that does not exist: a log line naming it, a backoff rather than
    a spin, and service once the name appears;
  - a name whose address changes: the next connection goes to the new one;
  - TLS to PostgreSQL with the name checked against the certificate
    (sslmode=verify-full), and refused under a name it does not carry.

Beyond the /metrics bound (100 ms) and the most lookups a backoff allows
in a window, nothing is timed: every wait has a deadline."""

import http.client
import re
import time

import psycopg
import pytest

import twservers
from conftest import log_has_line, scaled, wait_until
from test_metrics import Exposition, metrics_cfg
from test_names import by_name

METRICS_BOUND = scaled(0.100)   # s: what one GET /metrics may take at most
SCRAPES = 10
RETRY = {"retry_min_ms": 100, "retry_max_ms": 500}


# ---- helpers ----------------------------------------------------------------------
# The servers a test makes come before `taskworkerd` in its arguments: set
# up first, torn down last, after the daemon has stopped.

def daemon_clients(r):
    """The daemon's connections to the Redis server of client R."""
    return [c for c in r.client_list() if c.get("name", "").startswith("taskworkerd:")]


def kill_daemon_clients(r):
    """CLIENT KILL every connection of the daemon; how many there were."""
    clients = daemon_clients(r)
    for c in clients:
        r.client_kill_filter(_id=c["id"])
    return len(clients)


def daemon_backends(db):
    """The PIDs of the daemon's PostgreSQL sessions (its application_name)."""
    return [row[0] for row in db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'taskworkerd'")]


def terminate_daemon_backends(db):
    pids = daemon_backends(db)
    for pid in pids:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


def sleep_past_ttl(dns, name, ttl):
    """Until the answer the daemon last got for NAME has run out: TTL
    seconds after the last query for it, and a little more."""
    asked = dns.queries(name)
    assert asked, f"the daemon never asked for {name}"
    left = asked[-1][0] + ttl + 0.3 - time.monotonic()
    if left > 0:
        time.sleep(left)


def unanswered_line(d, name):
    """The log line of a lookup of NAME that got no answer in time: the
    link's bound ("no address for NAME within N ms") or the resolver's
    ("cannot resolve NAME: timed out after N ms"), whichever came first."""
    return log_has_line(d.log(), f"no address for {name} within") or \
        log_has_line(d.log(), f"cannot resolve {name}: timed out after")


def timed_scrape(port):
    """(seconds, Exposition) of one GET /metrics on a new connection."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    took = time.monotonic() - t0
    assert resp.status == 200, f"GET /metrics: {resp.status} {body[:200]!r}"
    return took, Exposition(body.decode())


def assert_metrics_answer(port, backend, d, gap=0.05):
    """SCRAPES GETs of /metrics, GAP apart, while BACKEND is down: each page
    says so, and every one came within METRICS_BOUND. Returns the times."""
    times = []
    for _ in range(SCRAPES):
        took, page = timed_scrape(port)
        times.append(took)
        up = page.get("taskworkerd_backend_up", backend=backend)
        assert up == 0, f"{backend} is up again in the middle of the scrapes"
        assert d.running()
        time.sleep(gap)
    slowest = max(times)
    assert slowest < METRICS_BOUND, \
        f"GET /metrics took {slowest * 1000:.0f} ms while {backend} waited on DNS " \
        f"(all: {[round(t * 1000) for t in times]} ms)"
    return times


def start_dns_daemon(taskworkerd, fake_dns, **groups):
    """A daemon in FAKE_DNS's namespace serving /metrics; .port is its port."""
    port = twservers.free_port()
    d = taskworkerd(wrapper=fake_dns.wrapper(), metrics=metrics_cfg(port), **groups)
    d.port = port
    return d


def take_then_cut(tw, fake_dns, d, name, cut, least):
    """With the name server silent and the daemon's answer for NAME run
    out: 5 tasks pushed and taken, then CUT() closes at least LEAST of the
    daemon's connections from the server's side. Returns the ids once the
    daemon has asked for NAME again (and heard nothing)."""
    fake_dns.silent = True
    sleep_past_ttl(fake_dns, name, 1)
    ids = tw.insert(5)
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing()) == 5, 5, "the 5 ids taken", daemon=d)
    asked = len(fake_dns.queries(name))
    assert cut() >= least
    wait_until(lambda: len(fake_dns.queries(name)) > asked, 5,
               f"the daemon to ask for {name} again", daemon=d)
    return ids


def print_times(what, times):
    print(f"\nGET /metrics while {what} waited on DNS: "
          f"{', '.join(f'{t * 1000:.1f}' for t in times)} ms")


# ---- 1. a name server that goes silent while a reconnect waits on it -------------------

def test_redis_reconnect_waits_on_silent_dns(fake_dns, tw, taskworkerd):
    """Redis by name (TTL 1 s): the name server goes silent, the answer runs
    out, the daemon's Redis connections are killed. While it waits on DNS
    /metrics answers at once and the tasks under way complete in
    PostgreSQL, their acks held back; once the name answers the acks land
    and later tasks are served."""
    fake_dns.set("redis.test", "127.0.0.1", ttl=1)
    d = start_dns_daemon(taskworkerd, fake_dns, redis={"host": "redis.test"},
                         worker={"delay_ms": 2000, **RETRY})
    first = take_then_cut(tw, fake_dns, d, "redis.test",
                          lambda: kill_daemon_clients(tw.r), 2)
    times = assert_metrics_answer(d.port, "redis", d)
    # The delay runs out meanwhile: rows completed, the acks wait for Redis.
    tw.wait_completed(first, 10, daemon=d)
    assert not daemon_clients(tw.r), "connected to Redis while the name server is silent"
    assert sorted(tw.ids_in(tw.processing())) == first
    wait_until(lambda: unanswered_line(d, "redis.test"), 10,
               "a log line about the lookup that got no answer", daemon=d)

    later = tw.insert(3)
    tw.push(later)
    fake_dns.silent = False
    tw.wait_empty(tw.processing(), 20, daemon=d)
    tw.wait_completed(later, 20, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)
    assert tw.llen("tasks") == 0 and tw.llen(tw.dead()) == 0
    print_times("Redis", times)


def test_postgres_reconnect_waits_on_silent_dns(fake_dns, tw, servers, taskworkerd):
    """PostgreSQL by name (TTL 1 s): the name server goes silent, the answer
    runs out, the daemon's sessions are terminated while its tasks wait out
    their delay. /metrics answers at once meanwhile and nothing completes;
    once the name answers every task completes and is acked."""
    fake_dns.set("pg.name.test", "127.0.0.1", ttl=1)
    d = start_dns_daemon(taskworkerd, fake_dns,
                         postgres={"conninfo": by_name(servers.pg.conninfo, "pg.name.test"),
                                   "connect_timeout_ms": 2000},
                         worker={"delay_ms": 2000, **RETRY})
    ids = take_then_cut(tw, fake_dns, d, "pg.name.test",
                        lambda: terminate_daemon_backends(tw.db), 1)
    times = assert_metrics_answer(d.port, "postgres", d)
    wait_until(lambda: not daemon_backends(tw.db), 5,
               "the terminated sessions gone, and none new", daemon=d)
    wait_until(lambda: unanswered_line(d, "pg.name.test"), 10,
               "a log line about the lookup that got no answer", daemon=d)
    assert tw.count("completed", ids) == 0
    assert sorted(tw.ids_in(tw.processing())) == ids

    fake_dns.silent = False
    tw.wait_completed(ids, 20, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)
    assert tw.llen(tw.dead()) == 0
    print_times("PostgreSQL", times)


def test_reconnect_asks_again_once_the_name_server_is_back(fake_dns, tw, taskworkerd):
    """A lookup made while the name server was silent may go on for the
    resolver's whole bound, the longest connect timeout (here PostgreSQL's,
    60 s; c-ares asks again only after a third of it). A Redis connection
    that gave up on it (its own bound is 1 s) asks anew at its next try, so
    it is back soon after the name server is, not when that lookup ends."""
    fake_dns.set("redis.test", "127.0.0.1", ttl=1)
    d = taskworkerd(wrapper=fake_dns.wrapper(),
                    redis={"host": "redis.test", "connect_timeout_ms": 1000},
                    postgres={"connect_timeout_ms": 60000}, worker=RETRY)
    fake_dns.silent = True
    sleep_past_ttl(fake_dns, "redis.test", 1)
    assert kill_daemon_clients(tw.r) >= 2
    wait_until(lambda: log_has_line(d.log(), "no address for redis.test within 1000 ms"), 10,
               "a connection to give up on its lookup", daemon=d)
    fake_dns.silent = False
    wait_until(lambda: len(daemon_clients(tw.r)) >= 2, 10,
               "the daemon's connections back, well before the first lookup's "
               "next try (20 s)", daemon=d)
    ids = tw.insert(3)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)


# ---- 2. a name that does not exist ---------------------------------------------------

def test_name_that_does_not_exist(fake_dns, tw, taskworkerd):
    """NXDOMAIN for the Redis host: a log line naming it, lookups spaced by
    the backoff (retry_max_ms 1000: each link asks at most once per 500 ms
    once the backoff has grown, the least its jitter gives), no crash; once
    the name exists the daemon connects and serves."""
    retry_max_ms = 1000
    d = taskworkerd(wrapper=fake_dns.wrapper(), redis={"host": "missing.test"},
                    worker={"retry_min_ms": 100, "retry_max_ms": retry_max_ms},
                    wait_ready=False)
    line = wait_until(lambda: log_has_line(d.log(), "cannot resolve missing.test: no such name"),
                      10, "a log line naming the name", daemon=d)
    assert "redis" in line, line

    # The backoff grows to its cap (100, 200, 400, 800 ms: within 2 s),
    # then the queries are counted over a window.
    time.sleep(2)
    window = 3.0
    before = len(fake_dns.queries("missing.test", "A"))
    time.sleep(window)
    asked = len(fake_dns.queries("missing.test", "A")) - before
    links = 2   # the command connection and one fetch connection
    bound = links * (window / (retry_max_ms / 2000) + 1)
    assert 1 <= asked <= bound, \
        f"{asked} A queries for missing.test in {window:g}s (at most {bound:g} expected)"
    assert d.running()
    warnings = [ln for ln in d.log_lines()
                if "cannot resolve missing.test" in ln and "reconnecting" in ln]
    assert 1 <= len(warnings) <= links, f"one warning per link, not per try: {warnings}"

    fake_dns.set("missing.test", "127.0.0.1")
    d.wait_ready(timeout=10)
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)
    print(f"\nNXDOMAIN: {asked} A queries in {window:g}s (bound {bound:g})")


# ---- 3. a name whose address changes -------------------------------------------------------

@pytest.fixture
def redis_b(servers):
    """A second redis-server on the session server's port, at 127.0.0.2."""
    rs = twservers.RedisServer(port=servers.redis.port, extra_args=["--bind", "127.0.0.2"])
    rs.host = "127.0.0.2"
    rs.start()
    client = rs.client(decode_responses=True)
    yield rs, client
    client.close()
    rs.cleanup()


def test_redis_name_moves_to_another_address(fake_dns, redis_b, tw, taskworkerd):
    """redis.test is 127.0.0.1 (server A), then 127.0.0.2 (server B, same
    port); after the answer runs out and the connections are killed the
    daemon is on B: its clients there, none on A, ids pushed to B served,
    ids pushed to A left alone."""
    _, rb = redis_b
    fake_dns.set("redis.test", "127.0.0.1", ttl=1)
    d = taskworkerd(wrapper=fake_dns.wrapper(), redis={"host": "redis.test"},
                    worker=RETRY)
    on_a = tw.insert(5)
    tw.push(on_a)
    tw.wait_completed(on_a, 10, daemon=d)
    tw.wait_empty(tw.processing(), 10, daemon=d)
    assert daemon_clients(tw.r) and not daemon_clients(rb)

    fake_dns.set("redis.test", "127.0.0.2", ttl=1)
    sleep_past_ttl(fake_dns, "redis.test", 1)
    assert kill_daemon_clients(tw.r) >= 2
    wait_until(lambda: len(daemon_clients(rb)) >= 2, 10,
               "the daemon's connections on 127.0.0.2", daemon=d)

    stray = tw.insert(2)
    tw.push(stray)
    on_b = tw.insert(5)
    rb.rpush("tasks", *on_b)
    tw.wait_completed(on_b, 10, daemon=d)
    wait_until(lambda: rb.zcard(tw.processing()) == 0, 10, "B's processing set empty",
               daemon=d)
    assert not daemon_clients(tw.r), "still connected to 127.0.0.1"
    assert tw.ids_in("tasks") == stray and tw.count("completed", stray) == 0


# ---- 4. TLS to PostgreSQL by name ---------------------------------------------------------

def tls_rows(pg_tls, n):
    """A session on PG_TLS (by address) and N new task rows there."""
    db = psycopg.connect(pg_tls.conninfo_verify_full(hostaddr="127.0.0.1"), autocommit=True)
    ids = [r[0] for r in db.execute(
        "INSERT INTO task (name, status) SELECT 'tls-' || g, 'pending' "
        "FROM generate_series(1, %s) g RETURNING id", (n,))]
    return db, sorted(ids)


def tls_count(db, ids, status="completed"):
    return db.execute("SELECT count(*) FROM task WHERE id = ANY(%s) AND status = %s",
                      (ids, status)).fetchone()[0]


def test_pg_tls_verify_full_by_name(fake_dns, pg_tls, tw, taskworkerd):
    """host=pg.test from fake_dns, sslmode=verify-full against the test CA:
    the daemon's sessions use TLS and its tasks complete (rows in the TLS
    server)."""
    fake_dns.set("pg.test", "127.0.0.1", ttl=30)
    db, ids = tls_rows(pg_tls, 5)
    try:
        d = taskworkerd(wrapper=fake_dns.wrapper(),
                        postgres={"conninfo": pg_tls.conninfo_verify_full()})
        tw.push(ids)
        wait_until(lambda: tls_count(db, ids) == len(ids), 10,
                   "the tasks completed in the TLS server", daemon=d)
        tw.wait_empty(tw.processing(), 10, daemon=d)
        sessions = db.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = 'taskworkerd'").fetchall()
        assert sessions and all(row[0] for row in sessions), sessions
        assert fake_dns.queries("pg.test")
    finally:
        db.close()


def test_pg_tls_name_not_in_certificate(fake_dns, pg_tls, tw, taskworkerd):
    """host=other.test (from a hosts file, 127.0.0.1 too), which the
    certificate does not carry: the daemon refuses the server, says why,
    keeps trying and completes nothing."""
    db, ids = tls_rows(pg_tls, 3)
    try:
        d = taskworkerd(wrapper=fake_dns.wrapper(hosts={"other.test": "127.0.0.1"}),
                        postgres={"conninfo": pg_tls.conninfo_verify_full(host="other.test")},
                        worker=RETRY, wait_ready=False)
        tw.push(ids)
        line = wait_until(lambda: log_has_line(d.log(), 'does not match host name "other.test"'),
                          10, "a log line about the certificate's name", daemon=d)
        assert "postgres" in line, line
        # Tried again (not given up), refused again.
        wait_until(lambda: len(re.findall(r'does not match host name "other\.test".*retrying',
                                          d.log())) >= 2,
                   10, "another refused attempt", daemon=d)
        assert d.running()
        assert tls_count(db, ids, "pending") == len(ids)
        assert not daemon_backends(db)
        assert not fake_dns.queries("other.test")   # the hosts file answered
    finally:
        db.close()
