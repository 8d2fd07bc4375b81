"""compress = gzip: response bodies given gzip (RFC 9110 8.4.1.3) for the
clients that take it (Accept-Encoding, RFC 9110 12.5.3), with the head
changed to say so (Content-Encoding, Vary, a weak ETag, no Content-Length
or Accept-Ranges), and only for what may be: the media types of
compress_types, not encoded already, no range, not no-transform, not a
HEAD's. A scripted backend answers with the exact bytes a test chose;
libcurl decodes what it asked for itself, and Python's gzip module reads
the raw bytes of the others."""

import gzip
import json
import os
import subprocess
import threading
import time

import pycurl
import pytest

import backend as backend_mod
from test_ops import _whole_lines
from test_responses import _answer
from helpers import (SLOW, _preload, app_sections, background_get, expected_body, h3_get, h3raw_binary,
                     h3_head, h3_parallel, qproxy_stats, sendshim_library, wait_until)


def _text(n):
    """n bytes of a page, which compresses as text does."""
    lines = b"".join(b"<tr><td>%d</td><td>row %d of the table</td><td>%x</td></tr>\n" %
                     (i, i * 7919 % 10007, i * i) for i in range(n // 40 + 1))
    return lines[:n]


TEXT = _text(100000)
AE = ["Accept-Encoding: gzip"]


def _head(status="200 OK", ctype="text/html; charset=utf-8", length=None, extra=()):
    lines = ["HTTP/1.1 " + status]
    if ctype is not None:
        lines.append("Content-Type: " + ctype)
    if length is not None:
        lines.append("Content-Length: %d" % length)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(body, pieces=7, trailers=()):
    out, step = b"", max(1, len(body) // pieces)
    for off in range(0, len(body), step):
        piece = body[off:off + step]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"


@pytest.fixture
def scripted():
    answers = {}

    def script(line, conn, seq):
        steps = answers[line.split(" ")[1]]
        return steps() if callable(steps) else steps
    sb = backend_mod.Scripted(script)
    sb.answers = answers
    yield sb
    sb.close()


def _proxy(qproxy_factory, scripted, glob=(("compress", "gzip"),), app_route=(),
           routes=()):
    q = qproxy_factory(sections=app_sections(scripted.server, glob=list(glob),
                                             app_route=list(app_route), routes=list(routes)))
    q.sb = scripted
    return q


@pytest.fixture
def gz(qproxy_factory, scripted):
    return _proxy(qproxy_factory, scripted)


def _compress_stats(q):
    return qproxy_stats(q)["compress"]


def test_gzip_body_and_head(gz):
    """A page with a length, a strong ETag and Accept-Ranges, to a client
    that takes gzip: gzip's bytes, which decode to the page; the head says
    Content-Encoding: gzip and Vary: Accept-Encoding, drops the length and
    Accept-Ranges (they were the page's), and weakens the ETag."""
    _answer(gz, "/app/page", _head(length=len(TEXT), extra=(
        'ETag: "v1"', "Accept-Ranges: bytes", "Cache-Control: max-age=60")) + TEXT)
    r = h3_get(gz.url("/app/page"), headers=AE)
    assert r.status == 200, r
    assert r.header("content-encoding") == "gzip"
    assert r.header_all("vary") == ["accept-encoding"]
    assert r.header("content-length") is None
    assert r.header("accept-ranges") is None
    assert r.header("etag") == 'W/"v1"'
    assert r.header("cache-control") == "max-age=60"
    assert gzip.decompress(r.body) == TEXT
    assert len(r.body) < len(TEXT) // 2
    c = _compress_stats(gz)
    assert c["responses"] == 1 and c["skipped_memory"] == 0, c
    assert c["bytes_in"] == len(TEXT) and c["bytes_out"] == len(r.body), c
    assert c["memory_bytes"] == 0, c


def test_access_log_has_gzip_bytes(qproxy_factory, scripted, tmp_path):
    """The JSON access log's gzip_bytes: the body's bytes as gzip made
    them (what the client got), beside response_bytes, the backend's; null
    for a body that went as it came."""
    log = tmp_path / "access.json"
    q = _proxy(qproxy_factory, scripted, glob=(("compress", "gzip"), ("access_log", str(log)),
                                               ("access_log_format", "json")))
    _answer(q, "/app/a", _head(length=len(TEXT)) + TEXT)
    _answer(q, "/app/b", _head(length=len(TEXT)) + TEXT)
    r = h3_get(q.url("/app/a"), headers=AE)
    plain = h3_get(q.url("/app/b"))
    assert r.header("content-encoding") == "gzip" and plain.body == TEXT

    def entries():
        return {e["path"]: e for e in map(json.loads, _whole_lines(log))}
    wait_until(lambda: "/app/b" in entries(), "both access log lines", 5 * SLOW)
    e = entries()
    assert e["/app/a"]["response_bytes"] == len(TEXT), e
    assert e["/app/a"]["gzip_bytes"] == len(r.body) < len(TEXT), e
    assert e["/app/b"]["gzip_bytes"] is None and e["/app/b"]["response_bytes"] == len(TEXT), e


def test_curl_asks_for_it_and_decodes_it(gz):
    """libcurl with every coding it has (gzip, deflate, br, zstd) gets gzip
    and decodes it: a real client's view, on a chunked body of 3 MB."""
    body = _text(3 * 1000 * 1000)
    _answer(gz, "/app/big", _head(extra=("Transfer-Encoding: chunked",)) +
            _chunked(body, pieces=50))
    r = h3_get(gz.url("/app/big"), accept_encoding="")
    assert r.status == 200 and r.header("content-encoding") == "gzip", r
    assert r.body == body
    c = _compress_stats(gz)
    assert c["responses"] == 1 and c["bytes_in"] == len(body), c
    assert c["bytes_out"] < len(body) // 2, c


def test_bytes_that_do_not_compress(gz):
    """Bytes that do not compress (the test pattern) come out whole all the
    same, gzip's a little longer."""
    body = expected_body(1000 * 1000)
    _answer(gz, "/app/rand", _head(length=len(body)) + body)
    r = h3_get(gz.url("/app/rand"), accept_encoding="gzip")
    assert r.header("content-encoding") == "gzip" and r.body == body
    c = _compress_stats(gz)
    assert c["bytes_in"] == len(body) < c["bytes_out"], c


@pytest.mark.parametrize("fields, taken", [
    (["Accept-Encoding: gzip"], True),
    (["Accept-Encoding: GZIP"], True),
    (["Accept-Encoding: x-gzip"], True),
    (["Accept-Encoding: br, gzip;q=0.5"], True),
    (["Accept-Encoding: gzip ; q=0.001"], True),
    (["Accept-Encoding: gzip;q=1.000"], True),
    (["Accept-Encoding: *"], True),
    (["Accept-Encoding: deflate, *;q=0.1"], True),
    (["Accept-Encoding: br", "Accept-Encoding: gzip"], True),
    (["Accept-Encoding: gzip;q=0"], False),
    (["Accept-Encoding: gzip;q=0.000"], False),
    (["Accept-Encoding: *;q=0"], False),
    (["Accept-Encoding: gzip;q=0, *"], False),
    (["Accept-Encoding: identity"], False),
    (["Accept-Encoding: br, zstd"], False),
    (["Accept-Encoding: gzipx"], False),
    (["Accept-Encoding: gzip;q=1.5"], False),
    (["Accept-Encoding: gzip;q=0.5x"], False),
    (["Accept-Encoding: gzip;level=9"], False),
    (["Accept-Encoding:"], False),
    ([], False),
])
def test_accept_encoding(gz, fields, taken):
    """RFC 9110 12.5.3: gzip (or x-gzip) with a weight above 0, or "*" above
    0 with gzip not named; an element with a malformed weight counts for
    nothing. Either way the response says it varies by Accept-Encoding."""
    _answer(gz, "/app/p", _head(length=len(TEXT)) + TEXT)
    r = h3_get(gz.url("/app/p"), headers=fields)
    assert r.status == 200, r
    assert r.header_all("vary") == ["accept-encoding"]
    if taken:
        assert r.header("content-encoding") == "gzip", r.headers
        assert gzip.decompress(r.body) == TEXT
    else:
        assert r.header("content-encoding") is None, r.headers
        assert r.header("content-length") == str(len(TEXT))
        assert r.body == TEXT


@pytest.mark.parametrize("vary, expected", [
    ("Accept-Encoding", ["Accept-Encoding"]),
    ("Cookie, accept-encoding", ["Cookie, accept-encoding"]),
    ("*", ["*"]),
    ("Origin", ["Origin", "accept-encoding"]),
])
def test_vary_added_once(gz, vary, expected):
    """The backend's Vary stays; accept-encoding is added when it does not
    list it (or "*") already."""
    _answer(gz, "/app/v", _head(length=len(TEXT), extra=("Vary: " + vary,)) + TEXT)
    r = h3_get(gz.url("/app/v"), headers=AE)
    assert r.header_all("vary") == expected
    assert gzip.decompress(r.body) == TEXT


def test_weak_etag_stays_as_it_is(gz):
    _answer(gz, "/app/w", _head(length=len(TEXT), extra=('ETag: W/"x"',)) + TEXT)
    r = h3_get(gz.url("/app/w"), headers=AE)
    assert r.header("etag") == 'W/"x"' and r.header("content-encoding") == "gzip"


@pytest.mark.parametrize("why, head", [
    ("a type not listed", _head(ctype="image/png", length=len(TEXT))),
    ("no type", _head(ctype=None, length=len(TEXT))),
    ("encoded already", _head(length=len(TEXT), extra=("Content-Encoding: br",))),
    ("no-transform", _head(length=len(TEXT), extra=("Cache-Control: public, no-transform",))),
    ("a range", _head(status="206 Partial Content", length=len(TEXT),
                      extra=("Content-Range: bytes 0-99999/200000",))),
    ("event stream", _head(ctype="text/event-stream", length=len(TEXT))),
    ("a digest of its bytes", _head(length=len(TEXT), extra=(
        "Content-Digest: sha-256=:y5XxK1G1XVbdFim57q6i/pDzBigUq8Xl0F6GbB1w3tc=:",))),
    ("a digest of its representation", _head(length=len(TEXT), extra=(
        "Repr-Digest: sha-256=:y5XxK1G1XVbdFim57q6i/pDzBigUq8Xl0F6GbB1w3tc=:",))),
    ("an MD5", _head(length=len(TEXT), extra=("Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",))),
])
def test_not_for_these(gz, why, head):
    """A response that may not be given gzip goes as it came, with no Vary
    added: the client's Accept-Encoding chose nothing."""
    _answer(gz, "/app/n", head + TEXT)
    r = h3_get(gz.url("/app/n"), headers=AE)
    assert r.header("content-encoding") in (None, "br"), (why, r.headers)
    assert r.header_all("vary") == [], why
    assert r.header("content-length") == str(len(TEXT)), why
    assert r.body == TEXT, why
    assert _compress_stats(gz)["responses"] == 0


@pytest.mark.parametrize("ctype, taken", [
    ("application/json", True),
    ("Application/JSON ; charset=utf-8", True),
    ("application/ld+json", True),
    ("application/problem+xml", True),
    ("image/svg+xml", True),
    ("application/+json", False),
    ("application/jsonx", False),
    ("text/event-stream", False),
])
def test_default_types(gz, ctype, taken):
    """compress_types' default: text that compresses, any type ending in
    +json or +xml (a subtype before the suffix), SVG; not event streams."""
    _answer(gz, "/app/t", _head(ctype=ctype, length=len(TEXT)) + TEXT)
    r = h3_get(gz.url("/app/t"), headers=AE)
    assert (r.header("content-encoding") == "gzip") == taken, r.headers
    assert (gzip.decompress(r.body) if taken else r.body) == TEXT


def test_types_and_min_length_set(qproxy_factory, scripted):
    """compress_types names the types; a body shorter than
    compress_min_length goes as it is (its length told), one of unknown
    length is given gzip."""
    q = _proxy(qproxy_factory, scripted, glob=(
        ("compress", "gzip"), ("compress_types", "text/* Application/Vnd.Custom"),
        ("compress_min_length", "1k")))
    small = TEXT[:1000]
    _answer(q, "/app/small", _head(length=len(small)) + small)
    _answer(q, "/app/custom", _head(ctype="application/vnd.custom", length=len(TEXT)) + TEXT)
    _answer(q, "/app/json", _head(ctype="application/json", length=len(TEXT)) + TEXT)
    _answer(q, "/app/chunked", _head(ctype="text/csv", extra=("Transfer-Encoding: chunked",)) +
            _chunked(small))
    r = h3_get(q.url("/app/small"), headers=AE)
    assert r.header("content-encoding") is None and r.body == small
    r = h3_get(q.url("/app/custom"), headers=AE)
    assert r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == TEXT
    r = h3_get(q.url("/app/json"), headers=AE)
    assert r.header("content-encoding") is None and r.body == TEXT
    r = h3_get(q.url("/app/chunked"), headers=AE)
    assert r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == small
    assert _compress_stats(q)["responses"] == 2


def test_head_is_not_given_it(gz):
    """A HEAD's response keeps its length (nginx does the same) and says it
    varies."""
    _answer(gz, "/app/h", _head(length=len(TEXT)))
    r = h3_head(gz.url("/app/h"), headers=AE)
    assert r.status == 200 and r.header("content-encoding") is None
    assert r.header("content-length") == str(len(TEXT))
    assert r.header_all("vary") == ["accept-encoding"]


def test_chunked_with_trailers(gz):
    """A chunked body's trailer section still comes after gzip's last
    bytes."""
    _answer(gz, "/app/tr", _head(extra=("Transfer-Encoding: chunked", "Trailer: X-Sum")) +
            _chunked(TEXT, trailers=("X-Sum: abc",)))
    r = h3_get(gz.url("/app/tr"), headers=AE)
    assert r.header("content-encoding") == "gzip", r.headers
    assert gzip.decompress(r.body) == TEXT
    assert ("x-sum", "abc") in r.trailers, r.trailers


def test_length_beside_chunked_is_not_the_length(gz):
    """Transfer-Encoding: chunked overrides a Content-Length (RFC 9112
    6.3): the length, short as it is, does not keep the body from gzip."""
    _answer(gz, "/app/tecl", _head(length=5, extra=("Transfer-Encoding: chunked",)) +
            _chunked(TEXT))
    r = h3_get(gz.url("/app/tecl"), headers=AE)
    assert r.header("content-encoding") == "gzip", r.headers
    assert gzip.decompress(r.body) == TEXT


def test_body_to_the_close(gz):
    """A body that ends where the backend closes its connection."""
    _answer(gz, "/app/c", _head(extra=("Connection: close",)) + TEXT, None)
    r = h3_get(gz.url("/app/c"), headers=AE)
    assert r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == TEXT


def test_empty_chunked_body(gz):
    _answer(gz, "/app/e", _head(extra=("Transfer-Encoding: chunked",)) + b"0\r\n\r\n")
    r = h3_get(gz.url("/app/e"), headers=AE)
    assert r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == b""


@pytest.mark.parametrize("size", [5000, 30000])
def test_what_came_is_not_held_back(gz, size):
    """A backend that sends part of a body and waits: the client gets that
    part (decoded, whole) while the backend still holds the rest; gzip does
    not keep it back until more comes. 5000 bytes: read with the head,
    then the backend's socket is found empty; 30000: more than one read
    takes in a turn of the loop (16 KiB), so the turn ends before it is
    found empty."""
    first, rest = TEXT[:size], TEXT[size:]
    reached = threading.Event()

    def steps():
        yield _head(extra=("Transfer-Encoding: chunked",)) + b"%x\r\n%s\r\n" % (len(first), first)
        reached.wait(10 * SLOW)
        yield _chunked(rest)
    gz.sb.answers["/app/s"] = steps
    t, out, progress, got = background_get(gz.url("/app/s"), len(first),
                                           accept_encoding="gzip")
    assert got.wait(8 * SLOW), progress
    arrived = progress["bytes"]
    reached.set()
    t.join(30)
    assert arrived == len(first), arrived
    r = out["r"]
    assert r.header("content-encoding") == "gzip" and r.body == TEXT


def test_route_decides(qproxy_factory, scripted):
    """A route's compress takes the place of [global]'s."""
    q = _proxy(qproxy_factory, scripted, glob=(), app_route=(("compress", "gzip"),),
               routes=[("route plain", [("path_prefix", "/plain/"), ("backend", "app")]),
                       ("route off", [("path_prefix", "/off/"), ("backend", "app"),
                                      ("compress", "off")])])
    for path in ("/app/x", "/plain/x", "/off/x"):
        _answer(q, path, _head(length=len(TEXT)) + TEXT)
    assert h3_get(q.url("/app/x"), headers=AE).header("content-encoding") == "gzip"
    r = h3_get(q.url("/plain/x"), headers=AE)
    assert r.header("content-encoding") is None and r.header_all("vary") == []
    q2 = _proxy(qproxy_factory, scripted, routes=[
        ("route off", [("path_prefix", "/off/"), ("backend", "app"), ("compress", "off")])])
    assert h3_get(q2.url("/app/x"), headers=AE).header("content-encoding") == "gzip"
    r = h3_get(q2.url("/off/x"), headers=AE)
    assert r.header("content-encoding") is None and r.body == TEXT


def test_memory_is_bounded(qproxy_factory, scripted):
    """compress_memory_total: streams begin while their memory fits; the
    others' bodies go as they are (skipped_memory), and every client gets
    its body whole. A body of unknown length takes zlib's largest window
    (about 268 KB), so three fit in 1 MiB, not six; the memory is let go
    at each body's end."""
    q = _proxy(qproxy_factory, scripted, glob=(("compress", "gzip"),
                                               ("compress_memory_total", "1m")))
    release = threading.Event()

    def steps():
        yield _head(extra=("Transfer-Encoding: chunked",)) + b"%x\r\n%s\r\n" % (1000, TEXT[:1000])
        release.wait(20 * SLOW)
        yield _chunked(TEXT[1000:])
    q.sb.answers["/app/m"] = steps
    results = []
    t = threading.Thread(target=lambda: results.extend(h3_parallel(
        [q.url("/app/m")] * 6, headers=AE, timeout=30 * SLOW)))
    t.start()
    try:
        wait_until(lambda: len(q.sb.heads) == 6, "six requests at the backend", 10 * SLOW)
        wait_until(lambda: _compress_stats(q)["skipped_memory"] == 3, "three skipped",
                   5 * SLOW)
        c = _compress_stats(q)
        assert c["responses"] == 3, c
        assert 3 * 256 * 1024 < c["memory_bytes"] <= 1024 * 1024, c
    finally:
        release.set()
        t.join(40 * SLOW)
    assert len(results) == 6
    for r in results:
        assert r.error is None and r.status == 200, r
        body = gzip.decompress(r.body) if r.header("content-encoding") == "gzip" else r.body
        assert body == TEXT
    assert sum(r.header("content-encoding") == "gzip" for r in results) == 3
    assert _compress_stats(q)["memory_bytes"] == 0


def test_window_fits_a_short_body(gz):
    """A body of known length gets a window no larger than it: a 2,000-byte
    page held mid-body takes well under zlib's 268 KB."""
    release = threading.Event()
    page = TEXT[:2000]

    def steps():
        yield _head(length=len(page)) + page[:1000]
        release.wait(10 * SLOW)
        yield page[1000:]
    gz.sb.answers["/app/short"] = steps
    t, out, _, _ = background_get(gz.url("/app/short"), len(page), headers=AE)
    try:
        wait_until(lambda: _compress_stats(gz)["responses"] == 1, "the stream begun",
                   5 * SLOW)
        mem = _compress_stats(gz)["memory_bytes"]
        assert 0 < mem < 40000, mem
    finally:
        release.set()
        t.join(20 * SLOW)
    assert gzip.decompress(out["r"].body) == page


def test_backend_dies_mid_body(gz):
    """A body cut short is reset, as without gzip (never a gzip stream that
    looks complete), and its stream's memory goes."""
    _answer(gz, "/app/d", _head(length=len(TEXT)) + TEXT[:50000], None)
    with pytest.raises(pycurl.error):
        h3_get(gz.url("/app/d"), headers=AE)
    wait_until(lambda: _compress_stats(gz)["memory_bytes"] == 0, "memory let go", 5 * SLOW)


def test_budget_taking_the_last_byte_holds_nothing(gz):
    """The backend sends EX_GZIP_BUDGET of body at once (four reads of
    16 KiB) and pauses: the read that reaches the budget took the last
    byte, so the watcher does not fire again until the backend sends more;
    what gzip holds goes out all the same (a read next turn finds the
    socket empty)."""
    body = TEXT * 2
    first = body[:4 * 16384]
    reached = threading.Event()

    def steps():
        yield _head(length=len(body))
        yield 0.3
        yield first
        reached.wait(10 * SLOW)
        yield body[len(first):]
    gz.sb.answers["/app/b"] = steps
    t, out, progress, got = background_get(gz.url("/app/b"), len(first),
                                           accept_encoding="gzip")
    ok = got.wait(4 * SLOW)
    arrived = progress["bytes"]
    reached.set()
    t.join(30)
    assert ok and arrived == len(first), arrived
    assert out["r"].body == body


def test_stop_for_room_then_pause_holds_nothing(gz):
    """A client that reads nothing for a while (h3raw --hold): qproxy reads
    the backend until response_buffer_size is held and stops. Here the
    read that filled it took the backend's last byte (incompressible bytes,
    so that where it stops is known: 276,480 of them); once the client has
    taken all that was queued, what gzip holds goes out too, though the
    backend is still pausing and its socket never becomes readable."""
    s = 276480
    body = expected_body(s + 50000)
    release = threading.Event()

    def steps():
        yield _head(ctype="text/plain", length=len(body))
        yield 0.3
        yield body[:s]
        release.wait(20 * SLOW)
        yield body[s:]
    gz.sb.answers["/app/f"] = steps
    p = subprocess.Popen([h3raw_binary(), "-t", str(30 * SLOW), "-n", "1", "--hold", "2",
                          "-H", ":method: GET", "-H", ":scheme: https",
                          "-H", ":authority: localhost", "-H", ":path: /app/f",
                          "-H", "accept-encoding: gzip", "127.0.0.1", str(gz.port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _compress_stats(gz)["bytes_in"] == s, "all read", 10 * SLOW)
        wait_until(lambda: qproxy_stats(gz)["buffers"]["response_bytes"] == 0,
                   "all taken", 15 * SLOW)
        time.sleep(0.5)
        c = _compress_stats(gz)
    finally:
        release.set()
        out, err = p.communicate(timeout=60 * SLOW)
    # the bytes do not compress: all of them out is more than came in
    assert c["bytes_out"] > c["bytes_in"] == s, c
    assert p.returncode == 0, (out, err)


@pytest.mark.parametrize("set_vary, expected", [
    ("Origin", ["accept-encoding", "Origin"]),
    ("", ["accept-encoding"]),
    ("Cookie, Accept-Encoding", ["Cookie, Accept-Encoding"]),
])
def test_vary_after_set_response_header(qproxy_factory, scripted, set_vary, expected):
    """A route whose set_response_header sets Vary (or removes it, empty)
    replaces the backend's, which listed accept-encoding: the gzip body
    still goes with a Vary that lists it, or caches would give it to
    clients that do not take gzip."""
    q = _proxy(qproxy_factory, scripted, app_route=(("set_response_header", "Vary: " + set_vary),))
    _answer(q, "/app/v", _head(length=len(TEXT), extra=("Vary: Accept-Encoding",)) + TEXT)
    r = h3_get(q.url("/app/v"), headers=AE)
    assert r.header("content-encoding") == "gzip"
    assert r.header_all("vary") == expected, r.headers
    assert gzip.decompress(r.body) == TEXT


def test_flush_without_memory_is_one_reset(qproxy_factory, scripted, tmp_path):
    """The flush when the backend pauses (EAGAIN) fails for memory
    (gznomem.so): the stream is reset once, as out of memory; the read's
    EAGAIN is not then taken for the backend's failure (errno is the
    failed allocation's by then), which would reset it again, count the
    server failed and log a body cut short."""
    q = qproxy_factory(sections=app_sections(scripted.server, glob=[("compress", "gzip")]),
                       start=False)
    flag = tmp_path / "gznomem"
    _preload(q, "gznomem", os.path.join(os.path.dirname(sendshim_library()), "gznomem.so"),
             GZNOMEM_FILE=str(flag))
    q.start()
    q.sb = scripted

    def steps():
        yield _head(extra=("Transfer-Encoding: chunked",)) + b"%x\r\n%s\r\n" % (5000, TEXT[:5000])
        yield 2 * SLOW
        yield _chunked(TEXT[5000:])
    scripted.answers["/app/n"] = steps
    flag.write_text("")
    with pytest.raises(pycurl.error):
        h3_get(q.url("/app/n"), headers=AE, timeout=10 * SLOW)
    flag.unlink()
    s = qproxy_stats(q)
    assert s["requests"]["reset"] == 1, s["requests"]
    app = [b for b in s["backends"] if b["name"] == "app"][0]
    assert app["servers"][0]["failures"] == 0, app
    assert "middle of a response body" not in q.log_text()
    wait_until(lambda: _compress_stats(q)["memory_bytes"] == 0, "memory let go", 5 * SLOW)
