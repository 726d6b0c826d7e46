"""Host names resolved by the daemon itself, off the loop (c-ares): Redis
and PostgreSQL reached by name, every address of a name tried, and a
name that does not resolve."""

import re

from conftest import wait_until


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
