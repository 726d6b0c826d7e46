"""The exec handler: one child process per task, run without a shell, with
the row in its environment; exit status, signals, timeouts, leftover
grandchildren, output, hostile values, max_processes and SIGTERM."""

import re
import shlex
import signal
import threading
import time

import pytest

from conftest import (EX_CONFIG, EX_OK, REPO, WRAPPER, ProcRef, exec_handler, fast_retry,
                      merge_config,
                      line_number, log_has_line, read_lines, reason_text, render_config,
                      rss_kib, scaled, wait_dead, wait_until, write_script)

EXAMPLE = REPO / "conf" / "examples" / "process-task.sh"


def q(path):
    """PATH quoted for a shell script."""
    return shlex.quote(str(path))


def names(tw, ids):
    return dict(tw.db.execute("SELECT id, name FROM task WHERE id = ANY(%s)",
                              (list(ids),)).fetchall())


def insert_named(tw, *names_):
    """One pending row per name; their ids in order."""
    return [tw.db.execute("INSERT INTO task (name) VALUES (%s) RETURNING id",
                          (n,)).fetchone()[0] for n in names_]


def assert_clean(tw, d):
    """Nothing left in processing, tasks:retry or tasks:attempts."""
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.r.zcard("tasks:retry") == 0, tw.r.zrange("tasks:retry", 0, -1)
    assert tw.r.hgetall("tasks:attempts") == {}


def task_lines(d, task_id):
    """The text after 'task ID: ' of every log line about task ID."""
    prefix = f"task {task_id}: "
    return [line.split(prefix, 1)[1] for line in d.log_lines() if prefix in line]


# ---- success and what the child sees ----------------------------------------------

def test_exec_runs_handler_with_task_environment(tw, taskworkerd, tmp_path):
    """Each task runs the command once: TASK_ID, TASK_QUEUE, TASK_ATTEMPT
    and TASK_NAME are set, and the row is completed after exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    script = write_script(tmp_path, "handler.sh", f"""
        printf '%s\\n' "$TASK_ID" "$TASK_QUEUE" "$TASK_ATTEMPT" "$TASK_NAME" >> {q(out)}/"$TASK_ID"
    """)
    ids = tw.insert(5)
    tw.push(ids)
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    tw.wait_completed(ids, 20, daemon=d)
    assert_clean(tw, d)
    nm = names(tw, ids)
    for i in ids:
        assert read_lines(out / str(i)) == [str(i), "tasks", "1", nm[i]], \
            f"task {i}: the handler saw {read_lines(out / str(i))}"
    assert tw.lrange(tw.dead()) == [] and tw.lrange("tasks") == []


def test_exec_argv_environment_cwd_stdin(tw, taskworkerd, tmp_path, monkeypatch):
    """argv = command + [id], no shell in between; the daemon's environment
    plus handler.environment; working_directory; stdin /dev/null; the child
    leads its own process group and starts with no signal ignored or
    blocked."""
    out = tmp_path / "out"
    out.mkdir()
    wd = tmp_path / "work dir"
    wd.mkdir()
    script = write_script(tmp_path, "handler.sh", f"""
        # The signal state first, with builtins only: a shell waiting for a
        # child (grep) blocks signals itself.
        sig=
        while IFS= read -r l; do
          case $l in SigBlk:*|SigIgn:*) sig="$sig$l
        ";; esac
        done < /proc/$$/status
        {{
          printf 'arg:%s\\n' "$@"
          printf 'greeting:%s\\n' "${{GREETING-unset}}"
          printf 'empty:%s\\n' "${{EMPTY-unset}}"
          printf 'inherited:%s\\n' "${{TW_FROM_DAEMON-unset}}"
          printf 'cwd:%s\\n' "$(pwd -P)"
          printf 'stdin:%s\\n' "$(readlink /proc/$$/fd/0)"
          printf 'pgid:%s\\n' "$(cut -d' ' -f5 /proc/$$/stat)"
          printf 'pid:%s\\n' "$$"
          printf %s "$sig"
        }} > {q(out)}/"$TASK_ID"
    """)
    monkeypatch.setenv("TW_FROM_DAEMON", "inherited value")
    (i,) = tw.insert(1)
    tw.push([i])
    d = taskworkerd(handler=exec_handler([script, "two words", "*", "$HOME", ""],
                                         environment=["GREETING=hello world", "EMPTY="],
                                         working_directory=str(wd)),
                    retry=fast_retry(1))
    tw.wait_completed([i], 20, daemon=d)
    lines = read_lines(out / str(i))
    got = {}
    for line in lines:
        key, _, value = line.partition(":")
        got.setdefault(key, []).append(value.strip() if key.startswith("Sig") else value)
    assert got["arg"] == ["two words", "*", "$HOME", "", str(i)], lines
    assert got["greeting"] == ["hello world"] and got["empty"] == [""], lines
    assert got["inherited"] == ["inherited value"], lines
    assert got["cwd"] == [str(wd.resolve())], lines
    assert got["stdin"] == ["/dev/null"], lines
    assert got["pgid"] == got["pid"], f"the handler is not a process group leader: {lines}"
    # Signals 1..31; glibc's posix_spawn leaves its own internal ones (32,
    # 33) ignored, and the handler's libc installs its handlers anyway.
    ignored = int(got["SigIgn"][0], 16) & 0x7FFFFFFF
    assert ignored == 0, f"signals ignored in the handler (SigIgn mask {ignored:#x}): {lines}"
    assert got["SigBlk"] == ["0000000000000000"], f"signals blocked in the handler: {lines}"


def test_example_exec_handler(tw, taskworkerd):
    """conf/examples/process-task.sh: completes ordinary rows (its line in
    the log), fails names containing 'fail' with exit 1 and its message."""
    ok, bad = insert_named(tw, "resize photo 7", "please fail me")
    tw.push([ok, bad])
    d = taskworkerd(handler=exec_handler(EXAMPLE), retry=fast_retry(1))
    tw.wait_completed([ok], 20, daemon=d)
    wait_dead(tw, [bad], 20, daemon=d)
    assert reason_text(tw, bad) == "attempt 1/1: exit 1"
    assert tw.statuses([ok, bad]) == {ok: "completed", bad: "failed"}
    wait_until(lambda: log_has_line(d.log(), f"task {ok}: task {ok} processed",
                                    "resize photo 7"), 5,
               "the example's output line in the log", daemon=d)
    wait_until(lambda: log_has_line(d.log(), f"task {bad}: task {bad}: cannot process"), 5,
               "the example's error message in the log", daemon=d)
    assert_clean(tw, d)


# ---- how a run fails -------------------------------------------------------------

def test_exec_nonzero_exit(tw, taskworkerd, tmp_path):
    """exit 3 with retry.attempts = 1: the row is 'failed', the id in
    tasks:dead with 'attempt 1/1: exit 3'; the other tasks complete."""
    script = write_script(tmp_path, "handler.sh", """
        case $TASK_NAME in *fail*) echo "giving up" >&2; exit 3;; esac
        exit 0
    """)
    good = tw.insert(3)
    (bad,) = insert_named(tw, "must fail")
    tw.push(good[:2] + [bad] + good[2:])
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    tw.wait_completed(good, 20, daemon=d)
    wait_dead(tw, [bad], 20, daemon=d)
    assert tw.lrange(tw.dead()) == [str(bad)]
    assert reason_text(tw, bad) == "attempt 1/1: exit 3"
    assert tw.statuses([bad]) == {bad: "failed"}
    assert log_has_line(d.log(), "dead", str(bad)), "no log line about the dead task"
    assert_clean(tw, d)
    assert d.running()


def test_exec_killed_by_signal(tw, taskworkerd, tmp_path):
    script = write_script(tmp_path, "handler.sh", """
        ulimit -c 0
        kill -SEGV $$
        sleep 5
    """)
    (i,) = tw.insert(1)
    tw.push([i])
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    wait_dead(tw, [i], 20, daemon=d)
    assert reason_text(tw, i) == "attempt 1/1: killed by SIGSEGV"
    assert tw.statuses([i]) == {i: "failed"}
    assert_clean(tw, d)


@pytest.mark.parametrize("on_term", ["ignores-TERM", "exits-on-TERM"])
def test_exec_timeout(tw, taskworkerd, tmp_path, spawned, on_term):
    """timeout_ms = 300, kill_grace_ms = 200: the run fails with 'timed out
    after 300 ms'. A child that exits on SIGTERM got it (the trap ran); one
    that ignores it is SIGKILLed; either way it is gone afterwards."""
    pidfile, trapfile = tmp_path / "pid", tmp_path / "trapped"
    if on_term == "ignores-TERM":
        body = f"""
            trap '' TERM
            echo $$ > {q(pidfile)}.tmp && mv {q(pidfile)}.tmp {q(pidfile)}
            exec sleep 30
        """
    else:
        body = f"""
            trap 'echo TERM >> {q(trapfile)}; exit 0' TERM
            echo $$ > {q(pidfile)}.tmp && mv {q(pidfile)}.tmp {q(pidfile)}
            sleep 30 &
            wait
        """
    script = write_script(tmp_path, "handler.sh", body)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script, timeout_ms=300, kill_grace_ms=200),
                    retry=fast_retry(1))
    t0 = time.monotonic()
    tw.push([i])
    wait_until(lambda: pidfile.exists(), 10, "the handler to start", daemon=d)
    child = ProcRef(pidfile.read_text().strip())
    spawned.append(child)
    wait_dead(tw, [i], 10, daemon=d)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.28, f"failed after {elapsed:.3f}s, before the 300 ms timeout"
    assert elapsed < scaled(5), f"took {elapsed:.1f}s to time out a 300 ms limit"
    assert reason_text(tw, i) == "attempt 1/1: timed out after 300 ms"
    assert tw.statuses([i]) == {i: "failed"}
    wait_until(lambda: not child.alive(), 2, f"the timed-out handler ({child}) to be gone",
               daemon=d)
    if on_term == "exits-on-TERM":
        assert read_lines(trapfile) == ["TERM"], "the handler did not get SIGTERM first"
    assert_clean(tw, d)


def test_exec_grandchild_killed(tw, taskworkerd, tmp_path, spawned):
    """A handler that exits leaving `sleep 300 &` behind (holding its
    stdout): the task completes at once, and the sleeper is killed with
    the process group."""
    gcfile = tmp_path / "grandchild"
    script = write_script(tmp_path, "handler.sh", f"""
        sleep 300 &
        echo $! > {q(gcfile)}.tmp && mv {q(gcfile)}.tmp {q(gcfile)}
        echo "left a sleeper behind"
        exit 0
    """)
    (i,) = tw.insert(1)
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    tw.push([i])
    wait_until(lambda: gcfile.exists(), 10, "the handler to start its grandchild", daemon=d)
    grandchild = ProcRef(gcfile.read_text().strip())
    spawned.append(grandchild)
    tw.wait_completed([i], 3, daemon=d)
    wait_until(lambda: not grandchild.alive(), 2,
               f"the grandchild ({grandchild}) to be killed", daemon=d)
    assert_clean(tw, d)


# ---- the command: -t and a command that goes away -----------------------------------

def check_config(run_bin, path):
    return run_bin("-t", "-c", str(path))


def test_check_config_accepts_exec_handler(tw, taskworkerd, run_bin, tmp_path):
    script = write_script(tmp_path, "handler.sh", "exit 0\n")
    d = taskworkerd(start=False,
                    handler=exec_handler([script, "--flag"], environment=["A=1", "B="],
                                         working_directory=str(tmp_path),
                                         timeout_ms=1000, kill_grace_ms=100,
                                         max_processes=4),
                    retry={"attempts": 3, "min_ms": 100, "max_ms": 1000},
                    postgres={"failed_status": "failed", "attempts_column": "",
                              "error_column": ""},
                    redis={"dead_max": 10})
    res = check_config(run_bin, d.config_path)
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


BAD_COMMANDS = ["missing", "relative", "not-executable", "directory", "no-command",
                "empty-command", "bad-environment"]


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_check_config_rejects_bad_command(tw, taskworkerd, run_bin, tmp_path, case):
    """-t: exit 78, FILE:LINE: and the key in the message."""
    script = write_script(tmp_path, "handler.sh", "exit 0\n")
    key = "handler.command"
    handler = exec_handler(script)
    if case == "missing":
        handler["command"] = [str(tmp_path / "no-such-handler"), "--flag"]
    elif case == "relative":
        handler["command"] = ["handler.sh"]  # exists in the cwd, but relative
    elif case == "not-executable":
        script.chmod(0o644)
    elif case == "directory":
        handler["command"] = [str(tmp_path)]
    elif case == "no-command":
        del handler["command"]
    elif case == "empty-command":
        handler["command"] = []
    elif case == "bad-environment":
        handler["environment"] = ["GOOD=1", "NO_EQUALS_SIGN"]
        key = "handler.environment"
    d = taskworkerd(start=False, handler=handler)
    text = render_config(d.config)
    res = check_config(run_bin, d.config_path)
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert "configuration OK" not in res.stdout
    assert key in res.stderr, f"{key} not named in:\n{res.stderr}"
    assert "unknown" not in res.stderr.lower(), f"a key is not known yet:\n{res.stderr}"
    if case == "no-command":
        assert re.search(re.escape(str(d.config_path)) + r":\d+:", res.stderr), res.stderr
    else:
        needle = key.split(".")[1] + " ="
        where = f"{d.config_path}:{line_number(text, needle)}:"
        assert where in res.stderr, f"expected {where} in:\n{res.stderr}"
    if case == "missing":
        # starting with it fails the same way
        res = run_bin("-v", "-c", str(d.config_path), timeout=20)
        assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
        assert key in res.stderr


def test_exec_command_removed_after_start(tw, taskworkerd, tmp_path):
    """The command goes away while the daemon runs: the task fails with
    'cannot run PATH: No such file or directory'; the daemon serves on and
    runs the command again once it is back."""
    script = write_script(tmp_path, "handler.sh", "exit 0\n")
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    first = tw.insert(1)
    tw.push(first)
    tw.wait_completed(first, 20, daemon=d)

    script.unlink()
    (gone,) = tw.insert(1)
    tw.push([gone])
    wait_dead(tw, [gone], 20, daemon=d)
    text = reason_text(tw, gone)
    assert text == f"attempt 1/1: cannot run {script}: No such file or directory", text
    assert tw.statuses([gone]) == {gone: "failed"}
    assert d.running()

    write_script(tmp_path, "handler.sh", "exit 0\n")
    again = tw.insert(3)
    tw.push(again)
    tw.wait_completed(again, 20, daemon=d)
    assert_clean(tw, d)


# ---- hostile values in the environment ------------------------------------------------

HOSTILE_NAME = ("line one\nline two\r\n\"double\" 'single' `back` $(echo pwned) ${HOME} "
                "\\ back\\slash\ttab caf\u00e9 \u65e5\u672c \U0001F389 =equals= %s %n")


def test_exec_hostile_column_values(tw, task_columns, taskworkerd, tmp_path):
    """Column values reach the handler byte for byte: newlines, quotes, shell
    syntax, non-ASCII UTF-8, an empty string and 100 kB; NULL leaves the
    variable unset; a column name with a space becomes TASK_EXTRA_INFO. A
    1 MiB value (too big for the environment) fails its task with a reason
    naming it; the daemon runs on."""
    task_columns("note", "text")
    task_columns("extra info", "text")
    out = tmp_path / "out"
    out.mkdir()
    script = write_script(tmp_path, "handler.sh", f"""
        f={q(out)}/"$TASK_ID"
        printf %s "$TASK_NAME" > "$f.name"
        if [ "${{TASK_NOTE+set}}" = set ]; then printf %s "$TASK_NOTE" > "$f.note"; fi
        if [ "${{TASK_EXTRA_INFO+set}}" = set ]; then printf %s "$TASK_EXTRA_INFO" > "$f.extra"; fi
        exit 0
    """)
    rows = [  # name, note, extra info
        (HOSTILE_NAME, None, "x y\nz"),
        ("empty note", "", None),
        ("big note", "n" * 100_000, "\u00e9" * 1000),
        ("huge note", "h" * (1 << 20), "fine"),
    ]
    ids = [tw.db.execute('INSERT INTO task (name, note, "extra info") VALUES (%s, %s, %s) '
                         "RETURNING id", row).fetchone()[0] for row in rows]
    tw.push(ids)
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1),
                    postgres={"columns": ["name", "note", "extra info"]})
    ok, huge = ids[:3], ids[3]
    tw.wait_completed(ok, 20, daemon=d)
    for i, (name, note, extra) in zip(ok, rows):
        assert (out / f"{i}.name").read_bytes() == name.encode(), f"TASK_NAME of {i}"
        for suffix, value in (("note", note), ("extra", extra)):
            path = out / f"{i}.{suffix}"
            if value is None:
                assert not path.exists(), f"{suffix} of {i} is NULL, but its variable is set"
            else:
                assert path.exists(), f"{suffix} of {i} is {value[:20]!r}, its variable unset"
                assert path.read_bytes() == value.encode(), f"{suffix} of {i} differs"

    wait_dead(tw, [huge], 20, daemon=d)
    text = reason_text(tw, huge)
    assert text.startswith("attempt 1/1: "), text
    assert "note" in text.lower(), f"the reason does not name the column: {text!r}"
    assert len(text) < 1000, f"the reason is {len(text)} bytes long"
    assert tw.statuses([huge]) == {huge: "failed"}
    assert not (out / f"{huge}.name").exists(), "the handler ran without its TASK_NOTE"

    assert d.running()
    more = tw.insert(2)
    tw.push(more)
    tw.wait_completed(more, 20, daemon=d)
    assert_clean(tw, d)


# ---- output ---------------------------------------------------------------------------

def test_exec_output_logged(tw, taskworkerd, tmp_path):
    """Each line of stdout and stderr is logged at info as 'task ID: LINE';
    control bytes as \\xHH; a long line cut at 4096 bytes; a last line
    without a newline still logged."""
    script = write_script(tmp_path, "handler.sh", """
        echo "hello from $TASK_ID"
        echo "to stderr $TASK_ID" >&2
        printf 'ctl\\001bell\\033end\\n'
        head -c 10000 /dev/zero | tr '\\0' A
        echo
        echo "after the long line"
        printf 'no newline at the end'
    """)
    (i,) = tw.insert(1)
    tw.push([i])
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1))
    tw.wait_completed([i], 20, daemon=d)
    wait_until(lambda: log_has_line(d.log(), f"task {i}: no newline at the end"), 5,
               "the last line (no newline) in the log", daemon=d)
    log = d.log()
    hello = log_has_line(log, f"task {i}: hello from {i}")
    assert hello and "[info]" in hello, f"stdout line not logged at info: {hello!r}"
    assert log_has_line(log, f"task {i}: to stderr {i}"), "stderr line not logged"
    lines = task_lines(d, i)
    ctl = [t for t in lines if t.startswith("ctl")]
    assert ctl and ctl[0].lower() == "ctl\\x01bell\\x1bend", f"control bytes: {ctl!r}"
    assert not any("\x01" in line or "\x1b" in line for line in log.splitlines()), \
        "a raw control byte in the log"
    runs = [len(m) for t in lines for m in re.findall(r"A{100,}", t)]
    assert runs, "the long line is not in the log"
    assert max(runs) <= 4096, f"a logged line of {max(runs)} bytes (cut at 4096)"
    assert runs[0] >= 3900, f"the long line was cut to {runs[0]} bytes"
    order = [t for t in lines if t in (f"hello from {i}", "after the long line",
                                       "no newline at the end")]
    assert order == [f"hello from {i}", "after the long line", "no newline at the end"], order


@pytest.mark.slow
def test_exec_output_flood(tw, taskworkerd, tmp_path):
    """A handler writing 64 MB (16384 lines of 4000 bytes) while 20 ordinary
    tasks run:
    the daemon's RSS stays within 32 MiB of where it was, everything
    completes."""
    script = write_script(tmp_path, "handler.sh", """
        case $TASK_NAME in
        flood)
            line=$(head -c 4000 /dev/zero | tr '\\0' y)
            yes "$line" | head -n 16384
            echo "flood done"
            ;;
        *)
            echo "ordinary $TASK_ID"
            ;;
        esac
    """)
    d = taskworkerd(handler=exec_handler(script), retry=fast_retry(1),
                    worker={"concurrency": 50})
    warm = tw.insert(5)
    tw.push(warm)
    tw.wait_completed(warm, 20, daemon=d)
    time.sleep(0.2)
    before = rss_kib(d.pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak.append(rss_kib(d.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        (flood,) = insert_named(tw, "flood")
        others = tw.insert(20)
        tw.push([flood] + others)
        tw.wait_completed(others + [flood], 90, daemon=d)
    finally:
        done.set()
        sampler.join()
    after = rss_kib(d.pid)
    growth = max(peak) - before
    print(f"RSS before {before} KiB, peak {max(peak)} KiB, after {after} KiB")
    if not WRAPPER:  # under valgrind the RSS is valgrind's
        assert growth < 32 * 1024, \
            f"RSS grew by {growth // 1024} MiB (from {before} KiB) during a 64 MB output flood"
    assert d.running()
    wait_until(lambda: log_has_line(d.log(), f"task {flood}: flood done"), 10,
               "the flood's last line in the log", daemon=d)
    assert_clean(tw, d)


# ---- max_processes and SIGTERM ------------------------------------------------------------

def max_overlap(lines):
    """The most 'start T' .. 'end T' intervals open at one time."""
    events = []
    for line in lines:
        kind, t = line.split()
        events.append((int(t), 0 if kind == "end" else 1))
    events.sort()  # at one instant, ends before starts
    n = best = 0
    for _, start in events:
        n += 1 if start else -1
        best = max(best, n)
    return best


@pytest.mark.slow
def test_exec_max_processes(tw, taskworkerd, tmp_path):
    """max_processes = 3, concurrency 20, 12 tasks of 0.3 s: exactly 3 run
    at once at most (and 3 do), and every task completes."""
    events = tmp_path / "events"
    script = write_script(tmp_path, "handler.sh", f"""
        echo "start $(date +%s%N)" >> {q(events)}
        sleep 0.3
        echo "end $(date +%s%N)" >> {q(events)}
    """)
    ids = tw.insert(12)
    d = taskworkerd(handler=exec_handler(script, max_processes=3), retry=fast_retry(1),
                    worker={"concurrency": 20})
    t0 = time.monotonic()
    tw.push(ids)
    tw.wait_completed(ids, 30, daemon=d)
    elapsed = time.monotonic() - t0
    lines = read_lines(events)
    assert len(lines) == 24, f"{len(lines)} events for 12 tasks: {lines}"
    overlap = max_overlap(lines)
    assert overlap <= 3, f"{overlap} handlers ran at once with max_processes = 3"
    assert overlap == 3, f"at most {overlap} handlers ran at once; expected 3"
    assert elapsed >= 1.15, f"12 x 0.3 s tasks, 3 at a time, took only {elapsed:.2f}s"
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


@pytest.mark.slow
def test_exec_sigterm_kills_handlers_and_requeues(tw, taskworkerd, tmp_path, spawned):
    """5 handlers sleeping 30 s (ignoring SIGTERM), 3 more ids waiting;
    SIGTERM with shutdown_timeout_ms = 500, kill_grace_ms = 200: exit 0
    within a few seconds, the handlers are gone, all 8 ids are back in
    `tasks` in the order they were pushed, nothing in processing, retry or
    dead, no attempt counted, the rows still pending."""
    pids = tmp_path / "pids"
    script = write_script(tmp_path, "handler.sh", f"""
        trap '' TERM
        echo $$ >> {q(pids)}
        exec sleep 30
    """)
    ids = tw.insert(8)
    order = ids[3:] + ids[:3]  # not sorted, to see the order is kept
    tw.push(order)
    d = taskworkerd(handler=exec_handler(script, kill_grace_ms=200, max_processes=5),
                    retry=fast_retry(3),
                    worker={"concurrency": 5, "shutdown_timeout_ms": 500})
    wait_until(lambda: len(read_lines(pids)) == 5, 10, "5 handlers running", daemon=d)
    children = [ProcRef(p) for p in read_lines(pids)]
    spawned.extend(children)
    assert all(c.alive() for c in children)
    time.sleep(0.2)
    taken = tw.ids_in(tw.processing())
    assert len(taken) >= 5 and sorted(taken) == sorted(order[:len(taken)]), taken

    t0 = time.monotonic()
    rc = d.terminate(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == EX_OK
    assert elapsed < scaled(3), f"took {elapsed:.1f}s to stop (shutdown 500 ms + grace 200 ms)"
    wait_until(lambda: not any(c.alive() for c in children), 2,
               f"the handlers to be gone: {[c for c in children if c.alive()]}")
    assert tw.ids_in("tasks") == order
    assert tw.lrange(tw.processing()) == []
    assert tw.lrange(tw.dead()) == []
    assert tw.r.zcard("tasks:retry") == 0
    assert tw.r.hgetall("tasks:attempts") == {}, "an interrupted run counted as an attempt"
    assert tw.statuses(ids) == {i: "pending" for i in ids}
    assert len(read_lines(pids)) == 5, "more handlers started after SIGTERM"


# ---- reload -------------------------------------------------------------------------

@pytest.mark.slow
def test_reload_changes_handler_running_ones_finish(tw, taskworkerd, tmp_path):
    """SIGHUP from one program to another, then to the sql handler: a
    program already running finishes under its old settings (its own
    command, environment and timeout), tasks started after each reload run
    the new handler, and every row completes once."""
    out = tmp_path / "out"
    out.mkdir()
    old = write_script(tmp_path, "old.sh", f"""
        echo "old $WHO start" >> {q(out)}/"$TASK_ID"
        sleep 1.5
        echo "old $WHO end" >> {q(out)}/"$TASK_ID"
    """)
    new = write_script(tmp_path, "new.sh", f"""
        echo "new $WHO" >> {q(out)}/"$TASK_ID"
    """)
    first = tw.insert(2)
    tw.push(first)
    d = taskworkerd(handler=exec_handler(old, environment=["WHO=first"], timeout_ms=5000),
                    worker={"delay_ms": 0}, retry=fast_retry(1))
    wait_until(lambda: all((out / str(i)).exists() for i in first), 10,
               "the old handler to start", daemon=d)
    mark = d.reload(merge_config(d.config, {
        "handler": exec_handler(new, environment=["WHO=second"], timeout_ms=200)}))
    i = d.notify.wait_for(lambda line: line == "RELOADING=1", 10, "RELOADING=1",
                          since=mark, daemon=d)
    d.notify.wait_for(lambda line: line == "READY=1", 10, "READY=1", since=i + 1, daemon=d)
    second = tw.insert(2)
    tw.push(second)
    tw.wait_completed(first + second, 15, daemon=d)
    for t in first:
        # Past the new 200 ms timeout, under the old 5000 ms one: not killed.
        assert read_lines(out / str(t)) == ["old first start", "old first end"], t
    for t in second:
        assert read_lines(out / str(t)) == ["new second"], t
    assert tw.lrange(tw.dead()) == []
    # exec -> sql: the sessions reconnect and prepare the statement.
    mark = d.reload(merge_config(d.config, {
        "handler": {"type": "sql", "statement": "SELECT $1::bigint + 1",
                    "command": None, "environment": None}}))
    d.notify.wait_for(lambda line: line == "RELOADING=1", 10, "RELOADING=1",
                      since=mark, daemon=d)
    third = tw.insert(3)
    tw.push(third)
    tw.wait_completed(third, 15, daemon=d)
    assert not any((out / str(t)).exists() for t in third), "a program ran after the switch"
    assert_clean(tw, d)
