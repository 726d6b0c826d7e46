"""Host names resolved by the daemon itself, off the loop (c-ares): Redis
and PostgreSQL reached by name, every address of a name tried, a name
that does not resolve, and Redis Sentinel's sentinels by name."""

import re
import time

import redis

from conftest import scaled, wait_until


def by_name(conninfo, name):
    """CONNINFO with its host given as NAME."""
    return re.sub(r"host=\S+", f"host={name}", conninfo)


def test_servers_reached_by_name(tw, servers, taskworkerd):
    """'localhost' names 127.0.0.1 and ::1 (/etc/hosts); the servers listen
    on 127.0.0.1 only, so an address that refuses is passed over at once."""
    d = taskworkerd(redis={"host": "localhost"},
                    postgres={"conninfo": by_name(servers.pg.conninfo, "localhost")})
    ids = tw.insert(20)
    tw.push(ids)
    tw.wait_completed(ids, 20, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)


def test_pg_host_list_with_a_name_that_does_not_resolve(tw, servers, taskworkerd):
    """A conninfo host list whose first name has no address: that host is
    left out and the next one serves."""
    info = by_name(servers.pg.conninfo, "no-such-host.invalid,127.0.0.1")
    port = re.search(r"port=(\d+)", info).group(1)
    info = re.sub(r"port=\d+", f"port={port},{port}", info)
    d = taskworkerd(postgres={"conninfo": info})
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 30, daemon=d)


def test_redis_name_that_does_not_resolve(tw, taskworkerd):
    """A name with no address: a clear log line, backoff, no crash; the
    daemon waits for Redis."""
    d = taskworkerd(redis={"host": "no-such-host.invalid"}, wait_ready=False)
    wait_until(lambda: "cannot resolve no-such-host.invalid" in d.log()
               or "no address for no-such-host.invalid" in d.log(), 30,
               "a log line about the name", daemon=d)
    assert d.running()


def test_sentinels_reached_by_name(tw, taskworkerd, sentinel_cluster, fake_dns):
    """Sentinels given by name, resolved by the daemon (c-ares): first one
    whose DNS server never answers (a blocking lookup would hold the loop
    for the resolver's whole timeout, here 2 x 5 s), then "localhost" and
    two names of the daemon's own /etc/hosts. The silent name costs one
    connect timeout, the master is found and followed through a failover,
    and a round that found it warns about nothing."""
    cluster = sentinel_cluster
    fake_dns.set("silent-sentinel.test", "127.0.0.1", silent=True)
    hosts = {"sentinel-1.test": "127.0.0.1", "sentinel-2.test": "127.0.0.1"}
    s0, s1, s2 = cluster.sentinels
    sentinels = ["silent-sentinel.test:26379", f"localhost:{s0.port}",
                 f"sentinel-1.test:{s1.port}", f"sentinel-2.test:{s2.port}"]
    ids = tw.insert(20)
    cluster.master_client().rpush("tasks", *ids)
    started = time.monotonic()
    d = taskworkerd(wrapper=fake_dns.wrapper(hosts=hosts, options="timeout:5 attempts:2"),
                    redis=dict(cluster.config(), sentinels=sentinels, host=None, port=None,
                               connect_timeout_ms=1000))
    tw.wait_completed(ids, 20, daemon=d)
    took = time.monotonic() - started
    assert took < scaled(8), f"the first tasks took {took:.2f}s"
    log = d.log()
    assert fake_dns.queries("silent-sentinel.test"), "the silent name was not asked of DNS"
    assert "no address for silent-sentinel.test within 1000 ms" in log, log
    assert re.search(r"redis sentinel (localhost|sentinel-\d\.test):\d+: following failovers",
                     log), log
    assert not [line for line in log.splitlines() if "[warning]: redis sentinels" in line
                or "[warning]: redis +switch-master" in line], log

    new = cluster.failover()
    markers = tw.insert(5)
    redis.Redis(host=new[0], port=new[1]).lpush("tasks", *markers)
    tw.wait_completed(markers, 30, daemon=d)
    assert f" to {new[0]}:{new[1]} (" in d.log(), d.log()
