#!/usr/bin/python3
"""twservers: throwaway redis-server and PostgreSQL 15 servers for tests and demos.

Each server lives in its own temporary directory, listens on a free port on
127.0.0.1, is waited for until it answers, and is stopped by its PID (never
by name) at the end.

As a module:

    redis = RedisServer(); redis.start()        # redis.port, redis.restart()
    pg = PostgresServer(); pg.start()           # pg.conninfo, pg.restart('fast')
    ...
    redis.cleanup(); pg.cleanup()               # stop and remove the dirs

By default both are set up for speed, as the tests want: redis-server with
no persistence (save "", appendonly no), PostgreSQL with fsync=off. With
durable=True (RedisServer(durable=True), PostgresServer(durable=True), or
`start --durable`) each keeps its own defaults instead: redis-server's RDB
snapshot schedule with appendonly no (as Debian ships it), PostgreSQL with
fsync, synchronous_commit and full_page_writes on. scripts/bench uses that.

As a command:

    /usr/bin/python3 scripts/twservers.py start --dir DIR
        starts both, writes DIR/env (shell lines: REDIS_PORT=..,
        PG_CONNINFO='..', the PIDs and dirs) and exits, leaving them running
    /usr/bin/python3 scripts/twservers.py stop --dir DIR
        stops them by the PIDs recorded in DIR/env and removes their dirs

PostgreSQL refuses to run as root: as root the cluster directory belongs to
the user `postgres` and initdb/pg_ctl run through `runuser -u postgres --`.
"""

import argparse
import atexit
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("TW_PG_BIN", "/usr/lib/postgresql/15/bin")
REDIS_SERVER = os.environ.get("TW_REDIS_SERVER", "redis-server")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(REPO, "conf", "schema.sql")

# Used only while conf/schema.sql is missing or empty; SPEC.md's table.
FALLBACK_SCHEMA = """
CREATE TABLE task (
  id     bigserial PRIMARY KEY,
  name   varchar(255) NOT NULL,
  status varchar(255) NOT NULL DEFAULT 'pending'
);
"""

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ServerError(RuntimeError):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def kill_pid(pid, sig, expect=None, timeout=STOP_TIMEOUT):
    """Send SIG to PID and wait until it is gone; SIGKILL after TIMEOUT.

    EXPECT, when given, must occur in the process's command line: a PID
    that was reused by an unrelated process is left alone.
    Returns True when the process is gone.
    """
    if not pid or not pid_alive(pid):
        return True
    if expect is not None and expect not in pid_cmdline(pid):
        print(f"twservers: pid {pid} is not ours any more ({pid_cmdline(pid)!r}), "
              "not signalling it", file=sys.stderr)
        return True
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    if _wait_gone(pid, timeout):
        return True
    print(f"twservers: pid {pid} still there after {timeout}s, sending SIGKILL",
          file=sys.stderr)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return _wait_gone(pid, 10)


def _reap(pid):
    try:  # a child of ours (or of us as subreaper) must be reaped
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        _reap(pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    _reap(pid)
    return True


def become_subreaper():
    """Adopt orphaned descendants (the postmaster pg_ctl leaves behind), so
    that we can reap them: no zombies stay behind where init does not reap."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _clean_env():
    """The environment without PG* and REDIS* variables that could leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


class RedisServer:
    """A redis-server in the foreground, on 127.0.0.1, with its own dir."""

    def __init__(self, dir=None, port=None, extra_args=(), binary=REDIS_SERVER,
                 durable=False):
        if dir is None:
            self.dir = tempfile.mkdtemp(prefix="twredis-")
            self._own_dir = True
        else:
            os.makedirs(dir, exist_ok=True)
            self.dir = os.path.abspath(dir)
            self._own_dir = False
        self.port = port
        self.extra_args = list(extra_args)
        self.binary = binary
        self.durable = durable  # True: redis-server's own persistence defaults
        self.proc = None
        self.pid = None
        self.host = "127.0.0.1"
        self.logfile = os.path.join(self.dir, "redis.log")
        self._registered = False

    def argv(self):
        # durable: no --save/--appendonly, so redis-server's defaults apply
        # (RDB snapshots "3600 1 300 100 60 10000", appendonly no: what
        # Debian's /etc/redis/redis.conf leaves them at).
        persistence = [] if self.durable else ["--save", "", "--appendonly", "no"]
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"] \
            + persistence + ["--dir", self.dir, "--daemonize", "no"] + self.extra_args

    def start(self, timeout=START_TIMEOUT, detach=False):
        """Start it and wait until it answers PING. DETACH: outlive us."""
        if self.running():
            return self
        pick_port = self.port is None
        for attempt in range(5):
            if pick_port:
                self.port = free_port()
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, cwd=self.dir,
                    start_new_session=True, env=_clean_env())
            self.pid = self.proc.pid
            if self._wait_ready(timeout):
                break
            exited = self.proc.poll() is not None
            self.stop()
            # a new port only when it died at once (the port was taken)
            if not (pick_port and exited) or attempt == 4:
                raise ServerError(f"redis-server on port {self.port} did not start:\n"
                                  + _tail(self.logfile))
        if not detach and not self._registered:
            atexit.register(self.cleanup)
            self._registered = True
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def ping(self):
        """True when the server answers PING: PONG, or NOAUTH when it wants
        a password; not while it is still LOADING its data."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = s.recv(256)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH", b"-WRONGPASS"))

    def running(self):
        return self.pid is not None and pid_alive(self.pid)

    def _reap(self):
        if self.proc is not None:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self, sig=signal.SIGTERM):
        """Stop it by PID (SIGTERM: it writes its AOF if it has one)."""
        if self.pid is None:
            return
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            self._reap()
        else:
            kill_pid(self.pid, sig, expect=f":{self.port}")
        self.pid = None

    def kill(self):
        """Crash it: SIGKILL, no chance to write anything."""
        self.stop(signal.SIGKILL)

    def restart(self, timeout=START_TIMEOUT):
        """Stop it and start it again on the same port and dir."""
        self.stop()
        self.start(timeout=timeout)
        return self

    def cleanup(self):
        self.stop()
        if self._own_dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kw):
        import redis  # only when asked: the module itself needs no redis-py
        return redis.Redis(host=self.host, port=self.port, **kw)


class PostgresServer:
    """A PostgreSQL 15 cluster in a temp dir, with a database `tasks`."""

    SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
               "immediate": signal.SIGQUIT}

    def __init__(self, basedir=None, port=None, dbname="tasks",
                 schema_file=SCHEMA_FILE, bindir=PG_BIN, durable=False):
        self.bindir = bindir
        self.durable = durable  # True: fsync etc. at PostgreSQL's defaults
        self.dbname = dbname
        self.schema_file = schema_file
        self.port = port
        self.host = "127.0.0.1"
        self.as_root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="twpg-", dir=basedir)
        self.datadir = os.path.join(self.dir, "data")
        self.sockdir = self.dir
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.pid = None
        self._initialized = False
        self._registered = False
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)

    @property
    def conninfo(self):
        return f"host={self.host} port={self.port} dbname={self.dbname} user=postgres"

    def _as_owner(self, argv):
        if self.as_root:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, what, owner=True, **kw):
        cmd = self._as_owner(argv) if owner else argv
        res = subprocess.run(cmd, cwd=self.dir, env=_clean_env(),
                             stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, start_new_session=True, **kw)
        if res.returncode != 0:
            raise ServerError(f"{what} failed ({res.returncode}): {shlex.join(cmd)}\n"
                              f"{res.stdout}{res.stderr}\n--- {self.logfile}:\n"
                              + _tail(self.logfile))
        return res.stdout

    def _initdb(self):
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.datadir,
                   "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8", "--locale=C"], "initdb")

    def _pg_ctl_start(self, timeout):
        opts = (f"-p {self.port} -k {self.sockdir} "
                "-c listen_addresses=127.0.0.1")
        if not self.durable:
            opts += " -c fsync=off"
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                   "-l", self.logfile, "-w", "-t", str(int(timeout)),
                   "-o", opts, "start"], "pg_ctl start")
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def start(self, timeout=START_TIMEOUT, detach=False):
        """initdb (once), start, create the database and load the schema."""
        if self.running():
            return self
        if not detach:
            become_subreaper()
        if not self._initialized:
            self._initdb()
        pick_port = self.port is None
        for attempt in range(5):
            if pick_port:
                self.port = free_port()
            try:
                self._pg_ctl_start(timeout)
                break
            except ServerError:
                if not pick_port or attempt == 4:
                    raise
        if not self._initialized:
            self._create_db()
            self._initialized = True
        if not detach and not self._registered:
            atexit.register(self.cleanup)
            self._registered = True
        return self

    def psql(self, sql=None, file=None, dbname=None):
        """Run SQL through psql (as the calling user, over TCP); its output."""
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
                "-U", "postgres", "-d", dbname or self.dbname]
        if sql is not None:
            argv += ["-c", sql]
        if file is not None:
            argv += ["-f", file]
        return self._run(argv, "psql", owner=False)

    def _create_db(self):
        self.psql(f'CREATE DATABASE "{self.dbname}"', dbname="postgres")
        if self.schema_file and os.path.isfile(self.schema_file) \
                and os.path.getsize(self.schema_file) > 0:
            self.psql(file=self.schema_file)
        else:
            print(f"twservers: {self.schema_file} is missing or empty, "
                  "using the built-in task table", file=sys.stderr)
            self.psql(FALLBACK_SCHEMA)

    def running(self):
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, mode="fast"):
        """Stop the postmaster by its PID: smart, fast or immediate."""
        if self.pid is None:
            return
        kill_pid(self.pid, self.SIGNALS[mode], expect=self.datadir)
        self.pid = None

    def restart(self, mode="immediate", timeout=START_TIMEOUT):
        """Stop it (immediate: a crash, recovery on start) and start again."""
        self.stop(mode)
        self.start(timeout=timeout)
        return self

    def cleanup(self):
        self.stop("fast")
        if os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- command line ---------------------------------------------------------

def _read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            parts = shlex.split(value)
            env[key] = parts[0] if parts else ""
    return env


def cmd_start(args):
    os.makedirs(args.dir, exist_ok=True)
    envfile = os.path.join(args.dir, "env")
    if os.path.exists(envfile):
        print(f"twservers: {envfile} exists: servers already started there "
              f"(stop them with: twservers.py stop --dir {shlex.quote(args.dir)})",
              file=sys.stderr)
        return 1
    redis = pg = None
    try:
        redis = RedisServer(dir=os.path.join(args.dir, "redis"),
                            extra_args=args.redis_arg, durable=args.durable)
        redis.start(detach=True)
        pg = PostgresServer(durable=args.durable)
        pg.start(detach=True)
    except Exception as e:
        print(f"twservers: {e}", file=sys.stderr)
        if redis is not None:
            redis.cleanup()
        if pg is not None:
            pg.cleanup()
        return 1
    values = [
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", redis.port),
        ("REDIS_PID", redis.pid),
        ("REDIS_DIR", redis.dir),
        ("PG_HOST", "127.0.0.1"),
        ("PG_PORT", pg.port),
        ("PG_PID", pg.pid),
        ("PG_DIR", pg.dir),
        ("PG_DATADIR", pg.datadir),
        ("PG_SOCKDIR", pg.sockdir),
        ("PG_CONNINFO", pg.conninfo),
    ]
    with open(envfile + ".new", "w") as f:
        f.write("# written by twservers.py start; stop with: twservers.py stop --dir "
                + shlex.quote(args.dir) + "\n")
        for key, value in values:
            f.write(f"{key}={shlex.quote(str(value))}\n")
    os.replace(envfile + ".new", envfile)
    if not args.quiet:
        print(f"redis-server pid {redis.pid} port {redis.port}; "
              f"postgres pid {pg.pid} port {pg.port}; env in {envfile}")
    return 0


def cmd_stop(args):
    envfile = os.path.join(args.dir, "env")
    try:
        env = _read_env(envfile)
    except OSError as e:
        print(f"twservers: {e}", file=sys.stderr)
        return 1
    ok = True
    if env.get("REDIS_PID"):
        ok &= kill_pid(int(env["REDIS_PID"]), signal.SIGTERM,
                       expect=":" + env.get("REDIS_PORT", ""))
    if env.get("PG_PID"):
        ok &= kill_pid(int(env["PG_PID"]), signal.SIGINT,
                       expect=env.get("PG_DATADIR", ""))
    pgdir = env.get("PG_DIR", "")
    if ok and pgdir and os.path.basename(pgdir).startswith("twpg-"):
        shutil.rmtree(pgdir, ignore_errors=True)
    if ok:
        os.unlink(envfile)
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start redis-server and PostgreSQL, write DIR/env")
    p.add_argument("--dir", required=True)
    p.add_argument("--redis-arg", action="append", default=[],
                   help="extra redis-server argument (repeatable), e.g. --redis-arg=--appendonly --redis-arg=yes")
    p.add_argument("--durable", action="store_true",
                   help="servers at their default durability (PostgreSQL fsync on, "
                   "redis-server RDB snapshots) instead of fsync=off and no persistence")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("stop", help="stop the servers recorded in DIR/env")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_stop)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
