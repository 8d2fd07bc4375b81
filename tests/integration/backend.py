#!/usr/bin/python3
"""HTTP/1.1 test backend for qproxy's integration tests.

Standard library only.  Usable as a module (``Backend(...).start()`` from a
pytest fixture) or standalone::

    python3 backend.py --tcp 127.0.0.1:8080 --unix /tmp/backend.sock

It speaks HTTP/1.1 with keep-alive on TCP and/or a unix socket, decodes
chunked request bodies itself, and records every request it receives (method,
target, headers as received, body facts) so a test can assert what qproxy sent,
or that it sent nothing at all.

Endpoints (the first path segment that names an endpoint selects it, so
``/app/bytes/10`` and ``/bytes/10`` are the same; a route prefix is ignored):

  GET|HEAD /bytes/N        N bytes of the deterministic pattern, Content-Length;
                           ?wait=MS answers after MS milliseconds; ?drop=MS
                           closes the (keep-alive) connection MS ms after
  GET|HEAD /chunked/N      the same bytes, Transfer-Encoding: chunked, odd sizes;
                           ?trailer=Name: value (repeatable) adds a trailer
                           field after the last chunk; ?trailer_pad=N adds
                           one more, X-Pad, of N bytes
  GET      /close/N        the same bytes, no Content-Length, closes at the end
                           (/close/N?rst=1 resets the connection instead;
                           ?finwait=MS closes MS milliseconds after the body)
  GET      /slow/N?ms=T    N bytes with Content-Length, spread over about T ms
  *        /status/CODE    that status; 204 and 304 without a body, others with
                           "status CODE\\n"; /status/304?cl=N adds Content-Length: N
  POST|PUT /upload         consumes the body, replies JSON {sha256, length,
                           chunked, content_length, ...}
  *        /echo-headers   JSON: method, target, version and all headers in order
  *        /hang           reads the request, never answers (until the peer closes);
                           /hang?stall=1 reads no body, only the head
  GET      /die/N          Content-Length: N, half the body, then closes
                           (/die/N?rst=1 resets the connection instead;
                           /die/N?stall=1 stays silent until the peer goes)
  GET      /die-chunked/N  chunked, about half the body, closes without the last chunk
  GET      /head-part/N    a response head cut short: its status line and a field
                           "X-Pad: " with N bytes of value, no line end; then
                           silent until the peer goes (?rest=MS: after MS ms, the
                           rest of the head, Content-Length: 10, and 5 bytes)
  GET      /garbage[/KIND] a malformed response head, then keeps the connection open
                           KIND: status (default), noheader, cl, binary
  GET      /extra/N?ms=T   N bytes with Content-Length, then (after T ms, default 0)
                           a second, unasked-for response on the same connection,
                           which stays open: a proxy must not pass those bytes on.
                           ?fill=R: the response (N ignored) is R bytes, head and
                           body, sent with the second in one segment; with
                           &chunked=1 its head goes first, alone, and its chunked
                           body is R bytes. ?wait=MS: sleeps that long first
  GET      /head/KIND      a fixed response (see HEADS), then closes
  GET      /early-hints    103 Early Hints, then 200 with a small body;
                           ?n=N sends N of them; ?pad=N adds a field of N
                           bytes to each; ?split=MS sends them and the
                           final head's first 20 bytes at once, the rest
                           MS milliseconds later
  GET      /hop            a response carrying hop-by-hop fields (chunked body);
                           ?many=N puts N more tokens in Connection fields;
                           ?trailer= as /chunked's
  GET      /cookies        a response with two Set-Cookie fields
  POST     /answer-first   200 with the body "hello" as soon as the head is in,
                           then reads the request body, and closes
  POST     /answer-hold    as soon as the head is in, the head of a 200 with
                           Content-Length: 10 and the first 5 bytes of its
                           body; then reads nothing more until the peer goes
  GET      /images/N       an HTML page of N images, gif/0 to gif/N-1 next to it
  GET      /gif/K          a 1x1 GIF image (K: any number, to tell them apart)
  GET      /roundtrip/N    an HTML page whose script, before the page's load
                           event (synchronous XHR), GETs bytes/N next to it
                           and POSTs what it got to upload: a browser's
                           download and upload, checked at the backend
  GET      /ws             a WebSocket (RFC 6455): checks the Upgrade,
                           Connection, Sec-WebSocket-Version and -Key fields
                           (400 or 426 if wrong), answers 101 with the
                           accept and X-Ws: tunnel, then echoes each message
                           (unmasked, in one frame), answers a ping with a
                           pong and a close with a close, then closes once
                           the peer did. ?protocol=P: Sec-WebSocket-Protocol
                           P; ?raw=1: no framing, the bytes echoed as they
                           come, and the peer's FIN answered with one;
                           ?close-after=N: after N messages echoed, a close
                           of code 4000; ?reset-after=N: a reset instead
                           (?raw=1: after N bytes echoed); ?half=1: after
                           the first echo, a FIN alone, then no more echo;
                           ?wait=MS: answers MS ms after the head;
                           ?hello=1: a message "hello" (?raw=1: the bytes)
                           right after the 101, in its segment;
                           ?tick=MS&ticks=N: N messages "tick" (?raw=1:
                           bytes "t") MS ms apart before any echo;
                           ?mute=1: no echo, messages kept all the same;
                           ?field=Name: value: one more field in the 101. Not
                           upgraded, each answer followed by reading what
                           comes (without echo) until the peer goes:
                           ?refuse=CODE: that status, a short body, ?plain=1:
                           a 200; ?bad-accept=1, ?no-accept=1, ?no-upgrade=1,
                           ?upgrade=TOKEN: a 101 with a wrong accept, none,
                           no Upgrade field, Upgrade: TOKEN. The record
                           holds ws_answer (the status), ws_key,
                           ws_before_answer (bytes that were there when the
                           answer went), ws_in and ws_data (bytes after the
                           head: how many, the first 64 KiB), ws_messages
                           ([opcode, length, sha256, payload or None past
                           1 KiB] of each message, ping and pong), ws_close
                           ([code, reason] of the peer's close) and ws_end
                           (None until the connection's end: "eof", "reset",
                           "broken-pipe", "timeout", "rst-sent" or an
                           error; ws_end_time, time.monotonic() then)
"""

import argparse
import base64
import functools
import hashlib
import json
import os
import signal
import socket
import select
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

SEED = b"qproxy integration test body, v1"

_pattern = b""
_pattern_lock = threading.Lock()


def _wait_for_close(sock):
    """Reads and drops what the peer sends until it closes or resets."""
    while True:
        try:
            if not sock.recv(65536):
                return
        except OSError:
            return


def _wait_for_hangup(sock, timeout=120):
    """Reads nothing, so that what the peer sends stays in the kernel,
    until the peer closes or resets (POLLRDHUP), or timeout seconds."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP)
    p.poll(timeout * 1000)


def _shutdown_quietly(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# RFC 6455 1.3: what a server appends to the client's key
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Opcodes (RFC 6455 5.2)
WS_CONT, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0, 1, 2, 8, 9, 10

WS_MAX_MESSAGE = 64 << 20


def ws_accept(key):
    """The Sec-WebSocket-Accept that answers key."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("latin-1"))
                            .digest()).decode("ascii")


def ws_mask(data, key):
    """data XORed with the 4-byte key, repeated (RFC 6455 5.3): masks and
    unmasks."""
    n = len(data)
    if not n:
        return b""
    k = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def ws_frame(opcode, payload, fin=True, mask=None):
    """One frame; masked with the 4-byte mask if given (a client's)."""
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask:
        return head + bytes(mask) + ws_mask(payload, mask)
    return head + bytes(payload)


def ws_read_frame(read):
    """(fin, opcode, payload, masked) of the next frame, read(n) giving
    exactly n bytes; the payload unmasked. ValueError for a frame with
    RSV bits or longer than WS_MAX_MESSAGE."""
    b0, b1 = read(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read(8))[0]
    if b0 & 0x70 or n > WS_MAX_MESSAGE:
        raise ValueError("frame with RSV bits or of %d bytes" % n)
    masked = bool(b1 & 0x80)
    key = read(4) if masked else None
    payload = read(n)
    return bool(b0 & 0x80), b0 & 0x0f, ws_mask(payload, key) if masked else payload, masked


class _Tunnel:
    """The bytes of a connection past a request head: first those the
    head's buffered reader already holds, then the socket's. Each is
    counted, and the first 64 KiB kept, in the request's record (ws_in,
    ws_data) as it arrives."""

    KEEP = 1 << 16

    def __init__(self, backend, sock, rf, rec):
        self.backend = backend
        self.sock = sock
        self.rec = rec
        self.total = 0
        self.kept = bytearray()
        self.buf = bytearray()
        # what rf holds, or one read that does not wait (peek reads the
        # socket when its buffer is empty)
        sock.setblocking(False)
        try:
            data = rf.peek(1 << 16)
        except OSError:
            data = b""
        finally:
            sock.setblocking(True)
        if data:
            self._got(rf.read(len(data)))

    def _got(self, data):
        self.buf += data
        self.total += len(data)
        if len(self.kept) < self.KEEP:
            self.kept += data[:self.KEEP - len(self.kept)]
        self.backend._update(self.rec, ws_in=self.total, ws_data=bytes(self.kept))

    def ready(self):
        """How many bytes have come and are unread, without waiting."""
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            self._got(data)
        return len(self.buf)

    def recv(self):
        """What has come, or waits for some; b"" at the peer's FIN."""
        if not self.buf:
            data = self.sock.recv(1 << 16)
            if not data:
                return b""
            self._got(data)
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def read(self, n):
        """Exactly n bytes; PeerGone at the peer's FIN before them."""
        while len(self.buf) < n:
            data = self.sock.recv(max(1 << 16, n - len(self.buf)))
            if not data:
                raise PeerGone("EOF in a frame")
            self._got(data)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def drain(self):
        """Reads until the peer goes; how it went ("eof", "reset", ...)."""
        try:
            while self.recv():
                self.buf.clear()
        except OSError as e:
            return _oserror_end(e)
        return "eof"


def _oserror_end(e):
    """How a connection ended, by the error that ended it."""
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, BrokenPipeError):
        return "broken-pipe"
    return str(e) or type(e).__name__


# What /head/KIND sends: responses whose framing fields a proxy must not
# pass on as they are.
HEADS = {
    "cl-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl-zeros": b"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello",
    "204-cl": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"
               b"hello world",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n",
    "status-600": b"HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\n\r\nok",
    "version-1x": b"HTTP/1.X 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "reason-ctl": b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}

# What /extra sends after its response: a second response nobody asked for.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED!"


def _trailer_lines(q):
    """The trailer field lines /chunked and /trickle send: ?trailer=Name:
    value, each, then with ?trailer_pad=N an X-Pad of N bytes."""
    lines = [t.encode("latin-1") for t in q.get("trailer", [])]
    if q.get("trailer_pad"):
        lines.append(b"X-Pad: " + b"p" * int(q["trailer_pad"][0]))
    return b"".join(line + b"\r\n" for line in lines)


def body_bytes(n):
    """The first n bytes of the deterministic body pattern.

    The pattern is SHAKE-256(SEED) read as an endless stream, so any prefix is
    well defined, nothing repeats, and a test can compute it on its own:
    hashlib.shake_256(SEED).digest(n).
    """
    global _pattern
    if n <= len(_pattern):
        return _pattern[:n]
    with _pattern_lock:
        if n > len(_pattern):
            _pattern = hashlib.shake_256(SEED).digest(max(n, 2 * len(_pattern), 1 << 20))
        return _pattern[:n]


@functools.lru_cache(maxsize=256)
def body_sha256(n):
    """Sent before the body, in X-Body-Sha256: worked out once per size (a
    20 MB body's took its request tens of milliseconds each time)."""
    return hashlib.sha256(body_bytes(n)).hexdigest()


# Chunk sizes used by /chunked: odd, unaligned, cycling.
CHUNK_SIZES = (1, 7, 4093, 65521, 3, 16411, 250, 100003, 2)

MAX_LINE = 65536
MAX_HEADERS = 200
MAX_N = 1 << 30

REASONS = {
    100: "Continue", 103: "Early Hints", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 410: "Gone", 418: "I'm a teapot",
    429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    pass


class PeerGone(Exception):
    pass


def _readline(rf):
    line = rf.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequest("line too long")
    return line


def _read_exact(rf, n, sink):
    """Read n bytes from rf and feed them to sink(bytes)."""
    while n > 0:
        data = rf.read(min(n, 1 << 16))
        if not data:
            raise PeerGone("EOF in body")
        sink(data)
        n -= len(data)


def _is_token(s):
    return bool(s) and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in s)


class Request:
    def __init__(self):
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []       # [(name, value)] exactly as received, in order

    def get_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def get(self, name, default=None):
        vals = self.get_all(name)
        return vals[0] if vals else default

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        parts = self.target.split("?", 1)
        return urllib.parse.parse_qs(parts[1]) if len(parts) > 1 else {}


def read_request_head(rf):
    """Parse a request head; None on a clean EOF before any byte."""
    line = _readline(rf)
    # RFC 9112 2.2: ignore at least one empty line before the request line.
    for _ in range(4):
        if line not in (b"\r\n", b"\n"):
            break
        line = _readline(rf)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise PeerGone("EOF in request line")
    parts = line.rstrip(b"\r\n").decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("bad request line %r" % line)
    req = Request()
    req.method, req.target, req.version = parts
    if not _is_token(req.method) or not req.target:
        raise BadRequest("bad request line %r" % line)
    while True:
        line = _readline(rf)
        if not line.endswith(b"\n"):
            raise PeerGone("EOF in headers")
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            raise BadRequest("obs-fold")
        text = line.rstrip(b"\r\n").decode("latin-1")
        name, sep, value = text.partition(":")
        if not sep or not _is_token(name):
            raise BadRequest("bad header line %r" % line)
        req.headers.append((name, value.strip(" \t")))
        if len(req.headers) > MAX_HEADERS:
            raise BadRequest("too many headers")
    return req


class Backend:
    """A threaded HTTP/1.1 test server on TCP and/or a unix socket."""

    def __init__(self, tcp=None, unix=None, name="backend", quiet=True):
        """tcp: (host, port) (port 0 picks a free one); unix: socket path."""
        if tcp is None and unix is None:
            tcp = ("127.0.0.1", 0)
        self.name = name
        self.quiet = quiet
        self._tcp_want = tcp
        self._unix_want = unix
        self._servers = []
        self._threads = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._conns = set()
        self._conn_count = 0
        self.tcp_address = None
        self.unix_path = None

    # ---- lifecycle -----------------------------------------------------

    def start(self):
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                backend._serve_connection(self.request, self.server.transport)

        if self._tcp_want is not None:
            class TCPServer(socketserver.ThreadingTCPServer):
                allow_reuse_address = True
                daemon_threads = True
                block_on_close = False
                request_queue_size = 128
            srv = TCPServer(tuple(self._tcp_want), Handler)
            srv.transport = "tcp"
            self.tcp_address = srv.server_address[:2]
            self._servers.append(srv)
        if self._unix_want is not None:
            class UnixServer(socketserver.ThreadingUnixStreamServer):
                daemon_threads = True
                block_on_close = False
                request_queue_size = 128
            if os.path.exists(self._unix_want):
                os.unlink(self._unix_want)
            srv = UnixServer(self._unix_want, Handler)
            srv.transport = "unix"
            self.unix_path = self._unix_want
            self._servers.append(srv)
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 name="%s-%s" % (self.name, srv.transport), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)
        self._servers = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def tcp_port(self):
        return self.tcp_address[1]

    @property
    def tcp_server(self):
        """The "host:port" form for a qproxy `server =` line."""
        return "%s:%d" % self.tcp_address

    # ---- what the tests inspect -----------------------------------------

    @property
    def count(self):
        """How many request heads this backend has received so far."""
        with self._lock:
            return len(self._requests)

    @property
    def connections(self):
        """How many connections this backend has accepted so far."""
        with self._lock:
            return self._conn_count

    @property
    def requests(self):
        """A snapshot (list of dicts) of every request received so far."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def requests_since(self, index):
        with self._lock:
            return [dict(r) for r in self._requests[index:]]

    def wait_for_count(self, n, timeout=5.0):
        """Wait until at least n requests were seen; returns the count."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return len(self._requests)

    def wait_for_request(self, predicate, start=0, timeout=5.0):
        """Wait for a request (dict) matching predicate, at index >= start."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self._requests[start:]:
                    if predicate(r):
                        return dict(r)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_body_done(self, record_id, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                r = self._requests[record_id]
                if r["body_done"] or r["error"]:
                    return dict(r)
                left = deadline - time.monotonic()
                if left <= 0:
                    return dict(r)
                self._cond.wait(left)

    # ---- internals ------------------------------------------------------

    def _log(self, msg):
        if not self.quiet:
            sys.stderr.write("%s: %s\n" % (self.name, msg))

    def _record(self, req, transport, conn_id, seq):
        rec = {
            "backend": self.name,
            "transport": transport,
            "conn": conn_id,
            "seq_on_conn": seq,
            "time": time.monotonic(),
            "method": req.method,
            "target": req.target,
            "path": req.path,
            "version": req.version,
            "headers": [list(h) for h in req.headers],
            "body_length": None,
            "body_sha256": None,
            "chunked": False,
            "content_length": None,
            "trailers": [],
            "body_done": False,
            "error": None,
        }
        with self._cond:
            rec["id"] = len(self._requests)
            self._requests.append(rec)
            self._cond.notify_all()
        return rec

    def _update(self, rec, **kw):
        with self._cond:
            rec.update(kw)
            self._cond.notify_all()

    def _serve_connection(self, sock, transport):
        with self._lock:
            self._conn_count += 1
            conn_id = self._conn_count
            self._conns.add(sock)
        rf = sock.makefile("rb", buffering=1 << 16)
        seq = 0
        try:
            while True:
                try:
                    req = read_request_head(rf)
                except BadRequest as e:
                    self._log("bad request: %s" % e)
                    self._send_simple(sock, 400, b"bad request\n", close=True)
                    break
                if req is None:
                    break
                seq += 1
                rec = self._record(req, transport, conn_id, seq)
                try:
                    keep = self._handle(sock, rf, req, rec)
                except BadRequest as e:
                    self._update(rec, error=str(e))
                    self._send_simple(sock, 400, b"bad request\n", close=True)
                    break
                except (PeerGone, OSError) as e:
                    self._update(rec, error=str(e) or type(e).__name__)
                    break
                if not keep:
                    break
        except (PeerGone, OSError):
            pass
        finally:
            with self._lock:
                self._conns.discard(sock)
            try:
                rf.close()
            except OSError:
                pass

    # -- request body -----------------------------------------------------

    def _read_body(self, sock, rf, req, rec):
        """Consume the request body per RFC 9112 framing; records its facts."""
        te = [v.strip().lower() for v in ",".join(req.get_all("transfer-encoding")).split(",")
              if v.strip()]
        cls = req.get_all("content-length")
        h = hashlib.sha256()
        length = 0

        def sink(data):
            nonlocal length
            h.update(data)
            length += len(data)

        chunked = False
        cl_value = ", ".join(cls) if cls else None
        if te:
            if te[-1] != "chunked":
                raise BadRequest("transfer-encoding without chunked last")
            if cls:
                raise BadRequest("both transfer-encoding and content-length")
            chunked = True
        elif cls:
            vals = {v.strip() for c in cls for v in c.split(",")}
            if len(vals) != 1 or not next(iter(vals)).isdigit():
                raise BadRequest("bad content-length %r" % cls)
        expect_body = chunked or (cls and int(next(iter(vals))) > 0)
        if expect_body and (req.get("expect", "").lower() == "100-continue"):
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        trailers = []
        nchunks = 0
        if chunked:
            while True:
                line = _readline(rf)
                if not line.endswith(b"\n"):
                    raise PeerGone("EOF in chunk size")
                size_s = line.split(b";", 1)[0].strip()
                if not size_s or any(c not in b"0123456789abcdefABCDEF" for c in size_s):
                    raise BadRequest("bad chunk size %r" % line)
                size = int(size_s, 16)
                if size == 0:
                    break
                nchunks += 1
                _read_exact(rf, size, sink)
                if rf.read(2) not in (b"\r\n",):
                    raise BadRequest("chunk not followed by CRLF")
            while True:
                line = _readline(rf)
                if not line.endswith(b"\n"):
                    raise PeerGone("EOF in trailers")
                if line in (b"\r\n", b"\n"):
                    break
                n, _, v = line.rstrip(b"\r\n").decode("latin-1").partition(":")
                trailers.append([n, v.strip()])
        elif cls:
            _read_exact(rf, int(next(iter(vals))), sink)
        self._update(rec, body_length=length, body_sha256=h.hexdigest(), chunked=chunked,
                     chunks=nchunks, content_length=cl_value, trailers=trailers,
                     body_done=True)
        return {"sha256": h.hexdigest(), "length": length, "chunked": chunked,
                "content_length": cl_value, "trailers": trailers}

    # -- responses ----------------------------------------------------------

    def _head(self, status, headers, reason=None):
        reason = reason if reason is not None else REASONS.get(status, "Status")
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        lines.append("X-Backend: %s" % self.name)
        for n, v in headers:
            lines.append("%s: %s" % (n, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_simple(self, sock, status, body, ctype="text/plain", close=False,
                     head_only=False, extra=()):
        hdrs = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        hdrs.extend(extra)
        if close:
            hdrs.append(("Connection", "close"))
        try:
            sock.sendall(self._head(status, hdrs) + (b"" if head_only else body))
        except OSError:
            return False
        return not close

    @staticmethod
    def _client_wants_close(req):
        conn = [t.strip().lower() for v in req.get_all("connection") for t in v.split(",")]
        if req.version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn

    @staticmethod
    def _int_arg(args, default=None):
        if not args:
            if default is None:
                raise BadRequest("missing number")
            return default
        if not args[0].isdigit() or int(args[0]) > MAX_N:
            raise BadRequest("bad number %r" % args[0])
        return int(args[0])

    def _websocket(self, sock, rf, req, rec):
        """/ws (see the module's docstring); the connection ends with it."""
        q = req.query

        def knob(name, default=0):
            return int(q.get(name, [default])[0])

        self._update(rec, body_done=True, body_length=0, ws_answer=None, ws_key=None,
                     ws_before_answer=0, ws_in=0, ws_data=b"", ws_messages=[],
                     ws_close=None, ws_end=None, ws_end_time=None)
        tokens = {name: [t.strip().lower() for v in req.get_all(name) for t in v.split(",")]
                  for name in ("connection", "upgrade")}
        key = req.get("sec-websocket-key", "")
        try:
            key_ok = len(req.get_all("sec-websocket-key")) == 1 and \
                len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        self._update(rec, ws_key=key)
        problem = None
        if "websocket" not in tokens["upgrade"] or "upgrade" not in tokens["connection"]:
            problem = (400, "not a websocket upgrade")
        elif req.get_all("sec-websocket-version") != ["13"]:
            problem = (426, "sec-websocket-version is not 13")
        elif not key_ok:
            problem = (400, "bad sec-websocket-key %r" % key)
        elif req.get_all("content-length") or req.get_all("transfer-encoding"):
            problem = (400, "a body's framing in an upgrade")
        if problem:
            self._update(rec, error=problem[1], ws_answer=problem[0])
            extra = [("Sec-WebSocket-Version", "13")] if problem[0] == 426 else []
            self._send_simple(sock, problem[0], problem[1].encode() + b"\n", close=True,
                              extra=extra)
            return False

        t = _Tunnel(self, sock, rf, rec)
        if q.get("wait"):
            time.sleep(float(q["wait"][0]) / 1000.0)
        self._update(rec, ws_before_answer=t.ready())
        sock.settimeout(30)
        if "refuse" in q or "plain" in q:
            code = knob("refuse", 200)
            extra = [("Location", "/elsewhere")] if 300 <= code < 400 else []
            body = b"refused %d\n" % code if "refuse" in q else b"not upgraded\n"
            self._update(rec, ws_answer=code)
            self._send_simple(sock, code, body, extra=extra)
            self._ws_end(rec, t.drain())
            return False
        hdrs = [("Upgrade", q.get("upgrade", ["websocket"])[0]), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", ws_accept(key + "x" if "bad-accept" in q else key)),
                ("X-Ws", "tunnel")]
        if "no-upgrade" in q:
            del hdrs[0]
        if "no-accept" in q:
            hdrs = [h for h in hdrs if h[0] != "Sec-WebSocket-Accept"]
        if "protocol" in q:
            hdrs.append(("Sec-WebSocket-Protocol", q["protocol"][0]))
        hdrs.extend(tuple(f.split(": ", 1)) for f in q.get("field", []))
        self._update(rec, ws_answer=101)
        hello = b""
        if "hello" in q:
            hello = b"hello" if "raw" in q else ws_frame(WS_TEXT, b"hello")
        sock.sendall(self._head(101, hdrs, reason="Switching Protocols") + hello)
        if set(q) & {"bad-accept", "no-accept", "no-upgrade", "upgrade"}:
            self._ws_end(rec, t.drain())
            return False
        try:
            for _ in range(knob("ticks")):
                time.sleep(knob("tick") / 1000.0)
                sock.sendall(b"t" if "raw" in q else ws_frame(WS_TEXT, b"tick"))
            if "raw" in q:
                end = self._ws_raw(sock, t, knob("reset-after"), "half" in q)
            else:
                end = self._ws_echo(sock, t, rec, knob("close-after"), knob("reset-after"),
                                    "half" in q, "mute" in q)
        except PeerGone:
            end = "eof"
        except OSError as e:
            end = _oserror_end(e)
        self._ws_end(rec, end)
        return False

    def _ws_end(self, rec, end):
        self._update(rec, ws_end=end, ws_end_time=time.monotonic())

    @staticmethod
    def _reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()    # an RST once the last reference is gone
        return "rst-sent"

    def _ws_raw(self, sock, t, reset_after, half):
        """Echoes bytes as they come; the peer's FIN answered with one."""
        echoed = 0
        while True:
            data = t.recv()
            if not data:
                if not half:
                    sock.shutdown(socket.SHUT_WR)
                return "eof"
            if half and echoed:
                continue
            sock.sendall(data)
            echoed += len(data)
            if reset_after and echoed >= reset_after:
                return self._reset(sock)
            if half:
                sock.shutdown(socket.SHUT_WR)

    def _ws_message(self, rec, opcode, data):
        with self._cond:
            rec["ws_messages"].append([opcode, len(data), hashlib.sha256(data).hexdigest(),
                                       data if len(data) <= 1024 else None])
            self._cond.notify_all()

    def _ws_echo(self, sock, t, rec, close_after, reset_after, half, mute):
        """Echoes each message until the close handshake, then reads until
        the peer goes."""
        sent_close = False
        echoed = 0
        op, msg = None, bytearray()
        while True:
            try:
                fin, opcode, payload, masked = ws_read_frame(t.read)
            except ValueError as e:
                self._update(rec, error=str(e))
                sock.sendall(ws_frame(WS_CLOSE, struct.pack("!H", 1002)))
                sock.shutdown(socket.SHUT_WR)
                return t.drain()
            if not masked:
                self._update(rec, error="an unmasked frame from the client")
            if opcode in (WS_PING, WS_PONG, WS_CLOSE):
                self._ws_message(rec, opcode, payload)
                if opcode == WS_PING and not sent_close:
                    sock.sendall(ws_frame(WS_PONG, payload))
                if opcode == WS_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self._update(rec, ws_close=[code, payload[2:].decode("utf-8", "replace")])
                    if not sent_close:
                        sock.sendall(ws_frame(WS_CLOSE, payload))
                    sock.shutdown(socket.SHUT_WR)
                    return t.drain()
                continue
            if opcode in (WS_TEXT, WS_BINARY) and op is None:
                op, msg = opcode, bytearray(payload)
            elif opcode == WS_CONT and op is not None:
                msg += payload
            else:
                self._update(rec, error="frame of opcode %d out of place" % opcode)
                continue
            if not fin:
                continue
            data = bytes(msg)
            self._ws_message(rec, op, data)
            if not sent_close and not mute:
                sock.sendall(ws_frame(op, data))
                echoed += 1
            op, msg = None, bytearray()
            if reset_after and echoed >= reset_after:
                return self._reset(sock)
            if close_after and echoed >= close_after and not sent_close:
                sock.sendall(ws_frame(WS_CLOSE, struct.pack("!H", 4000) + b"close-after"))
                sent_close = True
            if half and not sent_close:
                sock.shutdown(socket.SHUT_WR)
                sent_close = True

    ENDPOINTS = ("bytes", "chunked", "close", "slow", "status", "upload", "echo-headers",
                 "hang", "die", "die-chunked", "head-part", "garbage", "extra", "early-hints", "hop",
                 "cookies", "drop-reused", "trickle", "head", "reject",
                 "answer-first", "answer-hold", "roundtrip", "images", "gif", "info-flood",
                 "ws")

    def _handle(self, sock, rf, req, rec):
        """Serve one request; returns whether the connection stays open."""
        segs = [s for s in req.path.split("/") if s]
        name, args = None, []
        for i, s in enumerate(segs):
            if s in self.ENDPOINTS:
                name, args = s, segs[i + 1:]
                break
        if name == "ws":
            return self._websocket(sock, rf, req, rec)
        if name == "hang":
            # Read the request, then never answer: wait for the peer to go.
            # ?stall=1: read none of its body either
            self._update(rec, body_done=True, body_length=0)
            if "stall" in req.query:
                _wait_for_hangup(sock)
            else:
                _wait_for_close(sock)
            return False
        if name == "reject":
            # An early 413: read ?after=N bytes of the body (65536), answer,
            # and close with a reset on the rest, as servers that refuse an
            # upload do (RFC 9112 9.6).
            # ?close=1: the body delimited by the close, not a length, and
            # the reset with no FIN before it (the end of the body unsure);
            # ?close=fin: the same body, then FIN, then the reset.
            want = self._int_arg(req.query.get("after", []), 65536)
            got = len(rf.read(want)) if want else 0
            self._update(rec, body_done=False, body_length=got)
            length = [] if req.query.get("close") else [("Content-Length", "9")]
            sock.sendall(self._head(413, length + [("Connection", "close")]) + b"too large")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if req.query.get("close") == ["1"]:
                sock.close()    # the reset alone, with no FIN before it
            return False
        if name == "answer-hold":
            sock.sendall(self._head(200, [("Content-Length", "10")]) + b"hello")
            self._update(rec, body_done=False, body_length=0)
            _wait_for_hangup(sock)
            return False
        if name == "answer-first":
            sock.sendall(self._head(200, [("Content-Length", "5"), ("Connection", "close")])
                         + b"hello")
            self._read_body(sock, rf, req, rec)
            return False
        body = self._read_body(sock, rf, req, rec)
        close = self._client_wants_close(req)
        head_only = req.method == "HEAD"
        q = req.query

        if name is None:
            return self._send_simple(sock, 404, b"no such endpoint on the test backend\n",
                                     close=close, head_only=head_only)

        if name in ("bytes", "slow"):
            n = self._int_arg(args)
            wait = float(q.get("wait", ["0"])[0])
            if wait > 0:
                time.sleep(wait / 1000.0)
            ctype = "application/octet-stream"
            if q.get("uniq"):
                # a long Content-Type of this response's own: one more
                # value for an HTTP/3 server's QPACK dynamic table each time
                ctype = "application/x-%s-%d" % ("v" * 900, rec["id"])
            hdrs = [("Content-Type", ctype), ("Content-Length", str(n)),
                    ("X-Body-Sha256", body_sha256(n))]
            if close:
                hdrs.append(("Connection", "close"))
            sock.sendall(self._head(200, hdrs))
            if head_only or n == 0:
                return not close
            data = memoryview(body_bytes(n))
            if name == "bytes":
                sock.sendall(data)
                if q.get("drop"):
                    # a keep-alive timeout of the backend's, in effect
                    threading.Timer(float(q["drop"][0]) / 1000.0,
                                    lambda: _shutdown_quietly(sock)).start()
            else:
                total_ms = float(q.get("ms", ["2000"])[0])
                pieces = 40
                step = max(1, -(-n // pieces))
                for off in range(0, n, step):
                    sock.sendall(data[off:off + step])
                    if off + step < n:
                        time.sleep(total_ms / 1000.0 / pieces)
            return not close

        if name == "chunked":
            n = self._int_arg(args)
            hdrs = [("Content-Type", "application/octet-stream"),
                    ("Transfer-Encoding", "chunked"), ("X-Body-Sha256", body_sha256(n))]
            if close:
                hdrs.append(("Connection", "close"))
            sock.sendall(self._head(200, hdrs))
            if head_only:
                return not close
            if "size" in q:
                # ?size=K: chunks of K bytes, all sent at once
                k = int(q["size"][0])
                data = body_bytes(n)
                sock.sendall(b"".join(b"%x\r\n" % len(data[off:off + k]) +
                                      data[off:off + k] + b"\r\n"
                                      for off in range(0, n, k)) + b"0\r\n\r\n")
                return not close
            data = memoryview(body_bytes(n))
            off, i = 0, 0
            while off < n:
                size = min(CHUNK_SIZES[i % len(CHUNK_SIZES)], n - off)
                ext = ";ext=%d" % i if i % 5 == 3 else ""
                sock.sendall(b"%x%s\r\n" % (size, ext.encode()) + data[off:off + size] + b"\r\n")
                off += size
                i += 1
            sock.sendall(b"0\r\n" + _trailer_lines(q) + b"\r\n")
            return not close

        if name == "trickle":
            # The whole response, head included, in pieces of ?step=K
            # bytes (7) 10 ms apart, so that reads end anywhere: in the
            # status line, a field, a CRLF, a chunk-size line. Chunked
            # (with /chunked's ?trailer= and ?trailer_pad=), or with
            # ?cl=1 a Content-Length. ?pad=P adds a field X-Pad
            # of P bytes to the head (?fields=F: F fields X-Pad-0.. of
            # P/F bytes each instead). ?us=U: U microseconds apart instead.
            n = self._int_arg(args)
            step = self._int_arg(q.get("step", []), 7) or 1
            pad = self._int_arg(q.get("pad", []), 0)
            nfields = self._int_arg(q.get("fields", []), 1) or 1
            gap = self._int_arg(q.get("us", []), 10000) / 1e6
            hdrs = [("X-Pad-%d" % i if nfields > 1 else "X-Pad", "p" * (pad // nfields))
                    for i in range(nfields)] if pad else []
            data = body_bytes(n)
            if q.get("cl"):
                msg = self._head(200, hdrs + [("Content-Length", str(n))]) + data
            else:
                msg = self._head(200, hdrs + [("Transfer-Encoding", "chunked")])
                for off in range(0, n, 40):
                    piece = data[off:off + 40]
                    msg += b"%x\r\n" % len(piece) + piece + b"\r\n"
                msg += b"0\r\n" + _trailer_lines(q) + b"\r\n"
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for off in range(0, len(msg), step):
                sock.sendall(msg[off:off + step])
                if gap:
                    time.sleep(gap)
            return True

        if name == "close":
            n = self._int_arg(args)
            sock.sendall(self._head(200, [("Content-Type", "application/octet-stream"),
                                          ("X-Body-Sha256", body_sha256(n)),
                                          ("Connection", "close")]))
            if not head_only:
                sock.sendall(memoryview(body_bytes(n)))
            if q.get("finwait"):
                time.sleep(int(q["finwait"][0]) / 1000.0)
            if q.get("rst"):
                time.sleep(0.05)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()    # an RST once the last reference is gone
                return False
            sock.shutdown(socket.SHUT_WR)
            return False

        if name == "status":
            code = self._int_arg(args)
            if not 200 <= code <= 599:
                raise BadRequest("status %d not supported" % code)
            hdrs = []
            if close:
                hdrs.append(("Connection", "close"))
            if code in (204, 304):
                if code == 304:
                    hdrs.append(("ETag", '"v1"'))
                    if "cl" in q:
                        hdrs.append(("Content-Length", str(int(q["cl"][0]))))
                sock.sendall(self._head(code, hdrs))
                return not close
            # ?name=N: one more field, its name N bytes long
            extra = [("n" * int(q["name"][0]), "1")] if "name" in q else []
            return self._send_simple(sock, code, b"status %d\n" % code, close=close,
                                     head_only=head_only, extra=extra)

        if name == "upload":
            reply = dict(body)
            reply["method"] = req.method
            return self._send_simple(sock, 200, json.dumps(reply).encode() + b"\n",
                                     ctype="application/json", close=close, head_only=head_only)

        if name == "echo-headers":
            reply = {
                "backend": self.name,
                "method": req.method,
                "target": req.target,
                "version": req.version,
                "request_line": "%s %s %s" % (req.method, req.target, req.version),
                "headers": [list(h) for h in req.headers],
                "body": body,
            }
            # ?field=Name: value: one more field in the response
            extra = [tuple(f.split(": ", 1)) for f in q.get("field", [])]
            return self._send_simple(sock, 200, json.dumps(reply).encode() + b"\n",
                                     ctype="application/json", close=close, head_only=head_only,
                                     extra=extra)

        if name == "head-part":
            n = self._int_arg(args)
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * n)
            if q.get("rest"):
                time.sleep(float(q["rest"][0]) / 1000.0)
                sock.sendall(b"\r\nContent-Length: 10\r\n\r\nhello")
            _wait_for_close(sock)
            return False

        if name == "die":
            n = self._int_arg(args)
            sock.sendall(self._head(200, [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(n))]))
            sock.sendall(memoryview(body_bytes(n))[:n // 2])
            if q.get("stall"):
                _wait_for_close(sock)
                return False
            time.sleep(0.05)
            if q.get("rst"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()    # an RST once the last reference is gone
            else:
                sock.shutdown(socket.SHUT_RDWR)
            return False

        if name == "die-chunked":
            n = self._int_arg(args)
            sock.sendall(self._head(200, [("Content-Type", "application/octet-stream"),
                                          ("Transfer-Encoding", "chunked")]))
            data = body_bytes(n // 2)
            for off in range(0, len(data), 10000):
                piece = data[off:off + 10000]
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            time.sleep(0.05)
            sock.shutdown(socket.SHUT_RDWR)
            return False

        if name == "head":
            if not args or args[0] not in HEADS:
                raise BadRequest("unknown head kind")
            sock.sendall(HEADS[args[0]])
            return False

        if name == "garbage":
            kind = args[0] if args else "status"
            heads = {
                "status": b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
                "noheader": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                            b"this line has no colon\r\n\r\nok",
                "cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                "binary": b"\x00\x01\x02\xff garbage \x7f\r\n\r\n",
                # no end of line: an HTTP/2 server's SETTINGS frame, a TLS
                # alert record
                "h2settings": b"\x00\x00\x06\x04\x00\x00\x00\x00\x00"
                              b"\x00\x03\x00\x00\x00\x64",
                "tls": b"\x15\x03\x03\x00\x02\x02\x46",
                # a valid head of 60 fields, 120 KB: over max_header_size
                "bighead": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
                           b"".join(b"X-Field-%02d: %s\r\n" % (i, b"v" * 2000)
                                    for i in range(60)) + b"\r\nok",
            }
            if kind not in heads:
                raise BadRequest("unknown garbage kind")
            sock.sendall(heads[kind])
            # Keep the connection open, so that only parsing can explain a 502.
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return False

        if name == "drop-reused":
            # A keep-alive connection closed just as a request came on it
            # (as when a keep-alive timeout fires): on a connection that
            # served a request before, close without answering (?rst=1:
            # with an RST; ?r408=1: with a 408 first, as servers that time
            # out a keep-alive connection may); on a new one, answer.
            # ?always=1: close on a new one too.
            if rec["seq_on_conn"] > 1 or q.get("always"):
                if q.get("r408"):
                    sock.sendall(self._head(408, [("Content-Length", "0"),
                                                  ("Connection", "close")]))
                    sock.shutdown(socket.SHUT_RDWR)
                elif q.get("rst"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                else:
                    sock.shutdown(socket.SHUT_RDWR)
                return False
            return self._send_simple(sock, 200, b"answered on a new connection\n",
                                     close=close, head_only=head_only)

        if name == "extra":
            n = self._int_arg(args)
            time.sleep(float(q.get("wait", ["0"])[0]) / 1000.0)
            if "fill" in q:
                fill = int(q["fill"][0])
                if "chunked" in q:
                    sock.sendall(self._head(200, [("Transfer-Encoding", "chunked")]))
                    time.sleep(0.2)             # read on its own
                    n = next(k for k in range(fill, 0, -1)
                             if len(b"%x" % k) + k + 9 == fill)
                    body = b"%x\r\n" % n + body_bytes(n) + b"\r\n0\r\n\r\n"
                    sock.sendall(body + SMUGGLED)
                    return True
                for n in range(fill, -1, -1):
                    resp = self._head(200, [("Content-Length", str(n))]) + body_bytes(n)
                    if len(resp) == fill:
                        break
                sock.sendall(resp + SMUGGLED)
                return True
            resp = self._head(200, [("Content-Type", "application/octet-stream"),
                                    ("Content-Length", str(n))]) + body_bytes(n)
            ms = float(q.get("ms", ["0"])[0])
            if ms > 0:
                sock.sendall(resp)
                time.sleep(ms / 1000.0)
                sock.sendall(SMUGGLED)
            else:
                sock.sendall(resp + SMUGGLED)   # in one segment
            return True

        if name == "early-hints":
            # ?pad=N: each hint also carries a field of N bytes
            fields = [("Link", "</style.css>; rel=preload; as=style")]
            if "pad" in q:
                fields.append(("X-Pad", "p" * int(q["pad"][0])))
            hint = self._head(103, fields)
            hints = hint * int(q.get("n", ["1"])[0])
            # ?empty=1: the final response has no body
            final = b"" if "empty" in q else b"final response after early hints\n"
            if "split" in q:
                # ?split=MS: the hints and the first 20 bytes of the final
                # head in one segment, the rest MS milliseconds later
                rest = self._head(200, [("Content-Type", "text/plain"),
                                        ("Content-Length", str(len(final)))]) + final
                sock.sendall(hints + rest[:20])
                time.sleep(float(q["split"][0]) / 1000.0)
                sock.sendall(rest[20:])
                return True
            sock.sendall(hints)
            return self._send_simple(sock, 200, final,
                                     close=close, head_only=head_only)

        if name == "info-flood":
            # 103 heads as fast as the socket takes them, for ?s=S seconds
            # (30) or until the peer goes, then a final 200 if it is there
            # (short heads: parsing each costs qproxy more than its bytes
            # cost this sender)
            hints = b"HTTP/1.1 103\r\n\r\n" * 4096
            end = time.monotonic() + float(q.get("s", ["30"])[0])
            try:
                while time.monotonic() < end:
                    sock.sendall(hints)
            except OSError:
                return False
            return self._send_simple(sock, 200, b"final\n", close=True)

        if name == "hop":
            # ?many=N: N more tokens in Connection fields before the one
            # naming X-Private-Hop, spread over two fields
            many = int(q.get("many", ["0"])[0])
            extra = [("Connection", ", ".join("x-t%d" % i for i in range(many // 2))),
                     ("Connection", ", ".join("x-u%d" % i for i in range(many - many // 2)))]
            hdrs = [("Content-Type", "text/plain")] + (extra if many else []) + [
                    ("Connection", "keep-alive, X-Private-Hop"),
                    ("Keep-Alive", "timeout=30, max=100"),
                    ("X-Private-Hop", "must not be forwarded"),
                    ("Proxy-Connection", "keep-alive"),
                    ("Upgrade", "h2c"),
                    ("TE", "trailers"),
                    ("Trailer", "X-Checksum"),
                    ("Proxy-Authenticate", "Basic realm=\"hop\""),
                    ("X-End-To-End", "kept"),
                    # end-to-end, with the lengths of hop-by-hop names
                    ("Tk", "N"),
                    ("Warning", "199 - \"kept\""),
                    ("Set-Cookie", "c=3"),
                    ("Transfer-Encoding", "chunked")]
            sock.sendall(self._head(200, hdrs))
            if not head_only:
                sock.sendall(b"5\r\nhop-b\r\n3\r\nody\r\n0\r\n" +
                             _trailer_lines(q) + b"\r\n")
            return not close

        if name == "images":
            n = self._int_arg(args)
            page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>images"
                    "</title></head><body>\n" +
                    "".join('<img src="../gif/%d" alt="">\n' % i for i in range(n)) +
                    "</body></html>\n").encode()
            return self._send_simple(sock, 200, page, ctype="text/html; charset=utf-8",
                                     close=close, head_only=head_only)

        if name == "gif":
            self._int_arg(args)
            return self._send_simple(sock, 200, GIF_1X1, ctype="image/gif",
                                     close=close, head_only=head_only)

        if name == "roundtrip":
            n = self._int_arg(args)
            page = ROUNDTRIP_PAGE.replace("@N@", str(n)).encode()
            return self._send_simple(sock, 200, page, ctype="text/html; charset=utf-8",
                                     close=close, head_only=head_only)

        if name == "cookies":
            return self._send_simple(sock, 200, b"cookies\n", close=close, head_only=head_only,
                                     extra=[("Set-Cookie", "a=1; Path=/"),
                                            ("Set-Cookie", "b=2; Path=/; HttpOnly")])

        raise BadRequest("unhandled endpoint %s" % name)


# A transparent 1x1 GIF (GIF89a, one colour, one pixel).
GIF_1X1 = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
           b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00"
           b"\x00\x02\x02D\x01\x00;")


# The page of /roundtrip/N: bytes as they came (x-user-defined maps each
# byte to one char code), sent back as they came.
ROUNDTRIP_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>roundtrip</title></head><body>
<script>
var get = new XMLHttpRequest();
get.open("GET", "../bytes/@N@", false);
get.overrideMimeType("text/plain; charset=x-user-defined");
get.send();
var text = get.responseText, body = new Uint8Array(text.length);
for (var i = 0; i < text.length; i++)
  body[i] = text.charCodeAt(i) & 0xff;
var put = new XMLHttpRequest();
put.open("POST", "../upload", false);
put.send(body);
document.title = "roundtrip " + get.status + " " + put.status;
</script>
</body></html>
"""


# ---- helpers for failure scenarios ---------------------------------------


def free_tcp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Refusing:
    """A TCP port with nothing listening on it: connecting gets refused.

    The port stays bound (but not listening) while this object lives, so
    nothing else can take it."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.address = self.sock.getsockname()[:2]

    @property
    def port(self):
        return self.address[1]

    def close(self):
        self.sock.close()


class _Acceptor:
    """A listening TCP port whose connections, as they are accepted, go to
    self._accepted(conn) on a thread of its own."""

    def __init__(self, name, host="127.0.0.1", sock=None):
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
        self.sock = sock
        self.sock.listen(128)
        self.address = self.sock.getsockname()[:2]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    @property
    def port(self):
        return self.address[1]

    def _run(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self._accepted(c)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def _heads(self, c):
        """Each request head that comes on c (up to its blank line, which
        is left out), until the peer goes or close()."""
        buf = b""
        while not self._stop:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                yield head


class BlackHole(_Acceptor):
    """Accepts TCP connections and never reads from or answers them."""

    def __init__(self, host="127.0.0.1"):
        self.accepted = []
        super().__init__("blackhole", host)

    def _accepted(self, c):
        self.accepted.append(c)

    def close(self):
        super().close()
        for c in self.accepted:
            c.close()


class SynDrop:
    """A listening TCP port whose accept queue is full, so new connection
    attempts get no answer at all (the kernel drops their SYNs): connecting
    to it times out, like an unreachable host."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.address = self.sock.getsockname()[:2]
        self.fillers = []
        for _ in range(2):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(self.address)
            except BlockingIOError:
                pass
            self.fillers.append(c)
        time.sleep(0.05)

    @property
    def port(self):
        return self.address[1]

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


class Fixed(_Acceptor):
    """Answers every request head it reads with the same bytes (a 503, say,
    or a malformed head), on a connection kept open; counts the heads.
    answers, if given, are the answers to the first heads in turn (None:
    the connection closed, unanswered), answer those after. sock: a bound
    socket to listen on, such as a Refusing's, to bring up a server that
    was refusing."""

    def __init__(self, answer, host="127.0.0.1", answers=(), sock=None):
        self.answer = answer
        self.answers = list(answers)
        self.count = 0
        super().__init__("fixed", host, sock)
        self.server = "%s:%d" % self.address

    def _accepted(self, c):
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c:
            for _ in self._heads(c):
                self.count += 1
                answer = (self.answers[self.count - 1] if self.count <= len(self.answers)
                          else self.answer)
                if answer is None:
                    return
                try:
                    c.sendall(answer)
                except OSError:
                    return


class Scripted(_Acceptor):
    """Answers each request head with the steps that script(line, conn,
    seq) gives for it: bytes, sent as they are; a number, of seconds
    waited; None, the connection closed (a FIN, then whatever comes is read
    until the peer goes). line: the request line; conn: the connection's
    number, from 1; seq: the head's number on it, from 1. heads: (conn,
    seq, line) of every head, in order. Requests must have no body."""

    def __init__(self, script, host="127.0.0.1"):
        self.script = script
        self.heads = []
        self._conns = 0
        self._lock = threading.Lock()
        super().__init__("scripted", host)
        self.server = "%s:%d" % self.address

    def _accepted(self, c):
        with self._lock:
            self._conns += 1
            conn = self._conns
        threading.Thread(target=self._serve, args=(c, conn), daemon=True).start()

    def _serve(self, c, conn):
        with c:
            for seq, head in enumerate(self._heads(c), 1):
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                with self._lock:
                    self.heads.append((conn, seq, line))
                for step in self.script(line, conn, seq):
                    try:
                        if step is None:
                            c.shutdown(socket.SHUT_WR)
                            _wait_for_close(c)
                            return
                        if isinstance(step, (int, float)):
                            time.sleep(step)
                        else:
                            c.sendall(step)
                    except OSError:
                        return


def _parse_hostport(s):
    host, _, port = s.rpartition(":")
    return (host.strip("[]") or "127.0.0.1", int(port))


def main(argv=None):
    ap = argparse.ArgumentParser(description="qproxy integration-test HTTP/1.1 backend")
    ap.add_argument("--tcp", metavar="HOST:PORT", help="listen on this TCP address")
    ap.add_argument("--unix", metavar="PATH", help="listen on this unix socket")
    ap.add_argument("--name", default="backend", help="value of the X-Backend response field")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    if not a.tcp and not a.unix:
        ap.error("give --tcp and/or --unix")
    b = Backend(tcp=_parse_hostport(a.tcp) if a.tcp else None, unix=a.unix, name=a.name,
                quiet=not a.verbose)
    b.start()
    if b.tcp_address:
        print("listening on tcp %s:%d" % b.tcp_address, flush=True)
    if b.unix_path:
        print("listening on unix %s" % b.unix_path, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    b.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
