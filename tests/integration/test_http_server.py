"""The http handler against real servers: nginx (HTTP/1.1, h2c and TLS with
HTTP/2) for connection reuse and multiplexing, and servers of our own on
raw asyncio sockets that are slow or hostile: what max_connections allows
at once, a 1 GiB body, a response that drips, garbage instead of HTTP.

Counts come from the servers' side: nginx's access log (one line a
request, with its connection's serial number) and the raw server's own
tally of open connections and requests being answered."""

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest

from conftest import TIMEOUT_FACTOR, fast_retry, reason_text, scaled, wait_dead, wait_until
from nginxfix import connections

MIB = 1 << 20
GIB = 1 << 30
ROW_COLUMNS = ["name"]


def body_of(task_id, attempt=1):
    """The request body the spec gives for a row inserted by tw.insert()."""
    return ('{"id":"%d","queue":"tasks","attempt":%d,"row":{"name":"task-%d"}}'
            % (task_id, attempt, task_id))


def vm_hwm_kib(pid):
    """The peak resident size of PID (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))


def http_handler(url, **keys):
    return {"type": "http", "url": url, **keys}


def wait_all_done(tw, ids, timeout, daemon):
    """Wait until every one of IDS is completed, failing as soon as they
    are all either completed or dead, with the first reasons."""
    wait_until(lambda: tw.count("completed", ids) + tw.llen("tasks:dead") >= len(ids),
               timeout, f"{len(ids)} tasks to complete (so far "
               f"{tw.count('completed', ids)})", daemon=daemon)
    dead = tw.lrange("tasks:dead")
    assert not dead, (f"{len(dead)} of {len(ids)} dead, e.g. "
                      f"{[reason_text(tw, v) for v in dead[:3]]}")


# ---- a server on raw sockets -----------------------------------------------------

class Request:
    def __init__(self, conn, method, target, headers, body):
        self.conn = conn            # the server's serial number of its connection
        self.method = method
        self.target = target
        self.headers = headers      # lower-cased names
        self.body = body
        self.arrived = time.monotonic()
        self.ended = None           # when its answer was over (or the client gone)
        self.sent = 0               # body bytes written into the socket

    @property
    def task_id(self):
        key = self.headers.get("idempotency-key", "")
        return int(key.split(":", 1)[1]) if key.startswith("tasks:") else None


async def read_request(reader, conn):
    """The next request on READER, or None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0:
                break
    else:
        body = await reader.readexactly(int(headers.get("content-length", 0)))
    return Request(conn, method, target, headers, body)


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 written on asyncio streams, running
    in a thread of its own. ANSWER(request, reader, writer) is a coroutine
    that writes the response and returns True to keep the connection.

    It counts what it sees: `accepted` connections, the most open at once
    (`peak_conns`), the most requests being answered at once
    (`peak_active`), and every request in `requests`."""

    def __init__(self, answer):
        self.answer = answer
        self.accepted = self.open_conns = self.peak_conns = 0
        self.active = self.peak_active = 0
        self.requests = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "the raw server did not start"

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20))
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    def url(self, path="/tasks"):
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader, writer):
        self.accepted += 1
        conn = self.accepted
        self.open_conns += 1
        self.peak_conns = max(self.peak_conns, self.open_conns)
        try:
            while True:
                req = await read_request(reader, conn)
                if req is None:
                    break
                self.requests.append(req)
                if req.headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
                try:
                    keep = await self.answer(req, reader, writer)
                finally:
                    self.active -= 1
                    req.ended = time.monotonic()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            pass
        finally:
            self.open_conns -= 1
            writer.close()

    def for_task(self, task_id):
        return [r for r in self.requests if r.task_id == task_id]

    def close(self):
        async def stop():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def raw_server():
    """raw_server(answer) -> a started RawServer; all closed at the end."""
    servers = []

    def make(answer):
        servers.append(RawServer(answer))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


# ---- answers -----------------------------------------------------------------------

async def no_content(req, reader, writer):
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await writer.drain()
    return True


def after(seconds):
    """204 after SECONDS."""
    async def answer(req, reader, writer):
        await asyncio.sleep(seconds)
        return await no_content(req, reader, writer)
    return answer


def flood(chunked):
    """200 with a 1 GiB body, written as fast as the client takes it."""
    async def answer(req, reader, writer):
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % GIB
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
        block = b"x" * MIB
        piece = b"%x\r\n%s\r\n" % (MIB, block) if chunked else block
        for _ in range(GIB // MIB):
            writer.write(piece)
            await writer.drain()
            req.sent += MIB
        writer.write(b"0\r\n\r\n" if chunked else b"")
        await writer.drain()
        return True
    return answer


def drip(head, byte=b"x", every=0.1, limit=60):
    """HEAD, then one BYTE every EVERY seconds until the client goes (or
    LIMIT seconds)."""
    async def answer(req, reader, writer):
        writer.write(head)
        await writer.drain()
        gone = asyncio.ensure_future(reader.read(1))
        try:
            for _ in range(int(limit / every)):
                done, _ = await asyncio.wait([gone], timeout=every)
                if done:
                    break
                writer.write(byte)
                await writer.drain()
        finally:
            gone.cancel()
        return False
    return answer


def raw_bytes(data):
    """DATA as it is, then wait (30 s at most) for the client to hang up."""
    async def answer(req, reader, writer):
        writer.write(data)
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 30)
        return False
    return answer


def by_task(plan, default=no_content):
    """An answer chosen by the task id in Idempotency-Key: PLAN[id]."""
    async def answer(req, reader, writer):
        return await plan.get(req.task_id, default)(req, reader, writer)
    return answer


# ---- nginx: HTTP/2 multiplexing and HTTP/1.1 keep-alive -----------------------------

@pytest.mark.parametrize("kind", ["tls", "h2c"])
def test_http2_multiplexes_many_tasks_on_a_connection(kind, taskworkerd, tw, nginx,
                                                      raw_server):
    # nginx answers over HTTP/2 and passes each request on to a backend
    # that takes 100 ms: the backend sees how many run at once, the
    # access log over how many connections they came.
    backend = raw_server(after(0.1))
    web = nginx(upstream=backend.port)
    handler = http_handler(web.url(kind, "/up/tasks"))
    if kind == "tls":
        handler["ca_file"] = web.ca_file
    else:
        handler["http2"] = True     # the daemon's own h2c client
    n = 500
    d = taskworkerd(handler=handler, worker={"concurrency": 100}, retry=fast_retry(1),
                    postgres={"columns": ROW_COLUMNS})
    ids = tw.insert(n)
    tw.push(ids)
    wait_all_done(tw, ids, 60, d)

    entries = wait_until(lambda: (lambda e: len(e) >= n and e)(web.entries()), 5,
                         "every request in nginx's access log")
    assert len(entries) == n
    assert {e["proto"] for e in entries} == {"HTTP/2.0"}
    assert {e["alpn"] for e in entries} == ({"h2"} if kind == "tls" else {""})
    assert {e["status"] for e in entries} == {204}
    assert sorted(e["key"] for e in entries) == sorted(f"tasks:{i}" for i in ids)
    for e in entries:
        i = int(e["key"].split(":")[1])
        assert (e["method"], e["uri"], e["ctype"], e["body"]) == \
            ("POST", "/up/tasks", "application/json", body_of(i)), e
        assert e["ua"].startswith("taskworkerd/"), e
    conns = connections(entries)
    assert len(conns) <= 2, f"{len(conns)} connections for {n} tasks: {conns}"
    # The streams overlapped: far more than one request at a time.
    assert backend.peak_active >= 50, backend.peak_active


def test_http11_keeps_connections_alive(taskworkerd, tw, nginx):
    web = nginx()
    n, concurrency = 300, 8
    d = taskworkerd(handler=http_handler(web.url("plain", "/204")),
                    worker={"concurrency": concurrency}, retry=fast_retry(1))
    ids = tw.insert(n)
    tw.push(ids)
    wait_all_done(tw, ids, 30, d)
    entries = wait_until(lambda: (lambda e: len(e) >= n and e)(web.entries()), 5,
                         "every request in nginx's access log")
    assert len(entries) == n
    assert {e["proto"] for e in entries} == {"HTTP/1.1"}
    conns = connections(entries)
    # One request at a time on each; never more open than tasks running.
    assert len(conns) <= concurrency, conns
    assert sum(conns.values()) == n
    assert max(conns.values()) >= n // concurrency, conns


# ---- max_connections -----------------------------------------------------------------

def test_max_connections_is_a_ceiling_and_waiting_is_not_a_timeout(taskworkerd, tw,
                                                                    raw_server):
    # 40 tasks at once, 4 connections, 200 ms a request: the last ones
    # wait about 1.8 s for a connection, longer than timeout_ms (1 s),
    # which is for the request alone. None of them may fail for it.
    server = raw_server(after(0.2))
    n, timeout_ms = int(40 * TIMEOUT_FACTOR), int(1000 * TIMEOUT_FACTOR)
    d = taskworkerd(handler=http_handler(server.url(), max_connections=4,
                                         timeout_ms=timeout_ms),
                    worker={"concurrency": 100}, retry=fast_retry(1))
    ids = tw.insert(n)
    tw.push(ids)
    wait_all_done(tw, ids, 30, d)
    assert sorted(r.task_id for r in server.requests) == ids
    assert server.peak_conns == 4
    assert server.peak_active == 4
    # Kept alive: the same four connections carried every request.
    assert server.accepted == 4
    arrivals = sorted(r.arrived for r in server.requests)
    assert arrivals[-1] - arrivals[0] > timeout_ms / 1000, \
        "the last request did not wait longer than timeout_ms: the test proves nothing"


# ---- hostile servers --------------------------------------------------------------

BAD = "bad response: "
TIMED_OUT = "timed out after 1000 ms"
HOSTILE = {
    # name: (answer, status of the row, reason in the dead list)
    "1 GiB body": (flood(chunked=False), "completed", None),
    "1 GiB chunked body": (flood(chunked=True), "completed", None),
    "a body byte every 100 ms": (
        drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), "failed", TIMED_OUT),
    "a header byte every 100 ms": (drip(b"HTTP/1.1 200 OK\r\nX-Slow: "), "failed", TIMED_OUT),
    "status abc": (raw_bytes(b"HTTP/1.1 abc\r\n\r\n"), "failed", BAD),
    "no status line": (raw_bytes(b"garbage\r\n\r\n"), "failed", BAD),
}


def test_hostile_answers_fail_or_are_cut_and_the_daemon_goes_on(taskworkerd, tw, raw_server):
    ids = tw.insert(len(HOSTILE) + 20)
    cases = dict(zip(ids, HOSTILE))
    good = ids[len(HOSTILE):]
    plan = {i: HOSTILE[name][0] for i, name in cases.items()}
    server = raw_server(by_task(plan))
    d = taskworkerd(handler=http_handler(server.url(), timeout_ms=1000),
                    retry=fast_retry(2))
    tw.push(list(cases))
    failed = [i for i, name in cases.items() if HOSTILE[name][1] == "failed"]
    wait_dead(tw, failed, 20, daemon=d)
    tw.wait_completed([i for i in cases if i not in failed], 20, daemon=d)

    for i, name in cases.items():
        _, status, reason = HOSTILE[name]
        assert tw.statuses([i]) == {i: status}, name
        reqs = server.for_task(i)
        if status == "completed":
            # Cut after max_response_bytes: the connection was dropped long
            # before the server could write the whole gigabyte.
            assert len(reqs) == 1, name
            assert reqs[0].sent < 64 * MIB, (name, reqs[0].sent)
            continue
        # A failed attempt, tried again: two requests, the second's reason.
        assert len(reqs) == 2, (name, len(reqs))
        text = reason_text(tw, i)
        if reason == TIMED_OUT:
            assert text == f"attempt 2/2: {TIMED_OUT}", (name, text)
            for r in reqs:  # the whole request, headers included, is timed
                assert 0.8 <= r.ended - r.arrived < scaled(2.0), (name, r.ended - r.arrived)
        else:
            assert text.startswith(f"attempt 2/2: {BAD}") and len(text) > len(
                f"attempt 2/2: {BAD}") + 3, (name, text)

    hwm = vm_hwm_kib(d.pid)
    assert hwm < 80 * 1024, f"taskworkerd peaked at {hwm} KiB"

    # And it goes on serving the same server's good answers.
    tw.push(good)
    tw.wait_completed(good, 10, daemon=d)
    assert all(len(server.for_task(i)) == 1 for i in good)
    assert d.running()


def test_an_oversized_header_line_is_a_bad_response(taskworkerd, tw, raw_server):
    server = raw_server(raw_bytes(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000
                                  + b"\r\nContent-Length: 0\r\n\r\n"))
    d = taskworkerd(handler=http_handler(server.url()), retry=fast_retry(1))
    ids = tw.insert(1)
    tw.push(ids)
    wait_dead(tw, ids, 10, daemon=d)
    assert len(server.requests) == 1
    text = reason_text(tw, ids[0])
    assert text.startswith(f"attempt 1/1: {BAD}"), text
    assert vm_hwm_kib(d.pid) < 80 * 1024
