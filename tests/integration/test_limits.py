"""limits: a rate and an in-flight bound per queue, kept by every daemon
together inside the fetch script. Three daemons against the real servers:
the rate over time and in every 1-second window, the most handlers at
once from their own stamps, an unlimited queue beside a limited one,
kill -9 while limited, reloads, and what operators see."""

import math
import re
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

import twservers
from conftest import (BIN, EX_CONFIG, EX_OK, WRAPPER, exec_handler, merge_config,
                      render_config, scaled, wait_reloaded, wait_until, write_script)

CTL = str(Path(BIN).resolve().parent.parent / "ctl" / "taskworkerctl")


@pytest.fixture
def done_at(tw):
    """Adds task.done_at, the server's clock when a row turns completed;
    returns a function giving those times (epoch seconds), ascending."""
    tw.db.execute("""
        ALTER TABLE task ADD COLUMN done_at double precision;
        CREATE FUNCTION tw_set_done_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
            NEW.done_at := extract(epoch FROM clock_timestamp());
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER tw_done_at BEFORE UPDATE ON task
          FOR EACH ROW EXECUTE FUNCTION tw_set_done_at();
    """)

    def times(ids=None):
        if ids is None:
            rows = tw.db.execute("SELECT done_at FROM task WHERE done_at IS NOT NULL "
                                 "ORDER BY done_at")
        else:
            rows = tw.db.execute("SELECT done_at FROM task WHERE done_at IS NOT NULL "
                                 "AND id = ANY(%s) ORDER BY done_at", (list(ids),))
        return [r[0] for r in rows]
    yield times
    tw.db.execute("""
        DROP TRIGGER IF EXISTS tw_done_at ON task;
        DROP FUNCTION IF EXISTS tw_set_done_at();
        ALTER TABLE task DROP COLUMN IF EXISTS done_at;
    """)


@pytest.fixture
def taken_at(tw):
    """Watches Redis' MONITOR from the start of the test; returns a function
    giving the time (epoch seconds, Redis' clock, to the microsecond) of
    every id a fetch script took from QUEUE, ascending. The fetch's ZADD NX
    into a processing set stamps its ids; its script read TIME a few
    microseconds before, so these are the times the GCRA counted."""
    mon = tw.r.monitor()
    got, ready, done = [], threading.Event(), threading.Event()

    def read():
        with mon as m:
            ready.set()
            while not done.is_set():
                try:
                    c = m.next_command()
                except Exception:       # noqa: BLE001 (the connection closed)
                    return
                if c["client_type"] == "lua":
                    got.append((c["time"], c["command"]))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert ready.wait(5), "MONITOR did not start"

    def times(queue="tasks"):
        ts = []
        for at, cmd in list(got):
            args = cmd.split(" ")
            if (args[0].upper() == "ZADD" and args[1].startswith(f"{queue}:processing:")
                    and args[2].upper() == "NX"):
                ts += [at] * ((len(args) - 3) // 2)
        return sorted(ts)

    yield times
    done.set()
    tw.r.ping()                         # wakes the reader to see it is done
    t.join(5)


def most_in_window(ts, width=1.0):
    """The most of the sorted times TS inside any window [t, t + WIDTH)."""
    best, j = 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


def most_at_once(intervals):
    """The most of the (start, end) INTERVALS open at one instant; an end
    and a start at the same instant do not overlap."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def stamping_handler(tmp_path, seconds):
    """An exec handler that sleeps SECONDS between two stamps of its own,
    written to a file per task; returns (handler group, reader)."""
    out = tmp_path / "stamps"
    out.mkdir()
    script = write_script(tmp_path, "stamp.sh", f"""
        s=$(date +%s.%N)
        sleep {seconds}
        e=$(date +%s.%N)
        echo "$s $e" > {out}/"$TASK_ID.$$"
    """)

    def intervals(since=0.0):
        res = []
        for p in out.iterdir():
            s, e = p.read_text().split()
            if float(s) >= since:
                res.append((float(s), float(e)))
        return res
    return exec_handler(script, max_processes=32), intervals


def three(taskworkerd, limits, worker=None, **groups):
    """Three daemons, worker ids w1..w3, with the same LIMITS."""
    return [taskworkerd(worker={"id": f"w{i}", **(worker or {})}, limits=limits, **groups)
            for i in (1, 2, 3)]


def all_held(tw, queue="tasks"):
    return sum(tw.r.zcard(k) for k in tw.r.keys(f"{queue}:processing:*"))


def check_nothing_left(tw, ids, queue="tasks"):
    tw.wait_completed(ids, 30)
    wait_until(lambda: all_held(tw, queue) == 0, 10, "every processing set empty")
    assert tw.llen(queue) == 0
    assert tw.llen(f"{queue}:dead") == 0


# ---- the rate -----------------------------------------------------------------------

@pytest.mark.slow
def test_rate_shared_by_three_daemons(tw, taskworkerd, done_at, taken_at):
    """rate = 200 per second, burst 20, three daemons: 3,000 tasks take
    15 s +- 5 %, and no 1-second window of takes (Redis' clock) holds as
    many as rate + burst: the GCRA spaces ids a whole 5,000 us apart, so a
    half-open second holds at most rate + burst - 1 (README's promise,
    rate + burst, with its edge excluded)."""
    ds = three(taskworkerd, [{"queue": "tasks", "rate": 200, "per_ms": 1000,
                              "burst": 20}])
    ids = tw.insert(3000)
    t0 = tw.db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    tw.push(ids)
    tw.wait_completed(ids, 40, daemon=ds[0])
    ts = done_at(ids)
    took = ts[-1] - float(t0)
    taken = taken_at()
    window = most_in_window(taken)
    print(f"3000 tasks in {took:.2f} s ({3000 / took:.1f}/s); most taken in 1 s: {window}")
    assert 15 * 0.95 <= took <= 15 * 1.05, f"3000 tasks took {took:.2f} s"
    assert len(taken) == 3000, f"{len(taken)} takes of 3000 ids"
    assert window < 200 + 20, f"{window} ids taken within one second"
    for d in ds:
        assert d.running()
    check_nothing_left(tw, ids)


@pytest.mark.slow
def test_limited_queue_beside_unlimited_one(tw, taskworkerd, done_at, taken_at):
    """The limited queue first in priority at 20 per second, an unlimited
    one after it: the unlimited one is served at full speed meanwhile."""
    queues = {"queues": ["slow", "fast"]}
    d = taskworkerd(redis=queues, worker={"concurrency": 200},
                    limits=[{"queue": "slow", "rate": 20}])
    slow, fast = tw.insert(100), tw.insert(3000)
    t0 = tw.db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    tw.push(slow, queue="slow")
    tw.push(fast, queue="fast")
    tw.wait_completed(fast, 10, daemon=d)
    fast_took = done_at(fast)[-1] - float(t0)
    slow_by_then = len([t for t in done_at(slow) if t <= done_at(fast)[-1]])
    tw.wait_completed(slow, 20, daemon=d)
    slow_took = done_at(slow)[-1] - float(t0)
    print(f"fast: 3000 in {fast_took:.2f} s; slow: {slow_by_then} by then, "
          f"100 in {slow_took:.2f} s")
    assert fast_took < 3.0, f"the unlimited queue took {fast_took:.2f} s"
    assert slow_by_then <= 20 * fast_took + 2
    assert 99 / 20 * 0.95 <= slow_took <= 99 / 20 * 1.05 + 0.3, slow_took
    assert most_in_window(taken_at("slow")) < 20 + 1
    check_nothing_left(tw, slow, "slow")
    check_nothing_left(tw, fast, "fast")


@pytest.mark.slow
def test_kill9_while_rate_limited(tw, taskworkerd, done_at, taken_at):
    """kill -9 of one of three daemons while limited: its ids come back
    once its heartbeat lapses, every task completes once, and the rate
    holds in every window all along."""
    worker = {"delay_ms": 500, "heartbeat_ttl_ms": 1000}
    ds = three(taskworkerd, [{"queue": "tasks", "rate": 100, "burst": 10}], worker=worker)
    ids = tw.insert(600)
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.processing(worker="w2")) > 0 and
               tw.count("completed", ids) >= 150, 20, "w2 holding ids, 150 done",
               daemon=ds[0])
    ds[1].kill()
    held = tw.ids_in(tw.processing(worker="w2"))
    assert held, "w2 held nothing when killed"
    tw.wait_completed(ids, 30, daemon=ds[0])
    ts = done_at(ids)
    window = most_in_window(taken_at())
    print(f"killed w2 holding {len(held)}; most taken in 1 s: {window}")
    assert window < 100 + 10, f"{window} ids taken within one second"
    assert len(ts) == len(ids)
    assert tw.llen(tw.processing(worker="w2")) == 0
    wait_until(lambda: "w2" not in tw.r.smembers("tasks:workers"), 10, "w2 forgotten")
    check_nothing_left(tw, ids)


@pytest.mark.slow
def test_reload_raises_and_lowers_the_rate(tw, taskworkerd, done_at):
    """20 per second, raised to 100, lowered to 10 (a burst of 5, so a
    late fetch is made up): each reload applies at once, to what is taken
    next."""
    d = taskworkerd(limits=[{"queue": "tasks", "rate": 20, "burst": 5}])
    ids = tw.insert(3000)
    tw.push(ids)
    subprocess.run(["sleep", "0.5"])    # past the first burst

    def rate_over(seconds):
        t1 = tw.db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
        subprocess.run(["sleep", str(seconds)])
        return len([t for t in done_at() if t > float(t1)]) / seconds

    def reload(rate):
        wait_reloaded(d, d.reload(merge_config(d.config, {
            "limits": [{"queue": "tasks", "rate": rate, "burst": 5}]})))
        subprocess.run(["sleep", "0.3"])

    r20 = rate_over(3)
    reload(100)
    r100 = rate_over(3)
    reload(10)
    r10 = rate_over(3)
    print(f"rates: {r20:.1f}/s, raised {r100:.1f}/s, lowered {r10:.1f}/s")
    assert 20 * 0.9 <= r20 <= 20 * 1.1, r20
    assert 100 * 0.9 <= r100 <= 100 * 1.1, r100
    assert 10 * 0.85 <= r10 <= 10 * 1.15, r10
    assert d.running()


# ---- in flight ------------------------------------------------------------------------

@pytest.mark.slow
def test_max_in_flight_across_three_daemons(tw, taskworkerd, tmp_path):
    """max_in_flight = 10, handlers of 200 ms, three daemons of 8 slots
    each: the most handlers running at once, from their own start and end
    stamps, is 10 and never 11."""
    handler, intervals = stamping_handler(tmp_path, 0.2)
    ds = three(taskworkerd, [{"queue": "tasks", "max_in_flight": 10}],
               worker={"concurrency": 8}, handler=handler)
    ids = tw.insert(150)
    tw.push(ids)
    tw.wait_completed(ids, 60, daemon=ds[0])
    iv = intervals()
    peak = most_at_once(iv)
    print(f"{len(iv)} handler runs, at most {peak} at once")
    assert len(iv) == 150
    assert peak == 10, f"{peak} handlers ran at once"
    for d in ds:
        assert d.running()
    check_nothing_left(tw, ids)


@pytest.mark.slow
def test_dead_workers_ids_count_until_reclaimed(tw, taskworkerd):
    """max_in_flight = 6: a worker that holds 6 stops the others; killed,
    its ids count until they are reclaimed, then the others take them and
    everything completes once."""
    limits = [{"queue": "tasks", "max_in_flight": 6}]
    ids = tw.insert(30)
    tw.push(ids)
    a = taskworkerd(worker={"id": "wa", "delay_ms": 60000, "concurrency": 10,
                            "heartbeat_ttl_ms": 2000}, limits=limits)
    wait_until(lambda: tw.llen(tw.processing(worker="wa")) == 6, 10, "wa holding 6",
               daemon=a)
    b = taskworkerd(worker={"id": "wb", "delay_ms": 0, "heartbeat_ttl_ms": 2000},
                    limits=limits)
    subprocess.run(["sleep", str(scaled(1))])
    assert tw.count("completed", ids) == 0, "wb took ids past max_in_flight"
    assert tw.llen(tw.processing(worker="wa")) == 6
    a.kill()
    subprocess.run(["sleep", "1"])
    assert tw.count("completed", ids) == 0, "a dead worker's ids stopped counting early"
    tw.wait_completed(ids, 30, daemon=b)
    assert "wa" not in tw.r.smembers("tasks:workers")
    check_nothing_left(tw, ids)


@pytest.mark.slow
def test_reload_raises_and_lowers_max_in_flight(tw, taskworkerd, tmp_path):
    """max_in_flight 2, raised to 6, lowered to 3: the handlers at once
    follow each reload."""
    handler, intervals = stamping_handler(tmp_path, 0.2)
    d = taskworkerd(worker={"concurrency": 20}, handler=handler,
                    limits=[{"queue": "tasks", "max_in_flight": 2}])
    ids = tw.insert(400)
    tw.push(ids)

    def phase(limit):
        mark = tw.db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
        if limit is not None:
            wait_reloaded(d, d.reload(merge_config(d.config, {
                "limits": [{"queue": "tasks", "max_in_flight": limit}]})))
        subprocess.run(["sleep", "0.6"])   # the runs started before end
        since = float(mark) + 0.6
        subprocess.run(["sleep", "1.5"])
        return most_at_once([i for i in intervals(since) if i[0] >= since])

    p2 = phase(None)
    p6 = phase(6)
    p3 = phase(3)
    print(f"at once: {p2}, raised {p6}, lowered {p3}")
    assert p2 == 2 and p6 == 6 and p3 == 3, (p2, p6, p3)


# ---- what operators see -----------------------------------------------------------------

def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_status_and_ctl_show_the_limits(tw, taskworkerd, tmp_path):
    port = twservers.free_port()
    limits = [{"queue": "tasks", "rate": 5, "burst": 2, "max_in_flight": 40}]
    d = taskworkerd(metrics={"listen": f"127.0.0.1:{port}"}, limits=limits)
    ids = tw.insert(40)
    tw.push(ids)
    d.notify.wait_for(lambda line: "limited: tasks (rate)" in line, 10,
                      "STATUS= naming the limited queue", daemon=d)
    subprocess.run(["sleep", "1.5"])
    text = scrape(port)
    limited = metric(text, "taskworkerd_queue_limited_seconds_total", queue="tasks",
                     limit="rate")
    assert limited is not None and limited > 1.0, text
    assert metric(text, "taskworkerd_queue_limited_seconds_total", queue="tasks",
                  limit="in_flight") == 0
    assert metric(text, "taskworkerd_queue_limit_rate", queue="tasks") == 5
    assert metric(text, "taskworkerd_queue_limit_burst", queue="tasks") == 2
    assert metric(text, "taskworkerd_queue_limit_max_in_flight", queue="tasks") == 40

    res = subprocess.run(WRAPPER + [CTL, "-c", str(d.config_path), "status"],
                         capture_output=True, text=True, timeout=scaled(20))
    assert res.returncode == 0, res.stderr
    print(res.stdout)
    assert re.search(r"rate 5 per 1000 ms, burst 2: \d+ of 2 used", res.stdout), res.stdout
    assert re.search(r"in flight \d+ of 40", res.stdout), res.stdout
    res = subprocess.run(WRAPPER + [CTL, "-c", str(d.config_path), "--json", "status"],
                         capture_output=True, text=True, timeout=scaled(20))
    assert '"limits":{"rate":5,"per_ms":1000,"burst":2,' in res.stdout, res.stdout


def test_limit_key_of_wrong_type_loses_nothing(tw, taskworkerd):
    """tasks:limit a list: that queue is reported and left alone, the
    other is served; once the key is gone, everything completes."""
    d = taskworkerd(redis={"queues": ["tasks", "other"]},
                    limits=[{"queue": "tasks", "rate": 1000}])
    tw.r.rpush("tasks:limit", "oops")
    ids, other = tw.insert(20), tw.insert(20)
    tw.push(ids)
    tw.push(other, queue="other")
    tw.wait_completed(other, 10, daemon=d)
    wait_until(lambda: "tasks:limit holds a list" in d.log(), 5, "the report", daemon=d)
    assert sorted(tw.ids_in("tasks")) == ids
    tw.r.delete("tasks:limit")
    tw.wait_completed(ids, 10, daemon=d)
    check_nothing_left(tw, ids)


def test_check_config_limits(run_bin, tmp_path, servers):
    from conftest import base_config
    good = merge_config(base_config(servers), {
        "redis": {"queues": ["emails", "tasks"]},
        "limits": [{"queue": "emails", "rate": 100, "per_ms": 1000, "burst": 20,
                    "max_in_flight": 50}, {"queue": "tasks"}]})
    path = tmp_path / "good.conf"
    path.write_text(render_config(good))
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    bad = merge_config(good, {"limits": [
        {"queue": "nope", "rate": 5}, {"queue": "emails", "rate": 0},
        {"queue": "tasks", "burst": 3}, {"queue": "emails", "max_in_flight": 10}]})
    path.write_text(render_config(bad))
    res = run_bin("-t", "-c", str(path))
    out = res.stdout + res.stderr
    assert res.returncode == EX_CONFIG, out
    for want in ('limits[0].queue: "nope" is not in redis.queues',
                 "limits[1].rate: must be between 1 and 1000000000",
                 "limits[2]: per_ms and burst shape a rate: set rate too",
                 'limits[3].queue: "emails" already has limits[1]'):
        assert want in out, out


# ---- a rate's state out of step with its limits ---------------------------------------

def fetch_calls(tw):
    """The fetch script's looks at a limited queue so far: each makes one
    LLEN (no other script of the daemon does)."""
    return tw.r.info("commandstats").get("cmdstat_llen", {}).get("calls", 0)


def test_reload_raising_the_rate_applies_at_once(tw, taskworkerd, done_at):
    """10 per second with a burst of 100, its burst spent, then a reload to
    100 per second with a burst of 20: the state the old limits left (a
    time far ahead of what the new burst allows) is brought back to one
    burst, so the new rate serves from the first second."""
    d = taskworkerd(limits=[{"queue": "tasks", "rate": 10, "burst": 100}])
    ids = tw.insert(1000)
    tw.push(ids)
    wait_until(lambda: len(done_at()) >= 100, 10, "the first burst", daemon=d)
    wait_reloaded(d, d.reload(merge_config(d.config, {
        "limits": [{"queue": "tasks", "rate": 100, "burst": 20}]})))
    t1 = tw.db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    subprocess.run(["sleep", "2"])
    got = len([t for t in done_at() if t > float(t1)])
    assert got >= 150, f"{got} ids in the 2 s after raising the rate to 100/s"


@pytest.mark.parametrize("stored", ["future", "9e15", "1e400"])
def test_rate_state_far_ahead_is_brought_back(tw, taskworkerd, stored):
    """QUEUE:limit set an hour ahead (a clock set back) or to a hostile
    number: at most one burst's wait, then the rate serves, and the daemon
    does not poll Redis faster meanwhile."""
    now_us = int(tw.r.time()[0]) * 1_000_000
    tw.r.set("tasks:limit", str(now_us + 3600 * 10**6) if stored == "future" else stored)
    d = taskworkerd(limits=[{"queue": "tasks", "rate": 100, "burst": 10}])
    ids = tw.insert(100)
    before = fetch_calls(tw)
    tw.push(ids)
    tw.wait_completed(ids, 5, daemon=d)
    calls = fetch_calls(tw) - before
    # 100 ids at 100/s, a burst of 10 at a time: about a hundred fetches.
    assert calls < 400, f"{calls} fetch scripts for 100 ids"


def test_high_rate_with_the_default_burst_serves(tw, taskworkerd):
    """rate = 10,000,000 per second with the default burst of 1: an
    interval of 0.1 us, below what Redis' clock in microseconds can add to
    itself; the queue is served, an id a fetch, never stopped."""
    d = taskworkerd(limits=[{"queue": "tasks", "rate": 10000000}])
    ids = tw.insert(200)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)


def test_both_limits_wait_for_the_rate(tw, taskworkerd):
    """One id a second and max_in_flight = 10, ids held 20 s: with both
    limits saying no, the daemon waits for the rate's time, not the 25 ms
    look of max_in_flight."""
    d = taskworkerd(limits=[{"queue": "tasks", "rate": 1, "burst": 1, "max_in_flight": 10}],
                    worker={"delay_ms": 20000})
    ids = tw.insert(30)
    tw.push(ids)
    wait_until(lambda: all_held(tw) >= 2, 5, "two ids taken", daemon=d)
    before = fetch_calls(tw)
    subprocess.run(["sleep", "3"])
    calls = fetch_calls(tw) - before
    assert calls <= 8, f"{calls} fetch scripts in 3 s at one id a second"
    assert all_held(tw) <= 6
