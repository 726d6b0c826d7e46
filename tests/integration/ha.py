"""Fixtures for high-availability and name-resolution tests: a Redis master
with a replica watched by three Sentinels, a PostgreSQL primary with a
streaming standby, a PostgreSQL server that speaks TLS with a test CA, and
a DNS server of the test's own that a daemon's resolver can be pointed at.

Every server listens on loopback only, on a port (or, for DNS, an address)
nobody else uses, lives in a temporary directory of its own and is stopped
by its PID at teardown. They are function-scoped: each test gets fresh
ones, since the tests that use them break them on purpose.

    sentinel_cluster   SentinelCluster  .master_addr() .failover() .kill_master()
                                        .wait_replicated() .config() ...
    pg_standby         PgStandbyPair    .conninfo_multi() .stop_primary_immediate()
                                        .promote() .wait_promoted() ...
    fake_dns           FakeDNS          .set(name, addrs, ttl) .silent ...
                                        .wrapper() -> a command prefix that runs
                                        a process with this server as its only
                                        name server (and optionally a hosts file)
    pg_tls             PgTlsServer      .ca_file .conninfo_verify_full(host=...)

conftest.py imports the fixtures; the classes work without pytest too.
"""

import os
import pwd
import random
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))
import twservers  # noqa: E402

LOOPBACK = "127.0.0.1"


def wait_for(pred, timeout, what, interval=0.05):
    """Poll PRED until it returns something true (its value); an
    AssertionError naming WHAT (a string, or a function giving one at that
    moment) after TIMEOUT seconds. An exception from PRED counts as not yet
    (a server on its way up or down), and the last one is named."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_error = e
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error!r})" if last_error is not None else ""
            what = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# ---- Redis with Sentinel ---------------------------------------------------------

class ConfRedisServer(twservers.RedisServer):
    """A redis-server that reads DIR/redis.conf before its command line, so
    that Sentinel's CONFIG REWRITE has a file to write, and a restart keeps
    the role Sentinel gave it (as an installed server would)."""

    def __init__(self, conf_lines=(), **kw):
        super().__init__(**kw)
        self.conf_path = os.path.join(self.dir, "redis.conf")
        with open(self.conf_path, "w") as f:
            # a replica's full sync starts at once, not after the default 5 s
            # that a diskless sync waits for more replicas to come
            f.write("# written by tests/integration/ha.py\n"
                    "repl-diskless-sync-delay 0\n"
                    + "".join(line + "\n" for line in conf_lines))

    def argv(self):
        argv = super().argv()
        return [argv[0], self.conf_path] + argv[1:]

    def addr(self):
        return f"{self.host}:{self.port}"


class SentinelServer(twservers.RedisServer):
    """`redis-server DIR/sentinel.conf --sentinel`, the config written at the
    first start (Sentinel rewrites it as it learns; a restart keeps that)."""

    def __init__(self, monitor_lines, **kw):
        super().__init__(**kw)
        self.monitor_lines = list(monitor_lines)
        self.conf_path = os.path.join(self.dir, "sentinel.conf")
        self._conf_port = None

    def argv(self):
        if self._conf_port != self.port:  # first start, or a new port picked
            with open(self.conf_path, "w") as f:
                f.write("# written by tests/integration/ha.py\n"
                        f"port {self.port}\n"
                        f"bind {LOOPBACK}\n"
                        f"dir {self.dir}\n"
                        "daemonize no\n"
                        f"sentinel announce-ip {LOOPBACK}\n"
                        f"sentinel announce-port {self.port}\n"
                        + "".join(line + "\n" for line in self.monitor_lines))
            self._conf_port = self.port
        return [self.binary, self.conf_path, "--sentinel"]

    def addr(self):
        return f"{self.host}:{self.port}"


def _pairs(reply):
    """A flat [k1, v1, k2, v2, ...] reply as a dict (a dict passes through)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))


class SentinelCluster:
    """A master, REPLICAS replicas (replicaof) and SENTINELS sentinels
    monitoring it as NAME with QUORUM, all on 127.0.0.1.

    DOWN_AFTER_MS and FAILOVER_TIMEOUT_MS are short, so that a dead master
    is replaced within a few seconds. FAST also shortens Sentinel's own
    periods (SENTINEL DEBUG info-period / publish-period): how often it asks
    replicas for INFO and says hello, hence how soon a restarted old master
    is turned into a replica (stock periods: 10 s or more). A sentinel
    restarted by hand is back at the stock periods.

    The data nodes are `nodes` (ConfRedisServer, fixed ports: the first is
    the first master); which one is master is asked of the sentinels."""

    def __init__(self, name="twmaster", replicas=1, sentinels=3, quorum=2,
                 down_after_ms=1000, failover_timeout_ms=3000, fast=True):
        self.name = name
        self.n_replicas = replicas
        self.n_sentinels = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.fast = fast
        self.nodes = []
        self.sentinels = []
        self._clients = []

    # -- life
    def start(self, timeout=30):
        master = ConfRedisServer()
        self.nodes.append(master)
        master.start()
        for _ in range(self.n_replicas):
            node = ConfRedisServer(conf_lines=[f"replicaof {LOOPBACK} {master.port}"])
            self.nodes.append(node)
            node.start()
        for node in self.nodes[1:]:
            self.wait_role(node, "slave", master_port=master.port, timeout=timeout)
        monitor = [f"sentinel monitor {self.name} {LOOPBACK} {master.port} {self.quorum}",
                   f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                   f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
                   f"sentinel parallel-syncs {self.name} 1"]
        for _ in range(self.n_sentinels):
            s = SentinelServer(monitor)
            self.sentinels.append(s)
            s.start()
            if self.fast:
                with self._client(s) as c:
                    c.execute_command("SENTINEL", "DEBUG", "info-period", 1000,
                                      "publish-period", 500)
        self.wait_settled(timeout=timeout)
        return self

    def cleanup(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        for s in self.sentinels:
            s.cleanup()
        for node in self.nodes:
            node.cleanup()

    # -- clients
    def _client(self, server, **kw):
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        return redis.Redis(host=server.host, port=server.port, **kw)

    def client(self, server, **kw):
        """A redis.Redis for SERVER (a node or a sentinel), closed at teardown
        (decode_responses=True unless given)."""
        c = self._client(server, **kw)
        self._clients.append(c)
        return c

    def sentinel_client(self, i=0, **kw):
        return self.client(self.sentinels[i], **kw)

    def master_client(self, **kw):
        """A client of the master the sentinels name now."""
        return self.client(self.master_node(), **kw)

    def replica_client(self, i=0, **kw):
        """A client of the Ith running replica (in `nodes` order)."""
        return self.client(self.replica_nodes()[i], **kw)

    def config(self):
        """What a daemon's `redis` group needs to find the master."""
        return {"sentinels": [s.addr() for s in self.sentinels],
                "sentinel_master": self.name}

    # -- what the sentinels say
    def live_sentinels(self):
        return [s for s in self.sentinels if s.running()]

    def master_addr(self, sentinel=None):
        """(host, port) of the master, as SENTINEL GET-MASTER-ADDR-BY-NAME of
        sentinel number SENTINEL (default: the first one running) says."""
        s = self.sentinels[sentinel] if sentinel is not None else self.live_sentinels()[0]
        with self._client(s) as c:
            reply = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        if not reply:
            raise AssertionError(f"sentinel {s.addr()} knows no master {self.name}")
        return reply[0], int(reply[1])

    def node(self, port):
        """The data node on PORT."""
        for n in self.nodes:
            if n.port == int(port):
                return n
        raise KeyError(f"no node on port {port}")

    def master_node(self):
        return self.node(self.master_addr()[1])

    def replica_nodes(self):
        """The running nodes other than the master the sentinels name."""
        master = self.master_addr()[1]
        return [n for n in self.nodes if n.port != master and n.running()]

    def sentinel_view(self, s):
        """SENTINEL MASTER NAME of sentinel S as a dict."""
        with self._client(s) as c:
            return _pairs(c.execute_command("SENTINEL", "MASTER", self.name))

    def sentinel_replicas(self, s):
        """SENTINEL REPLICAS NAME of sentinel S: a list of dicts."""
        with self._client(s) as c:
            return [_pairs(r) for r in c.execute_command("SENTINEL", "REPLICAS", self.name)]

    # -- roles
    def role(self, node):
        """ROLE of NODE: ['master', offset, [...]] or ['slave', host, port,
        state, offset]; None when it does not answer."""
        try:
            with self._client(node, socket_timeout=2) as c:
                return c.execute_command("ROLE")
        except redis.RedisError:
            return None

    def wait_role(self, node, role, master_port=None, timeout=20):
        """Wait until NODE says ROLE ROLE ('master' or 'slave'); a replica
        also connected (state 'connected') to MASTER_PORT when given."""
        def ok():
            r = self.role(node)
            if not r or r[0] != role:
                return False
            if role == "slave":
                if master_port is not None and int(r[2]) != int(master_port):
                    return False
                return r[3] == "connected"
            return True
        wait_for(ok, timeout, lambda: f"{node.addr()} to be {role}"
                 + (f" of :{master_port}" if master_port else "")
                 + f" (ROLE now {self.role(node)})")

    def wait_settled(self, timeout=20):
        """Wait until every running sentinel names the same master, knows the
        other running sentinels, sees every running replica as a healthy
        replica (no s_down, link to the master ok), has no failover under way
        and is out of TILT mode: a failover can start."""
        live = self.live_sentinels()
        replicas = {n.port for n in self.replica_nodes()}

        def settled():
            masters = {self.master_addr(i) for i, s in enumerate(self.sentinels)
                       if s in live}
            if len(masters) != 1:
                return False
            for s in live:
                view = self.sentinel_view(s)
                if int(view["num-other-sentinels"]) < len(live) - 1:
                    return False
                if view["flags"] != "master":
                    return False
                with self._client(s) as sc:
                    if int(sc.info("sentinel").get("sentinel_tilt", 0)) != 0:
                        return False
                good = {int(r["port"]) for r in self.sentinel_replicas(s)
                        if r["flags"] == "slave" and r.get("master-link-status") == "ok"}
                if not replicas <= good:
                    return False
            return True
        wait_for(settled, timeout, f"the sentinels to agree on {self.name}")

    def _agreed_master(self):
        """The master every running sentinel names, if they agree and it
        answers ROLE master; else None."""
        addrs = {self.master_addr(i) for i, s in enumerate(self.sentinels) if s.running()}
        if len(addrs) != 1:
            return None
        addr = addrs.pop()
        r = self.role(self.node(addr[1]))
        return addr if r and r[0] == "master" else None

    def wait_converged(self, timeout=30):
        """Wait until every running sentinel names the same master, it says
        ROLE master, and every other running node is a connected replica of
        it. Returns the master's (host, port). A loaded machine can make the
        sentinels fail over once more on their own while a node rejoins, so
        which node that is is the sentinels' word, not the caller's."""
        def converged():
            addr = self._agreed_master()
            if addr is None:
                return None
            for n in self.replica_nodes():
                r = self.role(n)
                if not r or r[0] != "slave" or int(r[2]) != addr[1] or r[3] != "connected":
                    return None
            return addr
        return wait_for(converged, timeout, lambda: "one master and its replicas, nodes now "
                        + str({n.port: self.role(n) for n in self.nodes if n.running()}))

    def wait_new_master(self, old, timeout=30):
        """Wait until every running sentinel names a master other than OLD
        ((host, port)), all the same one, and that node answers ROLE master.
        Returns its (host, port)."""
        def moved():
            addr = self._agreed_master()
            return addr if addr != tuple(old) else None
        return wait_for(moved, timeout, f"a new master in place of {old[0]}:{old[1]}")

    # -- faults
    def failover(self, timeout=30):
        """SENTINEL FAILOVER (retried while the sentinel refuses: no good
        replica yet, a failover in progress), then wait for the new master.
        Returns its (host, port)."""
        old = self.master_addr()
        deadline = time.monotonic() + timeout

        def ask():
            with self._client(self.live_sentinels()[0]) as c:
                try:
                    return c.execute_command("SENTINEL", "FAILOVER", self.name)
                except redis.ResponseError as e:
                    if "NOGOODSLAVE" in str(e) or "INPROG" in str(e):
                        return None
                    raise
        wait_for(ask, timeout, f"a sentinel to accept SENTINEL FAILOVER {self.name}")
        return self.wait_new_master(old, timeout=max(1.0, deadline - time.monotonic()))

    def kill_master(self, timeout=30, wait=True):
        """kill -9 the master by its PID; with WAIT, until the sentinels have
        promoted a replica. Returns the new master's (host, port); without
        WAIT, the old one's."""
        old = self.master_addr()
        node = self.node(old[1])
        node.kill()
        if not wait:
            return old
        return self.wait_new_master(old, timeout=timeout)

    def restart(self, node, timeout=30):
        """Start a stopped node again, on its port with its redis.conf."""
        node.start(timeout=timeout)
        return node

    def wait_replicated(self, timeout=20):
        """Wait until every running replica is connected to the master and
        has applied all the master wrote so far (its offset)."""
        master = self.master_node()
        replicas = self.replica_nodes()
        for n in replicas:
            self.wait_role(n, "slave", master_port=master.port, timeout=timeout)
        with self._client(master) as c:
            target = int(c.info("replication")["master_repl_offset"])
        for n in replicas:
            with self._client(n) as c:
                wait_for(lambda: int(c.info("replication")["slave_repl_offset"]) >= target,
                         timeout, f"{n.addr()} to replicate up to offset {target}")


@pytest.fixture
def sentinel_cluster():
    """A started SentinelCluster (master + 1 replica + 3 sentinels)."""
    cluster = SentinelCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


# ---- PostgreSQL: a streaming standby ---------------------------------------------

class PgStandbyServer(twservers.PostgresServer):
    """A hot standby of PRIMARY made with `pg_basebackup -R` (streaming,
    primary_conninfo and standby.signal written), on a port of its own."""

    def __init__(self, primary, **kw):
        super().__init__(dbname=primary.dbname, schema_file=None,
                         bindir=primary.bindir, durable=primary.durable, **kw)
        self.primary = primary

    def _initdb(self):  # the cluster is a copy of the primary's
        self._run([os.path.join(self.bindir, "pg_basebackup"), "-h", self.primary.host,
                   "-p", str(self.primary.port), "-U", "postgres", "-D", self.datadir,
                   "-R", "-X", "stream", "-c", "fast", "--no-sync"], "pg_basebackup")

    def _create_db(self):  # came with the copy
        pass


class PgStandbyPair:
    """`primary` (twservers.PostgresServer, with the tasks schema) and
    `standby` (PgStandbyServer) streaming from it."""

    def __init__(self):
        self.primary = twservers.PostgresServer()
        self.standby = None

    def start(self, timeout=60):
        self.primary.start(timeout=timeout)
        self.standby = PgStandbyServer(self.primary)
        self.standby.start(timeout=timeout)
        self.wait_streaming(timeout=timeout)
        return self

    def cleanup(self):
        if self.standby is not None:
            self.standby.cleanup()
        self.primary.cleanup()

    @property
    def dbname(self):
        return self.primary.dbname

    def conninfo_multi(self, target_session_attrs="read-write", **extra):
        """Both servers in one libpq conninfo: libpq tries the primary, then
        the standby, and keeps the first that is TARGET_SESSION_ATTRS."""
        s = (f"host={self.primary.host},{self.standby.host} "
             f"port={self.primary.port},{self.standby.port} "
             f"dbname={self.dbname} user=postgres "
             f"target_session_attrs={target_session_attrs}")
        return s + "".join(f" {k}={v}" for k, v in extra.items())

    def connect(self, server, **kw):
        """An autocommit psycopg connection to SERVER (self.primary or
        self.standby); the caller closes it."""
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 5)
        return psycopg.connect(server.conninfo, **kw)

    def _one(self, server, sql):
        with self.connect(server) as c:
            return c.execute(sql).fetchone()[0]

    def wait_streaming(self, timeout=30):
        """Wait until the primary has a walsender in state streaming."""
        wait_for(lambda: self._one(self.primary, "SELECT count(*) FROM pg_stat_replication "
                                                 "WHERE state = 'streaming'") > 0,
                 timeout, "the standby to stream from the primary")

    def wait_replayed(self, timeout=30):
        """Wait until the standby has replayed all the primary wrote so far."""
        lsn = self._one(self.primary, "SELECT pg_current_wal_lsn()::text")
        wait_for(lambda: self._one(self.standby, f"SELECT pg_last_wal_replay_lsn() >= "
                                                 f"'{lsn}'::pg_lsn"),
                 timeout, f"the standby to replay up to {lsn}")

    def stop_primary_immediate(self):
        """pg_ctl stop -m immediate, by the postmaster's PID: a crash."""
        self.primary.stop("immediate")

    def promote(self, wait=False, timeout=30):
        """pg_ctl promote on the standby (returns at once unless WAIT)."""
        self.standby._run([os.path.join(self.standby.bindir, "pg_ctl"), "-D",
                           self.standby.datadir, "-W", "promote"], "pg_ctl promote")
        if wait:
            self.wait_promoted(timeout=timeout)

    def wait_promoted(self, timeout=30):
        """Wait until the standby is out of recovery (takes writes)."""
        wait_for(lambda: self._one(self.standby, "SELECT NOT pg_is_in_recovery()"),
                 timeout, "the standby to be promoted")


@pytest.fixture
def pg_standby():
    """A started PgStandbyPair."""
    pair = PgStandbyPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.cleanup()


# ---- DNS: a server of the test's own and a private /etc/resolv.conf -----------------

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
          "AAAA": 28, "SRV": 33, "ANY": 255}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5


class DNSRecord:
    """What the fake server says about one name."""

    def __init__(self, addrs=(), ttl=60, silent=False, rcode=NOERROR, delay=0.0):
        if isinstance(addrs, str):
            addrs = [addrs]
        self.addrs = list(addrs)
        self.ttl = int(ttl)
        self.silent = silent
        self.rcode = rcode
        self.delay = float(delay)


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _parse_question(msg):
    """(qname, qtype, end offset of the question) of a query; ValueError
    when it is not one question with plain labels."""
    if len(msg) < 12:
        raise ValueError("short header")
    _, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        raise ValueError("not one query")
    i, labels = 12, []
    while True:
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, _ = struct.unpack("!HH", msg[i:i + 4])
    return ".".join(labels), qtype, i + 4


class FakeDNS:
    """A DNS server on ADDR:53/udp (default: a 127.77.x.y nobody else uses), in a
    thread of the test process. It answers A (and AAAA, for IPv6 entries)
    queries for the names given with set(), with their TTL; NXDOMAIN for
    any other name; NOERROR with no answer for other types of a known name.

    `silent = True` makes it read every query and answer none (a dead name
    server, the hard case for a resolver); set(name, silent=True) does so
    for one name, set(name, rcode=SERVFAIL) answers an error, and
    set(name, ..., delay=s) answers late. All of it may change at any time.
    Every query is recorded: queries(name) -> [(monotonic time, name, type)].

    wrapper() gives the command prefix that runs a process in a private
    mount namespace where /etc/resolv.conf names only this server (and,
    with hosts=, /etc/hosts is a file of the test's), so that both the
    system resolver and c-ares use it."""

    def __init__(self, directory, addr=None, port=53):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.records = {}
        self.silent = False
        self._queries = []
        self._lock = threading.Lock()
        self._timers = []
        self.sock = self._bind(addr)
        self.addr = self.sock.getsockname()[0]
        self.resolv_path = self.dir / "resolv.conf"
        self.hosts_path = self.dir / "hosts"
        self.write_resolv_conf()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)
        self.thread.start()

    def _bind(self, addr):
        # not 127.0.0.77 itself: another test run on this machine may use it
        candidates = [addr] if addr else \
            [f"127.77.{random.randint(1, 254)}.{random.randint(1, 254)}" for _ in range(50)]
        last = None
        for a in candidates:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((a, self.port))
            except OSError as e:
                s.close()
                last = e
                continue
            s.settimeout(0.1)
            return s
        raise RuntimeError(f"fake DNS: no free address for port {self.port}: {last}")

    # -- configuration (any time)
    def set(self, name, addrs=(), ttl=60, silent=False, rcode=NOERROR, delay=0.0):
        """NAME answers ADDRS (one or a list; IPv4 for A, IPv6 for AAAA)
        with TTL seconds; or never (SILENT), an error RCODE, or late (DELAY)."""
        with self._lock:
            self.records[name.lower().rstrip(".")] = DNSRecord(addrs, ttl, silent, rcode, delay)

    def remove(self, name):
        """NAME is unknown again: NXDOMAIN."""
        with self._lock:
            self.records.pop(name.lower().rstrip("."), None)

    def queries(self, name=None, qtype=None):
        """The queries read so far (of NAME, of QTYPE e.g. 'A'):
        [(monotonic time, name, type name)]."""
        with self._lock:
            return [q for q in self._queries
                    if (name is None or q[1] == name.lower().rstrip("."))
                    and (qtype is None or q[2] == qtype)]

    def clear_queries(self):
        with self._lock:
            self._queries.clear()

    # -- files for the namespace
    def write_resolv_conf(self, options=None, extra=""):
        """DIR/resolv.conf naming only this server; OPTIONS e.g.
        "timeout:1 attempts:1" (glibc and c-ares both read them). Written in
        place: a namespace that has it bind-mounted sees the change."""
        text = f"# written by tests/integration/ha.py\nnameserver {self.addr}\n"
        if options:
            text += f"options {options}\n"
        _write_in_place(self.resolv_path, text + extra)
        return self.resolv_path

    def write_hosts(self, entries=None):
        """DIR/hosts with ENTRIES ({name: address} or a list of (address,
        name...) lines), written in place (a bind mount keeps the inode, so
        this is how to change or empty a mounted /etc/hosts)."""
        lines = ["127.0.0.1\tlocalhost"]
        if isinstance(entries, dict):
            lines += [f"{addr}\t{name}" for name, addr in entries.items()]
        elif entries:
            lines += ["\t".join(e) if not isinstance(e, str) else e for e in entries]
        _write_in_place(self.hosts_path, "\n".join(lines) + "\n")
        return self.hosts_path

    def wrapper(self, hosts=None, options=None):
        """A command prefix: `unshare -m` (mounts private to that process),
        bind-mount our resolv.conf on /etc/resolv.conf (and, with HOSTS,
        a hosts file on /etc/hosts: a dict or list for write_hosts, or True
        for the file as it is), then exec the rest of the command line.
        OPTIONS rewrites resolv.conf's options line (None: leave the file)."""
        if options is not None:
            self.write_resolv_conf(options)
        script = f"mount --bind {shlex.quote(str(self.resolv_path))} /etc/resolv.conf"
        if hosts is not None and hosts is not False:
            if hosts is not True or not self.hosts_path.exists():
                self.write_hosts(None if hosts is True else hosts)
            script += f" && mount --bind {shlex.quote(str(self.hosts_path))} /etc/hosts"
        script += ' && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                "fake-dns-ns"]

    def run(self, argv, hosts=None, timeout=30, **kw):
        """Run ARGV under wrapper(HOSTS) to completion: CompletedProcess
        (text, output captured unless told otherwise)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.wrapper(hosts) + list(argv), timeout=timeout, **kw)

    def query(self, name, qtype="A", timeout=2.0):
        """Ask the server directly: (rcode, [(address, ttl)]); None when it
        does not answer within TIMEOUT."""
        qid = random.randint(0, 0xFFFF)
        msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) \
            + struct.pack("!HH", QTYPES[qtype], 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(msg, (self.addr, self.port))
            try:
                reply = s.recv(4096)
            except socket.timeout:
                return None
        return _parse_answer(reply, qid)

    # -- the server
    def _serve(self):
        while not self._stop:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                self._handle(msg, peer)
            except Exception as e:  # noqa: BLE001 - a bad packet must not stop the server
                print(f"fake DNS: {peer}: {e!r}", file=sys.stderr)

    def _handle(self, msg, peer):
        try:
            qname, qtype, qend = _parse_question(msg)
        except (ValueError, IndexError, struct.error):
            return
        key = qname.lower()
        with self._lock:
            self._queries.append((time.monotonic(), key, QTYPE_NAMES.get(qtype, str(qtype))))
            rec = self.records.get(key)
            silent = self.silent or (rec is not None and rec.silent)
        if silent:
            return
        qid, qflags = struct.unpack("!HH", msg[:4])
        answers = []
        if rec is None:
            rcode = NXDOMAIN
        else:
            rcode = rec.rcode
            if rcode == NOERROR:
                for a in rec.addrs:
                    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                    if (qtype, fam) in ((1, socket.AF_INET), (28, socket.AF_INET6)):
                        rdata = socket.inet_pton(fam, a)
                        answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, rec.ttl,
                                                   len(rdata)) + rdata)
        # QR, the query's opcode and RD, AA, RA, RCODE
        flags = 0x8000 | (qflags & 0x7900) | 0x0400 | 0x0080 | rcode
        reply = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0) \
            + msg[12:qend] + b"".join(answers)
        if rec is not None and rec.delay > 0:
            t = threading.Timer(rec.delay, self._send, (reply, peer))
            t.daemon = True
            self._timers.append(t)
            t.start()
        else:
            self._send(reply, peer)

    def _send(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass

    def close(self):
        self._stop = True
        for t in self._timers:
            t.cancel()
        self.thread.join(2)
        self.sock.close()


def _write_in_place(path, text):
    """Write TEXT into PATH keeping its inode (a bind mount of it stays)."""
    with open(path, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write(text)
    os.chmod(path, 0o644)


def _parse_answer(msg, qid):
    rid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    if rid != qid:
        raise AssertionError(f"reply id {rid} for query {qid}")
    i = 12
    for _ in range(qd):
        while msg[i]:
            i += 1 + msg[i]
        i += 5
    out = []
    for _ in range(an):
        if msg[i] & 0xC0:
            i += 2
        else:
            while msg[i]:
                i += 1 + msg[i]
            i += 1
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[i:i + 10])
        i += 10
        rdata = msg[i:i + rdlen]
        i += rdlen
        if rtype in (1, 28):
            fam = socket.AF_INET if rtype == 1 else socket.AF_INET6
            out.append((socket.inet_ntop(fam, rdata), ttl))
    return flags & 0xF, out


@pytest.fixture
def fake_dns(tmp_path):
    """A running FakeDNS (files in tmp_path/dns)."""
    dns = FakeDNS(tmp_path / "dns")
    try:
        yield dns
    finally:
        dns.close()


# ---- TLS: a test CA and a PostgreSQL server with ssl=on ----------------------------

class TestCA:
    """A throwaway certificate authority (EC P-256, made with openssl) in
    DIRECTORY: `ca_file` is its certificate, readable by anyone."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, directory, cn="taskworkerd test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.ca_file = self.dir / "ca.crt"
        self.key_file = self.dir / "ca.key"
        self._openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256",
                      "-days", "2", "-subj", f"/CN={cn}",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      "-keyout", self.key_file, "-out", self.ca_file)
        self.key_file.chmod(0o600)
        self.ca_file.chmod(0o644)

    def _openssl(self, *args):
        argv = ["openssl", *[str(a) for a in args]]
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed: {res.stderr}")
        return res.stdout

    def issue(self, name, dns_names=None, ips=(), directory=None):
        """A server certificate for NAME (CN), with DNS_NAMES (default
        [NAME]) and IPS as subjectAltName; (cert path, key path)."""
        d = Path(directory) if directory else self.dir
        dns_names = [name] if dns_names is None else list(dns_names)
        cert, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
        ext = d / f"{name}.ext"
        sans = [f"DNS:{n}" for n in dns_names] + [f"IP:{a}" for a in ips]
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n"
                       + (f"subjectAltName={','.join(sans)}\n" if sans else ""))
        self._openssl("req", "-new", "-nodes", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_file, "-CAkey",
                      self.key_file, "-CAcreateserial", "-days", "2", "-sha256",
                      "-extfile", ext, "-out", cert)
        key.chmod(0o600)
        return cert, key


class PgTlsServer(twservers.PostgresServer):
    """A PostgreSQL server with ssl=on, its certificate for NAME (default
    pg.test; no IP in it) signed by a TestCA of its own (`ca`, `ca_file`).
    Plain connections are still accepted; NAME is not resolved by anything
    here: map it to 127.0.0.1 with fake_dns, or give hostaddr=."""

    def __init__(self, name="pg.test", **kw):
        super().__init__(**kw)
        self.name = name
        self.ca = TestCA(tempfile.mkdtemp(prefix="twtls-"))

    @property
    def ca_file(self):
        return str(self.ca.ca_file)

    def _initdb(self):
        super()._initdb()
        cert, key = self.ca.issue(self.name, directory=self.dir)
        pw = pwd.getpwnam("postgres") if self.as_root else None
        for f in (cert, key):
            if pw:
                os.chown(f, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# tests/integration/ha.py: TLS\n"
                    "ssl = on\n"
                    f"ssl_cert_file = '{cert}'\n"
                    f"ssl_key_file = '{key}'\n")

    def conninfo_verify_full(self, host=None, hostaddr=None, **extra):
        """A conninfo that checks the server's certificate against the test
        CA and HOST (default NAME) against its names (sslmode=verify-full).
        HOST must resolve to 127.0.0.1, unless HOSTADDR says where to go."""
        s = (f"host={host or self.name} port={self.port} dbname={self.dbname} "
             f"user=postgres sslmode=verify-full sslrootcert={self.ca_file}")
        if hostaddr:
            s += f" hostaddr={hostaddr}"
        return s + "".join(f" {k}={v}" for k, v in extra.items())

    def cleanup(self):
        super().cleanup()
        shutil.rmtree(self.ca.dir, ignore_errors=True)


@pytest.fixture
def pg_tls():
    """A started PgTlsServer for pg.test."""
    server = PgTlsServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
