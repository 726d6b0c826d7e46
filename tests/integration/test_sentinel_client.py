"""Redis Sentinel as the config names it: `taskworkerd -t` on the
redis.sentinel* keys, and taskworkerctl finding the master through three
real sentinels (a password of their own, a dead and a silent one in
front), and following it after a failover.

The daemon's own use of the sentinels is in test_failover.py and
test_names.py (sentinels by name); daemon/sentinel.c is tested alone in
tests/unit/test_sentinel.c.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BIN, EX_CONFIG, EX_OK, WRAPPER, line_number, render_config, scaled,
                      twservers, wait_until)

CTL = os.environ.get("TASKWORKERCTL_BIN") or str(Path(BIN).resolve().parent.parent / "ctl" /
                                                 "taskworkerctl")
EX_UNAVAILABLE = 69
MASTER = "mymaster"
SENTINEL_PASSWORD = "s3ntinel pw"


# ---- -t ---------------------------------------------------------------------------

def check(run_bin, tmp_path, text):
    path = tmp_path / "sentinel.conf"
    path.write_text(text)
    return path, run_bin("-t", "-c", str(path))


@pytest.mark.parametrize("sentinels", [
    ["127.0.0.1:26379"],
    ["[::1]:26379", "sentinel-2.example:26380", "10.0.0.3:26381"],
    [f"10.0.0.{i}:26379" for i in range(1, 17)],
], ids=["one", "each-kind", "sixteen"])
def test_check_accepts_sentinels(run_bin, tmp_path, sentinels):
    _, res = check(run_bin, tmp_path, render_config({"redis": {
        "sentinels": sentinels, "sentinel_master": MASTER,
        "sentinel_username": "watcher", "sentinel_password": "pw"}}))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


@pytest.mark.parametrize("redis_keys,needle,words", [
    ({"host": "127.0.0.1"}, "host = ", "redis.host: not together with redis.sentinels"),
    ({"port": 6379}, "port = ", "redis.port: not together with redis.sentinels"),
    ({"unix_socket": "/run/redis.sock"}, "unix_socket = ",
     "redis.unix_socket: not together with redis.sentinels"),
    ({"sentinel_master": None}, "sentinels = ",
     "redis.sentinel_master: required when redis.sentinels is set"),
    ({"sentinels": ["127.0.0.1"]}, "sentinels = ", 'expected "HOST:PORT"'),
    ({"sentinels": ["::1:26379"]}, "sentinels = ", "an IPv6 address goes in brackets"),
    ({"sentinels": ["127.0.0.1:0"]}, "sentinels = ", "the port must be 1 to 65535"),
    ({"sentinels": ["bad_host!:1"]}, "sentinels = ", "not a host name"),
    ({"sentinels": [f"10.0.0.{i}:1" for i in range(17)]}, "sentinels = ",
     "must have between 0 and 16 entries"),
    ({"sentinel_password": "a", "sentinel_password_file": "/nonexistent"},
     "sentinel_password_file = ",
     "redis.sentinel_password_file: cannot be used together with redis.sentinel_password"),
], ids=["host", "port", "unix-socket", "no-master", "no-port", "bare-ipv6", "port-0",
        "bad-name", "seventeen", "two-passwords"])
def test_check_refuses(run_bin, tmp_path, redis_keys, needle, words):
    keys = {"sentinels": ["127.0.0.1:26379"], "sentinel_master": MASTER}
    keys.update(redis_keys)
    text = render_config({"redis": keys})
    path, res = check(run_bin, tmp_path, text)
    assert res.returncode == EX_CONFIG, res.stdout + res.stderr
    assert f"{path}:{line_number(text, needle)}: " in res.stderr, res.stderr
    assert words in res.stderr, res.stderr
    assert "configuration OK" not in res.stdout


def test_check_refuses_sentinel_keys_without_sentinels(run_bin, tmp_path):
    text = render_config({"redis": {"host": "127.0.0.1", "sentinel_master": MASTER}})
    path, res = check(run_bin, tmp_path, text)
    assert res.returncode == EX_CONFIG, res.stdout + res.stderr
    assert (f"{path}:{line_number(text, 'sentinel_master')}: redis.sentinel_master: goes with "
            "redis.sentinels, which is not set") in res.stderr, res.stderr


# ---- a master, a replica and three sentinels -----------------------------------------

class SentinelServer(twservers.RedisServer):
    """redis-server --sentinel with a generated sentinel.conf, on a free
    loopback port in a directory of its own, stopped by PID."""

    def __init__(self, master_port):
        super().__init__()
        self.master_port = master_port

    def argv(self):
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
                    f'requirepass "{SENTINEL_PASSWORD}"\n'
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\n"
                    f"sentinel failover-timeout {MASTER} 10000\n")
        return [self.binary, conf, "--sentinel"]

    def ping(self):
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self, **kw):
        import redis
        return redis.Redis(host=self.host, port=self.port, password=SENTINEL_PASSWORD,
                           socket_timeout=2, decode_responses=True, **kw)

    def master_port_now(self):
        addr = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(addr[1]) if addr else None

    def knows_replica(self):
        return len(self.client().execute_command("SENTINEL", "REPLICAS", MASTER)) > 0


class HA:
    def __init__(self):
        self.all = []
        # No wait for more replicas before a sync (Redis waits 5 s).
        self.master = self.start(twservers.RedisServer(
            extra_args=["--repl-diskless-sync-delay", "0"]))
        self.replica = self.start(twservers.RedisServer(
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]))
        wait_until(lambda: self.info(self.replica).get("master_link_status") == "up", 20,
                   "the replica to sync")
        self.sentinels = [self.start(SentinelServer(self.master.port)) for _ in range(3)]

    def wait_replica_known(self):
        """Each sentinel knows the replica (from the master's INFO)."""
        wait_until(lambda: all(s.knows_replica() for s in self.sentinels), 30,
                   "every sentinel to know the replica")

    def start(self, server):
        self.all.append(server)
        return server.start()

    @staticmethod
    def info(server):
        import redis
        with redis.Redis(host=server.host, port=server.port, decode_responses=True) as r:
            return r.info("replication")

    def cleanup(self):
        for server in reversed(self.all):
            server.cleanup()


@pytest.fixture
def ha():
    h = None
    try:
        h = HA()
        yield h
    finally:
        if h is not None:
            h.cleanup()


def dead_port():
    return twservers.free_port()


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never
    answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def write_ctl_conf(tmp_path, sentinels, password_file=True, **keys):
    (tmp_path / "sentinel.pass").write_text(SENTINEL_PASSWORD + "\n")
    redis_keys = {"sentinels": sentinels, "sentinel_master": MASTER, "queues": ["tasks"],
                  "connect_timeout_ms": 500, "command_timeout_ms": 1000}
    if password_file:
        redis_keys["sentinel_password_file"] = "sentinel.pass"
    redis_keys.update(keys)
    path = tmp_path / "ctl.conf"
    path.write_text(render_config({"redis": redis_keys, "worker": {"id": "ctl"}}))
    return path


def ctl(path, *args, env=None, timeout=30):
    res = subprocess.run(WRAPPER + [CTL, "-c", str(path), *args], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=scaled(timeout), env=env)
    for marker in ("Sanitizer", "runtime error:", "Invalid read", "Invalid write"):
        assert marker not in res.stderr, res.stderr
    return res


def queue_length(path):
    res = ctl(path, "--json", "status")
    assert res.returncode == EX_OK, res.stderr
    return json.loads(res.stdout)["queues"][0]["length"]


def sentinel_list(ha, *front):
    return [*front, *(f"127.0.0.1:{s.port}" for s in ha.sentinels)]


def test_ctl_finds_the_master_past_dead_and_silent_sentinels(ha, tmp_path, silent_port):
    ha.master.client().rpush("tasks", 1, 2, 3)
    path = write_ctl_conf(tmp_path, sentinel_list(ha, f"127.0.0.1:{dead_port()}",
                                                   f"127.0.0.1:{silent_port}"))
    started = time.monotonic()
    assert queue_length(path) == 3
    took = time.monotonic() - started
    assert took < scaled(1.0 + 2.5), f"a dead and a silent sentinel took {took:.2f}s"


def test_ctl_sentinel_password_from_the_credential(ha, tmp_path):
    ha.master.client().rpush("tasks", 7)
    creds = tmp_path / "creds"
    creds.mkdir()
    path = write_ctl_conf(tmp_path, sentinel_list(ha), password_file=False)
    res = ctl(path, "status")
    assert res.returncode == EX_UNAVAILABLE, res.stdout + res.stderr
    assert res.stderr.count("SENTINEL failed: NOAUTH") == 3, res.stderr

    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    (creds / "redis-sentinel-password").write_text("wrong\n")
    res = ctl(path, "status", env=env)
    assert res.returncode == EX_UNAVAILABLE, res.stdout + res.stderr
    assert res.stderr.count("AUTH failed: WRONGPASS") == 3, res.stderr

    (creds / "redis-sentinel-password").write_text(SENTINEL_PASSWORD + "\n")
    res = ctl(path, "--json", "status", env=env)
    assert res.returncode == EX_OK, res.stderr
    assert json.loads(res.stdout)["queues"][0]["length"] == 1


def test_ctl_when_no_sentinel_answers(ha, tmp_path):
    path = write_ctl_conf(tmp_path, [f"127.0.0.1:{dead_port()}"])
    res = ctl(path, "status")
    assert res.returncode == EX_UNAVAILABLE, res.stdout + res.stderr
    assert res.stderr.startswith("taskworkerctl: no sentinel answered for master mymaster: "
                                 "127.0.0.1:"), res.stderr

    path = write_ctl_conf(tmp_path, sentinel_list(ha), sentinel_master="nosuchmaster")
    res = ctl(path, "status")
    assert res.returncode == EX_UNAVAILABLE, res.stdout + res.stderr
    assert res.stderr.count("does not know master nosuchmaster") == 3, res.stderr


@pytest.mark.slow
def test_ctl_follows_a_failover(ha, tmp_path):
    path = write_ctl_conf(tmp_path, sentinel_list(ha))
    ha.wait_replica_known()
    # On the replica before it is promoted, or the two ids may be lost with
    # the asynchronous copy, which is not what this test is about. WAIT
    # counts the writes of its own connection: one pipeline.
    with ha.master.client().pipeline(transaction=False) as p:
        p.rpush("tasks", 1, 2)
        p.execute_command("WAIT", 1, 10000)
        assert p.execute()[1] >= 1, "the replica did not get the ids"
    assert queue_length(path) == 2

    def failover():
        try:
            ha.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER)
            return True
        except Exception:  # NOGOODSLAVE while its view of the replica is stale
            return False
    wait_until(failover, 30, "SENTINEL FAILOVER to be accepted", interval=0.5)
    wait_until(lambda: all(s.master_port_now() == ha.replica.port for s in ha.sentinels), 60,
               "every sentinel to name the replica as the master", interval=0.2)
    wait_until(lambda: HA.info(ha.replica)["role"] == "master", 30,
               "the replica to be promoted")

    # A write shows which server it reached: the old master turns replica
    # (READONLY), and the key must be on the new one.
    wait_until(lambda: ctl(path, "pause", "tasks").returncode == EX_OK, 30,
               "taskworkerctl pause to succeed on the new master", interval=0.5)
    assert ha.replica.client().exists("tasks:paused") == 1
    ha.replica.client().rpush("tasks", 3)
    assert queue_length(path) == 3
    res = ctl(path, "resume", "tasks")
    assert res.returncode == EX_OK, res.stderr
    assert ha.replica.client().exists("tasks:paused") == 0
