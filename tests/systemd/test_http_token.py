"""The http handler's bearer token from the systemd credential `http-token`,
handed over by a drop-in's LoadCredential=: it reaches the server as
`Authorization: Bearer <token>`, and the journal never shows it."""

import shlex

from .conftest import CONF, UNIT, config_text

PORT = 8089
RECORD = "/run/twhttp-sink.auth"
SINK = "twhttp-sink.service"
TOKEN_FILE = "/etc/taskworkerd/http.token"

# A server for the handler, run inside the box: 204 to every POST, and
# one line a request in RECORD with its Authorization header as it came.
SERVER = r"""
import http.server
import sys

port, record = int(sys.argv[1]), sys.argv[2]


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(record, "a") as f:
            f.write(self.headers.get("Authorization", "(none)") + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
"""

# The drop-in: the credential http-token from a file where it is. The
# empty line first clears what the unit itself may load under that name.
DROPIN = f"[Service]\nLoadCredential=\nLoadCredential=http-token:{TOKEN_FILE}\n"


def start_sink(box):
    box.write("/opt/twhttp/sink.py", SERVER)
    box.run(f"rm -f {RECORD} && systemd-run --unit={SINK} --collect "
            f"/usr/bin/python3 /opt/twhttp/sink.py {PORT} {RECORD}")
    probe = ("/usr/bin/python3 -c 'import socket; "
             f"socket.create_connection((\"127.0.0.1\", {PORT}), 1).close()'")
    box.wait(lambda: box.run(probe, check=False).returncode == 0, 10,
             f"the sink listening on {PORT}")


def test_bearer_token_from_the_http_token_credential(clean):
    box = clean
    token = "tw-h77p t0ken/5ecret"
    box.write(TOKEN_FILE, token + "\n", mode="600")
    box.write(f"/etc/systemd/system/{UNIT}.d/http-token.conf", DROPIN)
    box.write(CONF, config_text(handler={"type": "http",
                                         "url": f"http://127.0.0.1:{PORT}/tasks"})
              + 'log: {\n\tlevel = "debug";\n};\n')
    try:
        start_sink(box)
        c = box.cursor()
        box.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
        ids = box.add_tasks(5)
        box.wait_completed(ids)
        sent = box.out(f"cat {RECORD}").splitlines()
        assert sent == [f"Bearer {token}"] * 5, sent
        # Not in the journal, whatever unit wrote it (the daemon's debug
        # lines are there), nor in the config.
        journal = box.out(f"journalctl --after-cursor={shlex.quote(c)} -o cat --no-pager")
        assert f"task {ids[0]}: handler done" in journal, journal
        assert token not in journal
        assert "t0ken" not in journal
        assert "t0ken" not in box.out(f"cat {CONF}")
        # root outside the unit has no credential, and needs none for -t.
        assert box.out("taskworkerd -t") == "configuration OK"
    finally:
        box.run(f"systemctl stop {SINK}", check=False)
        box.run(f"rm -f {TOKEN_FILE} {RECORD}")
