"""The http handler (handler.type = "http"), against a scripted HTTP/1.1
server of the test's own (httpserv.py): the request's body and headers
byte for byte, keep-alive, what each status class does to the task, the
reasons in the dead list, Retry-After, timeouts and connection errors,
TLS verification, max_response_bytes, SIGTERM with requests in flight,
SIGHUP while one runs, and the configs `taskworkerd -t` refuses."""

import email.utils
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (BIN, EX_CONFIG, EX_OK, fast_retry, line_number, merge_config, reason_text,
                      redis_now_ms, render_config, scaled, wait_dead, wait_reloaded, wait_until,
                      zset)
from httpserv import Blackhole, Reply
from test_metrics import start_with_metrics, wait_metrics


def http_handler(url, **keys):
    return {"type": "http", "url": url, **keys}


def insert_rows(tw, *rows):
    """One pending row per name, or per (name, payload); their ids in order."""
    ids = []
    for row in rows:
        if isinstance(row, tuple):
            sql, args = "INSERT INTO task (name, payload) VALUES (%s, %s) RETURNING id", row
        else:
            sql, args = "INSERT INTO task (name) VALUES (%s) RETURNING id", (row,)
        ids.append(tw.db.execute(sql, args).fetchone()[0])
    return ids


def assert_clean(tw, d):
    """Nothing left in processing, tasks:retry or tasks:attempts."""
    tw.wait_empty(tw.processing(), daemon=d)
    assert zset(tw, "tasks:retry") == {}
    assert tw.r.hgetall("tasks:attempts") == {}


def body_of(task_id, name, queue="tasks", attempt=1):
    """The exact body for a row with only the `name` column; NAME is the
    JSON text of its value, escapes and all."""
    return (f'{{"id":"{task_id}","queue":"{queue}","attempt":{attempt},'
            f'"row":{{"name":"{name}"}}}}').encode()


def by_task(replies):
    """A script answering each request with REPLIES[task id] (a Reply, or a
    list of them used in turn; the last one repeats)."""
    def pick(req):
        r = replies[int(req.json()["id"])]
        if isinstance(r, list):
            return r.pop(0) if len(r) > 1 else r[0]
        return r
    return pick


def text_escaped(data):
    """DATA as the daemon's reasons and log lines show bytes (escape_text):
    control bytes, DEL, backslash and bytes that are not UTF-8 as \\xNN,
    the C1 controls as \\xc2\\xNN, other UTF-8 as it is."""
    out, i = [], 0
    while i < len(data):
        for n in (4, 3, 2, 1):
            try:
                ch = data[i:i + n].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(ch) == 1:
                break
        else:
            n, ch = 1, None
        if ch is None or ord(ch) < 0x20 or ord(ch) == 0x7f or ch == "\\":
            out.append(f"\\x{data[i]:02x}")
        elif 0x80 <= ord(ch) <= 0x9f:
            out.append(f"\\xc2\\x{ord(ch):02x}")
        else:
            out.append(ch)
        i += n
    return "".join(out)


def free_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def user_agent():
    out = subprocess.run([BIN, "-V"], capture_output=True, text=True).stdout
    m = re.fullmatch(r"taskworkerd (\S+)\n", out)
    assert m, f"taskworkerd -V said {out!r}"
    return f"taskworkerd/{m.group(1)}"


# ---- the request ------------------------------------------------------------------

def test_http_request_body_and_headers(tw, task_columns, http_server, taskworkerd,
                                       tmp_path, user_agent):
    """PUT to the configured URL with the row as JSON, exactly: columns in
    postgres.columns order, NULL as null, quotes, backslash, CR/LF/TAB,
    other controls (C0, DEL, C1) as \\u00XX, other UTF-8 as it is; the
    Idempotency-Key is QUEUE:ID for each queue, Authorization the first line
    of token_file (relative to the config's directory, never logged), then
    the configured headers."""
    task_columns("payload")
    odd = 'say "hi" \\ back\nline2\r\ttab\x01\x1f\x7f C1:\u0085\u009b nbsp:\u00a0 é 🙂'
    odd_json = (r'say \"hi\" \\ back\nline2\r\ttab\u0001\u001f\u007f C1:\u0085\u009b nbsp:'
                + '\u00a0 é 🙂')
    a, b = insert_rows(tw, (odd, None), ("plain", '{"k": [1, 2]}'))
    (tmp_path / "token").write_text("s3cret-Token.1\nnot this line\n")
    srv = http_server()
    d = taskworkerd(redis={"queues": ["tasks", "mail"]},
                    postgres={"columns": ["name", "payload"]},
                    handler=http_handler(srv.url("/hook/v1?x=1"), method="PUT",
                                         token_file="token",
                                         headers=["X-Team: billing", "X-Trace: a b  c"]),
                    retry=fast_retry(1))
    tw.push([a])
    tw.push([b], queue="mail")
    tw.wait_completed([a, b], 10, daemon=d)
    reqs = srv.requests
    assert len(reqs) == 2, reqs
    by_key = {r.header("Idempotency-Key"): r for r in reqs}
    assert sorted(by_key) == sorted([f"tasks:{a}", f"mail:{b}"])
    ra, rb = by_key[f"tasks:{a}"], by_key[f"mail:{b}"]
    assert ra.body == (f'{{"id":"{a}","queue":"tasks","attempt":1,'
                       f'"row":{{"name":"{odd_json}","payload":null}}}}').encode()
    assert rb.body == (f'{{"id":"{b}","queue":"mail","attempt":1,'
                       r'"row":{"name":"plain","payload":"{\"k\": [1, 2]}"}}').encode()
    assert ra.json() == {"id": str(a), "queue": "tasks", "attempt": 1,
                         "row": {"name": odd, "payload": None}}
    for r in (ra, rb):
        assert (r.method, r.path, r.version) == ("PUT", "/hook/v1?x=1", "HTTP/1.1")
        assert r.header("Host") == f"127.0.0.1:{srv.port}"
        assert r.header("Content-Type") == "application/json"
        assert r.header("Content-Length") == str(len(r.body))
        assert r.header("User-Agent") == user_agent
        assert r.header("Authorization") == "Bearer s3cret-Token.1"
        assert r.header("X-Team") == "billing"
        assert r.header("X-Trace") == "a b  c"
        extra = set(r.header_names()) - {
            "host", "content-type", "content-length", "user-agent", "authorization",
            "idempotency-key", "x-team", "x-trace", "accept"}
        assert not extra, f"headers not asked for: {r.headers}"
    assert "s3cret-Token" not in d.log(), "the bearer token is in the log"
    assert tw.lrange(tw.dead()) == [] and tw.lrange(tw.dead("mail")) == []
    assert_clean(tw, d)


def test_http_token_from_credential(tw, http_server, taskworkerd, tmp_path, monkeypatch):
    """token_file unset: the bearer token is the first line of the systemd
    credential $CREDENTIALS_DIRECTORY/http-token."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "http-token").write_text("cred-token-7\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    srv = http_server()
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(1))
    ids = tw.insert(1)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    (req,) = srv.requests
    assert req.header("Authorization") == "Bearer cred-token-7"
    assert "cred-token-7" not in d.log()


def test_http_body_escapes_bytes_not_utf8(tw, http_server, taskworkerd):
    """A session whose client_encoding is LATIN1 loads 'é' as the lone byte
    E9 and U+0085 as 85, neither of them UTF-8: each becomes \\u00XX in the
    body (the body is always valid UTF-8 JSON)."""
    (i,) = insert_rows(tw, "caf\u00e9 \u0085 ok")
    srv = http_server()
    d = taskworkerd(postgres={"conninfo": tw.servers.pg.conninfo + " client_encoding=LATIN1"},
                    handler=http_handler(srv.url()), retry=fast_retry(1))
    tw.push([i])
    tw.wait_completed([i], 10, daemon=d)
    (req,) = srv.requests
    assert req.body == body_of(i, r"caf\u00e9 \u0085 ok")
    req.body.decode("utf-8")


def test_http_keepalive_one_connection_in_turn(tw, http_server, taskworkerd):
    """Tasks one after the other reuse one connection."""
    srv = http_server()
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(1))
    ids = tw.insert(4)
    for i in ids:
        tw.push([i])
        tw.wait_completed([i], 10, daemon=d)
    reqs = srv.requests
    assert [r.json()["id"] for r in reqs] == [str(i) for i in ids]
    assert [r.conn for r in reqs] == [1, 1, 1, 1], "a new connection per task"
    assert len(srv.conns) == 1
    assert_clean(tw, d)


def test_http_max_connections_queues_requests(tw, http_server, taskworkerd):
    """max_connections = 1 and 8 tasks at once, each answered after 50 ms:
    they wait in the daemon for the one connection (none fails), one
    request at a time, all over that connection."""
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=0.05))
    d = taskworkerd(handler=http_handler(srv.url(), max_connections=1), retry=fast_retry(1))
    ids = tw.insert(8)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    reqs = srv.requests
    assert sorted(int(r.json()["id"]) for r in reqs) == ids
    assert srv.max_active == 1, f"{srv.max_active} requests at once with max_connections = 1"
    assert len(srv.conns) == 1 and {r.conn for r in reqs} == {1}
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


# ---- status classes -----------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_http_2xx_done(tw, http_server, taskworkerd, status):
    srv = http_server()
    srv.script(Reply(status, reason="Fine", body=b"" if status == 204 else b"thanks"))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(5))
    ids = tw.insert(1)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    time.sleep(0.2)
    assert len(srv.requests) == 1
    assert tw.statuses(ids) == {ids[0]: "completed"}
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


PERMANENT = [(400, "Bad Request"), (401, "Unauthorized"), (403, "Forbidden"),
             (404, "Not Found"), (409, "Conflict"), (410, "Gone"), (422, None)]


@pytest.mark.parametrize("status,phrase", PERMANENT, ids=[str(s) for s, _ in PERMANENT])
def test_http_4xx_dead_at_once(tw, http_server, taskworkerd, status, phrase):
    """A 4xx other than 408/425/429 fails the task for good on its first
    attempt, retry.attempts = 5 notwithstanding: status failed, in the dead
    list with 'HTTP <status> <phrase>: <body>'."""
    srv = http_server()
    srv.script(lambda req: Reply(status, body=b"no such thing"))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(5))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    time.sleep(0.3)  # a retry (min_ms 50) would have come by now
    assert len(srv.requests) == 1, [r.json() for r in srv.requests]
    assert tw.statuses([i]) == {i: "failed"}
    assert tw.lrange(tw.dead()) == [str(i)]
    text = reason_text(tw, i)
    if phrase:
        assert text == f"attempt 1/5: HTTP {status} {phrase}: no such thing"
    else:
        assert re.fullmatch(rf"attempt 1/5: HTTP {status} [A-Za-z ]+: no such thing", text), text
    assert_clean(tw, d)


RETRIED = [408, 425, 429, 500, 502, 503, 504, 301, 302, 303, 307, 308]


@pytest.mark.parametrize("status", RETRIED)
def test_http_retried_then_done(tw, http_server, taskworkerd, status):
    """408, 425, 429, 5xx and 3xx are failed attempts that are retried (a
    redirect is not followed): the second attempt, with "attempt":2 and the
    same Idempotency-Key, gets 200 and the row is completed."""
    srv = http_server()
    srv.script(Reply(status, headers=[("Location", srv.url("/elsewhere"))],
                     body=b"not now"), Reply(200))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(5, min_ms=20, max_ms=50))
    (i,) = tw.insert(1)
    tw.push([i])
    tw.wait_completed([i], 10, daemon=d)
    time.sleep(0.1)
    reqs = srv.requests
    assert [r.path for r in reqs] == ["/tasks", "/tasks"], "a redirect was followed"
    assert [r.body for r in reqs] == [body_of(i, f"task-{i}"), body_of(i, f"task-{i}", attempt=2)]
    assert [r.header("Idempotency-Key") for r in reqs] == [f"tasks:{i}"] * 2
    assert all(r.method == "POST" for r in reqs)
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


def test_http_failure_reasons(tw, http_server, taskworkerd):
    """retry.attempts = 2. The reasons in the dead list: the status line and
    the first 200 bytes of the body, escaped; no ': ' after an empty body; a
    redirect's own status; a 404 dead after its first attempt."""
    head = 'busy\n"q"\\ \x01\x7f caf\u00e9 \u0085 '.encode() + b"\xff" + b" end;"
    long_body = head + b"0123456789" * 30
    ids = tw.insert(4)
    busy, empty, moved, gone = ids
    srv = http_server()
    srv.script(by_task({busy: Reply(503, body=long_body),
                        empty: Reply(500),
                        moved: Reply(302, headers=[("Location", srv.url("/elsewhere"))],
                                     body=b"moved"),
                        gone: Reply(404, body=long_body)}))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(2))
    tw.push(ids)
    wait_dead(tw, ids, 10, daemon=d)
    cut = text_escaped(long_body[:200])
    assert reason_text(tw, busy) == f"attempt 2/2: HTTP 503 Service Unavailable: {cut}"
    assert reason_text(tw, empty) == "attempt 2/2: HTTP 500 Internal Server Error"
    assert reason_text(tw, moved) == "attempt 2/2: HTTP 302 Found: moved"
    assert reason_text(tw, gone) == f"attempt 1/2: HTTP 404 Not Found: {cut}"
    counts = {i: sum(r.json()["id"] == str(i) for r in srv.requests) for i in ids}
    assert counts == {busy: 2, empty: 2, moved: 2, gone: 1}
    assert all(r.path == "/tasks" for r in srv.requests)
    assert tw.statuses(ids) == {i: "failed" for i in ids}
    assert_clean(tw, d)


# ---- Retry-After ----------------------------------------------------------------------

def test_http_retry_after_seconds_and_date(tw, http_server, taskworkerd):
    """A 429 with 'Retry-After: 1' and a 503 with an HTTP date 2-3 s ahead:
    with a backoff of 20..50 ms the next attempt still comes no earlier
    than Retry-After says (and not much later)."""
    secs, dated = tw.insert(2)
    target = int(time.time()) + 3
    date = email.utils.formatdate(target, usegmt=True)
    srv = http_server()
    srv.script(by_task({secs: [Reply(429, headers=[("Retry-After", "1")]), Reply(200)],
                        dated: [Reply(503, headers=[("Retry-After", date)]), Reply(200)]}))
    d = taskworkerd(handler=http_handler(srv.url()),
                    retry=fast_retry(3, min_ms=20, max_ms=50))
    tw.push([secs, dated])
    tw.wait_completed([secs, dated], 10, daemon=d)
    got = {i: [r for r in srv.requests if r.json()["id"] == str(i)] for i in (secs, dated)}
    assert [len(got[secs]), len(got[dated])] == [2, 2]
    gap = got[secs][1].t - got[secs][0].t
    assert 0.998 <= gap < 1.0 + scaled(1.0), f"Retry-After: 1, the next attempt came after {gap:.3f}s"
    # A date names a whole second, and the daemon's clock is read in whole
    # seconds: up to 1 s late is the date's own resolution.
    late = got[dated][1].wall - target
    assert -0.005 <= late < 1.0 + scaled(1.0), \
        f"Retry-After: {date}, the next attempt came {late:+.3f}s from it"
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


def test_http_retry_after_capped_at_a_day(tw, http_server, taskworkerd):
    """Retry-After: 999999 (11.6 days) puts the retry 24 h ahead."""
    srv = http_server()
    srv.script(Reply(503, headers=[("Retry-After", "999999")]))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(3))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_until(lambda: str(i) in zset(tw, "tasks:retry"), 10, "the id in tasks:retry", daemon=d)
    ahead = zset(tw, "tasks:retry")[str(i)] - redis_now_ms(tw)
    assert 86400000 - scaled(5) * 1000 <= ahead <= 86400000, f"due in {ahead} ms"
    assert len(srv.requests) == 1


# ---- timeouts and connection errors -----------------------------------------------------

def test_http_timeout(tw, http_server, taskworkerd):
    """timeout_ms = 300 and a server that answers after 5 s: the attempt
    fails with 'timed out after 300 ms' and the connection is dropped then."""
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=5))
    d = taskworkerd(handler=http_handler(srv.url(), timeout_ms=300), retry=fast_retry(1))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    assert reason_text(tw, i) == "attempt 1/1: timed out after 300 ms"
    assert tw.statuses([i]) == {i: "failed"}
    (req,) = srv.requests
    wait_until(lambda: req.peer_closed, 3, "the daemon to drop the connection")
    held = req.peer_closed - req.t
    assert 0.2 <= held < scaled(2), f"the connection was dropped {held:.3f}s after the request"
    assert_clean(tw, d)


def test_http_timeout_on_reused_connection(tw, http_server, taskworkerd):
    """A kept-alive connection whose next answer never comes: the reason is
    the request's timeout (500 ms), not a connect timeout (200 ms), since
    the connection was up all along."""
    srv = http_server()
    srv.script(Reply(200), Reply(200, delay=5))
    d = taskworkerd(handler=http_handler(srv.url(), timeout_ms=500, connect_timeout_ms=200),
                    retry=fast_retry(1))
    first, second = tw.insert(2)
    tw.push([first])
    tw.wait_completed([first], 10, daemon=d)
    tw.push([second])
    wait_dead(tw, [second], 10, daemon=d)
    assert [r.conn for r in srv.requests] == [1, 1], "the connection was not reused"
    assert reason_text(tw, second) == "attempt 1/1: timed out after 500 ms"
    assert_clean(tw, d)


def test_http_connection_refused(tw, taskworkerd):
    port = free_port()
    d = taskworkerd(handler=http_handler(f"http://127.0.0.1:{port}/tasks"),
                    retry=fast_retry(2))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    assert reason_text(tw, i) == f"attempt 2/2: connect to 127.0.0.1:{port}: Connection refused"
    assert tw.statuses([i]) == {i: "failed"}
    assert_clean(tw, d)


def test_http_connect_timeout(tw, taskworkerd):
    """A port where the handshake never completes: connect_timeout_ms = 300."""
    hole = Blackhole()
    try:
        d = taskworkerd(handler=http_handler(f"http://127.0.0.1:{hole.port}/tasks",
                                             connect_timeout_ms=300),
                        retry=fast_retry(1))
        (i,) = tw.insert(1)
        tw.push([i])
        wait_dead(tw, [i], 10, daemon=d)
        assert reason_text(tw, i) == \
            f"attempt 1/1: connect to 127.0.0.1:{hole.port}: timed out after 300 ms"
        assert_clean(tw, d)
    finally:
        hole.close()


def test_http_garbage_answer(tw, http_server, taskworkerd):
    """Bytes that are no HTTP response: a failed attempt, 'bad response: ...'."""
    srv = http_server()
    srv.script(lambda req: Reply(raw=b"SPEAK FRIEND AND ENTER\r\n\r\n"))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(2))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    text = reason_text(tw, i)
    assert re.fullmatch(r"attempt 2/2: bad response: \S.*", text), text
    assert len(srv.requests) == 2
    assert_clean(tw, d)


def test_http2_prior_knowledge(tw, http_server, taskworkerd, run_bin, tmp_path):
    """http2 = true on an http:// URL opens with the HTTP/2 preface (h2c
    prior knowledge, no Upgrade); a server that answers in HTTP/1.1 is a
    bad response. A libcurl that cannot reuse such a connection (7.88,
    curl issue 10634) makes -t refuse the key on its line instead."""
    text = render_config(check_config(dict(GOOD_HTTP, http2=True, token_file=None)))
    path = tmp_path / "h2c.conf"
    path.write_text(text)
    res = run_bin("-t", "-c", str(path))
    if res.returncode == EX_CONFIG:
        assert f"{path}:{line_number(text, 'http2 =')}: handler.http2: " in res.stderr, \
            res.stderr
        pytest.skip(f"h2c refused on this libcurl: {res.stderr.strip()}")
    assert res.returncode == EX_OK, res.stdout + res.stderr
    srv = http_server()
    d = taskworkerd(handler=http_handler(srv.url(), http2=True), retry=fast_retry(1))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    first = srv.requests[0]
    assert (first.method, first.path, first.version) == ("PRI", "*", "HTTP/2.0")
    text = reason_text(tw, i)
    assert re.fullmatch(r"attempt 1/1: bad response: \S.*", text), text
    assert_clean(tw, d)


# ---- TLS ----------------------------------------------------------------------------

def test_https_with_test_ca(tw, http_server, taskworkerd):
    srv = http_server(tls="good")
    d = taskworkerd(handler=http_handler(srv.url(), ca_file=http_server.certs.ca_file),
                    retry=fast_retry(1))
    ids = tw.insert(3)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    reqs = srv.requests
    assert sorted(int(r.json()["id"]) for r in reqs) == ids
    assert all(c.tls_error is None for c in srv.conns), [c.tls_error for c in srv.conns]
    assert_clean(tw, d)


TLS_BAD = [
    ("wrong-name", True, "no alternative certificate subject name matches target host "
                         "name '127.0.0.1'"),
    ("self-signed", True, "self-signed certificate"),
    ("good", False, "unable to get local issuer certificate"),  # the system CAs only
]


@pytest.mark.parametrize("cert,with_ca,message", TLS_BAD,
                         ids=["wrong-name", "self-signed", "test-CA-not-given"])
def test_https_refuses_peer(tw, http_server, taskworkerd, cert, with_ca, message):
    """A certificate for another name, one signed by itself, or one by a CA
    that is not trusted: every attempt fails with a TLS reason; no request
    is sent."""
    srv = http_server(tls=cert)
    ca = http_server.certs.ca_file if with_ca else ""
    d = taskworkerd(handler=http_handler(srv.url(), ca_file=ca), retry=fast_retry(2))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    text = reason_text(tw, i)
    assert text.startswith("attempt 2/2: TLS: ") and message in text, text
    assert srv.requests == []
    assert len(srv.conns) == 2, f"{len(srv.conns)} connections for 2 attempts"
    assert tw.statuses([i]) == {i: "failed"}
    assert_clean(tw, d)


# ---- max_response_bytes ------------------------------------------------------------------

def test_http_max_response_bytes(tw, http_server, taskworkerd):
    """max_response_bytes = 1024 and 16 MiB answers: the daemon cuts the
    transfer (the server sees the connection go before it has sent it
    all); a 200 is still done, a 503 keeps the first 200 bytes in its
    reason; the next task is served on a new connection."""
    big = 16 * 1024 * 1024
    ok, busy, after = tw.insert(3)
    srv = http_server(sndbuf=16384)
    srv.script(by_task({ok: Reply(200, body_size=big), busy: Reply(503, body_size=big),
                        after: Reply(200, body=b"small")}))
    d = taskworkerd(handler=http_handler(srv.url(), max_response_bytes=1024),
                    retry=fast_retry(1))
    tw.push([ok, busy])
    tw.wait_completed([ok], 10, daemon=d)
    wait_dead(tw, [busy], 10, daemon=d)
    assert reason_text(tw, busy) == "attempt 1/1: HTTP 503 Service Unavailable: " + "x" * 200
    srv.wait_settled(5)
    assert len(srv.requests) == 2
    for r in srv.requests:
        assert r.cut and r.sent < big, f"task {r.json()['id']}: sent {r.sent} of {big} bytes"
    tw.push([after])
    tw.wait_completed([after], 10, daemon=d)
    assert srv.requests[-1].cut is None
    assert tw.statuses([ok, busy, after]) == {ok: "completed", busy: "failed", after: "completed"}
    assert_clean(tw, d)


# ---- SIGTERM and SIGHUP --------------------------------------------------------------------

def assert_sigterm_waits(tw, taskworkerd, srv, handler, reply):
    """Three requests answered with REPLY after 1 s: SIGTERM waits for
    them (they are tasks in flight), the rows complete, then exit 0. The
    requests the server saw."""
    srv.script(lambda req: reply)
    d = taskworkerd(handler=handler, retry=fast_retry(1))
    ids = tw.insert(3)
    tw.push(ids)
    srv.wait_requests(3, 10, daemon=d)
    t0 = time.monotonic()
    assert d.terminate(signal.SIGTERM, timeout=10) == EX_OK
    assert time.monotonic() - t0 >= 0.7, "exited before the answers came"
    assert len(srv.requests) == 3
    assert tw.statuses(ids) == {i: "completed" for i in ids}
    assert tw.lrange("tasks") == [] and tw.lrange(tw.processing()) == []
    assert tw.lrange(tw.dead()) == []
    return srv.requests


def test_http_sigterm_waits_for_requests(tw, http_server, taskworkerd):
    """SIGTERM waits for three requests answered after 1 s
    (assert_sigterm_waits), each answered whole."""
    srv = http_server()
    reqs = assert_sigterm_waits(tw, taskworkerd, srv, http_handler(srv.url()),
                                Reply(200, delay=1.0))
    assert all(r.answered and r.cut is None for r in reqs)


def assert_sigterm_aborts(tw, taskworkerd, srv, handler, slow, aborted, what):
    """shutdown_timeout_ms = 300 and a server that answers SLOW (10 s):
    the three requests in flight are aborted (ABORTED(request) holds for
    each at the server: WHAT it sees), exit 0 soon, and all five ids are
    back in `tasks` in the order pushed, no attempt counted, rows pending."""
    srv.script(lambda req: slow)
    ids = tw.insert(5)
    order = ids[2:] + ids[:2]
    tw.push(order)
    d = taskworkerd(handler=handler, retry=fast_retry(3),
                    worker={"concurrency": 3, "shutdown_timeout_ms": 300})
    srv.wait_requests(3, 10, daemon=d)
    t0 = time.monotonic()
    assert d.terminate(signal.SIGTERM, timeout=10) == EX_OK
    elapsed = time.monotonic() - t0
    assert elapsed < scaled(3), f"took {elapsed:.1f}s to stop with shutdown_timeout_ms = 300"
    wait_until(lambda: all(aborted(r) for r in srv.requests), 3,
               f"the server to see every request {what}")
    assert len(srv.requests) == 3
    assert tw.ids_in("tasks") == order
    assert tw.lrange(tw.processing()) == [] and tw.lrange(tw.dead()) == []
    assert zset(tw, "tasks:retry") == {}
    assert tw.r.hgetall("tasks:attempts") == {}, "an aborted request counted as an attempt"
    assert tw.statuses(ids) == {i: "pending" for i in ids}


def test_http_sigterm_aborts_after_shutdown_timeout(tw, http_server, taskworkerd):
    """Three requests in flight at SIGTERM, the server taking 10 s: the
    server sees them hang up, and the ids go back (assert_sigterm_aborts)."""
    srv = http_server()
    assert_sigterm_aborts(tw, taskworkerd, srv, http_handler(srv.url()),
                          Reply(200, delay=10), lambda r: r.peer_closed, "hang up")


def test_http_sigterm_with_requests_waiting_for_a_connection(tw, http_server, taskworkerd):
    """max_connections = 1, five tasks: one request is sent, four wait in
    the daemon for the connection. SIGTERM with shutdown_timeout_ms = 300
    and a server that takes 10 s: the one sent is aborted, and all five
    ids go back to `tasks` in the order pushed; only one request was sent."""
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=10))
    ids = tw.insert(5)
    order = ids[3:] + ids[:3]
    tw.push(order)
    d = taskworkerd(handler=http_handler(srv.url(), max_connections=1), retry=fast_retry(3),
                    worker={"shutdown_timeout_ms": 300})
    srv.wait_requests(1, 10, daemon=d)
    wait_until(lambda: len(tw.lrange(tw.processing())) == 5, 5, "five ids taken", daemon=d)
    assert d.terminate(signal.SIGTERM, timeout=10) == EX_OK
    assert len(srv.requests) == 1
    assert tw.ids_in("tasks") == order
    assert tw.lrange(tw.processing()) == [] and tw.lrange(tw.dead()) == []
    assert tw.r.hgetall("tasks:attempts") == {}
    assert tw.statuses(ids) == {i: "pending" for i in ids}


def test_http_gauges_with_requests_waiting(tw, http_server, taskworkerd):
    """max_connections = 1 and three requests the server holds: as the
    README and taskworkerd(8) say, tasks_running counts the one request
    sent, and the two waiting for the connection count in
    tasks_handler_waiting (not in tasks_waiting, which is
    worker.concurrency's)."""
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=10))
    d = start_with_metrics(taskworkerd, handler=http_handler(srv.url(), max_connections=1),
                           retry=fast_retry(1), worker={"shutdown_timeout_ms": 300})
    tw.push(tw.insert(3))
    srv.wait_requests(1, 10, daemon=d)
    e = wait_metrics(d.port, lambda e: e.get("taskworkerd_tasks_in_flight") == 3, 5,
                     "three tasks in flight", daemon=d)
    running, waiting = e.get("taskworkerd_tasks_running"), e.get("taskworkerd_tasks_waiting")
    assert (running, waiting) == (1, 0), f"running {running}, waiting {waiting}, in flight 3"
    assert e.get("taskworkerd_tasks_handler_waiting") == 2, e
    assert len(srv.requests) == 1


def test_http_reload_running_request_keeps_old_settings(tw, http_server, taskworkerd, tmp_path):
    """SIGHUP while a request to /old takes 1.5 s: it finishes there (with
    its old header and token), the row completes; tasks after the reload
    go to /new with the new header and token."""
    (tmp_path / "token-old").write_text("tok-old\n")
    (tmp_path / "token-new").write_text("tok-new\n")
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=1.5 if req.path == "/old" else 0))
    d = taskworkerd(handler=http_handler(srv.url("/old"), headers=["X-Gen: old"],
                                         token_file="token-old"),
                    retry=fast_retry(1))
    first, second = tw.insert(2)
    tw.push([first])
    srv.wait_requests(1, 10, daemon=d)
    mark = d.reload(merge_config(d.config, {
        "handler": http_handler(srv.url("/new"), headers=["X-Gen: new"],
                                token_file="token-new")}))
    wait_reloaded(d, mark)
    tw.push([second])
    tw.wait_completed([first, second], 10, daemon=d)
    reqs = srv.requests
    got = [(int(r.json()["id"]), r.path, r.header("X-Gen"), r.header("Authorization"))
           for r in reqs]
    assert got == [(first, "/old", "old", "Bearer tok-old"),
                   (second, "/new", "new", "Bearer tok-new")]
    assert reqs[0].answered and reqs[0].cut is None
    assert reqs[1].t < reqs[0].answered, "the reload waited for the running request"
    assert_clean(tw, d)


# ---- taskworkerd -t ---------------------------------------------------------------------

def check_config(handler):
    return {
        "redis": {"host": "127.0.0.1", "port": 1, "queues": ["tasks"]},
        "postgres": {"conninfo": "host=127.0.0.1 port=1 dbname=tasks"},
        "worker": {"id": "check", "delay_ms": 0},
        "handler": handler,
    }


GOOD_HTTP = {"type": "http", "url": "https://hooks.example:8443/v1/tasks", "method": "PATCH",
             "headers": ["X-Team: billing"], "timeout_ms": 5000, "connect_timeout_ms": 1000,
             "max_connections": 8, "max_response_bytes": 4096, "token_file": "token"}

# (id, the change to GOOD_HTTP, the key the error names: on its line when it is there)
BAD_HTTP = [
    ("no-url", {"url": None}, "handler.url"),
    ("ftp-url", {"url": "ftp://127.0.0.1/tasks"}, "handler.url"),
    ("userinfo-in-url", {"url": "http://user:pw@127.0.0.1/tasks"}, "handler.url"),
    ("method-get", {"method": "GET"}, "handler.method"),
    ("header-without-colon", {"headers": ["X-Team billing"]}, "handler.headers"),
    ("content-length-header", {"headers": ["Content-Length: 10"]}, "handler.headers"),
    ("transfer-encoding-header", {"headers": ["transfer-encoding: chunked"]}, "handler.headers"),
    ("connection-header", {"headers": ["Connection: close"]}, "handler.headers"),
    ("idempotency-key-header", {"headers": ["Idempotency-Key: mine"]}, "handler.headers"),
    ("authorization-with-token", {"headers": ["Authorization: Basic eDp5"]}, "handler.headers"),
    # https:// may speak HTTP/2, whose header block nghttp2 keeps to 64 KiB
    ("header-block-over-64-kib", {"headers": [f"X-Pad-{i}: " + "p" * 8000 for i in range(9)]},
     "handler.headers"),
]


def test_check_good_http_config(run_bin, tmp_path):
    (tmp_path / "token").write_text("t\n")
    path = tmp_path / "good.conf"
    path.write_text(render_config(check_config(GOOD_HTTP)))
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


@pytest.mark.parametrize("change,key", [b[1:] for b in BAD_HTTP], ids=[b[0] for b in BAD_HTTP])
def test_check_refuses_bad_http_config(run_bin, tmp_path, change, key):
    (tmp_path / "token").write_text("t\n")
    path = tmp_path / "bad.conf"
    text = render_config(check_config(dict(GOOD_HTTP, **change)))
    path.write_text(text)
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert "configuration OK" not in res.stdout
    assert key in res.stderr, res.stderr
    subkey = key.split(".")[1]
    where = f"{path}:{line_number(text, subkey + ' =')}" if subkey + " =" in text else str(path)
    assert where in res.stderr, f"expected {where} in stderr:\n{res.stderr}"


# ---- plain http://: the daemon's own HTTP/1.1 client ------------------------------

FRAMINGS = {
    # name: (raw answer, status of the row, reason in the dead list or None)
    "chunked, extensions, trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n", "completed", None),
    "100 Continue, then 204": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "completed", None),
    "103, then chunked 503": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        b"HTTP/1.1 503 Busy\r\ntransfer-encoding: CHUNKED\r\n\r\n4\r\nfull\r\n0\r\n\r\n",
        "failed", "HTTP 503 Busy: full"),
    "HTTP/1.0, body to the close": (
        b"HTTP/1.0 404 Gone Fishing\r\n\r\nno such hook", "failed",
        "HTTP 404 Gone Fishing: no such hook"),
    "bad chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "failed",
        "bad response: a bad chunk size"),
    "two Content-Lengths": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "failed",
        "bad response: two different Content-Lengths"),
    "closed in the body": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "failed",
        "bad response: the connection closed in the middle of the answer"),
    "101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "failed",
            "bad response: 101 Switching Protocols was not asked for"),
}


def test_http_own_client_framings(tw, http_server, taskworkerd):
    """Answers framed every way HTTP/1.x allows (chunked with extensions
    and trailers, 1xx before the final answer, HTTP/1.0 read to the close)
    are read whole; broken framings are failed attempts that say why."""
    srv = http_server()
    ids = tw.insert(len(FRAMINGS))
    cases = dict(zip(ids, FRAMINGS))
    srv.script(by_task({i: Reply(raw=FRAMINGS[name][0]) for i, name in cases.items()}))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(1))
    tw.push(ids)
    failed = [i for i, name in cases.items() if FRAMINGS[name][1] == "failed"]
    wait_dead(tw, failed, 15, daemon=d)
    tw.wait_completed([i for i in ids if i not in failed], 15, daemon=d)
    for i, name in cases.items():
        _, status, reason = FRAMINGS[name]
        assert tw.statuses([i]) == {i: status}, name
        if reason:
            assert reason_text(tw, i) == f"attempt 1/1: {reason}", name
        assert len([r for r in srv.requests if int(r.json()["id"]) == i]) == 1, name
    assert_clean(tw, d)


def test_http_server_closes_after_answering(tw, http_server, taskworkerd):
    """A server that closes every connection right after its answer,
    without saying Connection: close: the next request, sent on that
    connection before its close is seen, goes once more on a new one;
    no task has a failed attempt and none is sent twice."""
    srv = http_server()
    srv.script(lambda req: Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    d = taskworkerd(handler=http_handler(srv.url(), max_connections=1),
                    retry=fast_retry(1), worker={"concurrency": 50})
    ids = tw.insert(30)
    tw.push(ids)
    tw.wait_completed(ids, 20, daemon=d)
    got = sorted(int(r.json()["id"]) for r in srv.requests)
    assert got == ids, "a request was sent twice or not at all"
    assert len(srv.conns) == 30
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


def test_http_reused_connection_closed_without_answer(tw, http_server, taskworkerd):
    """A request on a kept-alive connection that the server closes without
    a byte of answer is sent once more on a new connection, and only once:
    the second close is a failed attempt."""
    srv = http_server()
    first, second = tw.insert(2)
    srv.script(by_task({first: Reply(200), second: Reply(raw=b"")}))
    d = taskworkerd(handler=http_handler(srv.url()), retry=fast_retry(1))
    tw.push([first])
    tw.wait_completed([first], 10, daemon=d)
    tw.push([second])
    wait_dead(tw, [second], 10, daemon=d)
    reqs = [r for r in srv.requests if int(r.json()["id"]) == second]
    assert [r.conn for r in reqs] == [1, 2], [(r.conn, r.path) for r in reqs]
    assert all(r.header("Idempotency-Key") == f"tasks:{second}" for r in reqs)
    assert reason_text(tw, second) == \
        "attempt 1/1: bad response: the server closed the connection without an answer"
    assert_clean(tw, d)


def one_request_with_headers(tw, taskworkerd, srv, handler):
    """One task sent by HANDLER(url, headers=...) with Host, User-Agent and
    Accept in handler.headers; the request the server saw."""
    d = taskworkerd(handler=handler(srv.url("/t"), headers=[
        "Host: api.example", "User-Agent: billing/2", "Accept: application/json"]),
        retry=fast_retry(1))
    ids = tw.insert(1)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    (r,) = srv.requests
    return r


def test_http_headers_of_the_config_replace_ours(tw, http_server, taskworkerd):
    """Host, User-Agent and Accept given in handler.headers are sent instead
    of the daemon's own, once each."""
    srv = http_server()
    r = one_request_with_headers(tw, taskworkerd, srv, http_handler)
    assert (r.header("Host"), r.header("User-Agent"), r.header("Accept")) == (
        "api.example", "billing/2", "application/json")


def test_http_url_by_name(tw, http_server, taskworkerd, fake_dns):
    """A host name in the URL is resolved off the loop (c-ares) and kept
    for its TTL: many requests over several connections, one lookup; a
    name with no address is a failed attempt that names it."""
    fake_dns.set("hook.test", ["127.0.0.1"], ttl=300)
    srv = http_server()
    d = taskworkerd(wrapper=fake_dns.wrapper(hosts={}),
                    handler=http_handler(srv.url(host="hook.test"), max_connections=4),
                    retry=fast_retry(1))
    ids = tw.insert(40)
    tw.push(ids)
    tw.wait_completed(ids, 20, daemon=d)
    assert srv.requests[0].header("Host") == f"hook.test:{srv.port}"
    asked = {q[2] for q in fake_dns.queries("hook.test")}
    assert len(fake_dns.queries("hook.test")) <= 2 * len(asked), fake_dns.queries("hook.test")
    d.terminate()

    d = taskworkerd(wrapper=fake_dns.wrapper(hosts={}),
                    handler=http_handler(srv.url(host="nohook.test")), retry=fast_retry(1))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 15, daemon=d)
    text = reason_text(tw, i)
    assert text.startswith("attempt 1/1: resolve nohook.test: "), text


def test_http_reload_lowers_max_connections(tw, http_server, taskworkerd):
    """A reload from 8 connections to 2: the idle ones past 2 close at once,
    and the requests after it run 2 at a time."""
    srv = http_server()
    srv.script(lambda req: Reply(200, delay=0.2))
    d = taskworkerd(handler=http_handler(srv.url(), max_connections=8), retry=fast_retry(1))
    first = tw.insert(8)
    tw.push(first)
    tw.wait_completed(first, 10, daemon=d)
    assert srv.max_active == 8
    mark = d.reload(merge_config(d.config, {
        "handler": http_handler(srv.url(), max_connections=2)}))
    wait_reloaded(d, mark)
    wait_until(lambda: sum(c.closed is None for c in srv.conns) == 2, 10,
               "the idle connections past 2 to close", daemon=d)
    then = time.monotonic()
    second = tw.insert(8)
    tw.push(second)
    tw.wait_completed(second, 20, daemon=d)
    spans = [(r.t, r.answered) for r in srv.requests if r.t > then]
    assert len(spans) == 8
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, f"{most} requests at once after max_connections went down to 2"
    assert len(srv.conns) == 8, "new connections were opened past the bound"
    assert_clean(tw, d)


def test_http_resend_after_reload_goes_where_it_was_meant(tw, http_server, taskworkerd):
    """A request on a reused connection to A, held while a reload points
    the handler at B, then closed by A without an answer: it is sent once
    more to A, the server it was meant for; B sees only the task after."""
    a, b = http_server(), http_server()
    first, second, third = tw.insert(3)
    a.script(by_task({first: Reply(200), second: [Reply(delay=1.5, raw=b""), Reply(200)]}))
    d = taskworkerd(handler=http_handler(a.url("/a")), retry=fast_retry(1))
    tw.push([first])
    tw.wait_completed([first], 10, daemon=d)
    tw.push([second])
    a.wait_requests(2, 10, daemon=d)
    mark = d.reload(merge_config(d.config, {"handler": http_handler(b.url("/b"))}))
    wait_reloaded(d, mark)
    tw.push([third])
    tw.wait_completed([second, third], 15, daemon=d)
    assert [(int(r.json()["id"]), r.path, r.conn) for r in a.requests] == [
        (first, "/a", 1), (second, "/a", 1), (second, "/a", 2)]
    assert [(int(r.json()["id"]), r.path) for r in b.requests] == [(third, "/b")]
    assert_clean(tw, d)


def test_http_max_connections_bounds_both_clients_across_a_reload(tw, http_server,
                                                                  taskworkerd):
    """max_connections = 2 with two slow requests at an http:// server, then
    a reload to an https:// one: the requests after it wait for those two
    to end, so both servers together never hold more than 2."""
    a, b = http_server(), http_server(tls="good")
    a.script(lambda req: Reply(delay=1.5))
    b.script(lambda req: Reply(delay=0.2))
    d = taskworkerd(handler=http_handler(a.url(), max_connections=2),
                    retry=fast_retry(1), worker={"concurrency": 50})
    ids = tw.insert(2)
    tw.push(ids)
    wait_until(lambda: a.active == 2, 10, "2 requests at the http:// server", daemon=d)
    mark = d.reload(merge_config(d.config, {"handler": http_handler(
        b.url(), max_connections=2, ca_file=http_server.certs.ca_file)}))
    wait_reloaded(d, mark)
    more = tw.insert(6)
    tw.push(more)
    peak, done = 0, False
    deadline = time.monotonic() + scaled(15)
    while not done and time.monotonic() < deadline:
        peak = max(peak, a.active + b.active)
        done = set(tw.statuses(ids + more).values()) == {"completed"}
        time.sleep(0.005)
    assert done, tw.statuses(ids + more)
    assert peak == 2, f"{peak} requests at once with max_connections = 2"
    assert len(b.requests) == 6 and b.max_active == 2
    assert_clean(tw, d)


def test_http_early_answer_to_a_large_body(tw, task_columns, taskworkerd):
    """A server that answers 413 after the headers of a 12 MB request and
    reads no more: the answer is read while the body still waits to go, so
    the task fails for good at once, sent once."""
    task_columns("payload")
    listener = socket.create_server(("127.0.0.1", 0))
    port, held = listener.getsockname()[1], []

    def serve():
        while True:
            try:
                s, _ = listener.accept()
            except OSError:
                return
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
            held.append(s)           # open, and nothing more is read

    threading.Thread(target=serve, daemon=True).start()
    try:
        d = taskworkerd(handler=http_handler(f"http://127.0.0.1:{port}/", timeout_ms=5000),
                        postgres={"columns": ["name", "payload"]}, retry=fast_retry(2))
        (i,) = insert_rows(tw, ("big", "p" * (12 * 1024 * 1024)))
        started = time.monotonic()
        tw.push([i])
        wait_dead(tw, [i], 30, daemon=d)
        assert time.monotonic() - started < scaled(4)
        assert reason_text(tw, i) == "attempt 1/2: HTTP 413 Payload Too Large: too big!"
        assert len(held) == 1
        assert_clean(tw, d)
    finally:
        listener.close()
        for s in held:
            s.close()


def test_http_lookup_bounded_by_the_current_connect_timeout(tw, http_server, taskworkerd,
                                                            fake_dns):
    """A name whose DNS answer takes 1 s: with connect_timeout_ms = 300 the
    attempt fails naming the connect; after a reload to 5000 it is served."""
    fake_dns.set("slowdns.test", ["127.0.0.1"], ttl=0, delay=1.0)
    srv = http_server()
    d = taskworkerd(wrapper=fake_dns.wrapper(hosts={}), retry=fast_retry(1),
                    handler=http_handler(srv.url(host="slowdns.test"), connect_timeout_ms=300))
    (i,) = tw.insert(1)
    tw.push([i])
    wait_dead(tw, [i], 10, daemon=d)
    assert reason_text(tw, i) == \
        f"attempt 1/1: connect to slowdns.test:{srv.port}: timed out after 300 ms"
    mark = d.reload(merge_config(d.config, {"handler": http_handler(
        srv.url(host="slowdns.test"), connect_timeout_ms=5000)}))
    wait_reloaded(d, mark)
    (k,) = tw.insert(1)
    tw.push([k])
    tw.wait_completed([k], 10, daemon=d)
