"""systemd and installation: the watchdog, the unit files as
systemd-analyze sees them, what `meson install` puts where, and the refusal
of a Redis server too old for BLMOVE."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import EX_SOFTWARE, REPO, log_has_line, scaled


def test_watchdog_pings_at_half_the_interval(taskworkerd):
    d = taskworkerd(start=False)
    os.environ["WATCHDOG_USEC"] = "400000"
    try:
        d.start()
    finally:
        del os.environ["WATCHDOG_USEC"]
    time.sleep(scaled(1.2))
    pings = [line for line in d.notify.lines() if line == "WATCHDOG=1"]
    # 0.2 s apart: about 6 in 1.2 s, plus the one at start.
    assert len(pings) >= 4, d.notify.lines()


def test_no_watchdog_without_watchdog_usec(taskworkerd):
    d = taskworkerd()
    time.sleep(scaled(0.5))
    assert "WATCHDOG=1" not in d.notify.lines()
    assert "READY=1" in d.notify.lines()


def test_watchdog_for_another_pid_is_ignored(taskworkerd):
    d = taskworkerd(start=False)
    os.environ.update(WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    try:
        d.start()
    finally:
        del os.environ["WATCHDOG_USEC"]
        del os.environ["WATCHDOG_PID"]
    time.sleep(scaled(0.5))
    assert "WATCHDOG=1" not in d.notify.lines()


class FakeOldRedis:
    """Answers like a Redis 5.0 server: no BLMOVE."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.client, args=(conn,), daemon=True).start()

    def client(self, conn):
        buf = b""
        info = b"# Server\r\nredis_version:5.0.7\r\nredis_mode:standalone\r\n"
        try:
            while not self.stop:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                # Requests are arrays of bulk strings; answer each one.
                while buf.startswith(b"*"):
                    parts = buf.split(b"\r\n")
                    n = int(parts[0][1:])
                    if len(parts) < 1 + 2 * n + 1:
                        break
                    args = [parts[2 + 2 * i] for i in range(n)]
                    buf = b"\r\n".join(parts[1 + 2 * n:])
                    cmd = args[0].upper()
                    if cmd == b"INFO":
                        conn.sendall(b"$%d\r\n%s\r\n" % (len(info), info))
                    elif cmd == b"CLIENT" and args[1].upper() == b"ID":
                        conn.sendall(b":7\r\n")
                    else:
                        conn.sendall(b"+OK\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def test_redis_older_than_6_2_is_refused(taskworkerd):
    fake = FakeOldRedis()
    try:
        d = taskworkerd(redis={"port": fake.port}, wait_ready=False)
        rc = d.wait(15)
    finally:
        fake.close()
    assert rc == EX_SOFTWARE
    line = log_has_line(d.log(), "5.0.7", "6.2")
    assert line, d.log()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`meson install` of a fresh build into a temporary prefix."""
    tmp = tmp_path_factory.mktemp("install")
    build, prefix = tmp / "build", tmp / "prefix"
    subprocess.run(["meson", "setup", str(build), str(REPO), f"--prefix={prefix}",
                    f"-Dsystemdsystemunitdir={prefix}/units"],
                   check=True, capture_output=True)
    subprocess.run(["meson", "compile", "-C", str(build)], check=True, capture_output=True)
    subprocess.run(["meson", "install", "-C", str(build)], check=True, capture_output=True)
    return prefix


def test_install_layout(installed):
    p = installed
    assert os.access(p / "sbin" / "taskworkerd", os.X_OK)
    assert (p / "etc" / "taskworkerd" / "taskworkerd.conf").is_file()
    assert (p / "share" / "taskworkerd" / "schema.sql").is_file()
    assert os.access(p / "share" / "taskworkerd" / "examples" / "process-task.sh", os.X_OK)
    assert (p / "share" / "taskworkerd" / "examples" / "process_task.sql").is_file()
    unit = (p / "units" / "taskworkerd.service").read_text()
    assert f"ExecStart={p}/sbin/taskworkerd -c {p}/etc/taskworkerd/taskworkerd.conf" in unit
    template = (p / "units" / "taskworkerd@.service").read_text()
    assert f"-c {p}/etc/taskworkerd/%i.conf" in template
    # The installed binary reads the installed config by default.
    out = subprocess.run([str(p / "sbin" / "taskworkerd"), "-t"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "configuration OK"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", ["taskworkerd.service", "taskworkerd@.service"])
def test_units_verify(installed, unit, tmp_path):
    path = installed / "units" / unit
    if "@" in unit:
        inst = tmp_path / "taskworkerd@demo.service"
        inst.write_text(path.read_text())
        path = inst
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    text = path.read_text()
    for directive in ("Type=notify", "ExecReload=", "Restart=on-failure", "WatchdogSec=",
                      "After=network-online.target redis-server.service postgresql.service"):
        assert directive in text
    # systemd restarts a failed ExecStartPre= whatever RestartPreventExitStatus=
    # says: a bad config must fail in ExecStart=, with 78, to fail only once.
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("ExecStartPre=") for line in lines)
    assert "RestartPreventExitStatus=64 78" in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_sandbox_scores_ok(installed):
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                          str(installed / "units" / "taskworkerd.service")],
                         capture_output=True, text=True)
    last = [line for line in res.stdout.splitlines() if "Overall exposure level" in line]
    assert last, res.stdout + res.stderr
    score = float(last[0].split(":")[1].split()[0])
    assert score <= 2.0, last[0]
