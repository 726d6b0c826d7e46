"""Ways to reach Redis: unix socket, password, password file, ACL user,
database number."""

import os

import redis

from conftest import wait_until


def run_through(tw, taskworkerd, client, n=20, **config):
    ids = tw.insert(n)
    client.rpush("tasks", *ids)
    d = taskworkerd(worker={"delay_ms": 0}, **config)
    tw.wait_completed(ids, 30, daemon=d)
    wait_until(lambda: client.zcard(tw.processing()) == 0, 10, "processing list empty",
               daemon=d)
    assert client.llen("tasks") == 0
    assert client.llen(tw.dead()) == 0
    return d


def test_unix_socket(tw, taskworkerd, redis_factory):
    rs = redis_factory("--unixsocket", "redis.sock", "--unixsocketperm", "700")
    path = os.path.join(rs.dir, "redis.sock")
    client = redis.Redis(unix_socket_path=path)
    run_through(tw, taskworkerd, client,
                redis={"host": None, "port": None, "unix_socket": path})


def test_password(tw, taskworkerd, redis_factory):
    rs = redis_factory("--requirepass", "s3cret pass")
    client = redis.Redis(port=rs.port, password="s3cret pass")
    run_through(tw, taskworkerd, client, redis={"port": rs.port, "password": "s3cret pass"})


def test_password_file(tw, taskworkerd, redis_factory, tmp_path):
    rs = redis_factory("--requirepass", "from-a-file")
    pwfile = tmp_path / "redis.pass"
    pwfile.write_text("from-a-file\n")
    pwfile.chmod(0o600)
    client = redis.Redis(port=rs.port, password="from-a-file")
    run_through(tw, taskworkerd, client,
                redis={"port": rs.port, "password_file": str(pwfile)})


def test_acl_user(tw, taskworkerd, redis_factory):
    rs = redis_factory("--user", "default", "off",
                       "--user", "worker", "on", ">pw", "~*", "&*", "+@all")
    client = redis.Redis(port=rs.port, username="worker", password="pw")
    run_through(tw, taskworkerd, client,
                redis={"port": rs.port, "username": "worker", "password": "pw"})


def test_database_number(tw, taskworkerd, servers):
    client = redis.Redis(port=servers.redis.port, db=5)
    run_through(tw, taskworkerd, client, redis={"database": 5})
    assert tw.r.dbsize() == 0, "the daemon wrote into database 0"
    client.close()
