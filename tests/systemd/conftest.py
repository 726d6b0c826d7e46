"""One real systemd per test session: a container booted from an overlay of
this machine's / (nothing reaches the host), with its own Redis and
PostgreSQL services, where the checkout is built and installed exactly as
README's "Operating it under systemd" tells an operator.

Needs root, systemd-nspawn (package systemd-container), overlayfs, and
redis-server and postgresql installed on the host; the whole directory is
skipped, with the reason, where any of that is missing or systemd-nspawn
cannot run a container here. A container that does not come up otherwise
(not booted within BOOT_TIMEOUT seconds, its Redis or PostgreSQL not
ready) is tried once more, then fails every test.
"""

import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 60
CONF = "/etc/taskworkerd/taskworkerd.conf"
UNIT = "taskworkerd.service"
QUEUE = "tasks"

# What README shows, run as they are written (see test_readme.py); the
# config edit ($EDITOR) is done by writing CONF.
README_INSTALL = [
    "meson setup build --prefix=/usr && meson install -C build",
    "runuser -u postgres -- createuser taskworkerd",
    "runuser -u postgres -- createdb -O taskworkerd tasks",
    "runuser -u postgres -- psql tasks -c 'SET ROLE taskworkerd' "
    "-f /usr/share/taskworkerd/schema.sql",
]
README_START = [
    "$EDITOR /etc/taskworkerd/taskworkerd.conf && taskworkerd -t",
    "systemctl daemon-reload",
    "systemctl enable --now taskworkerd",
]
# How an operator gives the daemon a secret (README): each line run with
# its placeholder replaced by the secret.
README_SECRETS = {
    "redis-password": ("PASSWORD", [
        "install -d -m 700 /etc/credstore",
        "(umask 077; echo 'PASSWORD' > /etc/credstore/taskworkerd.redis-password)",
    ]),
    "pgpass": ("HOST:5432:tasks:USER:PASSWORD", [
        "install -d -m 700 /etc/credstore",
        "(umask 077; echo 'HOST:5432:tasks:USER:PASSWORD' > /etc/credstore/taskworkerd.pgpass)",
    ]),
}

# README's drop-in for a secret left where it is.
README_SECRET_IN_PLACE = "LoadCredential=redis-password:/etc/taskworkerd/redis.pass"

# The drop-in README gives for an exec handler that must write and needs
# writable, executable memory.
README_DROPIN = "[Service]\nStateDirectory=taskworkerd-app\nMemoryDenyWriteExecute=no\n"

# Lines for the end of the run: timings, the exposure level.
SUMMARY = []


def pytest_terminal_summary(terminalreporter):
    for line in SUMMARY:
        terminalreporter.write_line(f"tests/systemd: {line}")


def config_text(worker_id="box", handler=None, redis=None, postgres=None,
                worker=None, metrics=None):
    """A config for the box: fast polling, a short shutdown wait."""
    sections = {
        "redis": {"queues": [QUEUE], **(redis or {})},
        "postgres": {"conninfo": "dbname=tasks", **(postgres or {})},
        "worker": {"id": worker_id, "delay_ms": 50, "retry_min_ms": 100,
                   "retry_max_ms": 500, "shutdown_timeout_ms": 20000,
                   **(worker or {})},
        "handler": handler or {"type": "none"},
    }
    if metrics:
        sections["metrics"] = metrics
    out = []
    for name, keys in sections.items():
        out.append(f"{name}: {{")
        for k, v in keys.items():
            out.append(f"\t{k} = {value_text(v)};")
        out.append("};")
    return "\n".join(out) + "\n"


def value_text(v):
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class BoxError(Exception):
    pass


class NoContainer(BoxError):
    """systemd-nspawn ended before the container's systemd ran: this host
    cannot run one (no systemd-capable cgroups, not privileged enough)."""


class Box:
    """The container: commands run inside with nsenter."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="tw-systemd-"))
        self.up = self.base / "up"
        self.root = self.base / "root"
        self.name = f"twsd{os.getpid()}"
        self.nspawn = None
        self.init = None
        self.mounted = []
        self.redis_password = None

    # ---- lifecycle ----

    def mount(self):
        self.up.mkdir()
        self.root.mkdir()
        for cmd, where in (
                (["mount", "-t", "tmpfs", "tmpfs", str(self.up)], self.up),
                (["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir=/,upperdir={self.up}/u,workdir={self.up}/w",
                  str(self.root)], self.root)):
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise BoxError(f"cannot mount {where}: {res.stderr.strip()}")
            self.mounted.append(where)
            if where == self.up:
                (self.up / "u").mkdir()
                (self.up / "w").mkdir()

    def copy_source(self):
        """The working tree as it is now (tracked and new files): the
        overlay would show files changed after the mount as they were."""
        files = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], check=True, capture_output=True).stdout
        names = [n for n in files.split(b"\0") if n and (REPO / os.fsdecode(n)).exists()]
        dest = self.root / "opt" / "src"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        untar = subprocess.Popen(["tar", "-C", str(dest), "-xf", "-"], stdin=tar.stdout)
        tar.stdout.close()
        tar.stdin.write(b"\0".join(names) + b"\0")
        tar.stdin.close()
        if tar.wait() != 0 or untar.wait() != 0:
            raise RuntimeError("copying the source tree into the container failed")

    def boot(self):
        self.log = open(self.base / "nspawn.log", "w+")
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "--private-network",
             "--register=no", "--keep-unit", "-b", "-M", self.name],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                kind = BoxError if self.init is not None else NoContainer
                raise kind(f"systemd-nspawn exited {self.nspawn.returncode}: "
                           + self.log_tail())
            self.init = self.container_init() or self.init
            if self.init is not None:
                state = self.run("systemctl is-system-running", check=False,
                                 timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    break
            time.sleep(0.5)
        else:
            raise BoxError(f"the container did not boot within {BOOT_TIMEOUT} s "
                           f"(state {state or 'unknown'}): " + self.log_tail())
        self.wait(lambda: self.run("systemctl is-active redis-server", check=False)
                  .stdout.strip() == "active", 30, "redis-server active in the container")
        self.wait(lambda: self.run("pg_isready -q", check=False).returncode == 0, 30,
                  "PostgreSQL ready in the container")

    def container_init(self):
        """The container's PID 1: the process under systemd-nspawn that
        runs systemd. Its first child may still be nspawn's own helper,
        which exits once the container's init is forked."""
        todo, seen = [self.nspawn.pid], set()
        while todo:
            pid = todo.pop()
            seen.add(pid)
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            if pid != self.nspawn.pid and comm == "systemd":
                return pid
            todo += [int(k) for k in kids if int(k) not in seen]
        return None

    def log_tail(self):
        self.log.flush()
        self.log.seek(0)
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in self.log.read().splitlines()]
        return " | ".join([x for x in lines if x][-3:])

    def close(self):
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(10)
        for where in reversed(self.mounted):
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
        self.mounted = []
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- commands inside ----

    def run(self, cmd, input=None, check=True, timeout=120):
        """Runs the shell command CMD inside; returns the CompletedProcess."""
        res = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-u", "-i", "-n", "-p", "--",
             "/bin/sh", "-c", cmd], input=input, capture_output=True, text=True,
            timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"in the container: {cmd}: exit {res.returncode}\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def out(self, cmd, **kw):
        return self.run(cmd, **kw).stdout.strip()

    def write(self, path, text, mode="644"):
        self.run(f"mkdir -p {shlex.quote(os.path.dirname(path))} && "
                 f"cat > {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}",
                 input=text)

    def show(self, unit, *props):
        out = self.out(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def redis(self, *args, check=True):
        auth = f"REDISCLI_AUTH={shlex.quote(self.redis_password)} " if self.redis_password else ""
        return self.out(auth + "redis-cli " + " ".join(shlex.quote(str(a)) for a in args),
                        check=check)

    def sql(self, query, db="tasks"):
        return self.out(f"runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1 {db}",
                        input=query)

    def cursor(self):
        out = self.out("journalctl -n 0 --show-cursor --no-pager")
        return out.split("cursor: ", 1)[1].strip()

    def journal(self, unit, after):
        return self.out(f"journalctl -u {unit} --after-cursor={shlex.quote(after)} "
                        f"-o cat --no-pager", check=False)

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def wait_journal(self, unit, after, text, timeout=15):
        return self.wait(lambda: text in self.journal(unit, after), timeout,
                         f"'{text}' in the journal of {unit}")

    # ---- the daemon's world ----

    def configure(self, path=CONF, **kw):
        self.write(path, config_text(**kw))

    def add_tasks(self, n, name="t", queue=QUEUE, push=True):
        """N new pending rows; their ids pushed onto QUEUE. Returns the ids."""
        ids = [int(x) for x in self.sql(
            f"INSERT INTO task (name) SELECT '{name}' || g FROM generate_series(1, {n}) g "
            "RETURNING id").split()]
        if push:
            self.redis("RPUSH", queue, *ids)
        return ids

    def completed(self, ids):
        if not ids:
            return 0
        return int(self.sql("SELECT count(*) FROM task WHERE status = 'completed' AND id IN ("
                            + ",".join(map(str, ids)) + ")"))

    def wait_completed(self, ids, timeout=20):
        self.wait(lambda: self.completed(ids) == len(ids), timeout,
                  f"{len(ids)} tasks completed (now {self.completed(ids)})")

    def processing_keys(self, queue=QUEUE):
        return [k for k in self.redis("--scan", "--pattern", f"{queue}:processing:*").split() if k]

    def restart_clean(self, unit=UNIT):
        """UNIT running on a fresh default config, its failures forgotten."""
        self.run(f"rm -rf /etc/systemd/system/{unit}.d && systemctl daemon-reload")
        self.configure()
        self.run(f"systemctl reset-failed {unit}; systemctl restart {unit}")
        assert self.show(unit, "ActiveState")["ActiveState"] == "active"


def why_not():
    if os.geteuid() != 0:
        return "needs root, to mount an overlay and boot a container"
    if shutil.which("systemd-nspawn") is None:
        return "no systemd-nspawn (package systemd-container)"
    if shutil.which("nsenter") is None:
        return "no nsenter"
    for path in ("/lib/systemd/systemd", "/lib/systemd/system/redis-server.service",
                 "/lib/systemd/system/postgresql@.service"):
        if not os.path.exists(path):
            return f"no {path}: systemd, redis-server and postgresql must be installed"
    return None


def booted_box():
    """A Box mounted, holding the source and booted. A host that cannot
    mount the overlay or run a container skips the suite (the reason is
    printed); a container that fails to boot otherwise is tried once more,
    then fails every test: a host that has all the suite needs must not
    pass it by skipping."""
    failures = []
    for _ in range(2):
        b = Box()
        atexit.register(b.close)
        try:
            b.mount()
        except BoxError as e:
            b.close()
            pytest.skip(f"no real systemd to test under: {e}")
        try:
            b.copy_source()
            b.boot()
            return b
        except Exception as e:      # noqa: BLE001 (any failure is tried again)
            failures.append(e)
            b.close()
    why = " / ".join(f"{type(e).__name__}: {e}" for e in failures)
    if all(isinstance(e, NoContainer) for e in failures):
        pytest.skip(f"no real systemd to test under: {why}")
    pytest.fail(f"the container did not boot, twice: {why}", pytrace=False)


@pytest.fixture(scope="session")
def box():
    reason = why_not()
    if reason:
        pytest.skip(f"no real systemd to test under: {reason}")
    start = time.monotonic()
    b = booted_box()
    try:
        booted = time.monotonic()
        b.run("cd /opt/src && " + README_INSTALL[0], timeout=600)
        for cmd in README_INSTALL[1:]:
            b.run(cmd)
        b.configure()
        for cmd in README_START:
            b.run(cmd.split(" && ")[-1])
        SUMMARY.append(f"container booted in {booted - start:.1f} s, built, installed "
                       f"and started in {time.monotonic() - booted:.1f} s")
        yield b
    finally:
        b.close()


@pytest.fixture
def clean(box):
    """The default unit running on the default config afterwards, and
    empty queues and table before."""
    box.redis("FLUSHALL")
    box.sql("TRUNCATE task")
    yield box
    box.restart_clean()
