"""A scripted HTTP/2 server without TLS (h2c, prior knowledge) for the
http handler's tests, on hyper-h2 (Debian's python3-h2).

It listens on 127.0.0.1 on a free port, one thread per connection; each
connection's thread alone drives that connection's H2Connection (which
is not thread-safe) in a loop of its own: frames in, answers that are
due, bodies as far as flow control lets them go, bytes out. A delay
before an answer is a timer in that loop, so a slow stream holds up no
other stream of its connection. Each test scripts its answers and then
looks at what came:

    srv = h2_server()                          # or h2_server(max_streams=4,
                                               #               goaway_after=5)
    srv.script(H2Reply(503, headers=[("retry-after", "1")], body=b"busy"),
               H2Reply(200))                   # in turn, then DEFAULT
    srv.script(lambda req: H2Reply(404) if req.path == "/x" else H2Reply(200))
    ... drive taskworkerd at srv.url("/tasks") ...
    srv.wait_requests(2, timeout=5)
    srv.requests[0].body, .header(":authority"), .conn, .stream, .t
    srv.conns[0].max_open, srv.max_open        # streams at once, one connection

An answer can wait before it comes, have a body of a given size sent in
DATA frames of a given size, reset its stream with an error code, never
come, close the connection abruptly (no GOAWAY), be followed by a GOAWAY
whose last_stream_id is its own stream, or carry a huge header.

The server advertises SETTINGS_MAX_CONCURRENT_STREAMS = max_streams but
does not enforce it: a stream past it is served, and noted in
Conn.over_limit, so that a test sees how far a client went; with
refuse_over_limit it is refused instead (RST_STREAM REFUSED_STREAM, as
nginx does), noted in Conn.refused and not recorded as a request. With
goaway_after = K, as nginx's keepalive_requests: when the K-th request
of a connection comes, a GOAWAY with last_stream_id = its stream is
sent; streams up to it are answered, those above it are not (they are
`ignored`), and the connection is closed once the last stream up to it
has its answer.

A connection that does not start with the HTTP/2 preface is served as
HTTP/1.1 (keep-alive, Content-Length bodies), the same script answering
it: Request.proto tells which.
"""

import heapq
import http
import itertools
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       RequestReceived, SettingsAcknowledged, StreamEnded, StreamReset,
                       WindowUpdated)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from httpserv import ScriptedServer, parse_head

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IO_TICK = 0.05          # how often a connection's loop looks at the stop flag
LINGER = 2.0            # how long a closing connection reads what still comes
OUT_HIGH = 256 * 1024   # bytes of output queued before bodies wait for the socket
PIECE = 16384
MAX_HEADER_LIST = 1 << 16


@dataclass
class H2Reply:
    """One scripted answer."""
    status: int = 200
    headers: list = field(default_factory=list)   # [(name, value)]; names lowercased
    body: bytes = b""
    body_size: int = None           # a body of this many b"x" instead of BODY
    piece: int = PIECE              # DATA frames of at most this many bytes
    delay: float = 0.0              # seconds to wait before acting
    reset: int = None               # RST_STREAM with this error code instead
    never: bool = False             # no answer at all
    close: bool = False             # close the connection (no GOAWAY) instead
    goaway: bool = False            # answer, then GOAWAY(last_stream_id = this stream)
    huge_header: int = 0            # a header x-huge of this many bytes

    def body_length(self):
        return self.body_size if self.body_size is not None else len(self.body)


DEFAULT = H2Reply(200, body=b"ok")


@dataclass
class Request:
    """One request as it came, and what became of its answer."""
    conn: int                       # the connection's number (1, 2, ...)
    stream: int                     # its stream id (0 over HTTP/1.1)
    method: str
    path: str
    authority: str
    scheme: str
    headers: list                   # [(name, value)] as received, pseudo-headers too
    body: bytes
    t_headers: float                # time.monotonic() when its headers were in
    t: float                        # time.monotonic() when it was all in
    wall: float                     # time.time() then
    proto: str = "HTTP/2"           # or "HTTP/1.1"
    before_ack: bool = False        # came before the client acked the server's SETTINGS
    reply: H2Reply = None
    answered: float = None          # monotonic time the answer's end was queued
    sent: int = 0                   # bytes of the body queued
    reset_by_client: int = None     # the error code of the client's RST_STREAM
    reset_by_server: int = None     # the error code of ours
    reset_at: float = None
    ignored: bool = False           # above a GOAWAY's last_stream_id: never answered
    peer_closed: float = None       # the client closed the connection with it open
    server_closed: float = None     # the server closed the connection with it open

    def header(self, name):
        """The value of header NAME (any case; ":path" etc. too); None if
        absent; fails if it came more than once."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def header_names(self):
        """The names of the regular headers (no pseudo-headers), sorted."""
        return sorted(n.lower() for n, _ in self.headers if not n.startswith(":"))

    def pseudo(self):
        """The pseudo-headers as {name: value}."""
        return {n: v for n, v in self.headers if n.startswith(":")}

    def json(self):
        return json.loads(self.body)

    @property
    def task(self):
        """The task id of the body, as an int."""
        return int(self.json()["id"])

    @property
    def ended(self):
        """How the stream ended: "answered", "reset by client", "reset by
        server", "ignored", "peer closed", "server closed", or None while
        it is still open."""
        if self.answered:
            return "answered"
        if self.reset_by_client is not None:
            return "reset by client"
        if self.reset_by_server is not None:
            return "reset by server"
        if self.ignored:
            return "ignored"
        if self.peer_closed:
            return "peer closed"
        if self.server_closed:
            return "server closed"
        return None


@dataclass
class Conn:
    id: int
    opened: float
    proto: str = None               # "HTTP/2" or "HTTP/1.1" once its first bytes are in
    closed: float = None
    closed_by: str = None           # "client" or "server"
    error: str = None               # a protocol error the server saw
    requests: list = field(default_factory=list)
    max_open: int = 0               # the most streams open at once
    over_limit: list = field(default_factory=list)  # [(stream, open then, before ack)]
    client_settings: dict = field(default_factory=dict)
    settings_acked: float = None    # when the client acked the server's SETTINGS
    goaway_last: int = None         # last_stream_id of the server's GOAWAY
    goaway_at: float = None
    client_goaway: tuple = None     # (error code, last_stream_id) of the client's GOAWAY
    resets_by_client: list = field(default_factory=list)  # [(stream, error code, time)]
    refused: list = field(default_factory=list)  # [(stream, time)] refused past the limit
    n_streams: int = 0              # streams opened by the client on it


class _Stop(Exception):
    pass


class H2Server(ScriptedServer):
    conn_class = Conn
    label = "h2 test server"

    def __init__(self, max_streams=100, goaway_after=None, initial_window=None,
                 refuse_over_limit=False, max_header_list=MAX_HEADER_LIST):
        super().__init__(backlog=128, reuse_addr=True)
        self.max_streams = max_streams      # SETTINGS_MAX_CONCURRENT_STREAMS advertised
        self.max_header_list = max_header_list  # ... and MAX_HEADER_LIST_SIZE, kept
        self.refuse_over_limit = refuse_over_limit  # RST_STREAM REFUSED_STREAM past it
        self.goaway_after = goaway_after    # GOAWAY at the K-th request of a connection
        self.initial_window = initial_window
        self.script_errors = []             # what a scripted callable raised

    # ---- the test's side ----

    @property
    def max_open(self):
        """The most streams open at once on any one connection."""
        with self.lock:
            return max((c.max_open for c in self._conns), default=0)

    def errors(self):
        """The protocol errors seen, as [(connection, text)]."""
        with self.lock:
            return [(c.id, c.error) for c in self._conns if c.error]

    def for_task(self, task_id):
        """The requests whose body is task TASK_ID's, in the order they came."""
        return [r for r in self.requests if r.task == int(task_id)]

    @staticmethod
    def _brief(req):
        return (req.conn, req.stream, req.path)

    @staticmethod
    def _settled(req):
        return req.ended

    # ---- running ----

    def _serve(self, sock, conn):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = self._first_bytes(sock, conn)
            if first is None:
                return
            if first.startswith(PREFACE):
                conn.proto = "HTTP/2"
                _H2Loop(self, sock, conn).run(first)
            else:
                conn.proto = "HTTP/1.1"
                _H1Loop(self, sock, conn).run(first)
        except _Stop:
            pass
        except OSError as e:
            with self.lock:
                if conn.error is None and conn.closed is None:
                    conn.error = f"socket: {e!r}"
        finally:
            with self.lock:
                if conn.closed is None:
                    conn.closed = time.monotonic()
                    conn.closed_by = conn.closed_by or "server"
                for r in conn.requests:
                    if not r.ended:
                        r.server_closed = conn.closed
                self.lock.notify_all()
            try:
                sock.close()
            except OSError:
                pass

    def _first_bytes(self, sock, conn):
        """The first bytes, enough to tell the HTTP/2 preface from anything
        else; None when the client hung up first."""
        buf = b""
        sock.settimeout(IO_TICK)
        while len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            if self._stop.is_set():
                raise _Stop()
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionError:
                data = b""
            if not data:
                with self.lock:
                    conn.closed, conn.closed_by = time.monotonic(), "client"
                return None
            buf += data
        return buf

    def _pick(self, req):
        with self.lock:
            try:
                if self._func is not None:
                    return self._func(req)
                return self._script.pop(0) if self._script else DEFAULT
            except Exception as e:
                # A broken script fails the test at teardown; meanwhile a 500.
                self.script_errors.append(f"{req.conn}/{req.stream}: {e!r}")
                return H2Reply(500, body=f"script error: {e!r}".encode())

    def _record(self, conn, req):
        with self.lock:
            self._requests.append(req)
            conn.requests.append(req)
            self.lock.notify_all()


class _H2Loop:
    """One HTTP/2 connection, driven by its own thread."""

    def __init__(self, srv, sock, conn):
        self.srv = srv
        self.sock = sock
        self.conn = conn
        self.out = bytearray()
        self.timers = []            # heap of (due, seq, function)
        self.seq = itertools.count()
        self.partial = {}           # stream -> [headers, body, t_headers, before_ack]
        self.reqs = {}              # stream -> Request, once all in
        self.open = set()           # streams counted as open
        self.sending = {}           # stream -> H2Reply whose body is going out
        self.closing = False
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))

    # -- setup and the loop --

    def run(self, first):
        values = {SettingCodes.MAX_CONCURRENT_STREAMS: self.srv.max_streams,
                  SettingCodes.MAX_HEADER_LIST_SIZE: self.srv.max_header_list}
        if self.srv.initial_window is not None:
            values[SettingCodes.INITIAL_WINDOW_SIZE] = self.srv.initial_window
        self.h2.local_settings = Settings(client=False, initial_values=values)
        self.h2.initiate_connection()
        # What was advertised is not enforced here: streams past it are
        # served and noted, so that a test can see how far a client went.
        values[SettingCodes.MAX_CONCURRENT_STREAMS] = 2 ** 31 - 1
        self.h2.local_settings = Settings(client=False, initial_values=values)
        # The header list advertised is what HPACK decodes, ACKed or not.
        self.h2.decoder.max_header_list_size = self.srv.max_header_list
        self.sock.setblocking(False)
        self._receive(first)
        while True:
            if self.srv._stop.is_set():
                raise _Stop()
            self._run_timers()
            self._pump()
            self._flush_h2()
            if self.closing and not self.out:
                self._linger_close()
                return
            wait = IO_TICK
            if self.timers:
                wait = max(0.0, min(wait, self.timers[0][0] - time.monotonic()))
            r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [], wait)
            if w:
                self._write()
            if r:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionError:
                    data = b""
                if not data:
                    self._client_closed()
                    return
                self._receive(data)

    def _write(self):
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            self._client_closed()
            raise _Stop()
        del self.out[:n]

    def _flush_h2(self):
        self.out += self.h2.data_to_send()

    def _drain(self, limit=5.0):
        """Send all queued output (blocking, up to LIMIT seconds)."""
        self._flush_h2()
        deadline = time.monotonic() + limit
        while self.out and time.monotonic() < deadline and not self.srv._stop.is_set():
            select.select([], [self.sock], [], IO_TICK)
            self._write()

    def _client_closed(self):
        now = time.monotonic()
        with self.srv.lock:
            self.conn.closed, self.conn.closed_by = now, "client"
            for sid in list(self.open):
                self._close_stream(sid)
            for r in self.conn.requests:
                if not r.ended:
                    r.peer_closed = now
            self.srv.lock.notify_all()

    def _closed_by_server(self):
        """Note that the server closes the connection now, and which
        requests had not ended then."""
        now = time.monotonic()
        with self.srv.lock:
            self.conn.closed, self.conn.closed_by = now, "server"
            for r in self.conn.requests:
                if not r.ended:
                    r.server_closed = now
            self.srv.lock.notify_all()

    def _linger_close(self):
        """A graceful close: FIN, then read (and drop) what still comes for
        a while, so that the client reads all we sent before any RST."""
        self._closed_by_server()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + LINGER
        while time.monotonic() < deadline and not self.srv._stop.is_set():
            if select.select([self.sock], [], [], IO_TICK)[0]:
                try:
                    if not self.sock.recv(65536):
                        return
                except BlockingIOError:
                    continue
                except OSError:
                    return

    def _abort(self):
        """Close at once, no GOAWAY, whatever is open."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Stop()

    def _after(self, delay, fn):
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self.seq), fn))

    def _run_timers(self):
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            fn()

    # -- frames in --

    def _receive(self, data):
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as e:
            with self.srv.lock:
                self.conn.error = f"{type(e).__name__}: {e}"
            self._drain(1.0)
            self.closing = True
            return
        for ev in events:
            self._event(ev)

    def _event(self, ev):
        conn, now = self.conn, time.monotonic()
        if isinstance(ev, RequestReceived):
            before_ack = conn.settings_acked is None
            self.partial[ev.stream_id] = [list(ev.headers), bytearray(), now, before_ack]
            with self.srv.lock:
                conn.n_streams += 1
                if conn.goaway_last is None or ev.stream_id <= conn.goaway_last:
                    if len(self.open) >= self.srv.max_streams:
                        conn.over_limit.append((ev.stream_id, len(self.open), before_ack))
                        if self.srv.refuse_over_limit:
                            self._refuse(ev.stream_id, now)
                            return
                    self.open.add(ev.stream_id)
                    conn.max_open = max(conn.max_open, len(self.open))
                    self.srv.active += 1
                    self.srv.max_active = max(self.srv.max_active, self.srv.active)
                nth = conn.n_streams
            if self.srv.goaway_after and nth == self.srv.goaway_after \
                    and conn.goaway_last is None:
                self._goaway(ev.stream_id)
        elif isinstance(ev, DataReceived):
            if ev.stream_id in self.partial:
                self.partial[ev.stream_id][1] += ev.data
            if ev.flow_controlled_length:
                try:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except (StreamClosedError, ProtocolError):
                    pass
        elif isinstance(ev, StreamEnded):
            self._request_in(ev.stream_id, now)
        elif isinstance(ev, StreamReset):
            with self.srv.lock:
                conn.resets_by_client.append((ev.stream_id, ev.error_code, now))
                req = self.reqs.get(ev.stream_id)
                if req is not None and not req.ended:
                    req.reset_by_client, req.reset_at = ev.error_code, now
                self._close_stream(ev.stream_id)
                self.partial.pop(ev.stream_id, None)
                self.srv.lock.notify_all()
        elif isinstance(ev, SettingsAcknowledged):
            if conn.settings_acked is None:
                conn.settings_acked = now
        elif isinstance(ev, RemoteSettingsChanged):
            conn.client_settings.update({k: v.new_value for k, v in
                                         ev.changed_settings.items()})
        elif isinstance(ev, ConnectionTerminated):
            conn.client_goaway = (ev.error_code, ev.last_stream_id)
        elif isinstance(ev, WindowUpdated):
            pass                    # _pump sends what the window now allows

    def _refuse(self, sid, now):
        """RST_STREAM REFUSED_STREAM for a stream past the limit, as nginx
        does: not processed, the client may send it again."""
        self.partial.pop(sid, None)
        try:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        except (StreamClosedError, ProtocolError):
            pass
        self.conn.refused.append((sid, now))

    def _request_in(self, sid, now):
        part = self.partial.pop(sid, None)
        if part is None:
            return
        headers, body, t_headers, before_ack = part
        ps = {n: v for n, v in headers if n.startswith(":")}
        req = Request(self.conn.id, sid, ps.get(":method"), ps.get(":path"),
                      ps.get(":authority"), ps.get(":scheme"), headers, bytes(body),
                      t_headers, now, time.time(), before_ack=before_ack)
        self.reqs[sid] = req
        if self.conn.goaway_last is not None and sid > self.conn.goaway_last:
            req.ignored = True
            self.srv._record(self.conn, req)
            return
        self.srv._record(self.conn, req)
        reply = self.srv._pick(req)
        req.reply = reply
        self._after(reply.delay, lambda: self._act(sid, reply))

    # -- answers out --

    def _close_stream(self, sid):
        """Not open any more (call with srv.lock held, or from the loop)."""
        if sid in self.open:
            self.open.discard(sid)
            self.srv.active -= 1
        self.sending.pop(sid, None)
        if self.conn.goaway_last is not None:
            self._maybe_done_after_goaway()

    def _act(self, sid, reply):
        req = self.reqs[sid]
        if req.ended or sid not in self.open:
            return                  # reset by the client, or above a GOAWAY
        if reply.close:
            self._drain(1.0)
            self._closed_by_server()
            self._abort()
        if reply.never:
            return
        if reply.reset is not None:
            try:
                self.h2.reset_stream(sid, reply.reset)
            except (StreamClosedError, ProtocolError):
                pass
            with self.srv.lock:
                req.reset_by_server, req.reset_at = reply.reset, time.monotonic()
                self._close_stream(sid)
                self.srv.lock.notify_all()
            return
        length = reply.body_length()
        headers = [(":status", str(reply.status)), ("content-length", str(length))]
        headers += [(n.lower(), v) for n, v in reply.headers]
        if reply.huge_header:
            headers.append(("x-huge", "h" * reply.huge_header))
        try:
            self.h2.send_headers(sid, headers, end_stream=length == 0)
        except (StreamClosedError, ProtocolError) as e:
            with self.srv.lock:
                self.conn.error = self.conn.error or f"send_headers {sid}: {e!r}"
                self._close_stream(sid)
            return
        if length == 0:
            self._answered(sid, reply)
        else:
            self.sending[sid] = reply

    def _answered(self, sid, reply):
        req = self.reqs[sid]
        with self.srv.lock:
            req.answered = time.monotonic()
            self._close_stream(sid)
            self.srv.lock.notify_all()
        if reply.goaway and self.conn.goaway_last is None:
            self._goaway(sid)

    def _pump(self):
        """Queue body bytes as far as flow control and the output bound allow."""
        for sid in list(self.sending):
            reply = self.sending.get(sid)
            if reply is None:
                continue
            req = self.reqs[sid]
            length = reply.body_length()
            while req.sent < length and len(self.out) < OUT_HIGH:
                try:
                    window = self.h2.local_flow_control_window(sid)
                except (StreamClosedError, ProtocolError):
                    window = 0
                n = min(reply.piece, window, self.h2.max_outbound_frame_size,
                        length - req.sent)
                if n <= 0:
                    break
                piece = b"x" * n if reply.body_size is not None else \
                    reply.body[req.sent:req.sent + n]
                last = req.sent + n == length
                try:
                    self.h2.send_data(sid, piece, end_stream=last)
                except (StreamClosedError, ProtocolError):
                    self.sending.pop(sid, None)
                    break
                req.sent += n
                self._flush_h2()
                if last:
                    self.sending.pop(sid, None)
                    self._answered(sid, reply)

    def _goaway(self, last):
        """GOAWAY(last_stream_id = LAST, NO_ERROR), sent past h2's state
        machine so that the streams up to LAST can still be answered."""
        self._flush_h2()
        self.out += GoAwayFrame(0, last_stream_id=last, error_code=ErrorCodes.NO_ERROR).serialize()
        with self.srv.lock:
            self.conn.goaway_last, self.conn.goaway_at = last, time.monotonic()
            for sid in [s for s in self.open if s > last]:
                req = self.reqs.get(sid)
                if req is not None and not req.ended:
                    req.ignored = True
                self.open.discard(sid)
                self.srv.active -= 1
                self.sending.pop(sid, None)
            self._maybe_done_after_goaway()
            self.srv.lock.notify_all()

    def _maybe_done_after_goaway(self):
        if not any(s <= self.conn.goaway_last for s in self.open):
            self.closing = True


class _H1Loop:
    """A connection that did not start with the HTTP/2 preface: served as
    HTTP/1.1, one request at a time, from the same script (reset and
    never become a close)."""

    def __init__(self, srv, sock, conn):
        self.srv = srv
        self.sock = sock
        self.conn = conn

    def _recv(self):
        while True:
            if self.srv._stop.is_set():
                raise _Stop()
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionError:
                data = b""
            if not data:
                with self.srv.lock:
                    self.conn.closed, self.conn.closed_by = time.monotonic(), "client"
                raise _Stop()
            return data

    def run(self, buf):
        buf = bytearray(buf)
        while True:
            while b"\r\n\r\n" not in buf:
                buf += self._recv()
            t = time.monotonic()
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            method, path, _version, headers = parse_head(head)
            n = int(dict((k.lower(), v) for k, v in headers).get("content-length") or 0)
            while len(buf) < n:
                buf += self._recv()
            body, buf[:] = bytes(buf[:n]), buf[n:]
            host = dict((k.lower(), v) for k, v in headers).get("host")
            req = Request(self.conn.id, 0, method, path, host, "http", headers, body,
                          t, time.monotonic(), time.time(), proto="HTTP/1.1")
            self.srv._record(self.conn, req)
            reply = self.srv._pick(req)
            req.reply = reply
            end = time.monotonic() + reply.delay
            while time.monotonic() < end:
                if self.srv._stop.is_set():
                    raise _Stop()
                time.sleep(min(IO_TICK, max(0.0, end - time.monotonic())))
            if reply.close or reply.never or reply.reset is not None:
                req.server_closed = time.monotonic()
                raise _Stop()
            length = reply.body_length()
            try:
                phrase = http.HTTPStatus(reply.status).phrase
            except ValueError:
                phrase = "Whatever"
            head = [f"HTTP/1.1 {reply.status} {phrase}", f"Content-Length: {length}"]
            head += [f"{k}: {v}" for k, v in reply.headers]
            body = b"x" * length if reply.body_size is not None else reply.body
            self.sock.settimeout(30)
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            self.sock.settimeout(IO_TICK)
            req.sent = length
            req.answered = time.monotonic()


@pytest.fixture
def h2_server():
    """A factory: h2_server(max_streams=100, goaway_after=None,
    initial_window=None, refuse_over_limit=False,
    max_header_list=MAX_HEADER_LIST) -> a started H2Server,
    stopped at the end of the test (which then fails if a scripted
    callable raised). Ask for it before `taskworkerd`, so the daemons
    stop first."""
    started = []

    def make(**kw):
        srv = H2Server(**kw).start()
        started.append(srv)
        return srv
    yield make
    for srv in started:
        srv.stop()
    broken = [e for srv in started for e in srv.script_errors]
    if broken:
        pytest.fail(f"the h2 test server's script raised: {broken}", pytrace=False)
