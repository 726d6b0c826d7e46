"""The http handler with http2 = true on an http:// URL: HTTP/2 without
TLS by prior knowledge (h2c), against a scripted HTTP/2 server of the
test's own (h2serv.py). What the server saw: the preface, the pseudo-
headers and headers of each stream, the body byte for byte, how many
streams were open at once on a connection and how many connections;
the status classes and reasons as over HTTP/1.1, Retry-After, a timeout
that resets only its stream, GOAWAY and REFUSED_STREAM (sent again, not
a failed attempt), other resets and abrupt closes (failed attempts),
max_response_bytes, SIGTERM with streams in flight, and a reload from
HTTP/1.1 to HTTP/2."""

import re
import subprocess
import signal
import time

import pytest
from h2.errors import ErrorCodes

from conftest import (EX_CONFIG, EX_OK, fast_retry, line_number, merge_config, reason_text,
                      render_config, rss_kib, scaled, wait_dead, wait_reloaded, wait_until)
from h2serv import H2Reply, h2_server  # noqa: F401  (tests/integration/h2serv.py)
from httpserv import Blackhole
from test_http import (GOOD_HTTP, assert_clean, assert_sigterm_aborts, assert_sigterm_waits,
                       body_of, by_task, check_config, http_handler, one_request_with_headers)
from test_http import user_agent  # noqa: F401  (a fixture)

MIB = 1 << 20

REFUSED_RESENDS = 16     # sends of a refused request after the first (h1conn.c)


def h2c(url, **keys):
    return http_handler(url, http2=True, **keys)


def assert_h2_only(srv):
    """Every connection spoke HTTP/2 from its first bytes, and the server
    saw no protocol error on any."""
    assert srv.errors() == [], f"protocol errors at the server: {srv.errors()}"
    protos = [c.proto for c in srv.conns if c.proto is not None]
    assert protos and set(protos) == {"HTTP/2"}, f"connections spoke {protos}"


def answered_once(srv, ids):
    """Each of IDS got exactly one answer from the server."""
    got = {i: sum(1 for r in srv.requests if r.task == i and r.ended == "answered")
           for i in ids}
    assert got == {i: 1 for i in ids}, {i: n for i, n in got.items() if n != 1}


def most_at_once(spans):
    """The most of the [start, end) SPANS that overlap at one time."""
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


# ---- the server by itself -------------------------------------------------------------

def test_h2serv_with_h2load(h2_server):
    """The test server against nghttp2's own client: 40 requests, 10 at
    once on one connection, each answered after 0.1 s."""
    srv = h2_server()
    srv.script(lambda req: H2Reply(200, delay=0.1, body=b"fine"))
    try:
        res = subprocess.run(["h2load", "-n", "40", "-c", "1", "-m", "10", srv.url()],
                             capture_output=True, text=True, timeout=scaled(30))
    except FileNotFoundError:
        pytest.skip("h2load (nghttp2-client) is not installed")
    assert "40 succeeded" in res.stdout, res.stdout + res.stderr
    assert len(srv.requests) == 40 and len(srv.conns) == 1
    assert srv.max_open == 10
    assert all(r.ended == "answered" for r in srv.requests)
    assert_h2_only(srv)


# ---- taskworkerd -t -------------------------------------------------------------------

def test_h2c_check_accepts_http2(run_bin, tmp_path):
    """http2 = true on an http:// URL is a good config now."""
    (tmp_path / "token").write_text("t\n")
    path = tmp_path / "h2c.conf"
    path.write_text(render_config(check_config(dict(
        GOOD_HTTP, url="http://hooks.example:8080/v1/tasks", http2=True))))
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_OK, res.stdout + res.stderr
    assert "configuration OK" in res.stdout


# ---- the request ----------------------------------------------------------------------

def test_h2c_request_headers_and_body(tw, h2_server, taskworkerd, tmp_path, user_agent):
    """The connection opens with the preface (no Upgrade); each task is a
    stream with :method, :scheme http, :authority and :path (query and
    all) of the URL, then the daemon's headers in lower case and those of
    handler.headers with their names lowered; the body is the JSON of
    HTTP/1.1 byte for byte; blanks around a header's value go (HTTP/2
    holds a field with them malformed). Two tasks one after the other
    share one connection."""
    (tmp_path / "token").write_text("s3cret-Token.1\nnot this line\n")
    srv = h2_server()
    d = taskworkerd(redis={"queues": ["tasks", "mail"]},
                    handler=h2c(srv.url("/hook/v1?x=1"), method="PUT", token_file="token",
                                headers=["X-Team: billing", "X-Trace: a b  c",
                                         "X-Pad: \t padded \t "]),
                    retry=fast_retry(1))
    a, b = tw.insert(2)
    tw.push([a])
    tw.wait_completed([a], 10, daemon=d)
    tw.push([b], queue="mail")
    tw.wait_completed([b], 10, daemon=d)
    reqs = srv.requests
    assert len(reqs) == 2, reqs
    ra, rb = reqs
    assert ra.body == body_of(a, f"task-{a}")
    assert rb.body == body_of(b, f"task-{b}", queue="mail")
    for r, key in ((ra, f"tasks:{a}"), (rb, f"mail:{b}")):
        assert r.proto == "HTTP/2"
        assert r.pseudo() == {":method": "PUT", ":scheme": "http",
                              ":authority": f"127.0.0.1:{srv.port}",
                              ":path": "/hook/v1?x=1"}, r.headers
        assert r.header_names() == sorted([
            "user-agent", "accept", "content-type", "idempotency-key", "content-length",
            "authorization", "x-team", "x-trace", "x-pad"]), r.headers
        assert r.header("user-agent") == user_agent
        assert r.header("accept") == "*/*"
        assert r.header("content-type") == "application/json"
        assert r.header("idempotency-key") == key
        assert r.header("content-length") == str(len(r.body))
        assert r.header("authorization") == "Bearer s3cret-Token.1"
        assert r.header("x-team") == "billing"
        assert r.header("x-trace") == "a b  c"
        assert r.header("x-pad") == "padded"
    assert [(r.conn, r.stream) for r in reqs] == [(1, 1), (1, 3)], \
        "the second task did not go as the next stream of the same connection"
    assert len(srv.conns) == 1
    assert_h2_only(srv)
    assert "s3cret-Token" not in d.log(), "the bearer token is in the log"
    assert tw.lrange(tw.dead()) == [] and tw.lrange(tw.dead("mail")) == []
    assert_clean(tw, d)


def pads(n, size=8000, last=None):
    return [f"X-Pad-{i}: " + "p" * size for i in range(n)] + \
        ([f"X-Last: " + "l" * last] if last is not None else [])


def test_h2c_header_block_over_what_nghttp2_sends_is_refused(tw, h2_server, taskworkerd,
                                                              run_bin, tmp_path):
    """nghttp2 sends no header block over 64 KiB (its count: 12 bytes, then
    12 a field besides its name and value, and 5 for a HEADERS frame's
    priority). Eight headers of 8,000 bytes and the longest ninth that -t
    takes (found by bisection) are sent, every one: what -t takes, nghttp2
    sends; a byte more is refused by -t and by a reload, which keeps the
    running settings; the same headers over HTTP/1.1, which has no such
    bound, are a valid config."""
    srv = h2_server(max_header_list=1 << 17)    # HPACK's own count is larger
    base = {"handler": h2c(srv.url("/t")), "retry": fast_retry(1)}
    path = tmp_path / "check.conf"

    def check(cfg):
        text = render_config(cfg)
        path.write_text(text)
        return run_bin("-t", "-c", str(path)), text

    def taken(last):
        res, _ = check(merge_config(base, {"handler": {"headers": pads(8, last=last)}}))
        return res.returncode == EX_OK

    lo, hi = 0, 8000
    assert taken(lo) and not taken(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if taken(mid) else (lo, mid)
    print(f"the longest X-Last -t takes beside eight 8,000-byte headers: {lo} bytes")

    d = taskworkerd(**merge_config(base, {"handler": {"headers": pads(8, last=lo)}}))
    a = tw.insert(1)
    tw.push(a)
    tw.wait_completed(a, 10, daemon=d)
    r = srv.requests[0]
    assert [r.header(f"x-pad-{i}") for i in range(8)] == ["p" * 8000] * 8
    assert r.header("x-last") == "l" * lo

    over = merge_config(d.config, {"handler": {"headers": pads(8, last=lo + 1)}})
    res, text = check(over)
    assert res.returncode == EX_CONFIG, (res.returncode, res.stdout, res.stderr)
    assert f"{path}:{line_number(text, 'headers =')}: handler: the URL, handler.headers " \
        "and the token come to a header block of up to 65537 bytes, over the 65536 " \
        "HTTP/2 sends" in res.stderr, res.stderr
    res, _ = check(merge_config(over, {"handler": {"http2": False}}))
    assert res.returncode == EX_OK, res.stdout + res.stderr

    wait_reloaded(d, d.reload(over))
    wait_until(lambda: "reload failed" in d.log(), 10, "the refusal", daemon=d)
    b = tw.insert(1)
    tw.push(b)
    tw.wait_completed(b, 10, daemon=d)
    assert srv.requests[1].header("x-last") == "l" * lo
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_config_headers_replace_ours(tw, h2_server, taskworkerd):
    """Host in handler.headers becomes :authority; User-Agent and Accept
    replace the daemon's own, once each."""
    srv = h2_server()
    r = one_request_with_headers(tw, taskworkerd, srv, h2c)
    assert r.header(":authority") == "api.example", r.headers
    assert r.header("host") in (None, "api.example"), r.headers
    assert (r.header("user-agent"), r.header("accept")) == ("billing/2", "application/json")
    assert (r.header(":method"), r.header(":path")) == ("POST", "/t")
    assert_h2_only(srv)


# ---- multiplexing ---------------------------------------------------------------------

def test_h2c_multiplexes_streams_on_few_connections(tw, h2_server, taskworkerd):
    """300 tasks, each answered after 0.3 s, worker.concurrency = 250 and
    max_connections = 8: up to 100 streams share a connection, and a new
    one is opened only when those open are full: at most 3 connections,
    the first with 100 streams at once."""
    srv = h2_server()
    srv.script(lambda req: H2Reply(200, delay=0.3))
    d = taskworkerd(handler=h2c(srv.url(), max_connections=8, timeout_ms=20000),
                    retry=fast_retry(1), worker={"concurrency": 250})
    ids = tw.insert(300)
    t0 = time.monotonic()
    tw.push(ids)
    tw.wait_completed(ids, 30, daemon=d)
    took = time.monotonic() - t0
    conns = srv.conns
    assert 1 < srv.max_open <= 100, f"{srv.max_open} streams at once on a connection"
    assert len(conns) <= 3, f"{len(conns)} connections for 250 tasks at once"
    if len(conns) > 1:
        assert conns[0].max_open == 100, \
            f"a second connection while the first had at most {conns[0].max_open} streams"
    assert not any(c.over_limit for c in conns), [c.over_limit[:3] for c in conns]
    assert sorted(r.task for r in srv.requests) == ids, "a task sent twice or not at all"
    assert srv.max_active > 100, f"only {srv.max_active} streams at once in all"
    assert took < scaled(20), f"300 tasks took {took:.1f}s"
    assert_h2_only(srv)
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


def test_h2c_server_max_concurrent_streams(tw, h2_server, taskworkerd):
    """A server with SETTINGS_MAX_CONCURRENT_STREAMS = 4 and max_connections
    = 2: never more than 4 streams at once on a connection, never more than
    2 connections, and all 40 tasks complete."""
    srv = h2_server(max_streams=4)
    srv.script(lambda req: H2Reply(200, delay=0.1))
    d = taskworkerd(handler=h2c(srv.url(), max_connections=2), retry=fast_retry(1),
                    worker={"concurrency": 50})
    ids = tw.insert(40)
    tw.push(ids)
    tw.wait_completed(ids, 20, daemon=d)
    conns = srv.conns
    over = [(c.id, c.over_limit) for c in conns if c.over_limit]
    assert not over, ("streams past the server's limit of 4, as (connection, [(stream, "
                      f"open then, before the client acked the SETTINGS)]): {over}")
    assert srv.max_open == 4, f"{srv.max_open} streams at once on a connection (limit 4)"
    assert len(conns) <= 2, f"{len(conns)} connections with max_connections = 2"
    assert srv.max_active <= 8
    assert sorted(r.task for r in srv.requests) == ids
    assert_h2_only(srv)
    assert tw.lrange(tw.dead()) == []
    assert_clean(tw, d)


def test_h2c_burst_past_the_limit_goes_to_other_connections(tw, h2_server, taskworkerd):
    """8 tasks at once on a new connection, whose server then says it takes
    2 streams at once, each answered after 1 s, with timeout_ms = 1500 and
    max_connections = 4: the 6 the client had not sent yet go to other
    connections instead of waiting behind the first 2 (where they would
    time out): all 8 are answered within about 1 s of each other, on 4
    connections, none failed, none past a connection's limit."""
    srv = h2_server(max_streams=2)
    srv.script(lambda req: H2Reply(200, delay=1))
    d = taskworkerd(handler=h2c(srv.url(), max_connections=4, timeout_ms=1500),
                    retry=fast_retry(1), worker={"concurrency": 8})
    ids = tw.insert(8)
    tw.push(ids)
    wait_until(lambda: tw.count("completed", ids) + tw.llen(tw.dead()) >= len(ids), 20,
               "every task to end", daemon=d)
    dead = tw.lrange(tw.dead())
    assert not dead, f"{len(dead)} dead, e.g. {reason_text(tw, dead[0])}"
    answered_once(srv, ids)
    over = [(c.id, c.over_limit) for c in srv.conns if c.over_limit]
    assert not over, f"streams past the server's limit of 2: {over}"
    assert srv.max_open <= 2
    assert len(srv.conns) == 4, f"{len(srv.conns)} connections"
    starts = sorted(r.t for r in srv.requests)
    assert starts[-1] - starts[0] < 0.8, \
        f"the last request came {starts[-1] - starts[0]:.2f}s after the first"
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_server_taking_no_streams(tw, h2_server, taskworkerd):
    """A server whose SETTINGS allow 0 streams and that refuses the one a
    client sends before they come (REFUSED_STREAM), and timeout_ms = 0 (no
    deadline): every task fails at once saying why; none waits forever on
    a connection that can send nothing, and once the server is known to
    take none, a new connection sends nothing before its SETTINGS."""
    srv = h2_server(max_streams=0, refuse_over_limit=True)
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=0, max_connections=2),
                    retry=fast_retry(1), worker={"concurrency": 10})
    ids = tw.insert(10)
    tw.push(ids)
    wait_until(lambda: tw.llen(tw.dead()) >= len(ids), 30, "every task to fail", daemon=d)
    reasons = {reason_text(tw, i) for i in ids}
    assert reasons == {"attempt 1/1: bad response: the server takes no streams "
                       "(SETTINGS_MAX_CONCURRENT_STREAMS 0)"}, reasons
    refused = [len(c.refused) for c in srv.conns]
    assert sum(refused) == 1, f"streams refused on each connection: {refused}"
    assert len(srv.conns) <= 3, f"{len(srv.conns)} connections"
    assert_clean(tw, d)


def test_h2c_connect_deadline_holds_with_requests_coming(tw, taskworkerd):
    """A connect that never completes, connect_timeout_ms = 1500 and
    timeout_ms = 300, a task every 100 ms: each fails at its own 300 ms,
    and the connect itself ends at 1500 ms, though new requests kept
    coming onto it, failing those on it then."""
    hole = Blackhole()
    try:
        d = taskworkerd(handler=h2c(f"http://127.0.0.1:{hole.port}/t", timeout_ms=300,
                                    connect_timeout_ms=1500),
                        retry=fast_retry(1), worker={"concurrency": 50})
        ids = tw.insert(25)
        for i in ids:
            tw.push([i])
            time.sleep(0.1)
        wait_dead(tw, ids, 15, daemon=d)
        at = f"attempt 1/1: connect to 127.0.0.1:{hole.port}: timed out after"
        reasons = [reason_text(tw, i) for i in ids]
        assert set(reasons) <= {f"{at} 300 ms", f"{at} 1500 ms"}, set(reasons)
        assert f"{at} 1500 ms" in reasons, "the connect never reached its own deadline"
        assert reasons.count(f"{at} 300 ms") >= 10, reasons
        assert_clean(tw, d)
    finally:
        hole.close()


def test_h2c_late_request_keeps_its_own_shorter_connect_timeout(tw, taskworkerd):
    """A connect that never completes, begun by a task with
    connect_timeout_ms = 3000 (max_connections = 1); a reload to 400 ms
    for the same origin, then a second task, which joins the connect under
    way: it fails at its own 400 ms, and the connect goes on until the
    first task's 3000 ms."""
    hole = Blackhole()
    try:
        url = f"http://127.0.0.1:{hole.port}/t"
        d = taskworkerd(handler=h2c(url, timeout_ms=20000, connect_timeout_ms=3000,
                                    max_connections=1), retry=fast_retry(1))
        first, second = tw.insert(2)
        t0 = time.monotonic()
        tw.push([first])
        time.sleep(0.3)
        mark = d.reload(merge_config(d.config, {"handler": h2c(
            url, timeout_ms=20000, connect_timeout_ms=400, max_connections=1)}))
        wait_reloaded(d, mark)
        t1 = time.monotonic()
        tw.push([second])
        wait_dead(tw, [second], 10, daemon=d)
        took = time.monotonic() - t1
        at = f"attempt 1/1: connect to 127.0.0.1:{hole.port}: timed out after"
        assert reason_text(tw, second) == f"{at} 400 ms"
        assert took < 2.0, f"the second task waited {took:.1f} s, the first one's connect"
        assert tw.llen(tw.dead()) == 1, "the first task ended with the second"
        wait_dead(tw, [first], 10, daemon=d)
        assert reason_text(tw, first) == f"{at} 3000 ms"
        assert time.monotonic() - t0 >= 2.9
        assert_clean(tw, d)
    finally:
        hole.close()


def test_h2c_streams_refused_past_the_limit(tw, h2_server, taskworkerd):
    """A server that allows 4 streams at once and refuses those past it
    with RST_STREAM REFUSED_STREAM, as nginx does: 40 tasks at once with
    max_connections = 1 all complete, none with a failed attempt."""
    srv = h2_server(max_streams=4, refuse_over_limit=True)
    srv.script(lambda req: H2Reply(200, delay=0.1))
    d = taskworkerd(handler=h2c(srv.url(), max_connections=1), retry=fast_retry(1),
                    worker={"concurrency": 50})
    ids = tw.insert(40)
    tw.push(ids)
    wait_until(lambda: tw.count("completed", ids) + tw.llen(tw.dead()) >= len(ids), 20,
               "every task to end", daemon=d)
    dead = tw.lrange(tw.dead())
    refused = [(c.id, len(c.refused)) for c in srv.conns if c.refused]
    assert not dead, (f"{len(dead)} dead, e.g. {reason_text(tw, dead[0])}; streams "
                      f"refused (connection, how many): {refused}")
    assert srv.max_open <= 4
    answered_once(srv, ids)
    assert_h2_only(srv)
    assert_clean(tw, d)


# ---- status classes and Retry-After ------------------------------------------------------

def test_h2c_status_classes_and_retry_after(tw, h2_server, taskworkerd):
    """As over HTTP/1.1: 2xx done; 404 and 422 dead at once; 503 and 500
    retried; the reasons use the standard phrase of the code (HTTP/2 has
    none) and the body; a 429 with Retry-After: 1 is tried again no
    earlier than 1 s later."""
    ok, empty, gone, unproc, busy, down, bare, limited = ids = tw.insert(8)
    srv = h2_server()
    srv.script(by_task({
        ok: H2Reply(200, body=b"thanks"),
        empty: H2Reply(204),
        gone: H2Reply(404, body=b"no such thing"),
        unproc: H2Reply(422, body=b"no"),
        busy: [H2Reply(503, body=b"busy"), H2Reply(200)],
        down: H2Reply(503, body=b"busy"),
        bare: H2Reply(500),
        limited: [H2Reply(429, headers=[("retry-after", "1")]), H2Reply(200)],
    }))
    d = taskworkerd(handler=h2c(srv.url()), retry=fast_retry(2, min_ms=20, max_ms=50))
    tw.push(ids)
    wait_dead(tw, [gone, unproc, down, bare], 10, daemon=d)
    tw.wait_completed([ok, empty, busy, limited], 10, daemon=d)
    assert reason_text(tw, gone) == "attempt 1/2: HTTP 404 Not Found: no such thing"
    text = reason_text(tw, unproc)
    assert re.fullmatch(r"attempt 1/2: HTTP 422 [A-Za-z ]+: no", text), text
    assert reason_text(tw, down) == "attempt 2/2: HTTP 503 Service Unavailable: busy"
    assert reason_text(tw, bare) == "attempt 2/2: HTTP 500 Internal Server Error"
    counts = {i: len(srv.for_task(i)) for i in ids}
    assert counts == {ok: 1, empty: 1, gone: 1, unproc: 1, busy: 2, down: 2, bare: 2,
                      limited: 2}, counts
    second = srv.for_task(busy)[1]
    assert second.body == body_of(busy, f"task-{busy}", attempt=2)
    assert second.header("idempotency-key") == f"tasks:{busy}"
    first, again = srv.for_task(limited)
    gap = again.t - first.t
    assert 0.998 <= gap < 1.0 + scaled(1.0), \
        f"Retry-After: 1, the next attempt came after {gap:.3f}s"
    assert tw.statuses(ids) == {i: "failed" if i in (gone, unproc, down, bare) else "completed"
                                for i in ids}
    assert_h2_only(srv)
    assert_clean(tw, d)


# ---- timeouts --------------------------------------------------------------------------

def test_h2c_timeout_resets_the_stream_only(tw, h2_server, taskworkerd):
    """timeout_ms = 300 and an answer that would come after 5 s: the daemon
    resets that stream (RST_STREAM CANCEL) at 300 ms, the reason says so,
    and the connection stays: the next task is a stream on it."""
    first, second = tw.insert(2)
    srv = h2_server()
    srv.script(by_task({first: H2Reply(200, delay=5), second: H2Reply(200)}))
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=300), retry=fast_retry(1))
    tw.push([first])
    wait_dead(tw, [first], 10, daemon=d)
    assert reason_text(tw, first) == "attempt 1/1: timed out after 300 ms"
    (req,) = srv.requests
    wait_until(lambda: req.ended, 3, "the stream to end at the server", daemon=d)
    assert req.ended == "reset by client", f"the stream ended as: {req.ended}"
    assert req.reset_by_client == ErrorCodes.CANCEL, \
        f"RST_STREAM with error code {req.reset_by_client}, not CANCEL"
    held = req.reset_at - req.t
    assert 0.2 <= held < scaled(2), f"the stream was reset {held:.3f}s after the request"
    assert srv.conns[0].closed is None, "the connection was closed with the stream"
    tw.push([second])
    tw.wait_completed([second], 10, daemon=d)
    assert [(r.task, r.conn) for r in srv.requests] == [(first, 1), (second, 1)], \
        "the next task did not use the same connection"
    assert len(srv.conns) == 1
    assert_h2_only(srv)
    assert_clean(tw, d)


# ---- GOAWAY and resets -------------------------------------------------------------------

def test_h2c_goaway_after_k_requests(tw, h2_server, taskworkerd):
    """A server that sends GOAWAY at the 20th request of a connection (as
    nginx's keepalive_requests) and closes it once the streams up to it
    are answered: 30 tasks at once, those above last_stream_id go again on
    a new connection; all complete, none has a failed attempt."""
    srv = h2_server(goaway_after=20)
    srv.script(lambda req: H2Reply(200, delay=0.3))
    d = taskworkerd(handler=h2c(srv.url()), retry=fast_retry(3),
                    worker={"concurrency": 50})
    ids = tw.insert(30)
    tw.push(ids)
    tw.wait_completed(ids, 15, daemon=d)
    conns, reqs = srv.conns, srv.requests
    first = conns[0]
    assert first.goaway_last is not None, "no GOAWAY was sent"
    for r in reqs:
        c = conns[r.conn - 1]
        if c.goaway_last is not None and r.stream > c.goaway_last:
            assert r.ended == "ignored", (r.conn, r.stream, r.ended)
        else:
            assert r.ended == "answered", (r.conn, r.stream, r.ended)
    answered_once(srv, ids)
    for r in reqs:
        if r.ended == "ignored":
            later = [x for x in srv.for_task(r.task) if x.conn > r.conn]
            assert later, f"task {r.task} ignored on connection {r.conn} was not sent again"
    assert all(len(srv.for_task(i)) <= 2 for i in ids), \
        {i: [(x.conn, x.stream) for x in srv.for_task(i)] for i in ids}
    assert [r.json()["attempt"] for r in reqs] == [1] * len(reqs), \
        "a request sent again after GOAWAY counted as a new attempt"
    wait_until(lambda: first.closed, 5, "the server to close the first connection")
    sent_on_first = [r for r in reqs if r.conn == 1]
    assert len(sent_on_first) >= 20
    assert tw.lrange(tw.dead()) == []
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_goaway_after_an_answer(tw, h2_server, taskworkerd):
    """The first stream is answered after 0.5 s, then GOAWAY with
    last_stream_id = 1: the streams sent meanwhile on that connection are
    never answered and go again on a new one; no new stream goes to the
    old connection after the GOAWAY; no failed attempt."""
    srv = h2_server()
    srv.script(lambda req: H2Reply(200, delay=0.5, goaway=True) if (req.conn, req.stream) == (1, 1)
               else H2Reply(200, delay=5) if req.conn == 1 else H2Reply(200))
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=10000), retry=fast_retry(3))
    ids = tw.insert(6)
    tw.push(ids)
    tw.wait_completed(ids, 15, daemon=d)
    conns = srv.conns
    assert conns[0].goaway_last == 1
    assert len(conns) >= 2
    on_first = [r for r in srv.requests if r.conn == 1]
    late = [r.stream for r in on_first if r.t > conns[0].goaway_at + 0.1]
    assert not late, f"streams {late} sent on the connection after its GOAWAY"
    assert [r.ended for r in on_first] == ["answered"] + ["ignored"] * (len(on_first) - 1)
    answered_once(srv, ids)
    assert all(r.json()["attempt"] == 1 for r in srv.requests)
    (more,) = tw.insert(1)
    tw.push([more])
    tw.wait_completed([more], 10, daemon=d)
    assert srv.for_task(more)[0].conn >= 2
    assert tw.lrange(tw.dead()) == []
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_refused_stream_sent_again_other_resets_fail(tw, h2_server, taskworkerd):
    """RST_STREAM REFUSED_STREAM: the request is sent again, the same
    bytes, and a 200 then completes it; a request the server refuses every
    time is sent REFUSED_RESENDS times more (a refused stream was not
    processed, RFC 9113 8.7), then it is a failed attempt. RST_STREAM
    INTERNAL_ERROR: a failed attempt, not sent again."""
    refused_once, refused_twice, broken = ids = tw.insert(3)
    srv = h2_server()
    srv.script(by_task({
        refused_once: [H2Reply(reset=ErrorCodes.REFUSED_STREAM), H2Reply(200)],
        refused_twice: H2Reply(reset=ErrorCodes.REFUSED_STREAM),
        broken: H2Reply(reset=ErrorCodes.INTERNAL_ERROR),
    }))
    d = taskworkerd(handler=h2c(srv.url()), retry=fast_retry(1))
    tw.push(ids)
    tw.wait_completed([refused_once], 10, daemon=d)
    wait_dead(tw, [refused_twice, broken], 10, daemon=d)
    once = srv.for_task(refused_once)
    assert [r.ended for r in once] == ["reset by server", "answered"]
    assert once[0].body == once[1].body == body_of(refused_once, f"task-{refused_once}")
    assert once[1].header("idempotency-key") == f"tasks:{refused_once}"
    assert len(srv.for_task(refused_twice)) == 1 + REFUSED_RESENDS
    text = reason_text(tw, refused_twice)
    assert re.fullmatch(r"attempt 1/1: bad response: .+", text), text
    assert len(srv.for_task(broken)) == 1, "a stream reset with INTERNAL_ERROR was sent again"
    text = reason_text(tw, broken)
    assert re.fullmatch(r"attempt 1/1: bad response: .+", text), text
    assert tw.statuses(ids) == {refused_once: "completed", refused_twice: "failed",
                                broken: "failed"}
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_connection_closed_abruptly(tw, h2_server, taskworkerd):
    """A server that closes the connection (no GOAWAY) with streams open
    and no answer: nothing is lost. With one attempt, a task closed on
    every try is dead with a 'bad response' (after one resend at most);
    with two, four tasks open at the close all complete; processing is
    empty and the daemon goes on."""
    srv = h2_server()
    answered, closed, after = tw.insert(3)
    srv.script(by_task({answered: H2Reply(200), closed: H2Reply(close=True, delay=0.1),
                        after: H2Reply(200)}))
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=3000), retry=fast_retry(1))
    tw.push([answered])
    tw.wait_completed([answered], 10, daemon=d)
    tw.push([closed])
    wait_dead(tw, [closed], 10, daemon=d)
    text = reason_text(tw, closed)
    assert re.fullmatch(r"attempt 1/1: bad response: .+", text), text
    tries = srv.for_task(closed)
    assert 1 <= len(tries) <= 2, [(r.conn, r.stream) for r in tries]
    assert len({r.conn for r in tries}) == len(tries), "sent again on the closed connection"
    assert all(r.ended == "server closed" for r in tries), [r.ended for r in tries]
    tw.push([after])
    tw.wait_completed([after], 10, daemon=d)
    tw.wait_empty(tw.processing(), daemon=d)
    d.terminate()

    batch = tw.insert(4)
    seen = set()

    def pick(req):
        if req.task not in batch:
            return H2Reply(200)
        if req.task in seen:
            return H2Reply(200)
        seen.add(req.task)
        return H2Reply(close=True, delay=0.3) if len(seen) == 1 else H2Reply(never=True)
    srv.script(pick)
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=3000),
                    retry=fast_retry(2, min_ms=20, max_ms=50))
    (warm,) = tw.insert(1)
    tw.push([warm])
    tw.wait_completed([warm], 10, daemon=d)
    tw.push(batch)
    tw.wait_completed(batch, 15, daemon=d)
    firsts = [srv.for_task(i)[0] for i in batch]
    assert len({r.conn for r in firsts}) == 1, "the four tasks were not on one connection"
    assert all(r.ended == "server closed" for r in firsts), [r.ended for r in firsts]
    answered_once(srv, batch)
    assert all(len(srv.for_task(i)) <= 2 for i in batch)
    assert tw.lrange(tw.dead()) == [str(closed)]
    assert srv.errors() == []
    assert_clean(tw, d)


# ---- max_response_bytes ----------------------------------------------------------------

def test_h2c_max_response_bytes(tw, h2_server, taskworkerd):
    """max_response_bytes = 1024 and 4 MiB answers: the 200s are done, the
    503 keeps the first 200 bytes of its body in the reason, every stream
    ends (read or reset), and the daemon's RSS stays bounded."""
    big = 4 * MIB
    warm, *oks, busy, after = tw.insert(8)
    ids = oks + [busy]
    srv = h2_server()
    srv.script(by_task({**{i: H2Reply(200, body_size=big) for i in oks},
                        busy: H2Reply(503, body_size=big),
                        warm: H2Reply(200), after: H2Reply(200)}))
    d = taskworkerd(handler=h2c(srv.url(), max_response_bytes=1024), retry=fast_retry(1))
    tw.push([warm])
    tw.wait_completed([warm], 10, daemon=d)
    before = rss_kib(d.pid)
    tw.push(ids)
    tw.wait_completed(oks, 15, daemon=d)
    wait_dead(tw, [busy], 10, daemon=d)
    srv.wait_settled(10, daemon=d)
    grew = rss_kib(d.pid) - before
    assert reason_text(tw, busy) == "attempt 1/1: HTTP 503 Service Unavailable: " + "x" * 200
    ends = {r.task: r.ended for r in srv.requests if r.task in ids}
    assert set(ends.values()) <= {"answered", "reset by client"}, ends
    assert grew < 12 * 1024, f"RSS grew by {grew} KiB over 6 answers of 4 MiB"
    tw.push([after])
    tw.wait_completed([after], 10, daemon=d)
    assert_h2_only(srv)
    assert_clean(tw, d)


def test_h2c_large_response_headers(tw, h2_server, taskworkerd):
    """An answer whose headers take 40 KB (a HEADERS frame and CONTINUATION
    frames, within the header list size the daemon allows) is read: the
    task is done. One with a 100 KB header ends too, done or a failed
    attempt with a 'bad response', and the next task is served."""
    fits, huge, after = tw.insert(3)
    srv = h2_server()
    srv.script(by_task({fits: H2Reply(200, huge_header=40_000),
                        huge: H2Reply(200, huge_header=100_000), after: H2Reply(200)}))
    d = taskworkerd(handler=h2c(srv.url(), timeout_ms=5000), retry=fast_retry(1))
    tw.push([fits])
    tw.wait_completed([fits], 10, daemon=d)
    tw.push([huge])
    wait_until(lambda: tw.statuses([huge])[huge] != "pending"
               and tw.r.zcard(tw.processing()) == 0, 10, "the task to end", daemon=d)
    status = tw.statuses([huge])[huge]
    if status == "failed":
        text = reason_text(tw, huge)
        assert re.fullmatch(r"attempt 1/1: bad response: .+", text), text
    else:
        assert status == "completed", status
    tw.push([after])
    tw.wait_completed([after], 10, daemon=d)
    assert [r.ended for r in srv.for_task(fits)] == ["answered"]
    assert srv.errors() == []
    assert_clean(tw, d)


# ---- SIGTERM and SIGHUP ------------------------------------------------------------------

def test_h2c_sigterm_waits_for_streams(tw, h2_server, taskworkerd):
    """SIGTERM waits for three streams answered after 1 s
    (assert_sigterm_waits), all on one connection."""
    srv = h2_server()
    reqs = assert_sigterm_waits(tw, taskworkerd, srv, h2c(srv.url()), H2Reply(200, delay=1.0))
    assert {r.conn for r in reqs} == {1}
    assert [r.ended for r in reqs] == ["answered"] * 3
    assert_h2_only(srv)


def test_h2c_sigterm_aborts_after_shutdown_timeout(tw, h2_server, taskworkerd):
    """Three streams in flight at SIGTERM, the server taking 10 s: the
    server sees each reset or its connection closed, and the ids go back
    (assert_sigterm_aborts)."""
    srv = h2_server()
    assert_sigterm_aborts(tw, taskworkerd, srv, h2c(srv.url()), H2Reply(200, delay=10),
                          lambda r: r.ended in ("reset by client", "peer closed"),
                          "reset or its connection closed")


def test_h2c_sigterm_during_a_connect_that_never_completes(tw, taskworkerd):
    """Three tasks on an h2c connection whose connect never completes
    (connect_timeout_ms and timeout_ms 60 s), SIGTERM with
    shutdown_timeout_ms = 300: the requests are aborted with the connect
    under way, the daemon exits 0 soon, and all five ids are back in
    `tasks` in the order pushed, no attempt counted, rows pending."""
    hole = Blackhole()
    try:
        ids = tw.insert(5)
        order = ids[2:] + ids[:2]
        tw.push(order)
        d = taskworkerd(handler=h2c(f"http://127.0.0.1:{hole.port}/t", timeout_ms=60000,
                                    connect_timeout_ms=60000),
                        retry=fast_retry(3),
                        worker={"concurrency": 3, "shutdown_timeout_ms": 300})
        wait_until(lambda: len(tw.lrange(tw.processing())) == 3, 10,
                   "three tasks taken", daemon=d)
        time.sleep(0.3)         # their requests wait on the connect
        t0 = time.monotonic()
        assert d.terminate(signal.SIGTERM, timeout=10) == EX_OK
        elapsed = time.monotonic() - t0
        assert elapsed < scaled(3), f"took {elapsed:.1f}s to stop with shutdown_timeout_ms = 300"
        assert tw.ids_in("tasks") == order
        assert tw.lrange(tw.processing()) == [] and tw.lrange(tw.dead()) == []
        assert tw.r.hgetall("tasks:attempts") == {}, "an aborted request counted as an attempt"
        assert tw.statuses(ids) == {i: "pending" for i in ids}
    finally:
        hole.close()


def test_h2c_reload_from_http1_to_http2(tw, h2_server, taskworkerd):
    """SIGHUP from http2 = false to true while a request takes 1.5 s: it
    ends over HTTP/1.1 where it began, and the task after the reload is an
    HTTP/2 stream on a new connection; a reload back goes back to
    HTTP/1.1."""
    srv = h2_server()
    first, second, third = tw.insert(3)
    srv.script(by_task({first: H2Reply(200, delay=1.5), second: H2Reply(200),
                        third: H2Reply(200)}))
    d = taskworkerd(handler=http_handler(srv.url(), http2=False), retry=fast_retry(1))
    tw.push([first])
    srv.wait_requests(1, 10, daemon=d)
    mark = d.reload(merge_config(d.config, {"handler": h2c(srv.url())}))
    wait_reloaded(d, mark)
    tw.push([second])
    tw.wait_completed([first, second], 10, daemon=d)
    reqs = srv.requests
    assert [(r.task, r.proto) for r in reqs] == [(first, "HTTP/1.1"), (second, "HTTP/2")]
    assert reqs[0].answered, "the running request did not get its answer"
    assert reqs[1].t < reqs[0].answered, "the reload waited for the running request"
    assert reqs[1].conn != reqs[0].conn
    assert reqs[1].pseudo() == {":method": "POST", ":scheme": "http",
                                ":authority": f"127.0.0.1:{srv.port}", ":path": "/tasks"}
    assert reqs[1].body == body_of(second, f"task-{second}")
    mark = d.reload(merge_config(d.config, {"handler": http_handler(srv.url(), http2=False)}))
    wait_reloaded(d, mark)
    tw.push([third])
    tw.wait_completed([third], 10, daemon=d)
    assert srv.requests[-1].proto == "HTTP/1.1"
    assert srv.errors() == []
    assert_clean(tw, d)
