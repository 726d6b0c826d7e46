"""GET /metrics: every family of the plan with its HELP and TYPE, counters
and histograms that follow what the tasks did, queue gauges from the
sampler, backends going down and up, the pause key, the exposition as
promtool and a real Prometheus read it, and HTTP clients that try to
hurt the daemon while it works."""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

import twservers
from conftest import (exec_handler, fast_retry, log_has_line, rss_kib, scaled, wait_dead,
                      wait_until, write_script)

SAMPLE_MS = 200
BUCKETS = [.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300,
           1800, float("inf")]
OUTCOMES = ("completed", "already_completed", "retried", "failed")
DEAD_REASONS = ("failed", "not_an_id", "no_row")

# Every family of the plan: name -> type.
FAMILIES = {
    "taskworkerd_build_info": "gauge",
    "taskworkerd_tasks_taken_total": "counter",
    "taskworkerd_tasks_finished_total": "counter",
    "taskworkerd_tasks_dead_total": "counter",
    "taskworkerd_tasks_in_flight": "gauge",
    "taskworkerd_tasks_waiting": "gauge",
    "taskworkerd_tasks_running": "gauge",
    "taskworkerd_tasks_handler_waiting": "gauge",
    "taskworkerd_handler_duration_seconds": "histogram",
    "taskworkerd_task_duration_seconds": "histogram",
    "taskworkerd_queue_length": "gauge",
    "taskworkerd_queue_processing": "gauge",
    "taskworkerd_queue_retry": "gauge",
    "taskworkerd_queue_scheduled": "gauge",
    "taskworkerd_queue_dead": "gauge",
    "taskworkerd_queue_paused": "gauge",
    "taskworkerd_queue_oldest_age_seconds": "gauge",
    "taskworkerd_workers_alive": "gauge",
    "taskworkerd_reclaimed_ids_total": "counter",
    "taskworkerd_backend_up": "gauge",
    "taskworkerd_backend_reconnects_total": "counter",
    "taskworkerd_backend_errors_total": "counter",
    "taskworkerd_backend_rtt_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
QUEUE_SAMPLED = ("taskworkerd_queue_length", "taskworkerd_queue_processing",
                 "taskworkerd_queue_retry", "taskworkerd_queue_scheduled",
                 "taskworkerd_queue_dead", "taskworkerd_queue_paused",
                 "taskworkerd_queue_oldest_age_seconds", "taskworkerd_workers_alive")


# ---- reading the exposition ---------------------------------------------------------

SAMPLE_RE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad labels {text!r} at {pos}"
        labels[m.group(1)] = re.sub(r'\\(.)', lambda e: "\n" if e.group(1) == "n"
                                    else e.group(1), m.group(2))
        pos = m.end()
    return labels


class Exposition:
    """One page of the text format: its samples, HELP and TYPE lines."""

    def __init__(self, text):
        self.text = text
        self.help, self.type, self.samples = {}, {}, []
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, doc = line[7:].partition(" ")
                assert name not in self.help, f"second HELP for {name}"
                self.help[name] = doc
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                assert name not in self.type, f"second TYPE for {name}"
                self.type[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE_RE.fullmatch(line)
                assert m, f"bad sample line {line!r}"
                self.samples.append((m.group(1), parse_labels(m.group(2) or ""),
                                     float(m.group(3))))

    def find(self, name, **labels):
        return [(lab, v) for n, lab, v in self.samples
                if n == name and all(lab.get(k) == str(x) for k, x in labels.items())]

    def maybe(self, name, **labels):
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels}: {len(found)} samples: {found}"
        return found[0][1] if found else None

    def get(self, name, **labels):
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples, not 1: {found}"
        return found[0][1]

    def histogram(self, name, **labels):
        """Checks NAME's buckets (the plan's, cumulative, monotonic, _count
        the +Inf bucket); {le: cumulative count} with _sum and _count."""
        buckets = sorted(((float(lab["le"]), v) for lab, v in
                          self.find(name + "_bucket", **labels)), key=lambda b: b[0])
        assert [le for le, _ in buckets] == BUCKETS, f"{name} buckets: {buckets}"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name} buckets not cumulative: {buckets}"
        count = self.get(name + "_count", **labels)
        assert count == counts[-1], f"{name}_count {count} != +Inf bucket {counts[-1]}"
        h = dict(buckets)
        h["sum"] = self.get(name + "_sum", **labels)
        h["count"] = count
        return h


def http_request(port, path="/metrics", method="GET", timeout=5.0, host="127.0.0.1",
                 headers=None, body=None):
    """(status, {header: value}, body) of one request on a new connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def scrape(port, timeout=5.0):
    status, headers, body = http_request(port, timeout=timeout)
    assert status == 200, f"GET /metrics: {status} {body[:200]!r}"
    assert headers.get("content-type", "").startswith("text/plain; version=0.0.4"), headers
    return Exposition(body.decode())


def wait_metrics(port, pred, timeout, what, daemon=None):
    """Scrape until PRED(exposition) is true; the last exposition."""
    last = [None]

    def probe():
        last[0] = scrape(port)
        return pred(last[0])
    try:
        wait_until(probe, timeout, what, daemon=daemon, interval=0.05)
    except AssertionError as e:
        raise AssertionError(f"{e}; last page:\n{last[0].text if last[0] else None}") from None
    return last[0]


def metrics_cfg(port):
    return {"listen": f"127.0.0.1:{port}", "sample_interval_ms": SAMPLE_MS}


def start_with_metrics(taskworkerd, **groups):
    port = twservers.free_port()
    d = taskworkerd(metrics=metrics_cfg(port), **groups)
    d.port = port
    return d


def finished(e, outcome, queue="tasks"):
    return e.get("taskworkerd_tasks_finished_total", queue=queue, outcome=outcome)


def dead(e, reason, queue="tasks"):
    return e.get("taskworkerd_tasks_dead_total", queue=queue, reason=reason)


def sampled(e, name, queue="tasks"):
    return e.maybe(name, queue=queue)


def version_of(run_bin):
    out = run_bin("-V")
    assert out.returncode == 0, out
    m = re.fullmatch(r"taskworkerd (\S+)\n?", out.stdout)
    assert m, f"-V printed {out.stdout!r}"
    return m.group(1)


# ---- families, counters and histograms --------------------------------------------------

HANDLER = """
    case "$TASK_NAME" in
    fail) exit 1 ;;
    flaky) [ "$TASK_ATTEMPT" -ge 2 ] || exit 1 ;;
    slow) sleep 0.2 ;;
    esac
    exit 0
"""


def test_families_counters_and_histograms(tw, taskworkerd, tmp_path):
    """Before any task every counter is 0; after 5 quick, 3 slow (0.2 s),
    2 flaky (fail once), 2 failing, 3 already completed rows, "junk" and an
    id without a row: each counter has exactly what happened, every family
    of the plan has HELP and TYPE, and the histograms are consistent with
    the runs (16 handler runs, 21 tasks taken and acknowledged)."""
    script = write_script(tmp_path, "handler.sh", HANDLER)
    d = start_with_metrics(taskworkerd, handler=exec_handler(script),
                           retry=fast_retry(attempts=2, min_ms=50, max_ms=100),
                           worker={"missing_row_grace_ms": 200})
    e = wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_queue_length") is not None
                     and e.get("taskworkerd_backend_up", backend="postgres") == 1,
                     5, "a first queue sample and postgres up", daemon=d)
    for name, kind in FAMILIES.items():
        assert e.type.get(name) == kind, f"TYPE of {name}: {e.type.get(name)}, want {kind}"
        assert e.help.get(name), f"no HELP for {name}"
    for name in e.type:
        assert e.find(name) or e.find(name + "_bucket") or name in QUEUE_SAMPLED, \
            f"family {name} has no sample"
    assert e.get("taskworkerd_tasks_taken_total", queue="tasks") == 0
    for o in OUTCOMES:
        assert finished(e, o) == 0
    for r in DEAD_REASONS:
        assert dead(e, r) == 0
    for name in ("taskworkerd_handler_duration_seconds", "taskworkerd_task_duration_seconds"):
        h = e.histogram(name, queue="tasks")
        assert h["count"] == 0 and h["sum"] == 0, (name, h)
    for b in ("redis", "postgres"):
        assert e.get("taskworkerd_backend_up", backend=b) == 1
        assert e.get("taskworkerd_backend_reconnects_total", backend=b) == 0
    assert e.get("taskworkerd_reclaimed_ids_total", queue="tasks") == 0

    quick = tw.insert(5)
    slow = tw.insert(3)
    flaky = tw.insert(2)
    failing = tw.insert(2)
    already = tw.insert(3, status="completed")
    for name, ids in (("slow", slow), ("flaky", flaky), ("fail", failing)):
        tw.db.execute("UPDATE task SET name = %s WHERE id = ANY(%s)", (name, ids))
    no_row = max(already) + 1000
    tw.push(quick + slow + flaky + failing + already + ["junk", no_row])

    tw.wait_completed(quick + slow + flaky, 15, daemon=d)
    wait_dead(tw, failing + ["junk", no_row], 15, daemon=d)
    e = wait_metrics(d.port, lambda e: e.get("taskworkerd_task_duration_seconds_count",
                                              queue="tasks") >= 21,
                     5, "21 tasks acknowledged", daemon=d)
    time.sleep(0.3)  # nothing more may come
    e = scrape(d.port)
    assert e.get("taskworkerd_tasks_taken_total", queue="tasks") == 21  # 17 + 4 retries
    assert {o: finished(e, o) for o in OUTCOMES} == \
        {"completed": 10, "already_completed": 3, "retried": 4, "failed": 2}
    assert {r: dead(e, r) for r in DEAD_REASONS} == {"failed": 2, "not_an_id": 1, "no_row": 1}
    for g in ("in_flight", "waiting", "running"):
        assert e.get(f"taskworkerd_tasks_{g}") == 0, g

    h = e.histogram("taskworkerd_handler_duration_seconds", queue="tasks")
    assert h["count"] == 16, h  # 5 + 3 + 2 * 2 + 2 * 2 runs
    # The 0.2 s sleeps are above 0.1 s, and (but for a stall) at most 0.25 s.
    assert h[0.1] <= 13, h
    assert h[0.25] - h[0.1] >= 2, h
    assert h[2.5] == 16, h
    assert 0.6 <= h["sum"] < 0.6 + 16 * 0.2 + 1, h
    t = e.histogram("taskworkerd_task_duration_seconds", queue="tasks")
    assert t["count"] == 21, t  # every take ends in one acknowledgement
    assert t["sum"] >= h["sum"], (t, h)
    assert t[0.1] <= 21 - 3, t
    for b in ("redis", "postgres"):
        assert 0 < e.get("taskworkerd_backend_rtt_seconds", backend=b) < 1, b
    assert sampled(e, "taskworkerd_queue_dead") == 4


# ---- the sampled queue gauges ------------------------------------------------------------

def test_queue_gauges_two_daemons(tw, taskworkerd):
    """Two daemons holding 3 tasks each (long delay) and a paused queue
    with 4 ids left: length 4, processing 6, retry 1, scheduled 2, dead 2,
    paused 1, workers_alive 2 on both; in_flight 3 each; the oldest id's
    age grows by the time that passes."""
    worker = {"delay_ms": 60000, "concurrency": 3, "shutdown_timeout_ms": 300}
    d1 = start_with_metrics(taskworkerd, worker=worker)
    d2 = start_with_metrics(taskworkerd, worker=dict(worker, id="itest2"))
    ids = tw.insert(10)
    pushed_at = time.monotonic()
    tw.push(ids)
    wait_until(lambda: tw.r.zcard(tw.processing()) + tw.r.zcard(tw.processing(worker="itest2"))
               == 6, 10, "6 ids in the processing sets", daemon=d1)
    tw.r.set("tasks:paused", "at=1 by=test")
    far = (int(time.time()) + 3600) * 1000
    tw.r.zadd("tasks:scheduled", {"900001": far, "900002": far + 1})
    tw.r.zadd("tasks:retry", {"900003": far})
    tw.r.rpush("tasks:dead", "800001", "800002")
    want = {"taskworkerd_queue_length": 4, "taskworkerd_queue_processing": 6,
            "taskworkerd_queue_retry": 1, "taskworkerd_queue_scheduled": 2,
            "taskworkerd_queue_dead": 2, "taskworkerd_queue_paused": 1,
            "taskworkerd_workers_alive": 2}

    def gauges(e):
        return {k: sampled(e, k) for k in want}
    for d in (d1, d2):
        e = wait_metrics(d.port, lambda e: gauges(e) == want, 5,
                         f"{d.name}'s gauges to be {want}", daemon=d)
        assert e.get("taskworkerd_tasks_in_flight") == 3
        assert e.get("taskworkerd_tasks_running") == 0
        assert e.get("taskworkerd_tasks_taken_total", queue="tasks") == 3
    a1 = sampled(scrape(d1.port), "taskworkerd_queue_oldest_age_seconds")
    t1 = time.monotonic()
    time.sleep(1.2)
    a2 = sampled(scrape(d1.port), "taskworkerd_queue_oldest_age_seconds")
    t2 = time.monotonic()
    assert a2 - a1 >= (t2 - t1) - 2 * SAMPLE_MS / 1000 - 0.1, (a1, a2, t2 - t1)
    assert a2 <= t2 - pushed_at + 0.1, (a2, t2 - pushed_at)
    assert tw.r.llen("tasks") == 4
    # With the queue resumed and emptied the age drops back.
    tw.r.delete("tasks:paused")
    tw.r.delete("tasks")
    wait_metrics(d1.port, lambda e: sampled(e, "taskworkerd_queue_oldest_age_seconds") == 0
                 and sampled(e, "taskworkerd_queue_paused") == 0
                 and sampled(e, "taskworkerd_queue_length") == 0, 5,
                 "an empty queue's age to be 0", daemon=d1)


def test_reclaimed_ids(tw, taskworkerd):
    """A registered worker without a heartbeat holding 3 ids: the counter
    goes from 0 to 3 and the ids complete here."""
    d = start_with_metrics(taskworkerd, worker={"heartbeat_ttl_ms": 1500})
    e = wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_workers_alive") == 1, 5,
                     "a sample", daemon=d)
    assert e.get("taskworkerd_reclaimed_ids_total", queue="tasks") == 0
    ids = tw.insert(3)
    tw.r.sadd("tasks:workers", "ghost")
    tw.hold(ids, worker="ghost")
    tw.wait_completed(ids, 5, daemon=d)
    e = wait_metrics(d.port, lambda e: finished(e, "completed") == 3, 5, "3 completed", daemon=d)
    assert e.get("taskworkerd_reclaimed_ids_total", queue="tasks") == 3
    assert not tw.r.sismember("tasks:workers", "ghost")
    assert log_has_line(d.log(), "ghost", "no heartbeat")


def test_backend_up_reconnects_errors(tw, taskworkerd):
    """Redis stopped (SIGTERM), then killed (SIGKILL): backend_up goes to 0
    each time while /metrics keeps answering, errors_total rises, and once
    the server is back backend_up is 1 and reconnects_total counts each
    return; tasks pushed afterwards complete."""
    rs = twservers.RedisServer().start()
    try:
        d = start_with_metrics(taskworkerd, redis={"port": rs.port},
                               worker={"retry_min_ms": 50, "retry_max_ms": 300})
        e = wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_queue_length") is not None,
                         5, "a sample", daemon=d)
        assert e.get("taskworkerd_backend_up", backend="redis") == 1
        assert e.get("taskworkerd_backend_up", backend="postgres") == 1
        errors = e.get("taskworkerd_backend_errors_total", backend="redis")
        for n, how in enumerate(("stop", "kill"), 1):
            getattr(rs, how)()
            e = wait_metrics(d.port, lambda e: e.get("taskworkerd_backend_up",
                                                     backend="redis") == 0,
                             5, f"backend_up 0 after redis {how}", daemon=d)
            assert e.get("taskworkerd_backend_errors_total", backend="redis") > errors
            errors = e.get("taskworkerd_backend_errors_total", backend="redis")
            assert e.get("taskworkerd_backend_up", backend="postgres") == 1
            rs.start()
            e = wait_metrics(d.port, lambda e: e.get("taskworkerd_backend_up",
                                                     backend="redis") == 1,
                             10, f"backend_up 1 after redis came back from {how}", daemon=d)
            assert e.get("taskworkerd_backend_reconnects_total", backend="redis") == n
            assert e.get("taskworkerd_backend_reconnects_total", backend="postgres") == 0
        ids = tw.insert(20)
        r = rs.client()
        r.rpush("tasks", *ids)
        r.close()
        tw.wait_completed(ids, 10, daemon=d)
    finally:
        rs.cleanup()


def test_process_build_info_and_http(tw, taskworkerd, run_bin):
    """process_* are this process's and sane; build_info carries the
    version -V prints; HEAD answers without a body, other paths 404 and
    other methods 405 (with Allow)."""
    before = time.time()
    d = start_with_metrics(taskworkerd)
    e = scrape(d.port)
    assert e.get("taskworkerd_build_info", version=version_of(run_bin)) == 1
    assert len(e.find("taskworkerd_build_info")) == 1
    rss = e.get("process_resident_memory_bytes")
    assert 1 << 20 < rss < 1 << 30, rss
    assert abs(rss / 1024 - rss_kib(d.pid)) < 16 * 1024, (rss, rss_kib(d.pid))
    assert e.get("process_virtual_memory_bytes") >= rss
    fds = e.get("process_open_fds")
    assert 3 < fds < 200, fds
    assert abs(fds - len(os.listdir(f"/proc/{d.pid}/fd"))) <= 3, fds
    assert e.get("process_max_fds") >= fds
    with open(f"/proc/{d.pid}/limits") as f:
        soft = [line.split()[3] for line in f if line.startswith("Max open files")][0]
    assert e.get("process_max_fds") == int(soft)
    start = e.get("process_start_time_seconds")
    assert before - 1 <= start <= time.time(), (before, start)
    assert 0 <= e.get("process_cpu_seconds_total") < 60

    status, headers, body = http_request(d.port, method="HEAD")
    assert status == 200 and body == b"", (status, body[:100])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico"):
        status, _, _ = http_request(d.port, path=path)
        assert status == 404, (path, status)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = http_request(d.port, method=method, body=b"x=1")
        assert status == 405, (method, status)
        assert headers.get("allow") == "GET, HEAD", headers
    status, _, body = http_request(d.port, path="/metrics?x=1")
    assert status == 200 and b"taskworkerd_build_info" in body


# ---- pause ------------------------------------------------------------------------

def test_pause_and_resume(tw, taskworkerd):
    """Tasks in flight when tasks:paused is set finish; ids pushed while it
    exists stay in the queue (1.5 s); after DEL they complete within 1 s
    (0.5 s to see the resume, 0.5 s delay) and some slack."""
    d = start_with_metrics(taskworkerd, worker={"delay_ms": 500, "concurrency": 100})
    first = tw.insert(20)
    tw.push(first)
    wait_until(lambda: tw.r.zcard(tw.processing()) == 20, 5, "20 ids taken", daemon=d)
    tw.r.set("tasks:paused", "at=1 by=test")
    assert tw.count("completed", first) < len(first), "none was in flight at the pause"
    more = tw.insert(10)
    tw.push(more)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert tw.r.llen("tasks") == 10, "an id was taken from a paused queue"
        time.sleep(0.05)
    tw.wait_completed(first, 3, daemon=d)  # done meanwhile: in flight at the pause
    assert tw.count("completed", more) == 0
    e = wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_queue_paused") == 1, 3,
                     "paused 1", daemon=d)
    assert sampled(e, "taskworkerd_queue_length") == 10
    assert e.get("taskworkerd_tasks_taken_total", queue="tasks") == 20
    assert log_has_line(d.log(), "tasks is paused")
    resumed = time.monotonic()
    tw.r.delete("tasks:paused")
    tw.wait_completed(more, 1.0 + 1.0, daemon=d)
    took = time.monotonic() - resumed
    assert took < scaled(2.0), took
    assert log_has_line(d.log(), "tasks is resumed")
    wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_queue_paused") == 0, 3,
                 "paused 0", daemon=d)


# ---- promtool ------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed "
                    "(Debian package prometheus)")
def test_promtool_check_metrics(tw, taskworkerd, tmp_path):
    """After completions, retries, dead ids and a paused queue sampled,
    `promtool check metrics` finds nothing to say (format and lint)."""
    script = write_script(tmp_path, "handler.sh", HANDLER)
    d = start_with_metrics(taskworkerd, handler=exec_handler(script),
                           retry=fast_retry(attempts=2, min_ms=50, max_ms=100))
    ids = tw.insert(6)
    tw.db.execute("UPDATE task SET name = 'fail' WHERE id = %s", (ids[0],))
    tw.push(ids + ["junk"])
    tw.wait_completed(ids[1:], 10, daemon=d)
    wait_dead(tw, [ids[0], "junk"], 10, daemon=d)
    tw.r.set("tasks:paused", "x")
    e = wait_metrics(d.port, lambda e: sampled(e, "taskworkerd_queue_paused") == 1
                     and dead(e, "failed") == 1, 5, "a sample after the work", daemon=d)
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=e.text, capture_output=True,
                         text=True, timeout=30)
    said = (out.stdout + out.stderr).strip()
    assert out.returncode == 0 and said == "", \
        f"promtool check metrics: exit {out.returncode}:\n{said}"


# ---- a real Prometheus ---------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, directory, targets, job="taskworkerd"):
        self.dir = directory
        self.dir.mkdir()
        self.port = twservers.free_port()
        self.job = job
        self.log_path = directory / "prometheus.log"
        conf = directory / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={conf}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=directory, start_new_session=True)

    def get(self, path, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                    timeout=timeout) as resp:
            return resp.status, resp.read()

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
        try:
            return self.get("/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def query(self, expr):
        """The instant vector of EXPR as [(labels, value)]."""
        _, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(tmp_path):
    """A factory: prometheus([targets]) -> a Prometheus scraping them every
    second, ready; stopped by PID at the end."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus not installed (Debian package prometheus)")
    started = []

    def start(targets):
        p = Prometheus(tmp_path / f"prometheus{len(started)}", targets)
        started.append(p)
        wait_until(p.ready, 30, "prometheus /-/ready")
        return p
    yield start
    for p in started:
        p.stop()


def test_prometheus_scrapes(tw, taskworkerd, prometheus):
    """A real Prometheus scraping every second: up is 1 and its query of
    tasks_finished_total{outcome="completed"} gives the tasks completed."""
    d = start_with_metrics(taskworkerd)
    prom = prometheus([f"127.0.0.1:{d.port}"])
    ids = tw.insert(37)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    expr = 'taskworkerd_tasks_finished_total{outcome="completed"}'

    def completed():
        got = prom.query(expr)
        return got and got[0][1] == 37 and got
    got = wait_until(completed, 15, f"prometheus to see 37 completed ({prom.query(expr)})")
    assert len(got) == 1 and got[0][0]["queue"] == "tasks", got
    up = prom.query(f'up{{job="{prom.job}"}}')
    assert [v for _, v in up] == [1], up
    count = prom.query('taskworkerd_task_duration_seconds_count{queue="tasks"}')
    assert [v for _, v in count] == [37], count
    targets = json.loads(prom.get("/api/v1/targets")[1])["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"], targets
    assert all(t["lastError"] == "" for t in targets), targets


# ---- where it listens ------------------------------------------------------------------

def unix_request(path, request, timeout=5.0):
    """(status, {header: value}, body) of a raw REQUEST over a unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def test_unix_socket(tw, taskworkerd, tmp_path):
    """metrics.listen a unix socket path: GET, 404 and 405 answer there; a
    socket left by a kill -9 is replaced at the next start; a clean exit
    removes it; a regular file in its place is not replaced (exit 69)."""
    path = tmp_path / "metrics.sock"
    d = taskworkerd(metrics={"listen": str(path), "sample_interval_ms": SAMPLE_MS})
    ids = tw.insert(5)
    tw.push(ids)
    tw.wait_completed(ids, 5, daemon=d)

    def get(req):
        return unix_request(path, req)
    status, headers, body = get(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert status == 200, (status, body[:200])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    e = Exposition(body.decode())
    assert finished(e, "completed") == 5
    assert get(b"GET /other HTTP/1.0\r\n\r\n")[0] == 404
    assert get(b"POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\nab")[0] == 405
    d.kill()
    assert path.is_socket()
    mark = d.notify.mark()
    d.start(wait_ready=False)
    d.wait_ready(since=mark)
    assert get(b"GET /metrics HTTP/1.0\r\n\r\n")[0] == 200
    assert d.terminate() == 0
    assert not path.exists(), "the socket outlived a clean exit"
    path.write_text("not a socket")
    d.start(wait_ready=False)
    assert d.wait(10) == 69
    assert path.read_text() == "not a socket"
    assert log_has_line(d.log(), "metrics", "cannot listen on", str(path)), d.log()[-2000:]


def test_check_config_rejects_bad_listen(run_bin, tmp_path):
    """-t names the file and line of a listen address that is a host name."""
    path = tmp_path / "bad.conf"
    path.write_text('worker: { id = "x"; };\n\nmetrics: {\n  listen = "localhost:9464";\n};\n')
    res = run_bin("-t", "-c", str(path))
    said = res.stdout + res.stderr
    assert res.returncode == 78, said
    line = log_has_line(said, f"{path}:4:")
    assert line and "metrics.listen" in line and "not an IPv4 address" in line, said
    assert "configuration OK" not in said


def test_port_in_use(tw, taskworkerd):
    """Another listener on the port: exit 69 with a line saying which
    address and why, not a daemon without its endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        d = taskworkerd(metrics=metrics_cfg(port), wait_ready=False)
        assert d.wait(10) == 69
    line = log_has_line(d.log(), f"cannot listen on 127.0.0.1:{port}")
    assert line and "Address already in use" in line, d.log()[-2000:]
    assert d.notify.find(lambda line: line == "READY=1") is None


# ---- hostile clients -------------------------------------------------------------------

def read_until_closed(s, timeout):
    """What the server sent until it closed the connection: (bytes, how)
    with HOW "closed", "reset" or "timeout" (it kept it open)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except socket.timeout:
        return data, "timeout"
    except ConnectionResetError:
        return data, "reset"
    return data, "closed"


class Attack:
    """Hostile HTTP clients, each kind in a thread of its own and from a
    loopback address of its own (the per-address limit is 16), and a
    normal scraper from 127.0.0.1 timing every answer."""

    def __init__(self, port, pid):
        self.port, self.pid = port, pid
        self.stop = threading.Event()
        self.flooding = threading.Event()
        self.lock = threading.Lock()
        self.threads = []
        self.seen = {}  # kind -> [(answer's first line, how it ended)]
        self.failures = []  # unexpected exceptions in a client thread
        self.scrapes = []  # (flooding, seconds, status or error)
        self.rss = []  # VmRSS samples, KiB
        self.idle = []  # [socket, last byte sent at, closed at]
        self.flood_connected = 0

    def connect(self, src, timeout=5):
        s = socket.socket()
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", self.port))
        return s

    def note(self, kind, data, how):
        with self.lock:
            self.seen.setdefault(kind, []).append(
                (data.split(b"\r\n", 1)[0].decode("latin-1"), how))

    def spawn(self, fn, *args):
        def run():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - reported by the test
                with self.lock:
                    self.failures.append(f"{fn.__name__}: {e!r}")
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    # Requests cut off after the request line and a header, then silent:
    # the server must close them after its 10 s idle timeout.
    def open_idle(self, n, src="127.0.0.2"):
        for _ in range(n):
            s = self.connect(src)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
            entry = [s, time.monotonic(), None]
            self.idle.append(entry)
            self.spawn(self.watch_idle, entry)

    def watch_idle(self, entry):
        _, how = read_until_closed(entry[0], 30)
        entry[2] = time.monotonic() if how != "timeout" else None
        entry[0].close()

    # Slowloris proper: one more header line every second.
    def trickle(self, n=4, src="127.0.0.3"):
        socks = [self.connect(src) for _ in range(n)]
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        i = 0
        while not self.stop.wait(1.0):
            for s in socks:
                s.sendall(b"X-%d: %d\r\n" % (i, i))
            i += 1
        for s in socks:
            s.close()

    def big_header(self, src="127.0.0.4"):
        req = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
        while not self.stop.wait(0.1):
            s = self.connect(src)
            try:
                s.sendall(req)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.note("big_header", *read_until_closed(s, 5))
            s.close()

    def garbage(self, src="127.0.0.5"):
        rnd = random.Random(1234)
        while not self.stop.wait(0.05):
            s = self.connect(src)
            try:
                s.sendall(rnd.randbytes(rnd.randrange(1, 8192)) + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.note("garbage", *read_until_closed(s, 5))
            s.close()

    def huge_post(self, src="127.0.0.6"):
        chunk = b"x" * 65536
        while not self.stop.wait(0.1):
            s = self.connect(src)
            sent = 0
            try:
                s.sendall(b"POST /metrics HTTP/1.1\r\nHost: a\r\n"
                          b"Content-Length: 1073741824\r\n\r\n")
                while sent < 8 << 20:
                    s.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass
            data, how = read_until_closed(s, 5)
            self.note("huge_post", data, how if sent < 8 << 20 else "read it all: " + how)
            s.close()

    def flood(self, n=500, hold=1.5):
        """N connections at once from 32 addresses, held, then closed."""
        socks = []
        self.flooding.set()
        try:
            for i in range(n):
                s = socket.socket()
                s.setblocking(False)
                s.bind((f"127.0.1.{i // 16 + 1}", 0))
                s.connect_ex(("127.0.0.1", self.port))
                socks.append(s)
            time.sleep(hold)
            for s in socks:
                try:
                    s.getpeername()
                    self.flood_connected += 1
                except OSError:
                    pass
        finally:
            for s in socks:
                s.close()
            self.flooding.clear()

    def scraper(self):
        while not self.stop.wait(0.1):
            flooding = self.flooding.is_set()
            t = time.monotonic()
            try:
                status = scrape_status(self.port, timeout=5)
            except OSError as e:
                status = repr(e)
            self.scrapes.append((flooding or self.flooding.is_set(),
                                 time.monotonic() - t, status))
            self.rss.append(rss_kib(self.pid))

    def start(self):
        for fn in (self.trickle, self.big_header, self.garbage, self.huge_post,
                   self.scraper):
            self.spawn(fn)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(40)


def scrape_status(port, timeout):
    status, _, body = http_request(port, timeout=timeout)
    return status if status != 200 or b"taskworkerd_build_info" in body else "no body"


def cpu_seconds(pid):
    """User and system CPU time of PID so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def under_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def completed_in(tw, ids):
    return tw.db.execute("SELECT count(*) FROM task WHERE status = 'completed' "
                         "AND id BETWEEN %s AND %s", (ids[0], ids[-1])).fetchone()[0]


def timed_run(tw, d, n, timeout):
    """Seconds from pushing N new ids to the last one completed."""
    ids = tw.insert(n)
    t = time.monotonic()
    tw.push(ids)
    wait_until(lambda: completed_in(tw, ids) == n, timeout,
               f"{n} tasks to complete ({completed_in(tw, ids)} so far)", daemon=d,
               interval=0.05)
    return time.monotonic() - t


@pytest.mark.slow
def test_hostile_clients(tw, taskworkerd):
    """While 20,000 tasks run, the endpoint gets idle half-requests,
    slowloris headers, 1 MiB headers, garbage, a 1 GiB POST and 500
    connections at once. Every task completes, not much slower than the
    same run without them; memory stays bounded; normal scrapes answer
    within a second (but while the 500 hold the 64 slots) and at once
    after; the idle connections are closed after the 10 s timeout."""
    n = 20000
    d = start_with_metrics(taskworkerd, worker={"concurrency": 1000})
    timed_run(tw, d, 2000, 30)  # warm up the pools
    rss_start = rss_kib(d.pid)
    cpu0 = cpu_seconds(d.pid), time.process_time()
    baseline = timed_run(tw, d, n, 60)
    cpu1 = cpu_seconds(d.pid), time.process_time()
    rss_before = rss_kib(d.pid)

    attack = Attack(d.port, d.pid)
    try:
        attack.open_idle(4)
        attack.start()
        time.sleep(0.5)
        attack.spawn(attack.flood)
        cpu2 = cpu_seconds(d.pid), time.process_time()
        hostile = timed_run(tw, d, n, 60)
        cpu3 = cpu_seconds(d.pid), time.process_time()
        wait_until(lambda: not attack.flooding.is_set(), 10, "the flood to end")
        t = time.monotonic()
        wait_until(lambda: scrape_status(d.port, timeout=2) == 200, 5,
                   "a normal scrape after the flood", daemon=d)
        after_flood = time.monotonic() - t
        time.sleep(2.0)  # the other clients go on a little longer
    finally:
        attack.finish()
    assert attack.failures == [], attack.failures
    print("cpu seconds (daemon, test) baseline", [round(b - a, 2) for a, b in zip(cpu0, cpu1)],
          "hostile", [round(b - a, 2) for a, b in zip(cpu2, cpu3)])
    print(f"baseline {baseline:.2f}s, hostile {hostile:.2f}s, "
          f"rss {rss_start} -> {rss_before} KiB -> max {max(attack.rss)} KiB, "
          f"flood connected {attack.flood_connected}, scrape after flood {after_flood:.2f}s")
    for kind, seen in attack.seen.items():
        print(kind, len(seen), sorted(set(seen))[:10])
    print("under AddressSanitizer:", under_asan(d.pid), "idle connections closed after",
          [round(closed - sent, 2) if closed else None for _, sent, closed in attack.idle],
          "s; slowest calm scrape", max(s for f, s, _ in attack.scrapes if not f))
    assert d.running()
    # The machine is shared: compare with the run before, with slack, and
    # the daemon's own CPU time, which the neighbours do not inflate.
    assert hostile <= 2 * baseline + scaled(2.0), (baseline, hostile)
    cpu_base, cpu_hostile = cpu1[0] - cpu0[0], cpu3[0] - cpu2[0]
    assert cpu_hostile <= 1.5 * cpu_base + 0.5, (cpu_base, cpu_hostile)
    # Bounded: no more than what the same tasks cost without the attack
    # (a few KiB), and 20 MiB. AddressSanitizer keeps freed memory in a
    # quarantine of up to 256 MiB, so there RSS grows with every
    # connection's freed pool: its leak check at exit is the measure.
    grown = max(attack.rss) - rss_before
    quarantine = 256 * 1024 if under_asan(d.pid) else 0
    assert grown < max(rss_before - rss_start, 0) + 20 * 1024 + quarantine, \
        (rss_start, rss_before, attack.rss)

    calm = [(s, st) for flooding, s, st in attack.scrapes if not flooding]
    assert len(calm) >= 10, attack.scrapes
    assert all(st == 200 for _, st in calm), attack.scrapes
    assert max(s for s, _ in calm) < scaled(1.0), attack.scrapes
    assert attack.flood_connected >= 64, "the flood never filled the connection limit"

    for kind in ("big_header", "garbage", "huge_post"):
        seen = attack.seen.get(kind, [])
        assert len(seen) >= 3, (kind, seen)
        assert not any(how == "timeout" for _, how in seen), (kind, sorted(set(seen)))
        assert not any(" 200 " in line for line, _ in seen), (kind, sorted(set(seen)))
    assert all(line.startswith("HTTP/1.1 4") for line, _ in attack.seen["big_header"]
               if line), attack.seen["big_header"]
    assert not any(how.startswith("read it all") for _, how in attack.seen["huge_post"]), \
        "the server read 8 MiB of a body it does not want"

    for s, sent, closed in attack.idle:
        assert closed is not None, "an idle connection was never closed"
        assert scaled(8) <= closed - sent <= 10 + scaled(4), (closed - sent)
