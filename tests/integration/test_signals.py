"""Signals: SIGTERM/SIGINT drain and requeue, a second SIGTERM, SIGHUP reload."""

import signal
import time

import pytest

from conftest import (EX_OK, log_has_line, merge_config, render_config, scaled, wait_reloaded,
                      wait_until)


def start_with_inflight(tw, taskworkerd, n, delay_ms, concurrency, shutdown_ms):
    """N tasks queued, the daemon running with CONCURRENCY of them in
    flight; returns (daemon, ids, the ids in flight)."""
    ids = tw.insert(n)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": delay_ms, "concurrency": concurrency,
                            "shutdown_timeout_ms": shutdown_ms})
    wait_until(lambda: tw.llen(tw.processing()) >= concurrency, 10,
               f"{concurrency} ids in flight", daemon=d)
    time.sleep(0.3)
    inflight = tw.ids_in(tw.processing())
    assert sorted(inflight) == ids[:len(inflight)], \
        f"in flight {inflight}, expected the first ids of {ids}"
    return d, ids, inflight


def assert_nothing_lost(tw, ids):
    """Every id is completed or waiting in the queue, once; the queue keeps
    the original order; nothing in processing or dead."""
    completed = tw.completed(ids)
    queued = tw.ids_in("tasks")
    assert tw.lrange(tw.processing()) == [], "processing list not emptied at exit"
    assert tw.lrange(tw.dead()) == []
    assert len(queued) == len(set(queued)), f"duplicates in the queue: {queued}"
    assert not set(queued) & set(completed), "completed ids still queued"
    assert set(queued) | set(completed) == set(ids), \
        f"lost ids: {sorted(set(ids) - set(queued) - set(completed))}"
    assert queued == [i for i in ids if i not in completed], \
        f"queue not in original order: {queued}"
    return completed, queued


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_finishes_inflight(tw, taskworkerd, sig):
    d, ids, inflight = start_with_inflight(tw, taskworkerd, 30, 2000, 10, 30000)
    rc = d.terminate(sig, timeout=15)
    assert rc == EX_OK
    completed, queued = assert_nothing_lost(tw, ids)
    assert set(completed) == set(inflight), \
        f"in flight at {sig.name}: {sorted(inflight)}; completed: {completed}"
    assert queued == [i for i in ids if i not in inflight]
    d.notify.wait_for(lambda line: line == "STOPPING=1", 5, "STOPPING=1")


@pytest.mark.slow
def test_shutdown_timeout_requeues_at_head(tw, taskworkerd):
    """shutdown_timeout_ms = 200 with 5 s tasks: exit 0 quickly, the
    unfinished ids back at the head of the queue in their original order,
    ahead of the ids that were still waiting."""
    d, ids, inflight = start_with_inflight(tw, taskworkerd, 30, 5000, 10, 200)
    t0 = time.monotonic()
    rc = d.terminate(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == EX_OK
    assert elapsed < scaled(4), f"took {elapsed:.1f}s to stop with shutdown_timeout_ms = 200"
    completed, queued = assert_nothing_lost(tw, ids)
    assert completed == []
    assert queued == ids
    assert tw.statuses(ids) == {i: "pending" for i in ids}


@pytest.mark.slow
def test_second_sigterm_skips_wait(tw, taskworkerd):
    d, ids, inflight = start_with_inflight(tw, taskworkerd, 30, 5000, 10, 30000)
    mark = d.notify.mark()
    d.send_signal(signal.SIGTERM)
    d.notify.wait_for(lambda line: line == "STOPPING=1", 5, "STOPPING=1", since=mark,
                      daemon=d)
    time.sleep(0.3)
    assert d.running(), "exited on the first SIGTERM without waiting for in-flight tasks"
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    rc = d.wait(10)
    elapsed = time.monotonic() - t0
    assert rc == EX_OK
    assert elapsed < scaled(3), f"took {elapsed:.1f}s after the second SIGTERM"
    completed, queued = assert_nothing_lost(tw, ids)
    assert completed == [], "tasks completed although the second SIGTERM skipped the wait"
    assert queued == ids


def test_sigterm_when_idle(tw, taskworkerd):
    d = taskworkerd()
    assert d.terminate(signal.SIGTERM, timeout=10) == EX_OK
    # The datagrams were sent before the exit; the listener thread may
    # still be reading them.
    d.notify.wait_for(lambda line: line == "STOPPING=1", 5, "STOPPING=1")
    assert "READY=1" in d.notify.lines()


# ---- SIGHUP -----------------------------------------------------------------------

@pytest.mark.slow
def test_reload_applies_delay(tw, taskworkerd):
    """delay_ms 30000 -> 0 on SIGHUP: tasks taken after it complete at once."""
    old = tw.insert(5)
    tw.push(old)
    d = taskworkerd(worker={"delay_ms": 30000, "concurrency": 50,
                            "shutdown_timeout_ms": 1000})
    wait_until(lambda: tw.llen(tw.processing()) == 5, 10, "5 ids in flight", daemon=d)
    mark = d.reload(merge_config(d.config, {"worker": {"delay_ms": 0},
                                            "log": {"level": "info"}}))
    wait_reloaded(d, mark)
    new = tw.insert(10)
    tw.push(new)
    tw.wait_completed(new, 10, daemon=d)
    assert d.running()
    # A row is committed before its id leaves the processing list.
    wait_until(lambda: set(tw.ids_in(tw.processing())) <= set(old), 5,
               "the new ids acknowledged", daemon=d)


@pytest.mark.slow
def test_reload_applies_concurrency(tw, taskworkerd):
    ids = tw.insert(12)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 30000, "concurrency": 1,
                            "shutdown_timeout_ms": 1000})
    wait_until(lambda: tw.llen(tw.processing()) >= 1, 10, "1 id in flight", daemon=d)
    time.sleep(0.3)
    assert tw.llen(tw.processing()) <= 2
    mark = d.reload(merge_config(d.config, {"worker": {"concurrency": 8}}))
    wait_reloaded(d, mark)
    wait_until(lambda: tw.llen(tw.processing()) >= 8, 10,
               "8 ids in flight after concurrency 1 -> 8", daemon=d)
    time.sleep(0.3)
    assert tw.llen(tw.processing()) <= 9


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["syntax-error", "out-of-range", "unknown-key"])
def test_reload_bad_config_keeps_old(tw, taskworkerd, kind):
    """A bad file on SIGHUP is logged (file:line) and the old config kept:
    the daemon runs on and still processes with delay 0, not the 60 s the
    bad file asks for."""
    first = tw.insert(5)
    tw.push(first)
    d = taskworkerd(worker={"delay_ms": 0, "concurrency": 5})
    tw.wait_completed(first, 20, daemon=d)

    bad_cfg = merge_config(d.config, {"worker": {"delay_ms": 60000, "concurrency": 1}})
    text = render_config(bad_cfg)
    if kind == "syntax-error":
        text += "this is not = = libconfig\n"
        needle = "this is not"
        key = None
    elif kind == "out-of-range":
        text = text.replace("concurrency = 1;", "concurrency = -3;")
        needle, key = "concurrency = -3", "concurrency"
    else:
        text = text.replace("  delay_ms = 60000;\n", "  delay_ms = 60000;\n  no_such_key = 1;\n")
        needle, key = "no_such_key", "no_such_key"
    line = next(i for i, t in enumerate(text.splitlines(), 1) if needle in t)
    d.reload(text=text)
    where = f"{d.config_path}:{line}"
    wait_until(lambda: where in d.log(), 10, f"the reload error ({where}) in the log", daemon=d)
    if key:
        assert log_has_line(d.log(), where, key), f"no log line with {where} and {key}"

    second = tw.insert(5)
    tw.push(second)
    tw.wait_completed(second, 10, daemon=d)
    assert d.running()
    tw.wait_empty(tw.processing(), daemon=d)


@pytest.mark.slow
def test_reload_storm(tw, taskworkerd):
    """Many SIGHUPs in a row, changing the window, the delay and the
    connection settings, while tasks flow: nothing is lost, nothing dies."""
    ids = tw.insert(1500)
    tw.push(ids)
    d = taskworkerd(worker={"delay_ms": 0, "concurrency": 20})
    for i in range(30):
        cfg = merge_config(d.config, {
            "worker": {"delay_ms": (i % 3) * 20, "concurrency": 5 + (i % 4) * 15},
            "redis": {"command_timeout_ms": 10000 + (i % 2)},
            "postgres": {"connections": 1 + i % 3} if i % 5 == 0 else {},
        })
        d.reload(cfg)
        time.sleep(0.05)
        assert d.running(), f"died after reload {i + 1}"
    tw.wait_completed(ids, 90, daemon=d)
    tw.wait_empty(tw.processing(), timeout=10, daemon=d)
    assert tw.lrange("tasks") == [] and tw.lrange(tw.dead()) == []
