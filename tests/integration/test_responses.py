"""A backend's HTTP/1.x responses, byte for byte, against RFC 9112 (framing),
RFC 9110 (status codes, Content-Length) and RFC 9114 4.2 (what an HTTP/3
client may not be sent): a scripted backend answers each request with the
bytes a test chose, and records on which connection each request came,
so that whether a connection was used again is seen too. Cases the parser
alone decides are in tests/unit/test_http1.c; those of test_proxy.py
(/head, /garbage, /hop, /extra, trailers) are not repeated here."""

import pycurl
import pytest

import backend as backend_mod
from helpers import SLOW, h3_get, h3_head, h3_post

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def scripted():
    """A Scripted backend answering /app/ok with OK and each path of its
    answers dict with that dict's steps."""
    answers = {}

    def script(line, conn, seq):
        path = line.split(" ")[1]
        return answers.get(path, [OK])
    sb = backend_mod.Scripted(script)
    sb.answers = answers
    yield sb
    sb.close()


@pytest.fixture
def sq(qproxy_factory, scripted):
    q = qproxy_factory(backend_server=scripted.server)
    q.sb = scripted
    return q


def _conn(q, path):
    """The backend connection of the last request for path."""
    return [c for c, _, line in q.sb.heads if line.split(" ")[1] == path][-1]


def _then_ok(q, path, reused):
    """A request after path's goes on the same connection exactly when
    reused, and gets its own response."""
    r = h3_get(q.url("/app/ok"))
    assert (r.status, r.body) == (200, b"ok"), r
    assert (_conn(q, "/app/ok") == _conn(q, path)) == reused, q.sb.heads


def _answer(q, path, *steps):
    q.sb.answers[path] = list(steps)


# ---------------------------------------------------------------- framing

def test_transfer_encoding_with_content_length_is_chunked_and_not_reused(sq):
    """RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and the
    connection is closed after, as the message may be an attempt at
    smuggling. The client gets no Content-Length."""
    _answer(sq, "/app/te-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    r = h3_get(sq.url("/app/te-cl"))
    assert (r.status, r.body) == (200, b"hello")
    assert r.header_all("content-length") == [] and r.header_all("transfer-encoding") == []
    _then_ok(sq, "/app/te-cl", reused=False)


@pytest.mark.parametrize("head", [
    b"Content-Length: 5\r\nContent-Length: 6",
    b"Content-Length: 5, 6",
    b"Content-Length: +5",
    b"Content-Length: 5 5",
    b"Content-Length: 18446744073709551621",
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    b"X-Folded: a\r\n b\r\nContent-Length: 5",
    b"X-Space : a\r\nContent-Length: 5",
    b"Content-Length : 5",
], ids=["cl-two", "cl-list-differs", "cl-sign", "cl-space-inside", "cl-over-64-bits",
        "te-chunked-not-last", "te-chunked-twice", "obs-fold", "space-before-colon",
        "cl-space-before-colon"])
def test_ambiguous_framing_or_field_is_502_and_the_connection_closed(sq, head):
    """Anything two HTTP/1.1 parsers could read differently is refused
    (502), never guessed at, and that connection is not used again."""
    _answer(sq, "/app/bad", b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\nhello")
    r = h3_get(sq.url("/app/bad"))
    assert r.status == 502 and b"hello" not in r.body, r
    _then_ok(sq, "/app/bad", reused=False)


@pytest.mark.parametrize("line", [b"HTTP/1.1 099 Low", b"HTTP/1.1 600 High",
                                  b"HTTP/1.1 200 O\x7fK", b"HTTP/1.1 101 Switching Protocols"],
                         ids=["099", "600", "reason-del", "101-unasked"])
def test_status_line_out_of_bounds_is_502(sq, line):
    """A code outside 100 to 599 (RFC 9110 15), a reason with a control
    character, and a 101 to a request that asked for no upgrade (qproxy
    never passes one on: RFC 9110 7.8) are malformed responses."""
    _answer(sq, "/app/bad", line + b"\r\nContent-Length: 2\r\n\r\nok")
    r = h3_get(sq.url("/app/bad"))
    assert r.status == 502, r
    _then_ok(sq, "/app/bad", reused=False)


def test_http10_keep_alive_without_a_length_ends_at_the_close(sq):
    """An HTTP/1.0 response without a length is delimited by the close,
    whatever its Connection says (RFC 9112 6.3 item 8): the client gets it
    all, its end at the backend's FIN, and no Connection or Keep-Alive."""
    _answer(sq, "/app/10", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\n\r\nhello", 0.2, b" world", None)
    r = h3_get(sq.url("/app/10"))
    assert (r.status, r.body) == (200, b"hello world"), r
    names = {n for n, _ in r.headers}
    assert not names & {"connection", "keep-alive", "content-length"}, r.headers
    _then_ok(sq, "/app/10", reused=False)


def test_http10_keep_alive_with_a_length_is_reused(sq):
    _answer(sq, "/app/10", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
            b"Content-Length: 5\r\n\r\nhello")
    r = h3_get(sq.url("/app/10"))
    assert (r.status, r.body) == (200, b"hello"), r
    _then_ok(sq, "/app/10", reused=True)


def test_http10_without_keep_alive_is_not_reused(sq):
    _answer(sq, "/app/10", b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    r = h3_get(sq.url("/app/10"))
    assert (r.status, r.body) == (200, b"hello"), r
    _then_ok(sq, "/app/10", reused=False)


def test_http10_chunked_is_read_and_not_reused(sq):
    """Transfer-Encoding in an HTTP/1.0 response is faulty framing (RFC 9112
    6.1): the body is read as chunked, and the connection closed after,
    whatever its Connection and Content-Length say."""
    _answer(sq, "/app/10", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    r = h3_get(sq.url("/app/10"))
    assert (r.status, r.body) == (200, b"hello"), r
    _then_ok(sq, "/app/10", reused=False)


# ---------------------------------------------------------------- chunked

def test_chunk_extensions_and_leading_zeros(sq):
    """Chunk extensions, quoted strings with ';' and escaped quotes in them
    too, are ignored (RFC 9112 7.1.1); a chunk size may have leading zeros.
    The connection is used again."""
    _answer(sq, "/app/ext", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;a=\"x;y\\\"z\";b ; c=d\r\nhello\r\n"
            b"00000000000000000000000000000003\r\nabc\r\n0;last\r\n\r\n")
    r = h3_get(sq.url("/app/ext"))
    assert (r.status, r.body) == (200, b"helloabc"), r
    _then_ok(sq, "/app/ext", reused=True)


@pytest.mark.parametrize("body", [
    b"10000000000000000\r\n",                       # 2^64: too large
    b"5\r\nhelloX\r\n0\r\n\r\n",                    # no CRLF after the data
    b"5\nhello\n0\n\n",                             # bare LF
    b"5\r\nhello\r\n0\r\nX-Folded: a\r\n b\r\n\r\n",  # obs-fold in the trailers
    b"5\r\nhello\r\n",                              # cut before the last chunk
], ids=["size-too-large", "no-crlf-after-data", "bare-lf", "trailer-obs-fold", "cut"])
def test_bad_chunked_framing_resets_the_stream(sq, body):
    """A chunked body whose framing is wrong, or that the close cuts short,
    resets the stream (the client never gets a truncated body that looks
    whole), and its connection is not used again."""
    steps = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body]
    if body.endswith(b"hello\r\n"):
        steps.append(None)
    _answer(sq, "/app/bad", *steps)
    with pytest.raises(pycurl.error):
        h3_get(sq.url("/app/bad"), timeout=10 * SLOW)
    _then_ok(sq, "/app/bad", reused=False)


def test_trailers_the_client_may_not_get_are_dropped(sq):
    """RFC 9114 4.2: fields of the connection, and of the framing, in a
    trailer section make an HTTP/3 message malformed; those the head's and
    not the trailer section's Connection names are dropped too."""
    _answer(sq, "/app/tr", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: X-Head-Hop\r\n\r\n5\r\nhello\r\n0\r\n"
            b"Connection: close\r\nKeep-Alive: timeout=1\r\nProxy-Connection: close\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\nUpgrade: h2c\r\n"
            b"TE: trailers\r\nX-Head-Hop: 1\r\nX-Kept: yes\r\n\r\n")
    r = h3_get(sq.url("/app/tr"))
    assert (r.status, r.body) == (200, b"hello"), r
    assert r.trailers == [("x-kept", "yes")], r.trailers


# ---------------------------------------------------------------- no body

def test_head_response_has_its_length_and_no_body(sq):
    """A response to HEAD ends at its head (RFC 9112 6.3): its
    Content-Length goes to the client, no body is waited for, and the
    connection is used again."""
    _answer(sq, "/app/h", b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
    r = h3_head(sq.url("/app/h"), timeout=5 * SLOW)
    assert (r.status, r.body) == (200, b""), r
    assert r.header_all("content-length") == ["5000"]
    assert _conn(sq, "/app/h") == 1 and sq.sb.heads[-1][2].startswith("HEAD ")
    _then_ok(sq, "/app/h", reused=True)


def test_head_response_with_a_body_anyway_is_not_reused(sq):
    _answer(sq, "/app/h", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    r = h3_head(sq.url("/app/h"), timeout=5 * SLOW)
    assert (r.status, r.body) == (200, b""), r
    _then_ok(sq, "/app/h", reused=False)


@pytest.mark.parametrize("code", [204, 304])
def test_no_content_response_with_a_body_anyway_is_not_reused(sq, code):
    """The body a 204 or 304 cannot have (RFC 9112 6.3) never reaches the
    client, and its connection is not used again."""
    _answer(sq, "/app/nc", b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello" % code)
    r = h3_get(sq.url("/app/nc"))
    assert (r.status, r.body) == (code, b""), r
    _then_ok(sq, "/app/nc", reused=False)


# ---------------------------------------------------------------- 1xx

def test_informational_heads_are_passed_on_without_the_connections_fields(sq):
    """100 Continue that no one asked for, and 103 Early Hints, are passed
    on (RFC 9110 15.2: a proxy forwards 1xx responses), without a
    Content-Length (RFC 9110 8.6) or the fields of the connection (RFC 9114
    4.2)."""
    _answer(sq, "/app/info", b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
            b"Content-Length: 5\r\nConnection: X-Info-Hop\r\nX-Info-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n" + OK)
    r = h3_get(sq.url("/app/info"))
    assert (r.status, r.body) == (200, b"ok"), r
    assert [s for s, _ in r.interim] == [100, 103], r.interim
    assert r.interim[1][1] == [("link", "</a.css>; rel=preload")], r.interim
    _then_ok(sq, "/app/info", reused=True)


def test_a_101_after_a_103_is_502(sq):
    _answer(sq, "/app/info", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" + OK)
    r = h3_get(sq.url("/app/info"))
    assert r.status == 502, r
    _then_ok(sq, "/app/info", reused=False)


@pytest.mark.parametrize("head", [b"HTTP/1.1 204 No Content\r\nContent-Length: 9",
                                  b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked"],
                         ids=["content-length", "chunked"])
def test_a_204_that_announces_a_body_is_not_reused(sq, head):
    """A 204 ends at its head whatever it says (RFC 9112 6.3), but one with
    a Content-Length or a Transfer-Encoding, which a server must not send
    on it (RFC 9110 8.6, RFC 9112 6.1), is a server about to send a body:
    when that body came a moment after the head, the connection had gone
    back to the pool, and the next request, sent on it before the body
    came, got that body as its response."""
    body = backend_mod.SMUGGLED
    if b"chunked" in head:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    _answer(sq, "/app/nc", head + b"\r\n\r\n", 0.3 * SLOW, body)
    r = h3_get(sq.url("/app/nc"))
    assert (r.status, r.body) == (204, b""), r
    assert r.header_all("content-length") == []
    _then_ok(sq, "/app/nc", reused=False)


def test_a_close_said_by_a_1xx_is_heeded(sq):
    """RFC 9112 9.6: a client that receives a close MUST send no more
    requests on that connection. A 103 said it and the final head did not:
    the connection went back to the pool, and the POST after it (which
    cannot go again) got 502 when the server closed it as it had said."""
    _answer(sq, "/app/info", b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\n\r\n" + OK,
            0.1 * SLOW, None)
    r = h3_get(sq.url("/app/info"))
    assert (r.status, r.body) == (200, b"ok") and [s for s, _ in r.interim] == [103], r
    r = h3_post(sq.url("/app/ok"), b"")
    assert (r.status, r.body) == (200, b"ok"), r
    assert _conn(sq, "/app/ok") != _conn(sq, "/app/info"), sq.sb.heads
