"""A daemon that finds Redis through Sentinel, reloaded: a change of the
Redis connection settings reconnects it to the master the sentinels name,
and a reload that leaves them alone still lets it follow them after a
lost connection or a failover."""

from conftest import merge_config, wait_until
from test_cfg_reload import wait_reloaded


def serves(tw, cluster, d, n=5):
    """N new ids pushed to the master the sentinels name, all completed."""
    ids = tw.insert(n)
    cluster.master_client().rpush("tasks", *ids)
    tw.wait_completed(ids, 30, daemon=d)


def test_reload_of_redis_settings_reconnects_through_sentinels(
        tw, taskworkerd, sentinel_cluster):
    """The sentinels still name the same master: after the reload the
    daemon connects to it again, rather than waiting for a failover."""
    cluster = sentinel_cluster
    d = taskworkerd(redis=dict(cluster.config(), host=None, port=None))
    serves(tw, cluster, d)
    mark = d.reload(merge_config(d.config, {"redis": {"command_timeout_ms": 4000}}))
    wait_reloaded(d, mark)
    wait_until(lambda: "connection settings changed" in d.log(), 10,
               "the reconnect of the reload", daemon=d)
    serves(tw, cluster, d)
    # Until the sentinels answer again, the log says they are asked.
    assert "no master known yet: ;" not in d.log()


def test_sentinels_followed_after_an_unrelated_reload(
        tw, taskworkerd, sentinel_cluster):
    """A reload that changes nothing of Redis leaves the sentinel client
    with settings that live on: a lost connection (which asks the
    sentinels again) and a failover are followed as before."""
    cluster = sentinel_cluster
    d = taskworkerd(redis=dict(cluster.config(), host=None, port=None))
    serves(tw, cluster, d)
    mark = d.reload(merge_config(d.config, {"worker": {"delay_ms": 1}}))
    wait_reloaded(d, mark)
    m = cluster.master_client()
    m.execute_command("CLIENT", "KILL", "TYPE", "normal")
    wait_until(lambda: "reconnecting" in d.log(), 10, "the lost connection", daemon=d)
    serves(tw, cluster, d)
    old = cluster.master_addr()
    new = cluster.failover()
    assert new != old
    serves(tw, cluster, d)
    assert d.running()
