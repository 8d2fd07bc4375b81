"""Requests sent field by field with $H3RAW.

Malformed requests (RFC 9114 4.1.2, 4.2, 4.3) must get their stream reset with
H3_MESSAGE_ERROR (0x10e), the connection must survive, and no backend may see
anything.  Valid requests through the same tool must succeed, which proves the
harness can pass."""

import pytest

from helpers import assert_backends_untouched, backend_counts, h3raw, header_values
from test_ops import stats

H3_MESSAGE_ERROR = "reset 0x10e"


def req(port, method="GET", path="/app/echo-headers", authority=None, extra=()):
    return [":method: %s" % method, ":scheme: https",
            ":authority: %s" % (authority or "127.0.0.1:%d" % port),
            ":path: %s" % path] + list(extra)


def post(port, *extra):
    return req(port, "POST", "/app/upload", extra=extra)


# id -> function(port) -> keyword arguments for h3raw()
MALFORMED = {
    "duplicate-method": lambda p: dict(headers=[":method: GET"] + req(p)),
    "missing-path": lambda p: dict(headers=[h for h in req(p) if not h.startswith(":path")]),
    "empty-path": lambda p: dict(headers=req(p, path="")),
    # a URI is ASCII (RFC 3986 2): raw UTF-8 was forwarded as it came
    "path-not-ascii": lambda p: dict(headers=req(p, path="/app/caf\\xc3\\xa9")),
    "path-with-space": lambda p: dict(headers=req(p, path="/app/a b")),
    "missing-method": lambda p: dict(headers=req(p)[1:]),
    "missing-scheme": lambda p: dict(headers=[h for h in req(p) if not h.startswith(":scheme")]),
    "no-authority-no-host": lambda p: dict(
        headers=[h for h in req(p) if not h.startswith(":authority")]),
    "pseudo-after-regular": lambda p: dict(
        headers=req(p)[:3] + ["x-regular: 1", req(p)[3]]),
    "unknown-pseudo": lambda p: dict(headers=req(p) + [":foo: bar"]),
    "uppercase-name": lambda p: dict(headers=req(p, extra=["X-Upper: 1"])),
    "connection-keep-alive": lambda p: dict(headers=req(p, extra=["connection: keep-alive"])),
    "transfer-encoding-chunked": lambda p: dict(
        headers=req(p, extra=["transfer-encoding: chunked"])),
    "upgrade": lambda p: dict(headers=req(p, extra=["upgrade: websocket"])),
    # RFC 9114 10.3; longer values with a control nghttp3 removes (below)
    "value-one-control-byte": lambda p: dict(headers=req(p, extra=["x-bad: \\x01"])),
    "value-one-del-byte": lambda p: dict(headers=req(p, extra=["x-bad: \\x7f"])),
    "te-gzip": lambda p: dict(headers=req(p, extra=["te: gzip"])),
    "authority-userinfo": lambda p: dict(headers=req(p, authority="user@127.0.0.1:%d" % p)),
    "host-differs-from-authority": lambda p: dict(headers=req(p, extra=["host: other.example"])),
    "content-length-5-no-body": lambda p: dict(headers=post(p, "content-length: 5")),
    "content-length-5-no-body-fin-separate": lambda p: dict(
        headers=post(p, "content-length: 5"), fin_separate=True),
    "content-length-10-body-5": lambda p: dict(headers=post(p, "content-length: 10"), data=5),
    "content-length-5-body-10": lambda p: dict(headers=post(p, "content-length: 5"), data=10),
    "two-content-lengths-differ": lambda p: dict(
        headers=post(p, "content-length: 5", "content-length: 10"), data=5),
    "two-content-lengths-same": lambda p: dict(
        headers=post(p, "content-length: 5", "content-length: 5"), data=5),
}


# Fields RFC 9114 (4.1.2, 10.3) calls malformed too, but which nghttp3 itself
# silently removes from the field section instead (NGHTTP3_ERR_REMOVE_HTTP_HEADER):
# a reset is right, and so is forwarding the request without them.  What must
# never happen is CR, LF, NUL or a bad name reaching the HTTP/1.1 backend.
INVALID_FIELDS = {
    "name-with-space": "x bad: 1",
    "value-with-crlf": "x-bad: a\\r\\nx-injected: 1",
    "value-with-nul": "x-bad: a\\0b",
    "value-with-lf": "x-bad: a\\nx-injected: 1",
    "value-with-control": "x-bad: a\\x01b",
    "value-with-del": "x-bad: a\\x7fb",
}


@pytest.mark.parametrize("case", sorted(INVALID_FIELDS))
def test_invalid_field_characters_never_reach_backend(qp, all_backends, backend_app, case):
    before = backend_counts(all_backends)
    marker = "invalid=%s" % case
    res = h3raw(qp.port, req(qp.port, path="/app/echo-headers?" + marker,
                             extra=["x-good: 1", INVALID_FIELDS[case], "x-after: 2"]))
    assert res.returncode == 0, res
    assert len(res.outcomes) == 1, res
    if res.outcomes[0] == H3_MESSAGE_ERROR:
        assert_backends_untouched(qp, all_backends, before, "a field with bad characters")
        return
    assert res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: marker in x["target"], start=before[0])
    assert rec is not None
    names = [n.lower() for n, _ in rec["headers"]]
    assert "x-injected" not in names and "x-bad" not in names and "x bad" not in names, rec
    assert header_values(rec, "x-good") == ["1"] and header_values(rec, "x-after") == ["2"]
    for _, v in rec["headers"]:
        assert not any(c in v for c in "\r\n\0"), rec


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_reset(qp, all_backends, case):
    before = backend_counts(all_backends)
    res = h3raw(qp.port, **MALFORMED[case](qp.port))
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR], res
    assert_backends_untouched(qp, all_backends, before, "a malformed request (%s)" % case)


def test_pseudo_header_in_trailers_is_reset(qp):
    """RFC 9114 4.1.2: pseudo-header fields in trailers are malformed."""
    res = h3raw(qp.port, post(qp.port, "content-length: 5"), data=5,
                trailers=[":path: /app/other"])
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR], res


def test_malformed_streams_keep_connection(qp, all_backends):
    """Stream errors, not connection errors: several on one connection."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, MALFORMED["duplicate-method"](qp.port)["headers"], count=5)
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR] * 5, res
    assert_backends_untouched(qp, all_backends, before, "duplicate :method")


# ---------------------------------------------------------------- valid requests

def test_valid_get(qp, backend_app):
    before = backend_app.count
    res = h3raw(qp.port, req(qp.port, path="/app/bytes/1234"))
    assert res.returncode == 0, res
    assert res.outcomes == ["status 200 body 1234"], res
    assert backend_app.wait_for_request(lambda x: x["path"] == "/app/bytes/1234", start=before)


def test_valid_get_several_streams(qp):
    res = h3raw(qp.port, req(qp.port, path="/app/bytes/1234"), count=5)
    assert res.returncode == 0, res
    assert res.outcomes == ["status 200 body 1234"] * 5, res


@pytest.mark.parametrize("extra", [["host: 127.0.0.1:{port}"], ["te: trailers"],
                                   ["x-lower: ok", "accept: */*"]],
                         ids=["host-equals-authority", "te-trailers", "plain-fields"])
def test_valid_get_with_fields(qp, extra):
    res = h3raw(qp.port, req(qp.port, path="/app/bytes/10",
                             extra=[e.format(port=qp.port) for e in extra]))
    assert res.returncode == 0, res
    assert res.outcomes == ["status 200 body 10"], res


def test_valid_get_with_sni(qp):
    res = h3raw(qp.port, req(qp.port, path="/app/bytes/10"), sni="localhost")
    assert res.outcomes == ["status 200 body 10"], res


@pytest.mark.parametrize("fin_separate", [False, True], ids=["fin-with-data", "fin-separate"])
def test_valid_post_with_content_length(qp, backend_app, fin_separate):
    before = backend_app.count
    res = h3raw(qp.port, post(qp.port, "content-length: 10"), data=10,
                fin_separate=fin_separate)
    assert res.returncode == 0, res
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: x["path"] == "/app/upload", start=before)
    rec = backend_app.wait_body_done(rec["id"])
    assert rec["body_length"] == 10 and rec["content_length"] == "10"


def test_body_of_its_length_without_fin_is_not_yet_a_request(qp, backend_app):
    """All of a body's Content-Length, and no end of stream yet: more may
    come, which would make the request malformed (RFC 9114 4.1.2). The
    backend got every byte, a whole request it would act on; its last byte
    now waits for the FIN."""
    import time
    before = backend_app.count
    marker = "/app/upload?no-fin"
    res = h3raw(qp.port, req(qp.port, "POST", marker, extra=["content-length: 100000"]),
                data=100000, timeout=2, extra=["--no-fin"])
    assert not any(o.startswith("status ") for o in res.outcomes), res
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before)
    time.sleep(0.3)
    rec = [x for x in backend_app.requests_since(before) if x["id"] == rec["id"]][0]
    assert not rec.get("body_done"), rec


def test_head_answered_by_qproxy_has_no_body(qp):
    """qproxy's own answers (here a 404: no route) to HEAD carry no body:
    a body would be malformed (RFC 9110 9.3.2), and clients close the whole
    connection for it."""
    res = h3raw(qp.port, req(qp.port, "HEAD", "/no-route-here"), count=2)
    assert res.outcomes == ["status 404 body 0"] * 2, res


def test_expect_100_continue_is_answered_by_qproxy(qp, backend_app):
    """Expect: 100-continue gets qproxy's own 100 at once, and the field is
    not passed on: the body comes whatever the backend would say."""
    before = backend_app.count
    res = h3raw(qp.port, post(qp.port, "content-length: 10", "expect: 100-continue"),
                data=10, fin_separate=True, print_headers=True)
    assert res.returncode == 0, res
    assert "< :status: 100" in res.stdout, res
    assert any(o.startswith("status 200 ") for o in res.outcomes), res
    rec = backend_app.wait_for_request(lambda x: x["path"] == "/app/upload", start=before)
    assert not [n for n, _ in rec["headers"] if n.lower() == "expect"], rec


def test_valid_post_without_content_length(qp, backend_app):
    before = backend_app.count
    res = h3raw(qp.port, post(qp.port), data=100000)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: x["path"] == "/app/upload", start=before)
    rec = backend_app.wait_body_done(rec["id"])
    assert rec["body_length"] == 100000
    assert rec["chunked"] or rec["content_length"] == "100000"


def test_valid_post_with_trailer(qp):
    res = h3raw(qp.port, post(qp.port, "content-length: 10"), data=10,
                trailers=["x-checksum: abc"])
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res


# ---------------------------------------------------------------- trailers
# libcurl sends trailers only on an HTTP/1.1 chunked upload
# (CURLOPT_TRAILERFUNCTION, which pycurl does not offer either): h3raw
# sends the request trailers here.

def _upload_record(backend_app, before, marker):
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before)
    assert rec is not None, marker
    return backend_app.wait_body_done(rec["id"])


@pytest.mark.parametrize("data", [None, 100, 300000], ids=["no-body", "held", "streamed"])
def test_request_trailers_reach_backend(qp, backend_app, data):
    """A request's trailer section (RFC 9114 4.1) goes to the backend as
    the chunked body's (RFC 9112 7.1.2), names and values as sent: a body
    with no Content-Length that qproxy holds whole (held), which would go
    with a Content-Length of its size, goes chunked for them, as one
    forwarded while it comes (streamed) does anyway; so does none."""
    before = backend_app.count
    dropped = stats(qp)["requests"]["trailers_dropped"]
    marker = "/app/upload?trailers-%s" % data
    res = h3raw(qp.port, req(qp.port, "POST", marker), data=data,
                trailers=["x-checksum: abc", "server-timing: db;dur=53"], timeout=10)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = _upload_record(backend_app, before, marker)
    assert rec["body_done"] and rec["chunked"] and rec["content_length"] is None, rec
    assert rec["body_length"] == (data or 0), rec
    assert rec["trailers"] == [["x-checksum", "abc"], ["server-timing", "db;dur=53"]], rec
    assert stats(qp)["requests"]["trailers_dropped"] == dropped


def test_request_trailers_dropped_with_content_length(qp, backend_app):
    """A body sent with the client's Content-Length cannot carry trailers
    in HTTP/1.1: they are dropped, and the request goes as without them;
    requests trailers_dropped counts the request, once."""
    before = backend_app.count
    dropped = stats(qp)["requests"]["trailers_dropped"]
    marker = "/app/upload?trailers-cl"
    res = h3raw(qp.port, req(qp.port, "POST", marker, extra=["content-length: 10"]),
                data=10, trailers=["x-checksum: abc", "x-other: 1"])
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = _upload_record(backend_app, before, marker)
    assert not rec["chunked"] and rec["content_length"] == "10", rec
    assert rec["body_length"] == 10 and rec["trailers"] == [], rec
    assert stats(qp)["requests"]["trailers_dropped"] == dropped + 1


# fields a trailer section may not carry (RFC 9110 6.5.1), or that qproxy
# writes itself: sent between two that it may
FORBIDDEN_TRAILERS = [
    "content-length: 5", "host: 127.0.0.1", "te: trailers", "expect: 100-continue",
    "authorization: Basic eDp5", "proxy-authorization: Basic eDp5", "cookie: a=1",
    "x-forwarded-for: 192.0.2.66", "x-forwarded-proto: http", "forwarded: for=192.0.2.66",
    "via: 1.1 forged", "early-data: 1", "max-forwards: 3", "content-type: text/plain",
    "content-encoding: gzip", "range: bytes=0-1", "if-none-match: *", "cache-control: no-cache",
    "trailer: x-a"]


@pytest.mark.parametrize("data", [100, 300000], ids=["held", "streamed"])
def test_request_trailers_forbidden_not_forwarded(qp, backend_app, data):
    before = backend_app.count
    marker = "/app/upload?trailers-forbidden-%d" % data
    res = h3raw(qp.port, req(qp.port, "POST", marker), data=data,
                trailers=["x-a: 1"] + FORBIDDEN_TRAILERS + ["x-b: 2"], timeout=10)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = _upload_record(backend_app, before, marker)
    assert rec["body_done"] and rec["body_length"] == data, rec
    assert rec["trailers"] == [["x-a", "1"], ["x-b", "2"]], rec


# Malformed trailer sections (RFC 9114 4.1.2, 4.2, 10.3): nghttp3 finds
# most of them itself; qproxy finds a value of one control byte, which
# nghttp3 1.8.0 lets through
MALFORMED_TRAILERS = {
    "pseudo-header": [":path: /app/other"],
    "pseudo-header-after-one": ["x-a: 1", ":method: GET"],
    "uppercase-name": ["X-Upper: 1"],
    "connection": ["connection: close"],
    "transfer-encoding": ["transfer-encoding: chunked"],
    "te-gzip": ["te: gzip"],
    "value-one-control-byte": ["x-a: 1", "x-bad: \\x01"],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TRAILERS))
def test_request_malformed_trailers_reset(qp, all_backends, case):
    """A request whose trailer section is malformed gets H3_MESSAGE_ERROR;
    a body held whole never reaches the backend."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, req(qp.port, "POST", "/app/upload?bad-trailers"), data=100,
                trailers=MALFORMED_TRAILERS[case])
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR], res
    assert_backends_untouched(qp, all_backends, before, "malformed trailers (%s)" % case)


@pytest.mark.parametrize("case", ["pseudo-header", "value-one-control-byte"])
def test_request_malformed_trailers_after_streamed_body(qp, backend_app, case):
    """The same after a body forwarded while it came: the backend had the
    head and the body's chunks, but never the trailers nor the body's end:
    its connection is closed."""
    import time
    before = backend_app.count
    marker = "/app/upload?bad-trailers-streamed-%s" % case
    res = h3raw(qp.port, req(qp.port, "POST", marker), data=300000,
                trailers=MALFORMED_TRAILERS[case], timeout=10)
    assert res.outcomes == [H3_MESSAGE_ERROR], res
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before)
    assert rec is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rec = backend_app.wait_body_done(rec["id"], timeout=0.2)
        if rec["error"]:
            break
    assert rec["error"] and not rec["body_done"] and rec["trailers"] == [], rec


def test_request_trailers_too_large(qp, all_backends):
    """A trailer section larger than max_header_size (64k here) is answered
    as a head would be: 431, and the request reaches no backend."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, req(qp.port, "POST", "/app/upload?big-trailers"), data=100,
                trailers=["x-pad-%d: %s" % (i, "p" * 2000) for i in range(40)])
    assert res.outcomes == ["status 431 body 36"], res
    assert_backends_untouched(qp, all_backends, before, "trailers past max_header_size")


def test_cookie_fields_joined_raw(qp, backend_app):
    """Separate cookie fields (RFC 9114 4.2.1) reach HTTP/1.1 as one, "; "-joined."""
    before = backend_app.count
    res = h3raw(qp.port, req(qp.port, path="/app/echo-headers?rawcookies",
                             extra=["cookie: a=1", "x-between: y", "cookie: b=2",
                                    "cookie: c=3"]))
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: "rawcookies" in x["target"], start=before)
    assert header_values(rec, "cookie") == ["a=1; b=2; c=3"]
    assert header_values(rec, "x-between") == ["y"]


def test_stream_reset_before_its_head_is_no_request(qp):
    """A client that resets a stream in the middle of its HEADERS frame
    sent no request: requests.reset counted it, and could pass
    requests.total."""
    before = stats(qp)["requests"]
    # a HEADERS frame of 16 bytes, of which only the QPACK prefix comes
    res = h3raw(qp.port, req(qp.port), extra=["--raw", "01 10 00 00", "--no-fin",
                                              "--cancel"])
    assert res.returncode == 0, res
    assert res.outcomes == ["cancelled"], res
    after = stats(qp)["requests"]
    assert after["reset"] == before["reset"], (before, after)
    assert after["total"] == before["total"], (before, after)


def test_empty_headers_frame_is_counted_malformed(qp, all_backends):
    """A HEADERS frame with no field section (01 00): reset with
    H3_MESSAGE_ERROR, and counted in requests malformed as the other
    malformed requests are; it was counted nowhere."""
    before_backends = backend_counts(all_backends)
    before = stats(qp)["requests"]["malformed"]
    res = h3raw(qp.port, [], count=2, extra=["--raw", "01 00"])
    assert res.outcomes == [H3_MESSAGE_ERROR] * 2, res
    assert stats(qp)["requests"]["malformed"] == before + 2
    assert_backends_untouched(qp, all_backends, before_backends, "an empty HEADERS frame")


# ---------------------------------------------------------------- head size

@pytest.mark.parametrize("field", [
    "x-big: " + "~" * 70000,                # a value over nghttp3's 64 KiB
    "z" * 400 + ": 1",                      # a name over its 256 bytes
], ids=["value-70000", "name-400"])
def test_field_too_large_for_nghttp3_is_excessive_load(qp, all_backends, field):
    """nghttp3's QPACK decoder refuses a field past its bounds and cannot go
    on: the connection ends (a library limit; a 431 for the one request
    would be better). It ended with H3_INTERNAL_ERROR (0x102), which blamed
    qproxy; it is the client's load: H3_EXCESSIVE_LOAD (0x107)."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, req(qp.port, extra=[field]), count=2)
    assert res.outcomes == ["closed 0x107"] * 2, res
    assert_backends_untouched(qp, all_backends, before, "a field too large")


def test_head_of_the_advertised_size_is_taken(qp, backend_app):
    """The size of a head is name + value + 32 per field (RFC 9114 4.2.2),
    as SETTINGS_MAX_FIELD_SECTION_SIZE (max_header_size, 64k here) says; two
    NUL bytes per field were counted too, so a head of the advertised size
    got 431."""
    fields = req(qp.port, path="/app/bytes/10")
    size = sum(len(f.split(": ", 1)[0]) + len(f.split(": ", 1)[1]) + 32
               for f in fields) + len("x-big") + 32
    for extra, status in ((0, 200), (1, 431)):
        big = "x-big: " + "a" * (65536 - size + extra)
        res = h3raw(qp.port, fields + [big])
        assert res.returncode == 0, res
        assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status %d " % status), \
            (extra, res)


def test_fin_after_the_body_survives_its_ack(qp):
    """Bodies delimited by the backend's close, the close coming 100 ms
    after the bytes went out: each FIN goes alone. The client reads nothing
    for 0.5 s (its max_ack_delay of 1 s keeps the server's probes away):
    the server's congestion window is full when the closes come, and the
    FINs are not taken as they are offered. Then it reads what came but one
    datagram, which the server finds lost: the bodies' bytes are ACKed, and
    the retransmission goes before anything new. nghttp3 1.8.0 lost the
    first stream's FIN so (see h3_writev): its stream stayed open, the
    response whole but for its end, until the client gave up."""
    n = 30
    res = h3raw(qp.port, req(qp.port, path="/app/close/1000?finwait=100"), count=n,
                timeout=10, extra=["--max-ack-delay", "1000", "--hold", "0.5",
                                   "--hold-drop", "4"])
    assert res.outcomes == ["status 200 body 1000"] * n, res
    assert res.returncode == 0, res
