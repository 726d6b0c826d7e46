"""The command line: -V, -h, bad options, and -t on good and bad files."""

import re
import socket

import pytest

from conftest import EX_CONFIG, EX_OK, EX_USAGE, REPO, line_number, render_config


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    return m.group(1) if m else None


def test_version(run_bin):
    res = run_bin("-V")
    assert res.returncode == EX_OK, res.stderr
    assert re.fullmatch(r"taskworkerd \S+\n?", res.stdout), res.stdout
    version = project_version()
    if version:
        assert res.stdout.split()[1] == version


def test_version_long(run_bin):
    res = run_bin("--version")
    assert res.returncode == EX_OK, res.stderr
    assert res.stdout.startswith("taskworkerd ")


def test_help(run_bin):
    res = run_bin("-h")
    assert res.returncode == EX_OK, res.stderr
    out = res.stdout + res.stderr
    assert "-c" in out and "-t" in out, out


@pytest.mark.parametrize("args", [["-x"], ["--bogus"], ["-c"], ["extra-argument"]],
                         ids=["unknown-short", "unknown-long", "missing-argument",
                              "extra-argument"])
def test_bad_command_line(run_bin, args):
    res = run_bin(*args)
    assert res.returncode == EX_USAGE, (res.stdout, res.stderr)
    assert res.stderr.strip(), "no message on stderr"


# ---- -t -------------------------------------------------------------------------

def test_check_shipped_config(run_bin):
    res = run_bin("-t", "-c", str(REPO / "conf" / "taskworkerd.conf"))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


def good_config(redis_port, pg_port):
    return {
        "redis": {"host": "127.0.0.1", "port": redis_port, "database": 0,
                  "queues": ["high", "low"], "connect_timeout_ms": 2000,
                  "command_timeout_ms": 10000},
        "postgres": {"conninfo": f"host=127.0.0.1 port={pg_port} dbname=tasks user=postgres",
                     "connections": 2, "table": "task", "id_column": "id",
                     "status_column": "status", "columns": ["name"],
                     "completed_status": "completed", "connect_timeout_ms": 5000,
                     "command_timeout_ms": 30000},
        "worker": {"id": "check", "delay_ms": 1000, "concurrency": 256,
                   "shutdown_timeout_ms": 30000, "retry_min_ms": 100,
                   "retry_max_ms": 30000, "missing_row_grace_ms": 3000},
        "handler": {"type": "none"},
        "log": {"level": "info", "facility": "daemon", "ident": "taskworkerd"},
    }


def test_check_good_config_never_connects(run_bin, tmp_path):
    socks = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            s.setblocking(False)
            socks.append(s)
        redis_port, pg_port = (s.getsockname()[1] for s in socks)
        path = tmp_path / "good.conf"
        path.write_text(render_config(good_config(redis_port, pg_port)))
        res = run_bin("-t", "-c", str(path))
        assert res.returncode == EX_OK, res.stdout + res.stderr
        assert "configuration OK" in res.stdout
        for s in socks:
            with pytest.raises(BlockingIOError):
                conn, _ = s.accept()
                conn.close()  # pragma: no cover - reached only on failure
    finally:
        for s in socks:
            s.close()


def test_check_closed_ports(run_bin, tmp_path):
    """-t succeeds although nothing listens on the configured ports."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    path = tmp_path / "closed.conf"
    path.write_text(render_config(good_config(*ports)))
    res = run_bin("-t", "-c", str(path), timeout=10)
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


BASE = """\
redis: {
  host = "127.0.0.1";
  port = 1;
  queues = ["tasks"];
};
postgres: {
  conninfo = "host=127.0.0.1 port=1 dbname=tasks";
};
worker: {
  id = "check";
  delay_ms = 10;
  concurrency = 4;
};
log: { level = "info"; };
"""

# (id, text, the text of the line the error is on, the key the message must name)
BAD = [
    ("unknown-key", BASE.replace('  concurrency = 4;\n',
                                 '  concurrency = 4;\n  bogus_key = 1;\n'),
     "bogus_key", "bogus_key"),
    ("unknown-group", BASE + 'bogus_group: { a = 1; };\n', "bogus_group", "bogus_group"),
    ("wrong-type-string-for-int", BASE.replace("delay_ms = 10;", 'delay_ms = "fast";'),
     "delay_ms", "delay_ms"),
    ("wrong-type-int-for-string", BASE.replace('id = "check";', "id = 42;"),
     "id = 42", "id"),
    ("wrong-type-string-port", BASE.replace("port = 1;", 'port = "6379";'),
     'port = "6379"', "port"),
    ("out-of-range-concurrency", BASE.replace("concurrency = 4;", "concurrency = 0;"),
     "concurrency", "concurrency"),
    ("out-of-range-delay", BASE.replace("delay_ms = 10;", "delay_ms = -1;"),
     "delay_ms", "delay_ms"),
    ("out-of-range-port", BASE.replace("port = 1;", "port = 70000;"),
     "port = 70000", "port"),
    ("bad-log-level", BASE.replace('level = "info";', 'level = "loud";'),
     "loud", "level"),
    ("bad-handler-type", BASE + 'handler: { type = "shell"; };\n', "shell", "type"),
    ("syntax-error", BASE.replace("delay_ms = 10;", "delay_ms = ;"), "delay_ms", None),
    ("int64-overflows-int", BASE.replace("delay_ms = 10;", "delay_ms = 4294967306L;"),
     "delay_ms", "delay_ms"),
    ("float-for-int", BASE.replace("concurrency = 4;", "concurrency = 4.0;"),
     "concurrency", "concurrency"),
    ("ints-in-queue-list", BASE.replace('queues = ["tasks"];', "queues = [1, 2];"),
     "queues", "queues"),
    ("scalar-for-group", BASE + "handler = 5;\n", "handler = 5", "handler"),
    ("key-outside-group", BASE + "delay_ms = 5;\n", "delay_ms = 5;", "delay_ms"),
    ("group-for-scalar", BASE.replace("delay_ms = 10;", "delay_ms = { x = 1; };"),
     "delay_ms", "delay_ms"),
]


@pytest.mark.parametrize("text,line_text,key", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_bad_config(run_bin, tmp_path, text, line_text, key):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    line = line_number(text, line_text)
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert "configuration OK" not in res.stdout
    assert f"{path}:{line}" in res.stderr, \
        f"expected {path}:{line} in stderr:\n{res.stderr}"
    if key is not None:
        assert key in res.stderr, res.stderr


def test_check_missing_file(run_bin, tmp_path):
    path = tmp_path / "no-such.conf"
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert str(path) in res.stderr
    assert "configuration OK" not in res.stdout


def test_start_with_bad_config_exits_78(run_bin, tmp_path):
    """Without -t, too: a bad file stops the start with 78, no connecting."""
    path = tmp_path / "bad.conf"
    text = BAD[0][1]
    path.write_text(text)
    res = run_bin("-v", "-c", str(path), timeout=20)
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert f"{path}:{line_number(text, 'bogus_key')}" in res.stderr
