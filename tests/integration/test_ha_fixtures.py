"""The failover and name-resolution fixtures (ha.py) do what they say: these
check the servers they build, not the daemon. Timings are printed (run
with -s to see them), never asserted."""

import sys
import time

import psycopg
import pytest
import redis


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
    # a replica of the new one.
    old_node = c.node(old[1])
    t0 = time.monotonic()
    c.restart(old_node)
    c.wait_role(old_node, "slave", master_port=new[1], timeout=30)
    took_rejoin = time.monotonic() - t0
    c.wait_replicated()
    assert c.client(old_node).get("after") == "2"
    print(f"\nkill -9 of the master: new master {new[0]}:{new[1]} named and ROLE master "
          f"after {took_failover:.2f}s; the old one restarted and a replica in "
          f"{took_rejoin:.2f}s")


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
