"""Memory bounded in bytes: rows of a megabyte each, a thousand of them,
at the default window; a row larger than postgres.max_row_bytes fails
its task and the daemon goes on."""

import pytest

from conftest import fast_retry, reason_text, wait_dead

MIB = 1 << 20


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def insert_big(tw, n, size):
    """N rows whose column `big` holds SIZE bytes."""
    rows = tw.db.execute(
        "INSERT INTO task (name, big) SELECT 'task-' || g, "
        "repeat(md5(g::text), %s) FROM generate_series(1, %s) g RETURNING id",
        (size // 32, n)).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.slow
def test_pg_memory_bounded_in_bytes(tw, task_columns, taskworkerd):
    """1,000 rows of 1 MiB at the default window (4096), each waiting out a
    3 s delay, within worker.max_bytes_in_flight = 128 MiB: every task
    completes and the peak RSS stays under 250 MB (every row at once
    would be 1 GB)."""
    task_columns("big", "text")
    ids = insert_big(tw, 1000, MIB)
    d = taskworkerd(worker={"delay_ms": 3000, "concurrency": 4096,
                            "max_bytes_in_flight": 128 * MIB},
                    postgres={"columns": ["big"]})
    tw.push(ids)
    tw.wait_completed(ids, 180, daemon=d)
    peak = peak_rss_kib(d.pid)
    assert peak < 250 * 1024, f"peak RSS {peak // 1024} MiB"
    tw.wait_empty(tw.processing(), daemon=d)
    assert tw.lrange(tw.dead()) == []


def test_pg_row_larger_than_max_row_bytes_fails(tw, task_columns, taskworkerd):
    task_columns("big", "text")
    small = insert_big(tw, 4, 1024)
    (large,) = insert_big(tw, 1, 2 * MIB)
    ids = small[:2] + [large] + small[2:]
    d = taskworkerd(retry=fast_retry(1), postgres={"columns": ["big"],
                                                   "max_row_bytes": MIB})
    tw.push(ids)
    tw.wait_completed(small, 20, daemon=d)
    wait_dead(tw, [large], 20, daemon=d)
    text = reason_text(tw, large)
    assert text.startswith("attempt 1/1: the row is "), text
    assert text.endswith("bytes, more than postgres.max_row_bytes (1048576)"), text
    assert tw.statuses([large]) == {large: "failed"}
