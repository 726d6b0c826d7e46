"""What an operator does with the unit running: scrape /metrics from
inside the sandbox, and read, pause and resume with taskworkerctl."""

import re

from .conftest import QUEUE, UNIT

SCRAPE = ("/usr/bin/python3 -c 'import urllib.request; "
          "print(urllib.request.urlopen(\"http://127.0.0.1:9464/metrics\", "
          "timeout=5).read().decode())'")


def metric(text, name, labels=""):
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_served_from_the_sandbox(clean):
    box = clean
    box.configure(metrics={"listen": "127.0.0.1:9464", "sample_interval_ms": 200})
    box.run(f"systemctl restart {UNIT}")
    ids = box.add_tasks(30)
    box.wait_completed(ids)
    done = f'{{queue="{QUEUE}",outcome="completed"}}'
    box.wait(lambda: metric(box.out(SCRAPE), "taskworkerd_tasks_finished_total", done) == 30,
             5, "30 completions on /metrics")
    page = box.out(SCRAPE)
    # The sandbox lets the daemon read its own /proc entries and Redis.
    assert metric(page, "process_open_fds") > 3, page
    assert metric(page, "process_resident_memory_bytes") > 1e6, page
    assert metric(page, "taskworkerd_backend_up", '{backend="redis"}') == 1, page
    assert metric(page, "taskworkerd_backend_up", '{backend="postgres"}') == 1, page
    box.wait(lambda: metric(box.out(SCRAPE), "taskworkerd_workers_alive",
                            f'{{queue="{QUEUE}"}}') == 1, 5, "one worker alive")


def test_taskworkerctl_status_pause_resume(clean):
    box = clean
    pid = box.show(UNIT, "MainPID")["MainPID"]
    # FLUSHALL before the test: the worker registers again at its next beat.
    box.wait(lambda: re.search(rf"\bbox\b.*\bpid {pid}\b", box.out("taskworkerctl status")),
             10, f"taskworkerctl status showing worker box, pid {pid}")

    box.run(f"taskworkerctl pause {QUEUE}")
    # Idle, the daemon looks at its queues every 5 s (each quiet BLMOVE).
    box.wait(lambda: box.show(UNIT, "StatusText")["StatusText"].endswith(f"paused: {QUEUE}"),
             8, "STATUS= naming the paused queue")
    ids = box.add_tasks(10)
    box.wait(lambda: box.redis("LLEN", QUEUE).strip() == "10", 2, "the ids still waiting")
    assert "PAUSED since" in box.out(f"taskworkerctl status {QUEUE}")
    # A pause outlives the daemon: a restart takes nothing either.
    box.run(f"systemctl restart {UNIT}")
    box.wait(lambda: box.show(UNIT, "StatusText")["StatusText"].endswith(f"paused: {QUEUE}"),
             5, "STATUS= naming the paused queue after a restart")
    assert box.redis("LLEN", QUEUE).strip() == "10"
    assert box.completed(ids) == 0

    box.run(f"taskworkerctl resume {QUEUE}")
    box.wait_completed(ids, timeout=10)
