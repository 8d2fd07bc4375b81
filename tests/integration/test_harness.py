"""Self-checks of the test harness itself.

These make sure the backend, the certificate and the client tools behave as
the proxy tests assume, so that a failing proxy test points at qproxy and not
at the harness.  They talk plain HTTP/1.1 to the backend; only the check of
QProxy.start's readiness, and qproxy -t of bench/run.py's configuration, need
qproxy."""

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import time
import types

import pytest

import backend as backend_mod
from helpers import (KiB, MiB, QProxy, _global_section, _listener_section, expected_body,
                     expected_sha256, qproxy_binary, render_config, require_pycurl_h3, sha256)

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def be(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    with backend_mod.Backend(tcp=("127.0.0.1", 0), unix=str(d / "b.sock"), name="selftest") as b:
        yield b


def conn(be):
    return http.client.HTTPConnection(*be.tcp_address, timeout=10)


def raw(be, data, timeout=5, read_until_close=True):
    s = socket.create_connection(be.tcp_address, timeout=timeout)
    s.sendall(data)
    out = b""
    if read_until_close:
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
        except socket.timeout:
            pass
    s.close()
    return out


def test_pattern_is_independent_of_backend():
    for n in (0, 1, 1000, 3 * MiB + 1):
        assert backend_mod.body_bytes(n) == expected_body(n)
        assert backend_mod.body_sha256(n) == expected_sha256(n)
    # Prefix-consistent and not periodic at small scales.
    b = expected_body(1 << 20)
    assert b[:1000] == expected_body(1000)
    assert b[:4096] != b[4096:8192]


def test_bytes_keepalive_and_head(be):
    c = conn(be)
    for n in (0, 1 * KiB, 10 * MiB):
        c.request("GET", "/bytes/%d" % n)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and r.getheader("Content-Length") == str(n)
        assert sha256(body) == expected_sha256(n)
    c.request("HEAD", "/app/bytes/5000")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "5000" and r.read() == b""
    c.request("GET", "/prefix/ignored/bytes/7")
    r = c.getresponse()
    assert r.read() == expected_body(7)
    conns = {rec["conn"] for rec in be.requests[-5:]}
    assert len(conns) == 1, "keep-alive: one connection for all five requests"
    c.close()


def test_chunked_and_close_delimited(be):
    c = conn(be)
    for n in (0, 1, 200003):
        c.request("GET", "/chunked/%d" % n)
        r = c.getresponse()
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert sha256(r.read()) == expected_sha256(n)
    c.close()
    out = raw(be, b"GET /close/100000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-length" not in head.lower() and b"Connection: close" in head
    assert body == expected_body(100000)
    # The chunked framing really uses odd sizes and an extension.
    out = raw(be, b"GET /chunked/70000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"\r\n1\r\n" in out and b"\r\n7\r\n" in out and b";ext=" in out


def test_status_codes(be):
    c = conn(be)
    for code, body in ((204, b""), (304, b""), (418, b"status 418\n"), (500, b"status 500\n")):
        c.request("GET", "/status/%d" % code)
        r = c.getresponse()
        assert r.status == code and r.read() == body
    c.request("GET", "/status/304?cl=1234")
    r = c.getresponse()
    assert r.status == 304 and r.getheader("Content-Length") == "1234"
    assert r.read() == b""      # http.client knows 304 has no body
    c.request("GET", "/bytes/3")        # the connection is still in sync
    assert c.getresponse().read() == expected_body(3)


def test_upload_content_length_and_chunked(be):
    c = conn(be)
    data = expected_body(3 * MiB + 5)
    c.request("POST", "/upload", body=data, headers={"Content-Length": str(len(data))})
    j = json.loads(c.getresponse().read())
    assert j == {"sha256": sha256(data), "length": len(data), "chunked": False,
                 "content_length": str(len(data)), "trailers": [], "method": "POST"}

    def gen():
        for off in range(0, len(data), 77777):
            yield data[off:off + 77777]
    c.request("PUT", "/app/upload", body=gen(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    j = json.loads(c.getresponse().read())
    assert j["sha256"] == sha256(data) and j["length"] == len(data)
    assert j["chunked"] is True and j["content_length"] is None and j["method"] == "PUT"
    c.close()
    # Chunk extensions and trailers, by hand.
    out = raw(be, b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n3;a=b\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    j = json.loads(out.partition(b"\r\n\r\n")[2])
    assert j["length"] == 3 and j["sha256"] == sha256(b"abc") and j["trailers"] == [["X-T", "1"]]


def test_echo_headers_and_records(be):
    n0 = be.count
    out = raw(be, b"GET /echo-headers?q=1 HTTP/1.1\r\nHost: h.example\r\nCookie: a=1\r\n"
                  b"cookie: b=2\r\nConnection: close\r\n\r\n")
    j = json.loads(out.partition(b"\r\n\r\n")[2])
    assert j["request_line"] == "GET /echo-headers?q=1 HTTP/1.1"
    assert j["headers"] == [["Host", "h.example"], ["Cookie", "a=1"], ["cookie", "b=2"],
                            ["Connection", "close"]]
    assert be.count == n0 + 1
    rec = be.requests_since(n0)[0]
    assert rec["headers"] == j["headers"] and rec["target"] == "/echo-headers?q=1"
    assert rec["transport"] == "tcp" and rec["body_length"] == 0


def test_unix_socket(be):
    s = socket.socket(socket.AF_UNIX)
    s.connect(be.unix_path)
    s.sendall(b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    assert out.partition(b"\r\n\r\n")[2] == expected_body(1000)
    assert be.requests[-1]["transport"] == "unix"


def test_hang_die_garbage_early_hints(be):
    # /hang: nothing comes back.
    s = socket.create_connection(be.tcp_address, timeout=0.3)
    s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
    assert be.requests[-1]["path"] == "/hang"
    # /die: Content-Length promises more than arrives.
    out = raw(be, b"GET /die/10000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 10000" in head and body == expected_body(5000)
    out = raw(be, b"GET /die-chunked/100000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not out.endswith(b"0\r\n\r\n")
    try:
        raw(be, b"GET /die/10000?rst=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    except ConnectionResetError:
        pass
    # /garbage: malformed head, connection left open.
    s = socket.create_connection(be.tcp_address, timeout=0.3)
    s.sendall(b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 2OO")
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
    out = raw(be, b"GET /early-hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 103 ") and b"\r\n\r\nHTTP/1.1 200 OK" in out


def _ws_open(be, target, key="dGhlIHNhbXBsZSBub25jZQ==", extra=b"", early=b""):
    """A connection that asked target for a WebSocket (and sent early
    after the head at once); (socket, the answer's head, what came after)."""
    s = socket.create_connection(be.tcp_address, timeout=5)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: %s\r\n%s\r\n%s" % (target.encode(), key.encode(), extra,
                                                       early))
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        assert d, got
        got += d
    head, _, rest = got.partition(b"\r\n\r\n")
    return s, head.decode("latin-1"), rest


def _ws_read(s, rest=b""):
    """The next frame's (fin, opcode, payload), and the bytes after it."""
    buf = bytearray(rest)

    def read(n):
        while len(buf) < n:
            d = s.recv(65536)
            assert d, "EOF in a frame"
            buf.extend(d)
        out = bytes(buf[:n])
        del buf[:n]
        return out
    fin, op, payload, masked = backend_mod.ws_read_frame(read)
    assert not masked
    return (fin, op, payload), bytes(buf)


def _until_eof(s):
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d


def test_websocket_endpoint(be):
    """/ws: the RFC 6455 example key gets its accept; messages, a
    fragmented one, a ping and a close are echoed; and the knobs."""
    mask = b"\x01\x02\x03\x04"
    n0 = be.count
    s, head, rest = _ws_open(be, "/app/ws?protocol=chat", extra=b"Origin: https://o.example\r\n")
    assert head.startswith("HTTP/1.1 101 ") and rest == b"", head
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert "Sec-WebSocket-Protocol: chat" in head and "Upgrade: websocket" in head
    big = expected_body(200000)
    s.sendall(backend_mod.ws_frame(1, b"hello", mask=mask) +
              backend_mod.ws_frame(2, big[:70000], fin=False, mask=mask) +
              backend_mod.ws_frame(9, b"p", mask=mask) +
              backend_mod.ws_frame(0, big[70000:], mask=mask))
    frame, rest = _ws_read(s)
    assert frame == (True, 1, b"hello")
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 10, b"p")
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 2, big)
    s.sendall(backend_mod.ws_frame(8, b"\x03\xe8bye", mask=mask))
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 8, b"\x03\xe8bye") and rest == b""
    assert _until_eof(s) == b""      # its FIN after the close
    s.shutdown(socket.SHUT_WR)
    rec = be.wait_for_request(lambda r: r.get("ws_end"), start=n0)
    s.close()
    assert rec["ws_answer"] == 101 and rec["ws_close"] == [1000, "bye"], rec["ws_close"]
    assert [m[:2] for m in rec["ws_messages"]] == [[1, 5], [9, 1], [2, 200000], [8, 5]]
    assert rec["ws_end"] == "eof" and rec["ws_before_answer"] == 0 and not rec["error"]

    # close-after: the backend's close of code 4000
    n0 = be.count
    s, head, rest = _ws_open(be, "/ws?close-after=1")
    s.sendall(backend_mod.ws_frame(1, b"x", mask=mask))
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 1, b"x")
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 8, b"\x0f\xa0close-after")
    s.sendall(backend_mod.ws_frame(8, b"\x0f\xa0", mask=mask))
    assert _until_eof(s) == b""
    s.close()
    rec = be.wait_for_request(lambda r: r.get("ws_end"), start=n0)
    assert rec["ws_close"] == [4000, ""] and rec["ws_end"] == "eof", rec

    # raw: bytes echoed as they come, early ones too, counted before the
    # answer (after ?wait), and a FIN answered with one
    n0 = be.count
    s, head, rest = _ws_open(be, "/ws?raw=1&wait=200&hello=1", early=b"early")
    while len(rest) < 10:
        rest += s.recv(65536)
    s.sendall(b"later")
    s.shutdown(socket.SHUT_WR)
    assert rest + _until_eof(s) == b"helloearlylater"
    s.close()
    rec = be.wait_for_request(lambda r: r.get("ws_end"), start=n0)
    assert rec["ws_before_answer"] == 5 and rec["ws_in"] == 10, rec
    assert rec["ws_data"] == b"earlylater" and rec["ws_end"] == "eof"

    # ticks, then the echo; mute: messages kept, none echoed
    n0 = be.count
    s, head, rest = _ws_open(be, "/ws?tick=10&ticks=2&mute=1")
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 1, b"tick")
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 1, b"tick")
    s.sendall(backend_mod.ws_frame(1, b"unheard", mask=mask) +
              backend_mod.ws_frame(8, b"", mask=mask))
    frame, rest = _ws_read(s, rest)
    assert frame == (True, 8, b"")
    s.close()
    rec = be.wait_for_request(lambda r: r.get("ws_end"), start=n0)
    assert [m[3] for m in rec["ws_messages"]] == [b"unheard", b""], rec["ws_messages"]
    assert rec["ws_close"] == [None, ""] and rec["ws_end_time"] >= rec["time"]

    # raw, reset-after: a reset once that many bytes are echoed
    s, head, rest = _ws_open(be, "/ws?raw=1&reset-after=3", early=b"abc")
    with pytest.raises(ConnectionResetError):
        while len(rest) < 4:
            d = s.recv(65536)
            assert d, rest
            rest += d
    assert rest == b"abc"
    s.close()

    # refused: the answer, then what comes is read, kept and not echoed
    n0 = be.count
    s, head, rest = _ws_open(be, "/ws?refuse=403", early=b"GET /smuggled HTTP/1.1\r\n\r\n")
    assert head.startswith("HTTP/1.1 403 ") and rest == b"refused 403\n", (head, rest)
    s.shutdown(socket.SHUT_WR)
    assert _until_eof(s) == b""
    s.close()
    rec = be.wait_for_request(lambda r: r.get("ws_end"), start=n0)
    assert rec["ws_data"] == b"GET /smuggled HTTP/1.1\r\n\r\n" and be.count == n0 + 1

    for target, want in (("/ws?plain=1", "HTTP/1.1 200 "),
                         ("/ws?bad-accept=1", "HTTP/1.1 101 ")):
        s, head, rest = _ws_open(be, target)
        assert head.startswith(want), head
        assert ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head) is False
        s.close()
    s, head, rest = _ws_open(be, "/ws?no-accept=1&no-upgrade=1")
    assert "Sec-WebSocket-Accept" not in head and "Upgrade: " not in head, head
    s.close()
    # what is not a WebSocket handshake
    s, head, rest = _ws_open(be, "/ws", key="c2hvcnQ=")
    assert head.startswith("HTTP/1.1 400 "), head
    s.close()
    out = raw(be, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out


def test_drop_reused(be):
    """/drop-reused answers on a new connection and closes a used one."""
    s = socket.create_connection(be.tcp_address, timeout=2)
    s.sendall(b"GET /drop-reused HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"answered on a new connection\n"):
        d = s.recv(65536)
        assert d, got
        got += d
    assert got.startswith(b"HTTP/1.1 200 ")
    s.sendall(b"GET /drop-reused HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(65536) == b""
    s.close()
    assert [r["seq_on_conn"] for r in be.requests[-2:]] == [1, 2]


def test_slow(be):
    c = conn(be)
    t = time.monotonic()
    c.request("GET", "/slow/100000?ms=400")
    body = c.getresponse().read()
    assert 0.3 < time.monotonic() - t < 3 and body == expected_body(100000)


def test_bad_requests_get_400(be):
    out = raw(be, b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    out = raw(be, b"NOT A REQUEST\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_failure_helpers():
    r = backend_mod.Refusing()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(r.address, timeout=1)
    r.close()
    bh = backend_mod.BlackHole()
    s = socket.create_connection(bh.address, timeout=1)
    s.settimeout(0.3)
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
    bh.close()
    sd = backend_mod.SynDrop()
    t = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        socket.create_connection(sd.address, timeout=0.5)
    assert time.monotonic() - t >= 0.45
    sd.close()


def test_standalone_backend(tmp_path):
    sock = str(tmp_path / "s.sock")
    # port 0: a port picked beforehand may be taken meanwhile (seen once
    # under ASan, as other tests' connections take ephemeral ports)
    p = subprocess.Popen(["/usr/bin/python3", backend_mod.__file__, "--tcp", "127.0.0.1:0",
                          "--unix", sock], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on tcp 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert "listening on unix" in p.stdout.readline()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/bytes/10")
        assert c.getresponse().read() == expected_body(10)
        assert os.path.exists(sock)
    finally:
        p.terminate()
        assert p.wait(5) == 0


def test_certificate(certificate):
    cert, key = certificate
    text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert "prime256v1" in text and "CN = localhost" in text
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    # The key belongs to the certificate.
    pub_c = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                           check=True, capture_output=True).stdout
    pub_k = subprocess.run(["openssl", "pkey", "-in", key, "-pubout"],
                           check=True, capture_output=True).stdout
    assert pub_c == pub_k


def test_client_tools_present():
    require_pycurl_h3()
    from helpers import gtlsclient_binary
    out = subprocess.run([gtlsclient_binary(), "--help"], capture_output=True, text=True)
    for flag in ("--exit-on-all-streams-close", "--download", "--no-quic-dump"):
        assert flag in out.stdout + out.stderr


def test_render_config():
    text = render_config([("global", [("log_level", "debug")]),
                          ("backend app", [("server", "127.0.0.1:1")])])
    assert text.splitlines() == ["[global]", "log_level = debug", "", "[backend app]",
                                 "server = 127.0.0.1:1"]
    assert text.endswith("\n")


def test_readiness_is_an_answer_from_the_instance_started(qp, workdir, certificate):
    """qproxy_factory picks a free UDP port, and qproxy binds it once its
    configuration is read: under ASan, 30 s and more for test_qproxyctl's
    8,000 servers. Another worker's qproxy or relay could take the port
    meanwhile and answer the readiness probe; the test went on with a
    qproxy that never bound it, and qproxyctl found no control socket.
    Here the port is the shared qproxy's: the one started cannot bind it,
    and is not taken for ready."""
    cert, key = certificate
    q = QProxy(qproxy_binary(), workdir, "port-of-another",
               [_global_section(), _listener_section(qp.port, cert, key),
                ("backend app", [("server", "127.0.0.1:1")]),
                ("route app", [("path_prefix", "/app/"), ("backend", "app")])],
               qp.port)
    try:
        assert q.start(port_taken_ok=True) is None, q.log_tail()
        assert "Address already in use" in q.log_text()
    finally:
        q.kill()


def test_bench_set_takes_the_place_of_the_benchs_own_line(tmp_path, certificate):
    """bench/run.py --set 'KEY = VALUE' measures a setting: a key that the
    bench's [global] sets already (stream_window, say) replaces that line,
    where it came as a second line that qproxy -t refuses, and every run of
    qproxy failed. A key qproxy does not know is refused. --unix-backend has
    both servers reach nginx by its Unix socket."""
    spec = importlib.util.spec_from_file_location("bench_run",
                                                  os.path.join(TOP, "bench", "run.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cert, key = certificate

    def command(kind, sets=(), unix=False):
        env = types.SimpleNamespace(dir=str(tmp_path), cert=cert, key=key, nginx_port=1,
                                    nginx_sock=str(tmp_path / "nginx.sock"),
                                    qproxy=qproxy_binary(), nghttpx="nghttpx",
                                    args=types.SimpleNamespace(set=sets, unix_backend=unix))
        return bench.Server(env, kind, bench.workloads(1, True)[0], 1).command()

    def config(*sets, unix=False):
        cmd = command(bench.QPROXY, sets, unix)
        with open(cmd[cmd.index("-c") + 1]) as f:
            return f.read()

    def conf(*sets):
        return config(*sets).split("\n[listener")[0].splitlines()

    lines = conf()
    assert "stream_window = 256k" in lines and "max_streams_bidi = 100" in lines, lines
    lines = conf("stream_window = 128k", "batch_delay=1ms")
    assert [x for x in lines if x.startswith("stream_window")] == ["stream_window = 128k"], lines
    assert "batch_delay = 1ms" in lines and "max_streams_bidi = 100" in lines, lines
    with pytest.raises(bench.StartError, match="no_such_key"):
        conf("no_such_key = 1")
    # --unix-backend: the server line names nginx's Unix socket
    assert "\nserver = 127.0.0.1:1\n" in config()
    assert "\nserver = unix:%s\n" % (tmp_path / "nginx.sock") in config(unix=True)
    for unix, backend in ((False, "127.0.0.1,1"), (True, "unix:%s" % (tmp_path / "nginx.sock"))):
        cmd = command(bench.NGHTTPX, unix=unix)
        assert cmd[cmd.index("-b") + 1] == backend, cmd
