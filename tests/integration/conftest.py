"""Fixtures for the integration tests: a throwaway redis-server and
PostgreSQL per session, a clean state per test, and the real taskworkerd.

Run from the repository root:

    /usr/bin/python3 -m pytest tests/integration

Environment:
    TASKWORKERD_BIN       the binary (default: build/daemon/taskworkerd)
    TASKWORKERD_WRAPPER   a command prefix, e.g.
                          "valgrind --error-exitcode=99 --leak-check=full"
    TASKWORKERD_TIMEOUT_FACTOR  multiplies every timeout (default 1,
                          10 with a wrapper)
"""

import atexit
import os
import shlex
import signal
import socket
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
sys.path.insert(0, str(REPO / "scripts"))
import twservers  # noqa: E402
# Fixtures for failover and name-resolution tests (tests/integration/ha.py).
from ha import fake_dns, pg_standby, pg_tls, sentinel_cluster  # noqa: E402,F401
# An nginx of the test's own for the http handler (tests/integration/nginxfix.py).
from nginxfix import nginx  # noqa: E402,F401
from httpserv import http_certs, http_server  # noqa: E402,F401  (tests/integration/httpserv.py)

BIN = os.environ.get("TASKWORKERD_BIN") or str(REPO / "build" / "daemon" / "taskworkerd")
WRAPPER = shlex.split(os.environ.get("TASKWORKERD_WRAPPER", ""))
TIMEOUT_FACTOR = float(os.environ.get("TASKWORKERD_TIMEOUT_FACTOR")
                       or (10 if WRAPPER else 1))
WORKER_ID = "itest"
READY_TIMEOUT = 15.0
VALGRIND_EXIT = 99

EX_OK, EX_USAGE, EX_SOFTWARE, EX_CONFIG = 0, 64, 70, 78


def scaled(seconds):
    return seconds * TIMEOUT_FACTOR


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes several seconds (still run by default)")
    # SIGTERM (e.g. from timeout(1)) unwinds like Ctrl-C, so that fixtures
    # and the atexit handlers stop every server and daemon by PID.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def _sigterm_to_interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt("SIGTERM")


_live_daemons = set()


@atexit.register
def _kill_live_daemons():
    """Daemons a killed test run left behind: SIGKILL them by PID."""
    for proc in list(_live_daemons):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def node_failed(request):
    node = request.node
    return any(getattr(node, "rep_" + when, None) is not None
               and getattr(node, "rep_" + when).failed
               for when in ("setup", "call"))


# ---- waiting ------------------------------------------------------------------

def wait_until(pred, timeout, what, daemon=None, interval=0.02):
    """Poll PRED until it returns something true; fail after TIMEOUT
    (scaled) seconds, or at once when DAEMON exits meanwhile."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = pred()
        if value:
            return value
        if daemon is not None and daemon.exited():
            raise AssertionError(f"taskworkerd exited with {daemon.returncode} "
                                 f"while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):g}s waiting for {what}")
        time.sleep(interval)


def wait_reloaded(d, mark):
    """Wait for the daemon D's RELOADING=1 after the notify MARK, then its
    READY=1: a reload sent with d.reload() has been applied."""
    i = d.notify.wait_for(lambda line: line == "RELOADING=1", 10, "RELOADING=1",
                          since=mark, daemon=d)
    d.notify.wait_for(lambda line: line == "READY=1", 10, "READY=1 after RELOADING=1",
                      since=i + 1, daemon=d)


# ---- the config file ------------------------------------------------------------

class Raw(str):
    """A value written into the config file as it is (for wrong types)."""


def render_value(v):
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}L" if not -2**31 <= v < 2**31 else str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(render_value(x) for x in v) + "]"
    raise TypeError(f"cannot render {v!r}")


def render_config(cfg):
    """{group: {key: value}} as libconfig text; a None value is left out.
    A list of dicts (limits) is a list of groups."""
    lines = ["# written by tests/integration/conftest.py"]
    for group, keys in cfg.items():
        if isinstance(keys, (list, tuple)):
            entries = ["{ " + " ".join(f"{k} = {render_value(v)};"
                                       for k, v in e.items() if v is not None) + " }"
                       for e in keys]
            lines.append(f"{group}: ( " + ", ".join(entries) + " );")
            continue
        lines.append(f"{group}: {{")
        for key, value in keys.items():
            if value is not None:
                lines.append(f"  {key} = {render_value(value)};")
        lines.append("};")
    return "\n".join(lines) + "\n"


def merge_config(base, overrides):
    cfg = {g: (list(keys) if isinstance(keys, (list, tuple)) else dict(keys))
           for g, keys in base.items()}
    for group, keys in overrides.items():
        if keys is None:
            cfg.pop(group, None)
            continue
        if isinstance(keys, (list, tuple)):
            cfg[group] = [dict(e) for e in keys]
            continue
        cfg.setdefault(group, {}).update(keys)
    return cfg


# ---- sd_notify ----------------------------------------------------------------

class NotifyListener:
    """An AF_UNIX datagram socket for NOTIFY_SOCKET; a thread collects
    every datagram as a list of lines."""

    def __init__(self, directory, name="notify"):
        path = os.path.join(directory, f"{name}.sock")
        self._tmpdir = None
        if len(path.encode()) > 100:  # sun_path is 108 bytes
            self._tmpdir = tempfile.mkdtemp(prefix="twnotify-")
            path = os.path.join(self._tmpdir, f"{name}.sock")
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages = []  # [(monotonic time, [lines])]
        self.cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            lines = data.decode(errors="replace").splitlines()
            with self.cond:
                self.messages.append((time.monotonic(), lines))
                self.cond.notify_all()

    def lines(self, since=0):
        with self.cond:
            return [line for _, lines in self.messages[since:] for line in lines]

    def mark(self):
        with self.cond:
            return len(self.messages)

    def find(self, pred, since=0):
        """Index of the first datagram at or after SINCE with a line
        matching PRED, or None."""
        with self.cond:
            for i in range(since, len(self.messages)):
                if any(pred(line) for line in self.messages[i][1]):
                    return i
        return None

    def wait_for(self, pred, timeout, what, since=0, daemon=None):
        """Wait for a datagram with a line matching PRED; its index."""
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while True:
                for i in range(since, len(self.messages)):
                    if any(pred(line) for line in self.messages[i][1]):
                        return i
                if daemon is not None and daemon.exited():
                    raise AssertionError(f"taskworkerd exited with {daemon.returncode} "
                                         f"while waiting for {what}; notify: "
                                         f"{self.lines()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} from taskworkerd within "
                                         f"{scaled(timeout):g}s; notify: {self.lines()}")
                self.cond.wait(min(left, 0.1))

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self._tmpdir:
            os.rmdir(self._tmpdir)


def is_serving(line):
    return line.startswith("STATUS=serving")


# ---- the daemon -----------------------------------------------------------------

class Daemon:
    """One run of taskworkerd with its config file, log and notify socket."""

    def __init__(self, directory, name, config, config_path=None, wrapper=()):
        self.dir = Path(directory)
        self.wrapper = list(wrapper)  # a prefix of this daemon's own, before WRAPPER
        self.name = name
        self.config = config
        self.config_path = Path(config_path or self.dir / f"{name}.conf")
        self.log_path = self.dir / f"{name}.log"
        self.notify = NotifyListener(str(self.dir), f"{name}.notify")
        self.proc = None
        self.killed_by_us = False
        self.write_config(config)

    # config
    def write_config(self, config=None, text=None):
        """Write CONFIG (a dict) or TEXT into the config file."""
        if text is None:
            self.config = config if config is not None else self.config
            text = render_config(self.config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)
        return self.config_path

    # process
    def command(self, *args):
        return self.wrapper + WRAPPER + [BIN, "-v", "-c", str(self.config_path), *args]

    def start(self, *args, wait_ready=True):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        with open(self.log_path, "ab") as log:
            log.write(f"### {shlex.join(self.command(*args))}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.dir, start_new_session=True)
        _live_daemons.add(self.proc)
        self.killed_by_us = False
        if wait_ready:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, since=0, timeout=READY_TIMEOUT):
        """Wait for a STATUS=serving... datagram (the readiness check)."""
        return self.notify.wait_for(is_serving, timeout, "STATUS=serving", since=since,
                                    daemon=self)

    def exited(self):
        return self.proc is not None and self.proc.poll() is not None

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if sig == signal.SIGKILL:
            self.killed_by_us = True
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for the exit; its status. Fails (after a SIGKILL) on timeout."""
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"taskworkerd (pid {self.pid}) did not exit within "
                                 f"{scaled(timeout):g}s; killed it")

    def terminate(self, sig=signal.SIGTERM, timeout=30):
        """Send SIG and wait for the exit; its status."""
        self.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        """kill -9, as a crash."""
        self.send_signal(signal.SIGKILL)
        self.proc.wait()

    def reload(self, config=None, text=None):
        """Write a new config, SIGHUP, return the notify mark from before."""
        if config is not None or text is not None:
            self.write_config(config, text)
        mark = self.notify.mark()
        self.send_signal(signal.SIGHUP)
        return mark

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self):
        return self.log().splitlines()

    # teardown
    def shutdown(self):
        """Stop it if still running (SIGTERM, SIGKILL if stuck); the
        problems found: a crash, a hang, sanitizer or valgrind reports."""
        problems = []
        if self.proc is None:
            self.notify.close()
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            shutdown_ms = self.config.get("worker", {}).get("shutdown_timeout_ms", 30000)
            limit = scaled(shutdown_ms / 1000 + 10)
            try:
                rc = self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.killed_by_us = True
                self.proc.kill()
                self.proc.wait()
                problems.append(f"did not exit within {limit:g}s of SIGTERM at teardown")
            else:
                if rc != EX_OK:
                    problems.append(f"exited with {rc} after SIGTERM at teardown")
        _live_daemons.discard(self.proc)
        rc = self.proc.returncode
        if rc is not None and rc < 0 and not self.killed_by_us:
            problems.append(f"died of signal {signal.Signals(-rc).name}")
        if WRAPPER and rc == VALGRIND_EXIT:
            problems.append("valgrind reported errors (exit 99)")
        log = self.log()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                       "Invalid read", "Invalid write", "uninitialised value"):
            if marker in log:
                problems.append(f"log contains {marker!r}")
        self.notify.close()
        return problems


# ---- servers and state ----------------------------------------------------------

class Servers:
    def __init__(self, redis_server, pg_server):
        self.redis = redis_server
        self.pg = pg_server


@pytest.fixture(scope="session")
def servers():
    rs = pg = None
    try:
        rs = twservers.RedisServer().start()
        pg = twservers.PostgresServer().start()
        yield Servers(rs, pg)
    finally:
        if rs is not None:
            rs.cleanup()
        if pg is not None:
            pg.cleanup()


class TW:
    """The test's view of Redis and PostgreSQL, with helpers."""

    def __init__(self, servers):
        self.servers = servers
        self.r = redis.Redis(host="127.0.0.1", port=servers.redis.port,
                             decode_responses=True)
        self.rb = redis.Redis(host="127.0.0.1", port=servers.redis.port)
        self.db = psycopg.connect(servers.pg.conninfo, autocommit=True)

    def reconnect_db(self):
        """A new session, e.g. after PostgreSQL restarted."""
        self.db.close()
        self.db = psycopg.connect(self.servers.pg.conninfo, autocommit=True)

    def close(self):
        self.r.close()
        self.rb.close()
        self.db.close()

    def reset(self):
        self.r.flushall()
        self.db.execute("TRUNCATE task RESTART IDENTITY")

    # keys
    @staticmethod
    def processing(queue="tasks", worker=WORKER_ID):
        return f"{queue}:processing:{worker}"

    @staticmethod
    def dead(queue="tasks"):
        return f"{queue}:dead"

    def lrange(self, key):
        """The members of a list, or of a sorted set in score order (a
        processing set: in the order its ids were taken)."""
        kind = self.r.type(key)
        if kind in (b"list", "list"):
            return self.r.lrange(key, 0, -1)
        return self.r.zrange(key, 0, -1) if ":processing:" in key else \
            self.r.lrange(key, 0, -1)

    def ids_in(self, key):
        return [int(x) for x in self.lrange(key)]

    def llen(self, key):
        kind = self.r.type(key)
        if kind in (b"list", "list"):
            return self.r.llen(key)
        return self.r.zcard(key) if ":processing:" in key else self.r.llen(key)

    def hold(self, ids, worker=WORKER_ID, queue="tasks"):
        """Puts IDS in WORKER's processing set by hand, after whatever it
        holds, as if that worker had taken them."""
        key = self.processing(queue, worker)
        top = self.r.zrange(key, -1, -1, withscores=True)
        base = top[0][1] + 1 if top else 1
        self.r.zadd(key, {v: base + i for i, v in enumerate(ids)})

    # rows
    def insert(self, n, status="pending", table="task"):
        rows = self.db.execute(
            f"INSERT INTO {table} (name, status) SELECT 'task-' || g, %s "
            "FROM generate_series(1, %s) g ORDER BY g RETURNING id", (status, n)).fetchall()
        return sorted(r[0] for r in rows)

    def push(self, ids, queue="tasks"):
        ids = list(ids)
        with self.r.pipeline(transaction=False) as p:
            for i in range(0, len(ids), 1000):
                p.rpush(queue, *ids[i:i + 1000])
            p.execute()

    def statuses(self, ids=None):
        rows = self.db.execute("SELECT id, status FROM task ORDER BY id").fetchall()
        st = dict(rows)
        return st if ids is None else {i: st.get(i) for i in ids}

    def count(self, status, ids=None):
        if ids is None:
            return self.db.execute("SELECT count(*) FROM task WHERE status = %s",
                                   (status,)).fetchone()[0]
        return self.db.execute("SELECT count(*) FROM task WHERE status = %s AND id = ANY(%s)",
                               (status, list(ids))).fetchone()[0]

    def completed(self, ids=None):
        """The completed ids (of IDS), ascending."""
        if ids is None:
            rows = self.db.execute("SELECT id FROM task WHERE status = 'completed' "
                                   "ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT id FROM task WHERE status = 'completed' "
                                   "AND id = ANY(%s) ORDER BY id", (list(ids),)).fetchall()
        return [r[0] for r in rows]

    def wait_completed(self, ids, timeout, daemon=None):
        ids = list(ids)
        wait_until(lambda: self.count("completed", ids) == len(ids), timeout,
                   f"{len(ids)} tasks to complete "
                   f"(so far {self.count('completed', ids)})", daemon=daemon)

    def wait_empty(self, key, timeout=5, daemon=None):
        wait_until(lambda: self.llen(key) == 0, timeout,
                   f"{key} to become empty (now {self.lrange(key)[:20]})", daemon=daemon)


@pytest.fixture
def aof_redis():
    """A redis-server of its own that keeps its data over a crash."""
    rs = twservers.RedisServer(extra_args=["--appendonly", "yes",
                                           "--appendfsync", "always"]).start()
    yield rs
    rs.cleanup()


@pytest.fixture
def redis_factory():
    """Start a redis-server of its own with extra arguments."""
    started = []

    def make(*extra_args):
        rs = twservers.RedisServer(extra_args=list(extra_args))
        started.append(rs)
        return rs.start()
    yield make
    for rs in started:
        rs.cleanup()


@pytest.fixture
def tw(servers):
    t = TW(servers)
    t.reset()
    yield t
    t.close()


def base_config(servers):
    return {
        "redis": {
            "host": "127.0.0.1",
            "port": servers.redis.port,
            "queues": ["tasks"],
        },
        "postgres": {
            "conninfo": servers.pg.conninfo,
            "connections": 2,
        },
        "worker": {
            "id": WORKER_ID,
            "delay_ms": 0,
            "concurrency": 50,
            "shutdown_timeout_ms": 5000,
            "missing_row_grace_ms": 200,
        },
        "handler": {"type": "none"},
        "log": {"level": "debug"},
    }


@pytest.fixture
def taskworkerd(request, tmp_path, servers, tw):
    """A factory: taskworkerd(worker={...}, ..., start=True) -> Daemon.

    Keyword arguments are config groups merged into the base config;
    wrapper= is a command prefix for this daemon alone (e.g.
    fake_dns.wrapper()), put before TASKWORKERD_WRAPPER.
    Every daemon is stopped by PID at the end; on failure its log is
    printed, and a crash, a hang at SIGTERM or a sanitizer/valgrind
    report fails the test."""
    daemons = []

    def make(start=True, wait_ready=True, args=(), name=None, config_path=None,
             wrapper=(), **overrides):
        name = name or ("taskworkerd" if not daemons else f"taskworkerd-{len(daemons) + 1}")
        cfg = merge_config(base_config(servers), overrides)
        d = Daemon(tmp_path, name, cfg, config_path=config_path, wrapper=wrapper)
        daemons.append(d)
        if start:
            d.start(*args, wait_ready=wait_ready)
        return d

    make.base_config = lambda: base_config(servers)
    yield make

    problems = []
    for d in daemons:
        problems += [f"{d.name} (pid {d.proc.pid if d.proc else '-'}): {p}"
                     for p in d.shutdown()]
    if problems or node_failed(request):
        for d in daemons:
            lines = d.log_lines()
            print(f"===== {d.log_path} ({len(lines)} lines"
                  f"{', last 300' if len(lines) > 300 else ''}) =====")
            print("\n".join(lines[-300:]))
            print(f"===== notify: {d.notify.lines()}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def run_bin(tmp_path):
    """Run the binary to completion (for -t, -V, bad options): CompletedProcess."""
    def run(*args, timeout=20, env=None):
        return subprocess.run(WRAPPER + [BIN, *args], capture_output=True, text=True,
                              timeout=scaled(timeout), stdin=subprocess.DEVNULL,
                              cwd=tmp_path, env=env)
    return run


# ---- completion order -----------------------------------------------------------

@pytest.fixture
def completion_order(tw):
    """Adds task.done_seq, set from a sequence when a row's status turns to
    'completed'; returns a function giving the ids in completion order."""
    tw.db.execute("""
        CREATE SEQUENCE tw_done_seq;
        ALTER TABLE task ADD COLUMN done_seq bigint;
        CREATE FUNCTION tw_set_done_seq() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
            NEW.done_seq := nextval('tw_done_seq');
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER tw_done_seq BEFORE UPDATE ON task
          FOR EACH ROW EXECUTE FUNCTION tw_set_done_seq();
    """)

    def order():
        return [r[0] for r in tw.db.execute(
            "SELECT id FROM task WHERE done_seq IS NOT NULL ORDER BY done_seq")]
    yield order
    tw.db.execute("""
        DROP TRIGGER IF EXISTS tw_done_seq ON task;
        DROP FUNCTION IF EXISTS tw_set_done_seq();
        ALTER TABLE task DROP COLUMN IF EXISTS done_seq;
        DROP SEQUENCE IF EXISTS tw_done_seq;
    """)


def line_number(text, needle):
    """1-based number of the first line of TEXT containing NEEDLE."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise ValueError(needle)


def log_has_line(log, *words):
    """A log line that contains every one of WORDS (case-insensitive)."""
    for line in log.splitlines():
        low = line.lower()
        if all(w.lower() in low for w in words):
            return line
    return None


# ---- handlers, retries, scheduled ids and dead reasons ------------------------------

import datetime  # noqa: E402
import re  # noqa: E402
import textwrap  # noqa: E402

# A reason in QUEUE:dead:reason: "2026-12-02T01:02:03.456Z attempt 5/5: exit 3".
REASON_RE = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (.*)"


def write_script(directory, name, body, interpreter="/bin/sh"):
    """An executable script DIRECTORY/NAME: a #! line for INTERPRETER and
    BODY (dedented). Returns its absolute Path."""
    path = Path(directory).resolve() / name
    path.write_text(f"#!{interpreter}\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(0o755)
    return path


def exec_handler(command, **keys):
    """The `handler` group for an exec handler; COMMAND is a path or a list."""
    if isinstance(command, (str, Path)):
        command = [command]
    return {"type": "exec", "command": [str(c) for c in command], **keys}


def fast_retry(attempts=1, min_ms=50, max_ms=200):
    """The `retry` group with a short backoff."""
    return {"attempts": attempts, "min_ms": min_ms, "max_ms": max_ms}


def redis_now_ms(tw):
    """The Redis server's clock in ms since the epoch (as Q:retry and
    Q:scheduled use it)."""
    sec, usec = tw.r.time()
    return sec * 1000 + usec // 1000


def zset(tw, key):
    """A sorted set as {member: score}."""
    return dict(tw.r.zrange(key, 0, -1, withscores=True))


def hash_of(tw, key):
    return tw.r.hgetall(key)


def dead_reasons(tw, queue="tasks"):
    """QUEUE:dead:reason as {value: reason}."""
    return tw.r.hgetall(f"{queue}:dead:reason")


def split_reason(value):
    """A dead reason's (timestamp, text); fails unless it starts with an
    ISO 8601 UTC timestamp within a few minutes of now."""
    m = re.fullmatch(REASON_RE, value or "", re.S)
    assert m, f"reason {value!r} is not '<ISO 8601 UTC time> <text>'"
    stamp = m.group(1)
    when = datetime.datetime.strptime(stamp.split(".")[0], "%Y-%m-%dT%H:%M:%S")
    when = when.replace(tzinfo=datetime.timezone.utc)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    assert skew < 300, f"reason time {stamp} is {skew:.0f}s away from now"
    return stamp, m.group(2)


def reason_text(tw, value, queue="tasks"):
    """The text of VALUE's reason in QUEUE:dead:reason, after the timestamp."""
    reason = tw.r.hget(f"{queue}:dead:reason", str(value))
    assert reason is not None, \
        f"no field {value!r} in {queue}:dead:reason: {dead_reasons(tw, queue)}"
    return split_reason(reason)[1]


def wait_dead(tw, values, timeout, daemon=None, queue="tasks"):
    """Wait until every one of VALUES is in QUEUE:dead."""
    want = {str(v) for v in values}
    wait_until(lambda: want <= set(tw.lrange(f"{queue}:dead")), timeout,
               f"{sorted(want)[:10]} in {queue}:dead (now {tw.lrange(f'{queue}:dead')[:10]}, "
               f"retry {zset(tw, f'{queue}:retry')}, statuses "
               f"{tw.statuses([int(v) for v in want if v.isdigit()])})",
               daemon=daemon)


def read_lines(path):
    """The lines of a file the handler writes; [] while it does not exist."""
    try:
        return Path(path).read_text(errors="surrogateescape").splitlines()
    except FileNotFoundError:
        return []


def rss_kib(pid):
    """VmRSS of PID in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class ProcRef:
    """One process, known by PID and start time (a reused PID is another
    process). A zombie counts as gone, and is reaped when it is ours (the
    test process is a subreaper, see twservers.become_subreaper)."""

    def __init__(self, pid):
        self.pid = int(pid)
        st = self._stat()
        self.start = st[1] if st else None

    def _stat(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0], fields[19], int(fields[1])  # state, starttime, ppid

    def alive(self):
        st = self._stat()
        if st is None or self.start is None or st[1] != self.start:
            return False
        if st[0] in ("Z", "X"):
            try:
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
        return True

    def kill(self):
        """SIGKILL it by PID if it is still the same process."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __repr__(self):
        return f"pid {self.pid}"


@pytest.fixture
def spawned():
    """A list to add ProcRefs of handler processes to; any still alive at
    the end of the test is SIGKILLed by PID (a daemon that failed to end
    them must not leave them behind)."""
    procs = []
    yield procs
    for p in procs:
        p.kill()


@pytest.fixture
def sql_teardown(tw):
    """A list of SQL statements run (in reverse order) after the test, after
    the daemons have stopped if this fixture is requested before
    `taskworkerd`: for the columns, triggers and functions a test adds."""
    statements = []
    yield statements
    for sql in reversed(statements):
        tw.db.execute(sql)


@pytest.fixture
def task_columns(tw, sql_teardown):
    """add(name, type): ALTER TABLE task ADD COLUMN, dropped after the test."""
    def add(name, sqltype="text"):
        quoted = '"' + name.replace('"', '""') + '"'
        tw.db.execute(f"ALTER TABLE task ADD COLUMN {quoted} {sqltype}")
        sql_teardown.append(f"ALTER TABLE task DROP COLUMN IF EXISTS {quoted}")
    return add


def refuse_completing(tw, sql_teardown, bad):
    """A trigger that raises when row BAD is set to completed (and only
    then): its own UPDATE fails, every other row's goes through."""
    tw.db.execute(f"""
        CREATE FUNCTION tw_no_completing() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'no completing %', NEW.id;
        END $$;
        CREATE TRIGGER tw_no_completing BEFORE UPDATE ON task FOR EACH ROW
          WHEN (NEW.status = 'completed' AND NEW.id = {bad})
          EXECUTE FUNCTION tw_no_completing();
    """)
    sql_teardown.append("DROP FUNCTION IF EXISTS tw_no_completing()")
    sql_teardown.append("DROP TRIGGER IF EXISTS tw_no_completing ON task")


def read_members(pipe, key):
    """Queues on PIPE the read of KEY's ids: a processing set (sorted set,
    in the order taken) or a list (queues, dead lists)."""
    if ":processing:" in key:
        pipe.zrange(key, 0, -1)
    else:
        pipe.lrange(key, 0, -1)


def count_members(pipe, key):
    """Queues on PIPE the size of KEY, as read_members reads it."""
    if ":processing:" in key:
        pipe.zcard(key)
    else:
        pipe.llen(key)
