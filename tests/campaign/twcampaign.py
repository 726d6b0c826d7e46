"""The fault campaign: one seeded, randomized run of 3 taskworkerd daemons
against real Redis and PostgreSQL servers, through one workload and many
faults, and the invariants checked once every fault is healed.

The seed decides everything that is planned: the rows, what is pushed
when (ids, duplicates, scheduled ids, hostile values), the daemons'
configs, which daemon can be cut off, and the faults with their times and
parameters. Timing on a busy machine still varies from run to run, so a
seed replays the same plan, not the same interleaving.

The workload: 360-460 rows (a `mode` column says ok, sometimes: fails its
first attempt, or always: fails every one), each pushed once at a random
moment or scheduled a few seconds ahead, one in ten pushed twice; values
that are not ids or have no row. Handlers: exec (a script that records
its argument and environment, then exits as the mode says) and sql
(`camp_handle($1)`, which logs to camp_sql_log and raises as the mode
says), per daemon, switched by reloads. One daemon runs as `nobody`, so
that nftables can cut it off by its uid.

The faults, 18-28 of them: kill -9 and SIGTERM of a daemon (restarted
after), SIGHUP with new connections, columns, delay and handler, CLIENT
KILL of daemon connections, pg_terminate_backend of their sessions, a
partition of the `nobody` daemon for 3-6 s (its heartbeat lives 1.5 s),
Redis restarts (SIGTERM or kill -9, append-only file fsynced always) and
PostgreSQL restarts (fast or immediate), SIGSTOP/SIGCONT of either server,
the queue, :retry or :scheduled renamed aside and replaced by a string
for a moment (then merged back), :attempts a string while it is absent,
and taskworkerctl dead requeue, retry now, pause/resume and status racing
the daemons. Then every fault is healed, the daemons drain, stop with
SIGTERM, and the Campaign.check_* methods give the invariants' failures.

Used by tests/campaign/test_campaign.py; see tests/campaign/conftest.py
for how seeds are chosen.
"""

import atexit
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import twservers  # noqa: E402

BIN = os.environ.get("TASKWORKERD_BIN") or str(REPO / "build" / "daemon" / "taskworkerd")
CTL = os.environ.get("TASKWORKERCTL_BIN") or str(
    Path(BIN).resolve().parent.parent / "ctl" / "taskworkerctl")
WRAPPER = shlex.split(os.environ.get("TASKWORKERD_WRAPPER", ""))
FACTOR = float(os.environ.get("TASKWORKERD_TIMEOUT_FACTOR") or (10 if WRAPPER else 1))

QUEUE = "tasks"
NDAEMONS = 3
PARTITION_USER = "nobody"
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "Invalid read", "Invalid write", "uninitialised value")

# How long the pushes and faults go on, and the most a drain may take.
WORKLOAD_SECONDS = float(os.environ.get("CAMPAIGN_SECONDS") or 34)
DRAIN_SECONDS = 40.0
# Everything empty and nothing pending for this long: settled.
SETTLE_SECONDS = 1.0
# Everything empty for this long, rows still pending: those ids are lost.
LOST_SECONDS = 6.0

SQL_STATEMENT = "SELECT camp_handle($1)"
SCHEMA = """
DROP TABLE IF EXISTS task, camp_sql_log CASCADE;
DROP FUNCTION IF EXISTS camp_handle(bigint);
CREATE TABLE task (
  id       bigserial PRIMARY KEY,
  name     varchar(255) NOT NULL,
  status   varchar(255) NOT NULL DEFAULT 'pending',
  color    text,
  mode     text NOT NULL DEFAULT 'ok',
  payload  text,
  attempts integer,
  error    text
);
-- One row per committed run of the SQL handler's statement.
CREATE TABLE camp_sql_log (
  seq         bigserial PRIMARY KEY,
  task_id     bigint NOT NULL,
  backend_pid integer NOT NULL,
  at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION camp_handle(tid bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  SELECT mode, attempts INTO r FROM task WHERE id = tid;
  INSERT INTO camp_sql_log (task_id, backend_pid) VALUES (tid, pg_backend_pid());
  IF r.mode = 'always' THEN
    RAISE EXCEPTION 'campaign: task % always fails', tid;
  END IF;
  IF r.mode = 'sometimes' AND coalesce(r.attempts, 0) = 0 THEN
    RAISE EXCEPTION 'campaign: task % fails its first attempt', tid;
  END IF;
END $$;
"""

# The exec handler: records its argument and environment in a file of its
# own, then fails as the row's mode says (`sometimes`: the first attempt).
HANDLER_SH = """\
#!/bin/sh
# campaign exec handler: what it was given, then the mode's outcome
read -r u < /proc/sys/kernel/random/uuid
f=@RUNDIR@/run-$u
{ printf 'CAMP_ARGC=%s\\0CAMP_ARG=%s\\0' "$#" "$1"; env -0; } > "$f"
case "$TASK_MODE" in
always) echo "campaign: task $1 always fails"; exit 3 ;;
sometimes)
	if [ "${TASK_ATTEMPT:-1}" -le 1 ]; then
		echo "campaign: task $1 fails attempt ${TASK_ATTEMPT:-?}"; exit 4
	fi ;;
esac
printf 'CAMP_EXIT=0\\0' >> "$f"
exit 0
"""

# Wrong-typed keys. The real key is renamed aside (a list or sorted set:
# nothing is lost, the ids just wait) and a string takes its place; the
# heal deletes the string (only if it is still ours) and merges the real
# key back. :attempts is only replaced while it is absent: merging counts
# back could resurrect those of ids finished meanwhile.
LUA_WRONG_ASIDE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
LUA_WRONG_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
LUA_HEAL = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  t = 'none'
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
if t == 'none' then
  redis.call('RENAME', KEYS[2], KEYS[1])
elseif ARGV[2] == 'list' then
  while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do end
else
  redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[1], KEYS[2], 'AGGREGATE', 'MIN')
  redis.call('DEL', KEYS[2])
end
return 2
"""

# Values that are not ids: each must end in QUEUE:dead with a reason.
HOSTILE = [b"abc", b"-7", b"0", b"", b" 5", b"5 ", b"+5", b"007", b"1e3",
           b"12\n", b"9223372036854775808", b"99999999999999999999999999999999",
           b"\xff\xfe\x00bin", b"-9223372036854775808", b"0x10", b"\xe2\x80\x8b42",
           b"1" * 5000, b"NaN", b"18446744073709551615"]

COLUMNS = ["name", "color", "mode", "payload"]

# One line per seed run in this session, for the terminal summary.
SUMMARIES = []


def now_iso():
    return time.strftime("%H:%M:%S")


# ---- config -----------------------------------------------------------------

def render_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}L" if not -2**31 <= v < 2**31 else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(render_value(x) for x in v) + "]"
    raise TypeError(f"cannot render {v!r}")


def render_config(cfg):
    """{group: {key: value}} as libconfig text; a list of dicts (limits) is
    a list of groups."""
    lines = ["# written by tests/campaign/twcampaign.py"]
    for group, keys in cfg.items():
        if isinstance(keys, list):
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


# ---- servers --------------------------------------------------------------------

class Servers:
    """Redis with an append-only file fsynced at every write (a restart,
    even kill -9, keeps every id) and PostgreSQL, on free loopback ports."""

    def __init__(self):
        self.redis = self.pg = None

    def start(self):
        self.redis = twservers.RedisServer(extra_args=[
            "--appendonly", "yes", "--appendfsync", "always"]).start()
        self.pg = twservers.PostgresServer().start()
        return self

    def cleanup(self):
        for s in (self.redis, self.pg):
            if s is not None:
                cont_all(server_pids(s))
                s.cleanup()


def server_pids(server):
    """The server's processes: Redis' one, or the postmaster and its
    children (the backends and helpers)."""
    if server is None or not server.running():
        return []
    pids = [server.pid]
    if isinstance(server, twservers.PostgresServer):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.pid:
                pids.append(int(entry))
    return pids


def signal_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def cont_all(pids):
    signal_pids(pids, signal.SIGCONT)


# ---- daemons ----------------------------------------------------------------------

class Daemon:
    """One taskworkerd through its lives (restarts): its config, its log
    (every life appended), and what became of each life."""

    def __init__(self, index, rundir, config, as_user=None):
        self.index = index
        self.name = f"camp-w{index}"
        self.dir = Path(rundir)
        self.config = config
        self.config_path = self.dir / f"{self.name}.conf"
        self.log_path = self.dir / f"{self.name}.log"
        self.as_user = as_user
        self.proc = None
        self.lives = []          # [(pid, how it ended, returncode)]
        self.problems = []
        self.expect = None       # None (running), "kill", "term"
        self.stopping_since = None
        self.write_config()

    def write_config(self, config=None):
        if config is not None:
            self.config = config
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(render_config(self.config))
        tmp.chmod(0o644)
        os.replace(tmp, self.config_path)

    def start(self):
        cmd = WRAPPER + [BIN, "-v", "-c", str(self.config_path)]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_SOCKET", "PG", "LISTEN_", "WATCHDOG_"))}
        kw = {}
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        with open(self.log_path, "ab") as log:
            self.life_offset = log.tell()
            log.write(f"### {now_iso()} start{' as ' + self.as_user if self.as_user else ''}: "
                      f"{shlex.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                                         start_new_session=True, **kw)
        self.expect = None
        self.stopping_since = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def started(self):
        """This life has logged its start: its signal handlers are in.
        Before that a signal's default action ends it, as for any
        program still loading."""
        with open(self.log_path, "rb") as log:
            log.seek(self.life_offset)
            return b"starting taskworkerd" in log.read()

    def _ended(self, how):
        rc = self.proc.returncode
        self.lives.append((self.proc.pid, how, rc))
        with open(self.log_path, "ab") as log:
            log.write(f"### {now_iso()} pid {self.proc.pid} ended ({how}): {rc}\n".encode())
        self.proc = None
        return rc

    def kill9(self):
        self.expect = "kill"
        self.proc.kill()
        self.proc.wait()
        self._ended("kill -9 on purpose")

    def sigterm(self):
        self.expect = "term"
        self.stopping_since = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)

    def sighup(self, config):
        self.write_config(config)
        self.proc.send_signal(signal.SIGHUP)

    def poll(self):
        """Notes an exit: after SIGTERM it must be 0 within the shutdown
        timeout and some; any other exit is a crash. True when it has
        just ended."""
        if self.proc is None:
            return False
        rc = self.proc.poll()
        if rc is None:
            if self.expect == "term":
                limit = self.config["worker"]["shutdown_timeout_ms"] / 1000 + 10 * FACTOR
                if time.monotonic() - self.stopping_since > limit:
                    self.problems.append(f"{self.name} pid {self.proc.pid} still running "
                                         f"{limit:g}s after SIGTERM; killed it")
                    self.proc.kill()
                    self.proc.wait()
                    self._ended("hung after SIGTERM")
                    return True
            return False
        if self.expect == "term":
            if rc != 0:
                self.problems.append(f"{self.name} pid {self.proc.pid} exited {rc} after SIGTERM")
            self._ended("SIGTERM on purpose")
        else:
            self.problems.append(f"{self.name} pid {self.proc.pid} exited {rc} on its own "
                                 "(not killed by the campaign)")
            self._ended("exited on its own")
        return True

    def stop_at_end(self):
        if self.proc is None:
            return
        self.sigterm()
        while not self.poll():
            time.sleep(0.05)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ---- nftables ------------------------------------------------------------------------

class Partition:
    """Drops every TCP packet that PARTITION_USER sends to the servers'
    ports: the daemon run as that user is cut off (no reset, no answer);
    the campaign itself runs as root and is not."""

    def __init__(self, ports):
        self.table = f"twcampaign{os.getpid()}"
        self.ports = ports
        self.active = False
        self._registered = False

    def nft(self, *args, check=True):
        return subprocess.run(["nft", *args], capture_output=True, text=True, check=check)

    def available(self):
        return shutil.which("nft") is not None

    def cut(self):
        if not self._registered:
            atexit.register(self.remove_leftover)  # even when the run is cut short
            self._registered = True
        ports = ", ".join(str(p) for p in self.ports)
        self.nft("add", "table", "inet", self.table)
        self.nft("add", "chain", "inet", self.table, "out",
                 "{ type filter hook output priority 0; }")
        self.nft("add", "rule", "inet", self.table, "out", "meta", "skuid", PARTITION_USER,
                 "tcp", "dport", "{ " + ports + " }", "drop")
        self.active = True

    def heal(self):
        if self.active:
            self.nft("delete", "table", "inet", self.table, check=False)
            self.active = False

    def remove_leftover(self):
        self.nft("delete", "table", "inet", self.table, check=False)
        self.active = False


# ---- the campaign ----------------------------------------------------------------------

FAULT_WEIGHTS = {
    "kill9": 8, "sigterm": 6, "sighup": 10, "client_kill": 6, "pg_terminate": 6,
    "partition": 4, "redis_restart": 3, "pg_restart": 3, "redis_stop": 3, "pg_stop": 3,
    "wrong_type": 8, "ctl": 8,
}


class Campaign:
    def __init__(self, seed, servers, workdir=None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.servers = servers
        self.dir = Path(tempfile.mkdtemp(prefix=f"twcampaign-{seed}-", dir=workdir))
        self.dir.chmod(0o755)
        self.rundir = self.dir / "runs"
        self.rundir.mkdir()
        self.rundir.chmod(0o1777)
        self.handler = self.dir / "handler.sh"
        self.handler.write_text(HANDLER_SH.replace("@RUNDIR@", str(self.rundir)))
        self.handler.chmod(0o755)
        self.events_path = self.dir / "events.log"
        self.events = open(self.events_path, "w")
        self.daemons = []
        self.ctl_problems = []
        self.harness_notes = []
        self.fault_counts = Counter()
        self.skipped = Counter()
        self.pushes = Counter()        # bytes value -> times pushed or scheduled
        self.pending_writes = []       # pushes refused while a key was wrong-typed
        self.wrong = {}                # key -> (aside key, kind, heal time)
        self.partition = Partition([servers.redis.port, servers.pg.port])
        self.partitioned_until = None
        self.paused_until = None
        self.restart_at = {}           # daemon index -> monotonic time
        self.r = self.rb = self.db = None
        self.outcomes = []             # [(invariant, how it failed)], by the tests

    # -- logging
    def note(self, what):
        wall = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        line = f"{time.monotonic() - self.t0:7.2f} {wall} {what}"
        self.events.write(line + "\n")
        self.events.flush()

    # -- clients
    def connect(self):
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 40)
        kw = dict(host="127.0.0.1", port=self.servers.redis.port, client_name="twcampaign",
                  retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError,
                                               redis.BusyLoadingError],
                  socket_timeout=30)
        self.rb = redis.Redis(**kw)
        self.r = redis.Redis(decode_responses=True, **kw)
        self.db_connect()

    def db_connect(self):
        if self.db is not None:
            try:
                self.db.close()
            except Exception:
                pass
        deadline = time.monotonic() + 30
        while True:
            try:
                self.db = psycopg.connect(self.servers.pg.conninfo, autocommit=True,
                                          application_name="twcampaign")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def sql(self, query, params=None):
        for attempt in range(3):
            try:
                if self.db.closed or self.db.broken:
                    self.db_connect()
                return self.db.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if attempt == 2:
                    raise
                self.db_connect()

    # -- setup
    def reset_servers(self):
        self.r.flushall()
        self.db.execute(SCHEMA)

    def daemon_config(self, index, handler=None, columns=None, connections=None,
                      delay_ms=None):
        rng = self.rng
        handler = handler or rng.choice(["exec", "sql"])
        if columns is None:
            columns = self.random_columns()
        if handler == "exec":
            hcfg = {"type": "exec", "command": [str(self.handler)], "timeout_ms": 10000,
                    "kill_grace_ms": 1000, "max_processes": 8}
        else:
            hcfg = {"type": "sql", "statement": SQL_STATEMENT, "timeout_ms": 10000}
        cfg = {
            "redis": {"host": "127.0.0.1", "port": self.servers.redis.port,
                      "queues": [QUEUE], "connect_timeout_ms": 1000,
                      "command_timeout_ms": 3000},
            "postgres": {"conninfo": self.servers.pg.conninfo,
                         "connections": connections or rng.randint(1, 3),
                         "columns": columns, "attempts_column": "attempts",
                         "error_column": "error", "connect_timeout_ms": 2000,
                         "command_timeout_ms": 5000},
            "worker": {"id": f"camp-w{index}",
                       "delay_ms": rng.choice(self.delays(index))
                       if delay_ms is None else delay_ms,
                       "concurrency": 32, "shutdown_timeout_ms": 3000,
                       "retry_min_ms": 50, "retry_max_ms": 1000,
                       "missing_row_grace_ms": 500, "heartbeat_ttl_ms": 1500},
            "handler": hcfg,
            "retry": {"attempts": 3, "min_ms": 100, "max_ms": 800},
            "log": {"level": "debug"},
        }
        if rng.random() < 0.5:
            # Limits loose enough for the workload to end in time; a reload
            # draws them anew.
            cfg["limits"] = [{"queue": QUEUE, "rate": rng.choice([100, 400, 5000]),
                              "burst": rng.choice([1, 10, 100]),
                              "max_in_flight": rng.choice([None, 24, 64])}]
        return cfg

    def delays(self, index):
        """delay_ms values to draw from. The daemon that can be cut off
        waits longer, so that it usually holds ids when it is: they go back
        to the queue when its heartbeat expires and run elsewhere while it
        may still run them."""
        if index == self.partition_target and self.can_partition:
            return [100, 300, 600, 1000]
        return [0, 0, 5, 20, 100, 300]

    def random_columns(self):
        others = [c for c in COLUMNS if c != "mode"]
        cols = self.rng.sample(others, self.rng.randint(0, len(others))) + ["mode"]
        self.rng.shuffle(cols)
        return cols

    def random_text(self, prefix):
        rng = self.rng
        pieces = [prefix]
        for _ in range(rng.randint(0, 4)):
            pieces.append(rng.choice(["x", " ", "=", "é", "😀", "'", '"', "\\", "$HOME",
                                      "\t", "\n", ";", "a=b", "%s", "ü" * 3]))
        return "".join(pieces)

    def insert_rows(self, n):
        """The rows, with a mode each and distinct values per column (so a
        value handed over under the wrong column name shows)."""
        rows = []
        for i in range(n):
            rng = self.rng
            mode = rng.choices(["ok", "sometimes", "always"], [75, 15, 10])[0]
            name = self.random_text(f"name-{i}-")[:200]
            color = None if rng.random() < 0.2 else self.random_text(f"color-{i}-")
            size = rng.choice([0, 10, 100, 1000, 20000]) if rng.random() < 0.3 else 8
            payload = None if rng.random() < 0.1 else (f"payload-{i}-" + "p" * size)
            rows.append((name, color, mode, payload))
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO task (name, color, mode, payload) "
                            "VALUES (%s, %s, %s, %s)", rows)
        got = self.sql("SELECT id, name, color, mode, payload FROM task ORDER BY id")
        return {r[0]: {"name": r[1], "color": r[2], "mode": r[3], "payload": r[4]}
                for r in got}

    # -- the plan
    def plan(self, ids):
        """[(time, action, args)] for the whole workload phase."""
        rng = self.rng
        T = WORKLOAD_SECONDS
        ev = []
        for i in ids:
            t = rng.uniform(0.2, T - 3)
            if rng.random() < 0.1:
                ev.append((t, "schedule", (str(i).encode(), rng.uniform(0.2, 5))))
            else:
                ev.append((t, "push", (str(i).encode(),)))
            if rng.random() < 0.1:  # a duplicate, at once or later
                t2 = t + (0 if rng.random() < 0.5 else rng.uniform(0.1, 5))
                ev.append((t2, "push", (str(i).encode(),)))
        hostile = list(HOSTILE)
        top = max(ids)
        # ids that look fine but have no row, ever
        hostile += [str(top + 100000 + k).encode() for k in range(3)]
        hostile.append(b"9223372036854775807")
        for v in hostile:
            t = rng.uniform(0.2, T - 3)
            if rng.random() < 0.15:
                ev.append((t, "schedule", (v, rng.uniform(0.2, 3))))
            else:
                ev.append((t, "push", (v,)))
        self.hostile = set(hostile)
        nfaults = int(rng.randint(18, 28) * T / 34)
        kinds = list(FAULT_WEIGHTS)
        weights = [FAULT_WEIGHTS[k] for k in kinds]
        for _ in range(nfaults):
            ev.append((rng.uniform(1.0, T), rng.choices(kinds, weights)[0], ()))
        ev.sort(key=lambda e: e[0])
        return ev

    # -- running
    def run(self):
        self.t0 = time.monotonic()
        try:
            self._run()
        finally:
            self.cleanup()
        return self

    def _run(self):
        self.connect()
        self.reset_servers()
        nrows = int(self.rng.randint(360, 460) * WORKLOAD_SECONDS / 34)
        self.rows = self.insert_rows(nrows)
        self.partition_target = self.rng.randrange(NDAEMONS)
        self.can_partition = can_partition = \
            self.partition.available() and os.geteuid() == 0
        if not can_partition:
            self.harness_notes.append("no nft or not root: partitions skipped")
        for i in range(NDAEMONS):
            user = PARTITION_USER if (can_partition and i == self.partition_target) else None
            d = Daemon(i, self.dir, self.daemon_config(i), as_user=user)
            self.daemons.append(d)
        plan = self.plan(sorted(self.rows))
        self.note(f"seed {self.seed}: {nrows} rows, {len(plan)} events, "
                  f"partition target camp-w{self.partition_target}")
        for d in self.daemons:
            d.start()
            self.note(f"start {d.name} pid {d.proc.pid} handler {d.config['handler']['type']}"
                      f"{' as ' + d.as_user if d.as_user else ''}")
        self.t_start = time.monotonic()
        for t, action, args in plan:
            while time.monotonic() - self.t_start < t:
                self.tick()
                time.sleep(0.02)
            self.tick()
            getattr(self, "do_" + action)(*args)
        while time.monotonic() - self.t_start < WORKLOAD_SECONDS + 1:
            self.tick()
            time.sleep(0.02)
        self.heal_all()
        self.drain()
        self.note("stopping the daemons")
        for d in self.daemons:
            d.stop_at_end()
        time.sleep(0.5)  # handlers the daemons left running may still write
        self.note("collecting")
        self.collect()

    def tick(self):
        now = time.monotonic()
        for d in self.daemons:
            if d.poll():
                self.note(f"{d.name} ended: {d.lives[-1]}")
                delay = 0.3 if d.lives[-1][1].startswith("SIGTERM") else 0.5
                self.restart_at.setdefault(d.index, now + delay)
        for i, at in list(self.restart_at.items()):
            if now >= at and not self.daemons[i].running():
                d = self.daemons[i]
                d.start()
                self.note(f"restart {d.name} pid {d.proc.pid}")
                del self.restart_at[i]
        for key, (aside, kind, until) in list(self.wrong.items()):
            if now >= until:
                self.heal_key(key)
        if self.partition.active and now >= self.partitioned_until:
            self.partition.heal()
            self.note("partition healed")
        if self.paused_until is not None and now >= self.paused_until:
            self.ctl("resume")
            self.paused_until = None
        if self.pending_writes:
            self.flush_pending()

    # -- workload actions
    def write_value(self, kind, value, delay=0.0):
        try:
            if kind == "push":
                self.rb.rpush(QUEUE, value)
            else:
                sec, usec = self.rb.time()
                due = sec * 1000 + usec // 1000 + int(delay * 1000)
                self.rb.zadd(f"{QUEUE}:scheduled", {value: due})
            return True
        except redis.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            return False

    def do_push(self, value):
        self.pushes[value] += 1
        if not self.write_value("push", value):
            self.pending_writes.append(("push", value, 0.0))

    def do_schedule(self, value, delay):
        self.pushes[value] += 1
        if not self.write_value("schedule", value, delay):
            self.pending_writes.append(("schedule", value, delay))

    def flush_pending(self):
        left = []
        for kind, value, delay in self.pending_writes:
            if not self.write_value(kind, value, delay):
                left.append((kind, value, delay))
        self.pending_writes = left

    # -- faults
    def pick_daemon(self, running=True):
        ds = [d for d in self.daemons if d.running() and d.expect is None and d.started()] \
            if running else self.daemons
        return self.rng.choice(ds) if ds else None

    def fault(self, kind, what):
        self.fault_counts[kind] += 1
        self.note(f"FAULT {kind}: {what}")

    def skip(self, kind, why):
        self.skipped[kind] += 1
        self.note(f"skip {kind}: {why}")

    def do_kill9(self):
        d = self.pick_daemon()
        if d is None:
            return self.skip("kill9", "no daemon running")
        self.fault("kill9", f"{d.name} pid {d.proc.pid}")
        d.kill9()
        self.restart_at[d.index] = time.monotonic() + self.rng.uniform(0.2, 2.0)

    def do_sigterm(self):
        d = self.pick_daemon()
        if d is None:
            return self.skip("sigterm", "no daemon running")
        self.fault("sigterm", f"{d.name} pid {d.proc.pid}")
        d.sigterm()

    def do_sighup(self):
        d = self.pick_daemon()
        if d is None:
            return self.skip("sighup", "no daemon running")
        old = d.config
        rng = self.rng
        change = rng.sample(["connections", "columns", "delay_ms", "handler"],
                            rng.randint(1, 4))
        handler = old["handler"]["type"]
        if "handler" in change:
            handler = "sql" if handler == "exec" else "exec"
        new = self.daemon_config(
            d.index, handler=handler,
            columns=self.random_columns() if "columns" in change
            else old["postgres"]["columns"],
            connections=rng.randint(1, 4) if "connections" in change
            else old["postgres"]["connections"],
            delay_ms=rng.choice(self.delays(d.index)) if "delay_ms" in change
            else old["worker"]["delay_ms"])
        desc = {"connections": new["postgres"]["connections"],
                "columns": new["postgres"]["columns"],
                "delay_ms": new["worker"]["delay_ms"], "handler": handler}
        self.fault("sighup", f"{d.name} pid {d.proc.pid}: " + json.dumps(
            dict({k: desc[k] for k in change}, limits=new.get("limits"))))
        d.sighup(new)

    def daemon_clients(self):
        return [c for c in self.r.client_list() if c.get("name", "").startswith("taskworkerd:")]

    def do_client_kill(self):
        clients = self.daemon_clients()
        if not clients:
            return self.skip("client_kill", "no daemon connection")
        if self.rng.random() < 0.4:
            chosen = clients
        else:
            chosen = [c for c in clients if self.rng.random() < 0.5] or clients[:1]
        self.fault("client_kill", " ".join(c["name"] for c in chosen))
        for c in chosen:
            try:
                self.r.client_kill_filter(_id=c["id"])
            except redis.ResponseError:
                pass

    def do_pg_terminate(self):
        pids = [r[0] for r in self.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'taskworkerd' "
            "ORDER BY pid")]
        if not pids:
            return self.skip("pg_terminate", "no daemon session")
        chosen = pids if self.rng.random() < 0.4 else \
            ([p for p in pids if self.rng.random() < 0.5] or pids[:1])
        self.fault("pg_terminate", f"backends {chosen}")
        self.sql("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (chosen,))

    def do_partition(self):
        if not self.can_partition:
            return self.skip("partition", "not available")
        if self.partition.active:
            return self.skip("partition", "one already")
        d = self.daemons[self.partition_target]
        seconds = self.rng.uniform(3.0, 6.0)
        self.fault("partition", f"{d.name} (pid {d.proc.pid if d.proc else '-'}) from "
                   f"Redis and PostgreSQL for {seconds:.1f}s")
        self.partition.cut()
        self.partitioned_until = time.monotonic() + seconds

    def do_redis_restart(self):
        how = self.rng.choice(["SIGTERM", "kill -9"])
        down = self.rng.uniform(0, 1.5)
        self.fault("redis_restart", f"{how}, down {down:.1f}s")
        rs = self.servers.redis
        if how == "SIGTERM":
            rs.stop()
        else:
            rs.kill()
        time.sleep(down)
        rs.start()
        self.note("redis back")

    def do_pg_restart(self):
        mode = self.rng.choice(["fast", "immediate"])
        down = self.rng.uniform(0, 1.5)
        self.fault("pg_restart", f"{mode}, down {down:.1f}s")
        pg = self.servers.pg
        pg.stop(mode)
        time.sleep(down)
        pg.start()
        self.db_connect()
        self.note("postgres back")

    def _stop_server(self, kind, server):
        seconds = self.rng.uniform(0.5, 3.0)
        pids = server_pids(server)
        self.fault(kind, f"SIGSTOP {len(pids)} processes for {seconds:.1f}s")
        signal_pids(pids, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            cont_all(reversed(pids))

    def do_redis_stop(self):
        self._stop_server("redis_stop", self.servers.redis)

    def do_pg_stop(self):
        self._stop_server("pg_stop", self.servers.pg)

    def do_wrong_type(self):
        key = self.rng.choice([QUEUE, f"{QUEUE}:retry", f"{QUEUE}:scheduled",
                               f"{QUEUE}:attempts"])
        seconds = self.rng.uniform(0.3, 2.0)
        if key in self.wrong:
            return self.skip("wrong_type", f"{key} already")
        marker = f"campaign-oops-{self.rng.randrange(1000)}"
        aside = f"{key}:campaign-aside"
        if key.endswith(":attempts"):
            done = self.r.eval(LUA_WRONG_IF_ABSENT, 1, key, marker)
            if done != 1:
                return self.skip("wrong_type", f"{key} not empty")
        else:
            if self.r.eval(LUA_WRONG_ASIDE, 2, key, aside, marker) != 1:
                return self.skip("wrong_type", f"{aside} exists")
        kind = "list" if key == QUEUE else "zset"
        self.wrong[key] = (aside, kind, time.monotonic() + seconds)
        self.wrong_marker = getattr(self, "wrong_marker", {})
        self.wrong_marker[key] = marker
        self.fault("wrong_type", f"SET {key} {marker} for {seconds:.1f}s")

    def heal_key(self, key):
        aside, kind, _ = self.wrong.pop(key)
        marker = self.wrong_marker.pop(key)
        res = self.r.eval(LUA_HEAL, 2, key, aside, marker, kind)
        self.note(f"healed {key} ({'merged back' if res == 2 else 'deleted'})")

    def ctl(self, *args):
        cmd = WRAPPER + [CTL, "-c", str(self.daemons[0].config_path), *args]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=30 * FACTOR,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.ctl_problems.append(f"taskworkerctl {shlex.join(args)} hung (30s)")
            return None
        self.note(f"ctl {shlex.join(args)} -> {res.returncode} "
                  f"{res.stdout[:200]!r} {res.stderr[:300]!r}")
        if res.returncode not in (0, 1):
            self.ctl_problems.append(f"taskworkerctl {shlex.join(args)} exited "
                                     f"{res.returncode}: {res.stderr[:500]!r}")
        for m in SANITIZER_MARKERS:
            if m.encode() in res.stderr:
                self.ctl_problems.append(f"taskworkerctl {shlex.join(args)}: {m} in stderr")
        return res

    def do_ctl(self):
        what = self.rng.choice(["requeue_all", "requeue_ids", "pause", "retry_now",
                                "retry_now", "status"])
        if what == "requeue_all":
            self.fault("ctl", "dead requeue -a")
            self.ctl("dead", "requeue", "-a")
        elif what == "requeue_ids":
            dead = [v.decode() for v in self.rb.lrange(f"{QUEUE}:dead", 0, -1)
                    if v.isdigit()]
            if not dead:
                return self.skip("ctl", "no dead id to requeue")
            ids = self.rng.sample(dead, min(len(dead), self.rng.randint(1, 5)))
            self.fault("ctl", f"dead requeue {' '.join(ids)}")
            self.ctl("-q", QUEUE, "dead", "requeue", *ids)
        elif what == "pause":
            if self.paused_until is not None:
                return self.skip("ctl", "paused already")
            seconds = self.rng.uniform(0.5, 2.5)
            self.fault("ctl", f"pause for {seconds:.1f}s")
            self.ctl("pause")
            self.paused_until = time.monotonic() + seconds
        elif what == "retry_now":
            ids = self.rb.zrange(f"{QUEUE}:retry", 0, 4) if \
                self.r.type(f"{QUEUE}:retry") == "zset" else []
            ids = [i.decode() for i in ids if i.isdigit()]
            if not ids:
                return self.skip("ctl", "nothing waiting in retry")
            self.fault("ctl", f"retry now {' '.join(ids)}")
            self.ctl("-q", QUEUE, "retry", "now", *ids)
        else:
            self.fault("ctl", "status -j and dead list")
            self.ctl("-j", "status")
            self.ctl("dead", "list", "-n", "5")

    # -- the end
    def heal_all(self):
        self.note("healing every fault")
        self.partition.heal()
        cont_all(server_pids(self.servers.redis))
        cont_all(server_pids(self.servers.pg))
        for key in list(self.wrong):
            self.heal_key(key)
        if self.paused_until is not None:
            self.ctl("resume")
            self.paused_until = None
        # A pause left by a race of ours would hold the queue for good.
        self.r.delete(f"{QUEUE}:paused")
        self.flush_pending()
        if self.pending_writes:
            self.harness_notes.append(f"{len(self.pending_writes)} pushes never written")
        deadline = time.monotonic() + 30 * FACTOR
        while any(d.proc is not None and d.expect == "term" for d in self.daemons) \
                and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.05)
        for d in self.daemons:
            d.poll()
            if not d.running():
                d.start()
                self.note(f"restart {d.name} pid {d.proc.pid} for the drain")
        self.restart_at.clear()

    def leftover_members(self, key, kind, n=10):
        """Up to N members of KEY, for the report."""
        if kind == "list":
            return self.rb.lrange(key, 0, n - 1)
        if kind == "zset":
            return self.rb.zrange(key, 0, n - 1, withscores=True)
        if kind == "hash":
            return sorted(self.rb.hgetall(key).items())[:n]
        if kind == "string":
            return self.rb.get(key)[:100]
        return list(self.rb.smembers(key))[:n]

    def leftovers(self):
        """What is still held anywhere: {key: (type, size)} (absent keys left out)."""
        keys = [QUEUE, f"{QUEUE}:retry", f"{QUEUE}:scheduled", f"{QUEUE}:attempts"]
        keys += sorted(self.r.scan_iter(f"{QUEUE}:processing:*"))
        keys += sorted(self.r.scan_iter("*:campaign-aside"))
        out = {}
        for k in keys:
            t = self.r.type(k)
            if t == "none":
                continue
            size = {"list": self.r.llen, "zset": self.r.zcard, "hash": self.r.hlen,
                    "string": lambda k: 1, "set": self.r.scard}[t](k)
            out[k] = (t, size)
        return out

    def pending_rows(self):
        ids = [i for i in self.rows if str(i).encode() in self.pushes]
        return self.sql("SELECT count(*) FROM task WHERE status NOT IN "
                        "('completed', 'failed') AND id = ANY(%s)", (ids,))[0][0]

    def drain(self):
        self.note("draining")
        start = time.monotonic()
        settled_since = empty_since = None
        while True:
            self.tick()
            left = self.leftovers()
            pending = self.pending_rows()
            now = time.monotonic()
            # Counts in :attempts of ids that are nowhere else never go away
            # by themselves: only where ids move counts as held.
            moving = [k for k in left if k != f"{QUEUE}:attempts"]
            if not moving:
                empty_since = empty_since or now
                if pending == 0 and not left:
                    settled_since = settled_since or now
                else:
                    settled_since = None
            else:
                empty_since = settled_since = None
            if settled_since and now - settled_since >= SETTLE_SECONDS:
                self.note(f"drained in {now - start:.1f}s")
                break
            if empty_since and now - empty_since >= LOST_SECONDS:
                self.note(f"nothing moving for {LOST_SECONDS}s, {pending} rows pending, "
                          f"left {left}: stop")
                break
            if now - start > DRAIN_SECONDS * FACTOR:
                self.note(f"drain timed out: {left} held, {pending} rows pending")
                break
            time.sleep(0.1)
        self.drain_seconds = time.monotonic() - start

    def collect(self):
        self.final_left = self.leftovers()
        self.final_left_members = {k: self.leftover_members(k, t)
                                   for k, (t, _) in self.final_left.items()}
        self.final_attempts = self.rb.hgetall(f"{QUEUE}:attempts") \
            if self.final_left.get(f"{QUEUE}:attempts", ("",))[0] == "hash" else {}
        self.dead = self.rb.lrange(f"{QUEUE}:dead", 0, -1)
        self.dead_reason = self.rb.hgetall(f"{QUEUE}:dead:reason")
        self.paused = self.r.exists(f"{QUEUE}:paused")
        self.status = dict(self.sql("SELECT id, status FROM task"))
        self.row_error = dict(self.sql("SELECT id, error FROM task WHERE error IS NOT NULL"))
        self.sql_log = defaultdict(list)
        for tid, pid in self.sql("SELECT task_id, backend_pid FROM camp_sql_log ORDER BY seq"):
            self.sql_log[tid].append(pid)
        self.exec_runs = []
        for f in sorted(self.rundir.iterdir()):
            data = f.read_bytes()
            env = {}
            for item in data.split(b"\0"):
                if b"=" in item:
                    k, _, v = item.partition(b"=")
                    env.setdefault(k.decode(errors="replace"), v)
            env["_file"] = f.name.encode()
            self.exec_runs.append(env)
        self.daemon_logs = {d.name: d.log_text() for d in self.daemons}

    def cleanup(self):
        try:
            self.partition.heal()
        except Exception as e:  # noqa: BLE001
            print(f"twcampaign: nft cleanup: {e}", file=sys.stderr)
        self.partition.remove_leftover()
        for s in (self.servers.redis, self.servers.pg):
            cont_all(server_pids(s))
        if not self.servers.redis.running():
            self.servers.redis.start()
        if not self.servers.pg.running():
            self.servers.pg.start()
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
                d._ended("killed at cleanup")
        self.events.close()
        for c in (self.r, self.rb, self.db):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass

    def remove_files(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- reports
    def summary(self):
        done = Counter(self.status.get(i) for i in self.rows
                       if str(i).encode() in self.pushes)
        return (f"seed {self.seed}: {len(self.rows)} rows, {sum(self.pushes.values())} "
                f"pushes ({len(self.hostile)} hostile values); faults "
                f"{dict(sorted(self.fault_counts.items()))}; skipped "
                f"{dict(sorted(self.skipped.items()))}; statuses {dict(done)}; "
                f"dead {len(self.dead)}; exec runs {len(self.exec_runs)}, sql runs "
                f"{sum(len(v) for v in self.sql_log.values())}; ids reclaimed from "
                f"workers without a heartbeat {self.reclaimed()}; drain "
                f"{self.drain_seconds:.1f}s"
                + "".join(f"; {n}" for n in self.harness_notes))

    def reclaimed(self):
        return sum(int(m) for t in self.daemon_logs.values()
                   for m in re.findall(r"has no heartbeat; (\d+) id", t))

    def log_lines_about(self, value, limit=12):
        """Daemon log lines naming VALUE as a task id, for a diagnosis."""
        v = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        pat = re.compile(r'task "?' + re.escape(v) + r'"?[: ]')
        out = []
        for name, text in self.daemon_logs.items():
            for line in text.splitlines():
                if pat.search(line):
                    out.append(f"  {name}: {line[:300]}")
        if len(out) > limit:
            out = out[:limit // 2] + [f"  ... {len(out) - limit} more ..."] + out[-limit // 2:]
        return out

    def events_tail(self, n=60):
        try:
            return self.events_path.read_text().splitlines()[-n:]
        except OSError:
            return []

    # -- invariants: each returns a list of Failure
    def wrong_typed_keys_seen(self):
        return self.fault_counts["wrong_type"] > 0 and any(
            "WRONGTYPE" in t for t in self.daemon_logs.values())

    def check_placement(self):
        """Every value pushed ends in exactly one place: a completed row, or a
        failed row whose id is in the dead list (with a reason); a value with
        no row, in the dead list with a reason. Nothing else is dead."""
        fails = []
        dead_count = Counter(self.dead)
        lost_known = self.wrong_typed_keys_seen()
        for i, row in self.rows.items():
            v = str(i).encode()
            if v not in self.pushes:
                continue
            st = self.status.get(i)
            n = dead_count.get(v, 0)
            lost = st == "pending" and n == 0
            if row["mode"] == "always":
                if st != "failed" or n == 0:
                    fails.append(Failure(
                        f"id {i} (mode always, pushed {self.pushes[v]}x): status {st!r}, "
                        f"{n}x in dead; wanted failed and dead"
                        + (" (lost)" if lost else ""),
                        "ids_lost_wrong_type" if lost and lost_known else None, subject=i))
                elif n > self.pushes[v]:
                    fails.append(Failure(f"id {i}: {n}x in dead, pushed only "
                                         f"{self.pushes[v]}x", subject=i))
                elif v not in self.dead_reason:
                    fails.append(Failure(f"id {i}: dead without a reason", subject=i))
            elif st != "completed" or n:
                fails.append(Failure(
                    f"id {i} (mode {row['mode']}, pushed {self.pushes[v]}x): status {st!r}, "
                    f"{n}x in dead; wanted completed (the row's last error "
                    f"{self.row_error.get(i)!r})" + (" (lost)" if lost else ""),
                    "ids_lost_wrong_type" if lost and lost_known else None, subject=i))
        for v in self.hostile:
            n = dead_count.get(v, 0)
            if n == 0:
                fails.append(Failure(f"value {v[:40]!r} (no id or no row): not in dead",
                                     "ids_lost_wrong_type" if lost_known else None,
                                     subject=v))
            elif n > self.pushes[v]:
                fails.append(Failure(f"value {v[:40]!r}: {n}x in dead, pushed "
                                     f"{self.pushes[v]}x", subject=v))
            elif v not in self.dead_reason:
                fails.append(Failure(f"value {v[:40]!r}: dead without a reason", subject=v))
        for v in dead_count:
            if v not in self.pushes:
                fails.append(Failure(f"value {v[:40]!r} in dead was never pushed"))
        return fails

    def check_nothing_left(self):
        fails = []
        dead = set(self.dead)
        for k, (t, size) in self.final_left.items():
            known = None
            if k == f"{QUEUE}:attempts" and self.wrong_typed_keys_seen() and all(
                    v.isdigit() and self.status.get(int(v)) == "pending" and v not in dead
                    for v in self.final_attempts):
                # the counts of ids lost by item 2, left behind
                known = "ids_lost_wrong_type"
            text = f"{k} still holds {size} ({t}): {self.final_left_members[k]}"
            if k == f"{QUEUE}:attempts":
                text += "; their rows: " + ", ".join(
                    f"{v.decode(errors='replace')} {self.status.get(int(v)) if v.isdigit() else None}"
                    f"{' (dead)' if v in dead else ''}" for v in list(self.final_attempts)[:10])
            fails.append(Failure(text, known, subject=(
                list(self.final_attempts)[0] if k == f"{QUEUE}:attempts" and self.final_attempts
                else None)))
        if self.paused:
            fails.append(Failure(f"{QUEUE}:paused still set"))
        stray = [k for k in self.dead_reason if k not in dead]
        if stray:
            fails.append(Failure(f"{len(stray)} reasons for values not in the dead list, "
                                 f"e.g. {stray[:5]}"))
        return fails

    def check_sql_once(self):
        """The SQL handler's statement commits at most once per row, and
        every completed row had its handler run: one committed SQL run,
        or an exec run that exited 0."""
        fails = []
        exec_ok = {int(r["TASK_ID"]) for r in self.exec_runs
                   if r.get("CAMP_EXIT") == b"0" and r.get("TASK_ID", b"").isdigit()}
        for tid, pids in sorted(self.sql_log.items()):
            if len(pids) > 1:
                pushed = self.pushes[str(tid).encode()]
                how = ("one backend: the id was held twice at once" if len(set(pids)) == 1
                       else "several backends: sent again on another session")
                fails.append(Failure(
                    f"id {tid}: SQL handler committed {len(pids)} times (backend pids {pids}, "
                    f"{how}; pushed {pushed}x), status {self.status.get(tid)!r}",
                    "sql_twice", subject=tid))
            if self.status.get(tid) != "completed":
                fails.append(Failure(f"id {tid}: SQL handler committed, row "
                                     f"{self.status.get(tid)!r}", subject=tid))
        for i, st in self.status.items():
            if st == "completed" and not self.sql_log.get(i) and i not in exec_ok:
                fails.append(Failure(f"id {i}: completed without a handler run that "
                                     "succeeded", subject=i))
        return fails

    def check_exec_rows(self):
        """Every exec run got its row: argument and TASK_ID agree, the queue,
        and each TASK_<COLUMN> it was given equals that column of the row."""
        fails = []
        columns_reloaded = any('"columns"' in e for e in self.events_tail(10**6)
                               if "FAULT sighup" in e)
        for r in self.exec_runs:
            tid = r.get("TASK_ID")
            tag = f"exec run {r['_file'].decode()}"
            if tid is None or not tid.isdigit():
                fails.append(Failure(f"{tag}: TASK_ID {tid!r}"))
                continue
            i = int(tid)
            if r.get("CAMP_ARG") != tid or r.get("CAMP_ARGC") != b"1":
                fails.append(Failure(f"{tag} id {i}: argument {r.get('CAMP_ARG')!r} "
                                     f"(argc {r.get('CAMP_ARGC')!r})", subject=i))
            if r.get("TASK_QUEUE") != QUEUE.encode():
                fails.append(Failure(f"{tag} id {i}: TASK_QUEUE {r.get('TASK_QUEUE')!r}",
                                     subject=i))
            row = self.rows.get(i)
            if row is None:
                fails.append(Failure(f"{tag}: ran for id {i}, which has no row", subject=i))
                continue
            if not (r.get("TASK_ATTEMPT") or b"").isdigit():
                fails.append(Failure(f"{tag} id {i}: TASK_ATTEMPT "
                                     f"{r.get('TASK_ATTEMPT')!r}", subject=i))
            for col in COLUMNS:
                var = "TASK_" + col.upper()
                if var not in r:
                    continue
                want = row[col]
                if want is None or r[var] != want.encode():
                    fails.append(Failure(
                        f"{tag} id {i}: {var}={r[var][:60]!r}, the row's {col} is "
                        f"{None if want is None else want[:60]!r}",
                        "columns_reload" if columns_reloaded else None,
                        subject=i))
        return fails

    def check_no_crash(self):
        fails = []
        for d in self.daemons:
            fails += [Failure(p) for p in d.problems]
            text = self.daemon_logs.get(d.name, "")
            for m in SANITIZER_MARKERS:
                if m in text:
                    at = text.index(m)
                    fails.append(Failure(f"{d.name}: log has {m!r}: "
                                         f"{text[max(0, at - 200):at + 600]!r}"))
        fails += [Failure(p) for p in self.ctl_problems]
        return fails


class Failure:
    """One broken invariant: what, the shape of defect it has (a key of
    SHAPES), taken as known only while KNOWN_DEFECTS lists that key, and
    the id or value it is about."""

    def __init__(self, text, shape=None, subject=None):
        self.text = text
        self.shape = shape
        self.known = shape if shape in KNOWN_DEFECTS else None
        self.subject = subject

    def __str__(self):
        return self.text + (f"  [known: {KNOWN_DEFECTS[self.known].split(':')[0]}]"
                            if self.known else "")


# Failures with the exact shape of a defect once filed against these
# invariants. On bdac9b4 every fixed seed broke an invariant in one of
# these shapes; issue 13 items 2, 3, 4 and 5 fixed them (7e243a8, 44b19cf
# and the commits before 3faa97b).
SHAPES = {
    "ids_lost_wrong_type": (
        "issue 13 item 2: a script removes an id before it writes it to a key "
        "of the wrong type, so the id is gone (an id lost in a run with "
        "wrong-typed keys and WRONGTYPE in the daemon logs)"),
    "sql_twice": (
        "issue 13 items 3 and 5: the SQL handler's transaction is sent again "
        "after a session loss or reset, and an id pushed twice runs as two "
        "tasks; the statement commits twice for one row"),
    "columns_reload": (
        "issue 13 item 4: a reload of postgres.columns pairs the new names with "
        "rows loaded under the old list"),
}

# The shapes of defects that are filed and still open on main: an
# invariant whose every failure has one of them is an xfail naming it
# (test_campaign.py; CAMPAIGN_STRICT=1 fails it instead). Empty while none
# is open: a fixed defect that comes back fails outright. To mark one,
# add its key, e.g. KNOWN_DEFECTS = {k: SHAPES[k] for k in ("sql_twice",)}.
KNOWN_DEFECTS = {}
