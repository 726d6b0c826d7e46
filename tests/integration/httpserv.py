"""A scripted HTTP/1.1 server for the http handler's tests (stdlib only).

It listens on 127.0.0.1 on a free port, plain or TLS, one thread per
connection. Each test scripts its answers and then looks at what came:

    srv = http_server()                       # or http_server(tls="good")
    srv.script(Reply(503, headers=[("Retry-After", "1")], body=b"busy"),
               Reply(200))                    # in turn, then DEFAULT
    srv.script(lambda req: Reply(404) if req.path == "/x" else Reply(200))
    ... drive taskworkerd at srv.url("/tasks") ...
    srv.wait_requests(2, timeout=5)
    srv.requests[0].body, .header("idempotency-key"), .conn, .t, .wall

A Reply can wait before it answers (watching for the client to hang up
meanwhile), send a body of a given size in pieces (noting when the
client cuts the connection), close the connection after some bytes of
its body, or send raw bytes instead of a response.

TLS certificates come from `HttpCerts`, made once per session with
openssl by the test CA of ha.py: "good" (127.0.0.1 and localhost, by the
CA), "wrong-name" (wrong.test only, by the CA) and "self-signed" (for
127.0.0.1 and localhost, signed by itself: nobody trusts it).
"""

import http
import json
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import pytest

from ha import TestCA

IO_TICK = 0.05      # how often blocked reads and writes look at the stop flag
SEND_LIMIT = 30.0   # a client that takes no bytes for this long is given up
CHUNK = 64 * 1024


@dataclass
class Reply:
    """One scripted answer."""
    status: int = 200
    reason: str = None              # default: the standard phrase
    headers: list = field(default_factory=list)   # [(name, value)], sent as given
    body: bytes = b""
    body_size: int = None           # a body of this many b"x" instead of BODY
    delay: float = 0.0              # seconds to wait before answering
    cut_after: int = None           # close after this many bytes of the body
    close: bool = False             # Connection: close, then close
    raw: bytes = None               # these bytes instead of a response, then close

    def body_length(self):
        return self.body_size if self.body_size is not None else len(self.body)


DEFAULT = Reply(200, body=b"ok")


@dataclass
class Request:
    """One request as it came, and what became of its answer."""
    method: str
    path: str
    version: str
    headers: list                   # [(name, value)] in the order received
    body: bytes
    conn: int                       # the connection's number (1, 2, ...)
    t: float                        # time.monotonic() when the head was in
    wall: float                     # time.time() then
    answered: float = None          # monotonic time the answer was all sent
    sent: int = 0                   # bytes of the body sent
    cut: str = None                 # how the client cut the answer short
    peer_closed: float = None       # monotonic time the client hung up, if it did
    reply: Reply = None

    def header(self, name):
        """The value of header NAME (any case); None if absent; fails if
        it came more than once."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def header_names(self):
        return sorted(n.lower() for n, _ in self.headers)

    def json(self):
        return json.loads(self.body)


@dataclass
class Conn:
    id: int
    opened: float
    closed: float = None
    tls_error: str = None
    requests: list = field(default_factory=list)


class PeerClosed(Exception):
    pass


def parse_head(head):
    """An HTTP/1.1 request head (bytes, without the blank line after it)
    as (method, path, version, [(name, value)])."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return method, path, version, headers


class ScriptedServer:
    """What both test servers share: a listener on 127.0.0.1 on a free
    port, one thread per accepted connection (a subclass serves it in
    _serve(sock, conn)), the script of answers and what came."""

    conn_class = None               # the subclass's record of a connection
    context = None                  # an ssl.SSLContext for TLS, or None

    def __init__(self, backlog=64, reuse_addr=False):
        self.lock = threading.Condition()
        self._requests = []
        self._conns = []
        self._script = []
        self._func = None
        self.active = 0             # requests being answered now
        self.max_active = 0
        self._stop = threading.Event()
        self._threads = []
        self.listener = socket.socket()
        if reuse_addr:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.listener.settimeout(IO_TICK)
        self.port = self.listener.getsockname()[1]

    # ---- the test's side ----

    def url(self, path="/tasks", host="127.0.0.1"):
        scheme = "https" if self.context else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def script(self, *replies):
        """Answer with REPLIES in turn, then the default; or, given one
        callable, with what it returns for each Request."""
        with self.lock:
            if len(replies) == 1 and callable(replies[0]):
                self._func, self._script = replies[0], []
            else:
                self._func, self._script = None, list(replies)

    @property
    def requests(self):
        with self.lock:
            return list(self._requests)

    @property
    def conns(self):
        with self.lock:
            return list(self._conns)

    def wait_requests(self, n, timeout, daemon=None):
        """Wait until N requests have come; the requests."""
        from conftest import wait_until
        wait_until(lambda: len(self.requests) >= n, timeout,
                   f"{n} requests at the {self.label} (so far "
                   f"{[self._brief(r) for r in self.requests]})", daemon=daemon)
        return self.requests

    def wait_settled(self, timeout, daemon=None):
        """Wait until every request has its answer sent, or its end."""
        from conftest import wait_until
        wait_until(lambda: all(self._settled(r) for r in self.requests), timeout,
                   f"every answer of the {self.label} to be sent (open: "
                   f"{[self._brief(r) for r in self.requests if not self._settled(r)]})",
                   daemon=daemon)

    # ---- running ----

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self.listener.close()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                conn = self.conn_class(len(self._conns) + 1, time.monotonic())
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(sock, conn), daemon=True)
            t.start()
            self._threads.append(t)


class HttpServer(ScriptedServer):
    conn_class = Conn
    label = "test server"

    def __init__(self, context=None, sndbuf=None):
        super().__init__()
        self.context = context      # an ssl.SSLContext for TLS, or None
        self.sndbuf = sndbuf        # SO_SNDBUF of accepted sockets

    @staticmethod
    def _brief(req):
        return (req.method, req.path)

    @staticmethod
    def _settled(req):
        return req.answered or req.cut

    # ---- running ----

    def _serve(self, sock, conn):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        sock.settimeout(IO_TICK)
        try:
            if self.context:
                sock = self._handshake(sock, conn)
            buf = bytearray()
            while not self._stop.is_set():
                req = self._read_request(sock, conn, buf)
                if req is None:
                    break
                if not self._answer(sock, conn, req, buf):
                    break
        except PeerClosed:
            pass
        except (OSError, ValueError) as e:
            if conn.tls_error is None and self.context and isinstance(e, ssl.SSLError):
                conn.tls_error = str(e)
        finally:
            with self.lock:
                if conn.closed is None:
                    conn.closed = time.monotonic()
            try:
                sock.close()
            except OSError:
                pass

    def _handshake(self, sock, conn):
        deadline = time.monotonic() + SEND_LIMIT
        tls = self.context.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False)
        while True:
            try:
                tls.do_handshake()
                return tls
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, socket.timeout):
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise PeerClosed()
            except (ssl.SSLError, OSError) as e:
                conn.tls_error = str(e)
                raise PeerClosed()

    def _recv(self, sock, conn):
        """Some bytes; b"" at a tick with none; PeerClosed at EOF."""
        try:
            data = sock.recv(CHUNK)
        except (socket.timeout, ssl.SSLWantReadError):
            return b""
        except ConnectionError:
            data = b""
        if not data:
            with self.lock:
                conn.closed = time.monotonic()
            raise PeerClosed()
        return data

    def _read_request(self, sock, conn, buf):
        while b"\r\n\r\n" not in buf:
            if self._stop.is_set():
                return None
            buf += self._recv(sock, conn)
        t, wall = time.monotonic(), time.time()
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        method, path, version, headers = parse_head(head)
        req = Request(method, path, version, headers, b"", conn.id, t, wall)
        if (req.header("expect") or "").lower() == "100-continue":
            self._send(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if (req.header("transfer-encoding") or "").lower() == "chunked":
            req.body = self._read_chunked(sock, conn, buf)
        else:
            req.body = self._read_exactly(sock, conn, buf, int(req.header("content-length") or 0))
        with self.lock:
            self._requests.append(req)
            conn.requests.append(req)
            self.lock.notify_all()
        return req

    def _read_exactly(self, sock, conn, buf, n):
        while len(buf) < n:
            buf += self._recv(sock, conn)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _read_line(self, sock, conn, buf):
        while b"\r\n" not in buf:
            buf += self._recv(sock, conn)
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        return line

    def _read_chunked(self, sock, conn, buf):
        body = b""
        while True:
            size = int(self._read_line(sock, conn, buf).split(b";")[0], 16)
            if size == 0:
                while self._read_line(sock, conn, buf):
                    pass
                return body
            body += self._read_exactly(sock, conn, buf, size)
            self._read_line(sock, conn, buf)

    def _pick(self, req):
        with self.lock:
            if self._func is not None:
                return self._func(req)
            return self._script.pop(0) if self._script else DEFAULT

    def _wait(self, sock, conn, req, seconds, buf):
        """Wait SECONDS, noting whether the client hangs up meanwhile
        (False then)."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return True
            pending = self.context and sock.pending()
            if pending or select.select([sock], [], [], min(left, IO_TICK))[0]:
                try:
                    buf += self._recv(sock, conn)
                except PeerClosed:
                    req.peer_closed = conn.closed
                    req.cut = "client hung up while the server waited"
                    return False
        return False

    def _answer(self, sock, conn, req, buf):
        """Send REQ's answer; False when the connection is done."""
        reply = self._pick(req)
        req.reply = reply
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self._answer_with(sock, conn, req, reply, buf)
        finally:
            with self.lock:
                self.active -= 1
                self.lock.notify_all()

    def _answer_with(self, sock, conn, req, reply, buf):
        if reply.delay and not self._wait(sock, conn, req, reply.delay, buf):
            return False
        if reply.raw is not None:
            self._send(sock, reply.raw)
            req.answered = time.monotonic()
            return False
        try:
            reason = reply.reason if reply.reason is not None else \
                http.HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Whatever"
        length = reply.body_length()
        head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {length}"]
        head += [f"{n}: {v}" for n, v in reply.headers]
        if reply.close:
            head.append("Connection: close")
        try:
            self._send(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            limit = length if reply.cut_after is None else min(length, reply.cut_after)
            while req.sent < limit:
                n = min(CHUNK, limit - req.sent)
                piece = reply.body[req.sent:req.sent + n] if reply.body_size is None \
                    else b"x" * n
                self._send(sock, piece)
                req.sent += n
        except (PeerClosed, ConnectionError) as e:
            req.cut = f"client cut the answer after {req.sent} body bytes: {e!r}"
            with self.lock:
                req.peer_closed = conn.closed = conn.closed or time.monotonic()
            return False
        if req.sent < length:
            return False            # cut_after: close mid-body
        req.answered = time.monotonic()
        return not reply.close

    def _send(self, sock, data):
        view = memoryview(data)
        deadline = time.monotonic() + SEND_LIMIT
        while view:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise PeerClosed()
            try:
                n = sock.send(view)
            except (socket.timeout, ssl.SSLWantWriteError):
                continue
            except ssl.SSLError as e:
                raise ConnectionResetError(str(e))
            view = view[n:]


class Blackhole:
    """A port where a connect never completes: a listening socket with a
    backlog of 0 whose queue is kept full, so the kernel drops further
    SYNs. close() when done."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)

    def close(self):
        for s in self.fillers + [self.listener]:
            s.close()


# ---- certificates ----------------------------------------------------------------

class HttpCerts:
    """The test CA and three server certificates, made on first use."""

    def __init__(self, directory):
        self.dir = directory
        self._made = None

    def _make(self):
        ca = TestCA(self.dir / "ca", cn="taskworkerd http test CA")
        certs = {
            "good": ca.issue("localhost", dns_names=["localhost"], ips=["127.0.0.1"]),
            "wrong-name": ca.issue("wrong.test"),
        }
        cert, key = self.dir / "self-signed.crt", self.dir / "self-signed.key"
        ca._openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", key, "-out", cert)
        certs["self-signed"] = (cert, key)
        return ca, certs

    @property
    def ca_file(self):
        return str(self.made()[0].ca_file)

    def made(self):
        if self._made is None:
            self._made = self._make()
        return self._made

    def context(self, which):
        """A server SSLContext with certificate WHICH; ALPN picks http/1.1."""
        cert, key = self.made()[1][which]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@pytest.fixture(scope="session")
def http_certs(tmp_path_factory):
    return HttpCerts(tmp_path_factory.mktemp("httpcerts"))


@pytest.fixture
def http_server(http_certs):
    """A factory: http_server(tls=None|"good"|"wrong-name"|"self-signed",
    sndbuf=None) -> a started HttpServer, stopped at the end of the test.
    Ask for it before `taskworkerd`, so the daemons stop first."""
    started = []

    def make(tls=None, sndbuf=None):
        ctx = http_certs.context(tls) if tls else None
        srv = HttpServer(ctx, sndbuf=sndbuf).start()
        started.append(srv)
        return srv
    make.certs = http_certs
    yield make
    for srv in started:
        srv.stop()
