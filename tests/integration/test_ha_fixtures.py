"""The failover and name-resolution fixtures (ha.py) do what they say: these
check the servers they build, not the daemon. Timings are printed (run
with -s to see them), never asserted."""

import os
import subprocess
import sys
import time

import psycopg
import pytest
import redis

from ha import NXDOMAIN, SERVFAIL, TestCA

PY = "/usr/bin/python3"

# Resolves argv[1] with getaddrinfo (IPv4), prints the addresses, then one
# more time per line read from stdin.
RESOLVE_LOOP = r"""
import socket, sys
def once():
    try:
        print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)}), flush=True)
    except socket.gaierror as e:
        print("error", e.errno, flush=True)
once()
for _ in sys.stdin:
    once()
"""

# Connects with the conninfo in argv[1] and prints whether TLS is in use.
PG_CONNECT = r"""
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=5) as c:
    print(c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0])
"""


# ---- Redis Sentinel ------------------------------------------------------------------

def test_sentinel_cluster_config(sentinel_cluster):
    c = sentinel_cluster
    cfg = c.config()
    assert cfg["sentinel_master"] == c.name
    assert cfg["sentinels"] == [f"127.0.0.1:{s.port}" for s in c.sentinels]
    assert len(set(cfg["sentinels"])) == 3
    assert c.master_addr() == ("127.0.0.1", c.nodes[0].port)
    for i in range(3):
        assert c.master_addr(i) == c.master_addr()
    assert [n.port for n in c.replica_nodes()] == [c.nodes[1].port]
    c.master_client().set("k", "v")
    c.wait_replicated()
    assert c.replica_client().get("k") == "v"
    with pytest.raises(redis.exceptions.ReadOnlyError):
        c.replica_client().set("k", "w")


def test_sentinel_failover_graceful(sentinel_cluster):
    c = sentinel_cluster
    old = c.master_addr()
    c.master_client().set("before", "1")
    c.wait_replicated()

    t0 = time.monotonic()
    new = c.failover()
    took_failover = time.monotonic() - t0
    assert new != old
    assert c.master_client().set("after", "2")
    assert c.master_client().get("before") == "1"

    old_node = c.node(old[1])
    t0 = time.monotonic()
    c.wait_role(old_node, "slave", master_port=new[1], timeout=30)
    took_demoted = time.monotonic() - t0
    c.wait_replicated()
    assert c.client(old_node).get("after") == "2"

    # Restarted, it stays a replica of the new master (Sentinel rewrote its
    # redis.conf).
    old_node.stop()
    t0 = time.monotonic()
    c.restart(old_node)
    c.wait_role(old_node, "slave", master_port=new[1], timeout=30)
    took_rejoin = time.monotonic() - t0
    print(f"\nSENTINEL FAILOVER: new master {new[0]}:{new[1]} named and ROLE master after "
          f"{took_failover:.2f}s; old master a connected replica {took_demoted:.2f}s later; "
          f"after its restart a replica again in {took_rejoin:.2f}s")


def test_sentinel_failover_kill_master(sentinel_cluster):
    c = sentinel_cluster
    old = c.master_addr()
    c.master_client().set("before", "1")
    c.wait_replicated()

    t0 = time.monotonic()
    new = c.kill_master()
    took_failover = time.monotonic() - t0
    assert new != old
    assert not c.node(old[1]).running()
    assert c.master_client().set("after", "2")
    assert c.master_client().get("before") == "1"

    # The old master comes back empty, as a master; the sentinels make it
    # a replica of the new one (and, should they fail over once more while
    # it rejoins, it is the master again, with what the new one had). It
    # comes back once the failover is over on every sentinel and none is in
    # TILT (a loaded machine can put one there): a sentinel still holding
    # the old view would make the new master a replica of the empty one.
    old_node = c.node(old[1])
    c.wait_settled(timeout=60)
    t0 = time.monotonic()
    c.restart(old_node)
    now = c.wait_converged(timeout=30)
    took_rejoin = time.monotonic() - t0
    c.wait_replicated()
    for n in c.nodes:
        assert c.client(n).get("after") == "2", f"{n.addr()} lost a write"
    again = " (the sentinels failed over to it again)" if now != new else ""
    print(f"\nkill -9 of the master: new master {new[0]}:{new[1]} named and ROLE master "
          f"after {took_failover:.2f}s; the old one restarted and a replica in "
          f"{took_rejoin:.2f}s{again}")


# ---- PostgreSQL standby -----------------------------------------------------------------

def test_pg_standby_promote(pg_standby):
    p = pg_standby
    with p.connect(p.primary) as db:
        db.execute("CREATE TABLE ha_check (v int)")
        db.execute("INSERT INTO ha_check VALUES (1)")
    p.wait_replayed()
    with p.connect(p.standby) as db:
        assert db.execute("SELECT array_agg(v) FROM ha_check").fetchone()[0] == [1]
        assert db.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.execute("INSERT INTO ha_check VALUES (2)")
    with psycopg.connect(p.conninfo_multi(), autocommit=True, connect_timeout=5) as db:
        assert db.execute("SELECT inet_server_port()").fetchone()[0] == p.primary.port

    t0 = time.monotonic()
    p.stop_primary_immediate()
    assert not p.primary.running()
    p.promote()
    p.wait_promoted()
    took = time.monotonic() - t0
    with p.connect(p.standby) as db:
        db.execute("INSERT INTO ha_check VALUES (2)")
    t1 = time.monotonic()
    with psycopg.connect(p.conninfo_multi(), autocommit=True, connect_timeout=5) as db:
        assert db.execute("SELECT inet_server_port()").fetchone()[0] == p.standby.port
        db.execute("INSERT INTO ha_check VALUES (3)")
        assert db.execute("SELECT array_agg(v ORDER BY v) FROM ha_check").fetchone()[0] \
            == [1, 2, 3]
    print(f"\nPostgreSQL: primary stopped -m immediate, standby promoted and taking writes "
          f"in {took:.2f}s; the multi-host read-write connect took {time.monotonic() - t1:.2f}s")


# ---- DNS --------------------------------------------------------------------------------

def test_fake_dns_answers(fake_dns):
    fake_dns.set("name.test", "10.1.2.3", ttl=42)
    fake_dns.set("two.test", ["10.0.0.1", "10.0.0.2", "::1"], ttl=7)
    assert fake_dns.query("name.test") == (0, [("10.1.2.3", 42)])
    assert fake_dns.query("NAME.test.") == (0, [("10.1.2.3", 42)])
    assert fake_dns.query("two.test") == (0, [("10.0.0.1", 7), ("10.0.0.2", 7)])
    assert fake_dns.query("two.test", "AAAA") == (0, [("::1", 7)])
    assert fake_dns.query("name.test", "AAAA") == (0, [])
    assert fake_dns.query("nope.test") == (NXDOMAIN, [])
    fake_dns.set("bad.test", rcode=SERVFAIL)
    assert fake_dns.query("bad.test") == (SERVFAIL, [])
    fake_dns.set("name.test", "10.9.9.9", ttl=1)
    assert fake_dns.query("name.test") == (0, [("10.9.9.9", 1)])
    fake_dns.set("quiet.test", "10.0.0.3", silent=True)
    assert fake_dns.query("quiet.test", timeout=0.5) is None
    fake_dns.silent = True
    assert fake_dns.query("name.test", timeout=0.5) is None
    fake_dns.silent = False
    fake_dns.remove("name.test")
    assert fake_dns.query("name.test") == (NXDOMAIN, [])
    assert [q[2] for q in fake_dns.queries("two.test")] == ["A", "AAAA"]


def test_fake_dns_in_a_namespace(fake_dns):
    with open("/etc/resolv.conf") as f:
        ours = f.read()
    fake_dns.set("name.test", "127.0.0.5", ttl=5)
    r = fake_dns.run(["getent", "ahostsv4", "name.test"])
    assert r.returncode == 0, r
    assert r.stdout.split()[0] == "127.0.0.5"
    assert fake_dns.queries("name.test")

    fake_dns.set("name.test", "127.0.0.6")
    r = fake_dns.run([PY, "-c", RESOLVE_LOOP, "name.test"], input="")
    assert r.stdout.strip() == "['127.0.0.6']", r

    r = fake_dns.run(["getent", "ahosts", "nope.test"])
    assert r.returncode == 2 and r.stdout == "", r
    assert fake_dns.queries("nope.test")

    # silent: the query arrives, no answer comes, the lookup gives up
    fake_dns.silent = True
    fake_dns.clear_queries()
    fake_dns.write_resolv_conf(options="timeout:1 attempts:1")
    t0 = time.monotonic()
    r = fake_dns.run(["getent", "ahostsv4", "name.test"])
    took = time.monotonic() - t0
    assert r.returncode == 2 and r.stdout == "", r
    assert fake_dns.queries("name.test")
    print(f"\nsilent DNS: getent gave up after {took:.2f}s (timeout:1 attempts:1)")

    with open("/etc/resolv.conf") as f:
        assert f.read() == ours


def test_fake_dns_change_seen_by_a_running_process(fake_dns):
    """A long-running process sees a changed address and an /etc/hosts
    emptied in place."""
    fake_dns.set("name.test", "127.0.0.5", ttl=1)
    fake_dns.set("db.test", "127.0.0.20")
    proc = subprocess.Popen(fake_dns.wrapper(hosts={"db.test": "127.0.0.10"})
                            + [PY, "-c", RESOLVE_LOOP, "db.test"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "['127.0.0.10']"
        assert not fake_dns.queries("db.test")  # /etc/hosts answered
        fake_dns.write_hosts({})
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "['127.0.0.20']"
        assert fake_dns.queries("db.test")
        fake_dns.set("db.test", "127.0.0.21")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "['127.0.0.21']"
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert proc.returncode == 0


def test_daemon_in_a_namespace(taskworkerd, fake_dns):
    """The taskworkerd factory's wrapper= runs that daemon in the namespace."""
    d = taskworkerd(wrapper=fake_dns.wrapper(hosts={"db.test": "127.0.0.1"}))
    assert d.running()
    with open(f"/proc/{d.pid}/cmdline", "rb") as f:
        assert b"taskworkerd\0" in f.read()  # the wrapper exec'ed it
    assert os.readlink(f"/proc/{d.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    with open(f"/proc/{d.pid}/root/etc/resolv.conf") as f:
        assert f"nameserver {fake_dns.addr}" in f.read()
    with open(f"/proc/{d.pid}/root/etc/hosts") as f:
        assert "db.test" in f.read()


# ---- TLS ----------------------------------------------------------------------------------

def test_pg_tls_verify_full(pg_tls, fake_dns, tmp_path):
    fake_dns.set("pg.test", "127.0.0.1")
    fake_dns.set("wrong.test", "127.0.0.1")
    r = fake_dns.run([PY, "-c", PG_CONNECT, pg_tls.conninfo_verify_full()])
    assert r.returncode == 0 and r.stdout.strip() == "True", r

    r = fake_dns.run([PY, "-c", PG_CONNECT, pg_tls.conninfo_verify_full(host="wrong.test")])
    assert r.returncode != 0, r
    assert 'does not match host name "wrong.test"' in r.stderr, r.stderr

    # The same without DNS: the name checked, the address given.
    with psycopg.connect(pg_tls.conninfo_verify_full(hostaddr="127.0.0.1"),
                         connect_timeout=5) as db:
        assert db.execute("SELECT ssl FROM pg_stat_ssl "
                          "WHERE pid = pg_backend_pid()").fetchone()[0] is True
    other = TestCA(tmp_path / "other-ca")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(pg_tls.conninfo_verify_full(hostaddr="127.0.0.1",
                                                    sslrootcert=other.ca_file),
                        connect_timeout=5)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
