"""A real HTTP server for the http handler's tests: Debian's nginx
(/usr/sbin/nginx, package nginx-light), as a master process of its own
with a config written into a temporary directory (pid file, error log,
temp paths, certificates: nothing outside it), stopped by its PID.

It listens on three free loopback ports:

    plain   HTTP/1.1
    h2c     HTTP/2 over cleartext, prior knowledge only (`listen ... http2;`)
    tls     TLS with HTTP/2 offered by ALPN (and HTTP/1.1), its certificate
            for 127.0.0.1 and localhost signed by a test CA (`ca_file`)

and answers on each of them

    /204        204, no body
    /200        200 with the body "ok\\n"
    /up/...     whatever UPSTREAM answers (proxied to 127.0.0.1:UPSTREAM,
                e.g. a slow server of the test's own), or 204 without one

having read the whole request body first, so the access log has it.

Every request is one JSON line in the access log (`entries()`): the
connection's serial number and its count of requests so far, so a test
counts the distinct connections a client used and what each carried.

    nginx(upstream=None) -> Nginx   .url("tls", "/204") .ca_file .entries()
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from ha import LOOPBACK, TestCA, twservers, wait_for

NGINX = "/usr/sbin/nginx"
START_TIMEOUT = 15

# One request a line; escape=json makes every string safe to parse.
LOG_FORMAT = (
    '{"conn":$connection,"n":$connection_requests,"proto":"$server_protocol",'
    '"port":$server_port,"ssl":"$ssl_protocol","alpn":"$ssl_alpn_protocol",'
    '"method":"$request_method","uri":"$request_uri","status":$status,'
    '"key":"$http_idempotency_key","ctype":"$content_type","len":"$content_length",'
    '"ua":"$http_user_agent","auth":"$http_authorization","x_team":"$http_x_team",'
    '"body":"$request_body","msec":$msec}'
)


class Nginx:
    """One nginx in DIRECTORY (created); `start()`, then `stop()`."""

    def __init__(self, directory, upstream=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.ports = {kind: twservers.free_port() for kind in ("plain", "h2c", "tls", "sink")}
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.conf = self.dir / "nginx.conf"
        self.ca = TestCA(self.dir / "ca")
        self.cert, self.key = self.ca.issue("localhost", ips=[LOOPBACK])
        self.proc = None
        self.workers = []

    @property
    def ca_file(self):
        return str(self.ca.ca_file)

    def url(self, kind, path="/204"):
        scheme = "https" if kind == "tls" else "http"
        return f"{scheme}://{LOOPBACK}:{self.ports[kind]}{path}"

    def config(self):
        d = self.dir
        up = self.upstream or self.ports["sink"]
        # As root, the master would hand the workers to `nobody`, who may
        # not enter the test's directory.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temps = "".join(f"  {kind}_temp_path {d}/tmp-{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        p = self.ports
        return f"""# written by tests/integration/nginxfix.py
{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 4096; }}
http {{
{temps}  default_type text/plain;
  log_format tw escape=json '{LOG_FORMAT}';
  access_log {self.access_log} tw;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  client_body_buffer_size 1m;
  client_body_in_single_buffer on;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate {self.cert};
  ssl_certificate_key {self.key};
  server {{
    listen {LOOPBACK}:{p["plain"]};
    listen {LOOPBACK}:{p["h2c"]} http2;
    listen {LOOPBACK}:{p["tls"]} ssl http2;
    # The body is read before the answer (proxied to the sink): answered
    # early, an HTTP/2 request would be reset mid-upload.
    location / {{ proxy_pass http://{LOOPBACK}:{p["sink"]}; }}
    location /up/ {{
      proxy_pass http://{LOOPBACK}:{up};
      proxy_read_timeout 300s;
    }}
  }}
  server {{
    listen {LOOPBACK}:{p["sink"]};
    access_log off;
    location = /204 {{ return 204; }}
    location = /200 {{ return 200 "ok\\n"; }}
    location / {{ return 404; }}
  }}
}}
"""

    def start(self):
        self.conf.write_text(self.config())
        with open(self.dir / "stderr.log", "ab") as out:
            self.proc = subprocess.Popen(
                [NGINX, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", str(self.error_log)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: "
                                     f"{self.errors()}")
            return all(_accepts(port) for port in self.ports.values())
        try:
            wait_for(ready, START_TIMEOUT, lambda: f"nginx to listen: {self.errors()}")
        except BaseException:
            self.stop()
            raise
        self.workers = _children(self.proc.pid)
        return self

    def errors(self):
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                text += (self.dir / name).read_text(errors="replace")
            except OSError:
                pass
        return " | ".join(line for line in text.splitlines()[-10:])

    def stop(self):
        """Fast shutdown of the master by PID (SIGTERM); SIGKILL to it and
        its workers, by PID, if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = _children(self.proc.pid) or self.workers
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in workers:
            twservers.kill_pid(pid, 9, expect="nginx", timeout=5)

    def entries(self):
        """The access log, a dict a request, in the order logged."""
        try:
            lines = self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


def _accepts(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                         capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def connections(entries):
    """{connection serial: requests it carried} for ENTRIES."""
    seen = {}
    for e in entries:
        seen[e["conn"]] = max(seen.get(e["conn"], 0), e["n"])
    return seen


@pytest.fixture
def nginx():
    """nginx(upstream=None): a started Nginx in a directory of its own;
    every one is stopped by PID at the end (its logs kept until then)."""
    started = []

    def make(upstream=None):
        n = Nginx(tempfile.mkdtemp(prefix="twnginx-"), upstream=upstream)
        started.append(n)
        return n.start()
    yield make
    for n in started:
        n.stop()
        shutil.rmtree(n.dir, ignore_errors=True)
