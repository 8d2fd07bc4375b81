"""Requests sent field by field with $H3RAW.

Malformed requests (RFC 9114 4.1.2, 4.2, 4.3) must get their stream reset with
H3_MESSAGE_ERROR (0x10e), the connection must survive, and no backend may see
anything.  Valid requests through the same tool must succeed, which proves the
harness can pass."""

import time

import pytest

import quicinitial  # tests/tools, on sys.path by conftest.py
from helpers import (app_sections, assert_backends_untouched, backend_counts, h3raw,
                     header_values)
from qpack import field_section
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
    # RFC 9114 4.3.1: each pseudo-header once
    "duplicate-scheme": lambda p: dict(headers=req(p) + [":scheme: https"]),
    "duplicate-path": lambda p: dict(headers=req(p) + [":path: /app/other"]),
    "duplicate-authority": lambda p: dict(headers=req(p) + [":authority: 127.0.0.1:%d" % p]),
    # 4.3.1: :authority and Host are never empty
    "empty-authority": lambda p: dict(
        headers=[":authority: " if h.startswith(":authority") else h for h in req(p)]),
    "empty-host-no-authority": lambda p: dict(
        headers=[h for h in req(p) if not h.startswith(":authority")] + ["host: "]),
    # 4.3: a response's pseudo-header in a request
    "status-in-request": lambda p: dict(headers=req(p) + [":status: 200"]),
    # RFC 9220 3 (RFC 8441 4): :protocol on a CONNECT alone
    "protocol-on-get": lambda p: dict(headers=req(p) + [":protocol: websocket"]),
    # 4.4: CONNECT has :authority alone
    "connect-with-scheme": lambda p: dict(
        headers=[":method: CONNECT", ":scheme: https", ":authority: 127.0.0.1:%d" % p]),
    "connect-with-path": lambda p: dict(
        headers=[":method: CONNECT", ":authority: 127.0.0.1:%d" % p, ":path: /"]),
    "connect-no-authority": lambda p: dict(headers=[":method: CONNECT", "host: 127.0.0.1"]),
    # 4.1.2: invalid values of pseudo-headers
    "method-not-a-token": lambda p: dict(headers=req(p, method="GE T")),
    "scheme-not-a-scheme": lambda p: dict(headers=[":method: GET", ":scheme: ht tp"] + req(p)[2:]),
    "path-not-absolute": lambda p: dict(headers=req(p, path="app/echo-headers")),
    "path-asterisk-not-options": lambda p: dict(headers=req(p, path="*")),
    "path-control": lambda p: dict(headers=req(p, path="/app/a\\x01b")),
    "path-tab": lambda p: dict(headers=req(p, path="/app/a\\x09b")),
    "path-del": lambda p: dict(headers=req(p, path="/app/a\\x7fb")),
    "authority-space": lambda p: dict(headers=req(p, authority="a b")),
    "authority-slash": lambda p: dict(headers=req(p, authority="a/b")),
    # RFC 3986 3.2, RFC 9110 4.2.2: an https authority has a host, and a
    # port of digits; these went to the backend as Host
    "authority-port-alone": lambda p: dict(headers=req(p, authority=":%d" % p)),
    "authority-colon-alone": lambda p: dict(headers=req(p, authority=":")),
    "authority-port-not-digits": lambda p: dict(headers=req(p, authority="127.0.0.1:x%d" % p)),
    "authority-two-ports": lambda p: dict(headers=req(p, authority="127.0.0.1:1:%d" % p)),
    "authority-bracket-open": lambda p: dict(headers=req(p, authority="[::1")),
    "authority-bracket-empty": lambda p: dict(headers=req(p, authority="[]:%d" % p)),
    "authority-bracket-after-host": lambda p: dict(headers=req(p, authority="a]:%d" % p)),
    "authority-after-bracket": lambda p: dict(headers=req(p, authority="[::1]x")),
    "host-port-alone": lambda p: dict(
        headers=[h for h in req(p) if not h.startswith(":authority")] + ["host: :%d" % p]),
    # 4.2: the connection-specific fields, and TE of more than "trailers"
    "keep-alive": lambda p: dict(headers=req(p, extra=["keep-alive: timeout=5"])),
    "proxy-connection": lambda p: dict(headers=req(p, extra=["proxy-connection: close"])),
    "te-trailers-and-gzip": lambda p: dict(headers=req(p, extra=["te: trailers, gzip"])),
    # RFC 9110 8.6: a Content-Length that is no number
    "content-length-not-a-number": lambda p: dict(headers=post(p, "content-length: abc"), data=3),
    "content-length-list": lambda p: dict(headers=post(p, "content-length: 5, 5"), data=5),
    "content-length-0-body-1": lambda p: dict(headers=post(p, "content-length: 0"), data=1),
    "content-length-5-trailers-no-body": lambda p: dict(
        headers=post(p, "content-length: 5"), trailers=["x-t: 1"]),
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
    # RFC 9110 5.5: a field value neither begins nor ends with whitespace
    "value-leading-space": "x-bad:  a",
    "value-trailing-space": "x-bad: a ",
    "value-leading-tab": "x-bad: \\x09a",
    "value-trailing-tab": "x-bad: a\\x09",
    "value-one-space": "x-bad:  ",
    # RFC 9110 5.1: a name is a token
    "name-with-at": "x@bad: 1",
    "name-with-colon": "x:bad: 1",
    "name-not-ascii": "x\\xc3\\xa9bad: 1",
    "name-empty": ": bad",
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
    assert "x-injected" not in names, rec
    assert not [(n, v) for n, v in rec["headers"] if "bad" in n.lower() or "bad" in v], rec
    assert header_values(rec, "x-good") == ["1"] and header_values(rec, "x-after") == ["2"]
    for _, v in rec["headers"]:
        assert not any(c in v for c in "\r\n\0"), rec


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_reset(qp, all_backends, case):
    before = backend_counts(all_backends)
    malformed = stats(qp)["requests"]["malformed"]
    res = h3raw(qp.port, **MALFORMED[case](qp.port))
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR], res
    assert_backends_untouched(qp, all_backends, before, "a malformed request (%s)" % case)
    assert stats(qp)["requests"]["malformed"] == malformed + 1


def test_pseudo_header_in_trailers_is_reset(qp):
    """RFC 9114 4.1.2: pseudo-header fields in trailers are malformed."""
    res = h3raw(qp.port, post(qp.port, "content-length: 5"), data=5,
                trailers=[":path: /app/other"])
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR], res


# Trailer fields that RFC 9110 (5.1, 5.5) and RFC 9114 10.3 call invalid,
# which nghttp3 removes from the trailer section as it does from a head:
# a reset is right, and so is a body that reaches the backend without
# them, never the field as sent
INVALID_TRAILERS = {
    "name-with-space": "x bad: 1",
    "name-empty": ": bad",
    "value-with-crlf": "x-bad: a\\r\\nx-injected: 1",
    "value-with-control": "x-bad: a\\x01b",
    "value-leading-space": "x-bad:  a",
    "value-trailing-tab": "x-bad: a\\x09",
}


@pytest.mark.parametrize("case", sorted(INVALID_TRAILERS))
def test_invalid_trailer_characters_never_reach_backend(qp, all_backends, backend_app, case):
    before = backend_counts(all_backends)
    marker = "/app/upload?invalid-trailer=%s" % case
    res = h3raw(qp.port, req(qp.port, "POST", marker), data=100,
                trailers=["x-good: 1", INVALID_TRAILERS[case], "x-after: 2"])
    assert res.returncode == 0 and len(res.outcomes) == 1, res
    if res.outcomes[0] == H3_MESSAGE_ERROR:
        assert_backends_untouched(qp, all_backends, before, "a trailer with bad characters")
        return
    assert res.outcomes[0].startswith("status 200 "), res
    rec = _upload_record(backend_app, before[0], marker)
    assert rec["body_done"] and rec["body_length"] == 100, rec
    assert rec["trailers"] == [["x-good", "1"], ["x-after", "2"]], rec


def test_malformed_streams_keep_connection(qp, all_backends):
    """Stream errors, not connection errors: several on one connection."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, MALFORMED["duplicate-method"](qp.port)["headers"], count=5)
    assert res.returncode == 0, res
    assert res.outcomes == [H3_MESSAGE_ERROR] * 5, res
    assert_backends_untouched(qp, all_backends, before, "duplicate :method")


# ---------------------------------------------------------------- valid requests

def test_connect_is_not_implemented(qp, all_backends):
    """A well-formed CONNECT (RFC 9114 4.4: :method and :authority alone)
    asks for a tunnel, which qproxy does not make: 501, and no backend
    hears of it. Malformed ones are reset (MALFORMED above)."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, [":method: CONNECT", ":authority: 127.0.0.1:%d" % qp.port])
    assert res.outcomes == ["status 501 body 20"], res
    assert_backends_untouched(qp, all_backends, before, "CONNECT")


def test_scheme_other_than_http_is_400(qp, all_backends):
    """A :scheme qproxy does not serve, well-formed as it is: 400, and no
    backend hears of it."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, [":method: GET", ":scheme: ftp"] + req(qp.port)[2:])
    assert res.outcomes == ["status 400 body 16"], res
    assert_backends_untouched(qp, all_backends, before, "a :scheme of ftp")


def test_repeated_host_is_refused(qp, all_backends):
    """Two Host fields, even of one value and that of :authority: no
    backend may see the request (RFC 9110 7.2)."""
    before = backend_counts(all_backends)
    host = "host: 127.0.0.1:%d" % qp.port
    res = h3raw(qp.port, req(qp.port, extra=[host, host]))
    assert res.returncode == 0 and len(res.outcomes) == 1, res
    assert res.outcomes[0] in (H3_MESSAGE_ERROR, "status 400 body 16"), res
    assert_backends_untouched(qp, all_backends, before, "two Host fields")


@pytest.mark.parametrize("host", ["a b", "a/b", "u@a", "a\\x01b"],
                         ids=["space", "slash", "userinfo", "control"])
def test_host_not_an_authority_never_reaches_backend(qp, all_backends, backend_app, host):
    """A Host that is no authority, beside a valid :authority. nghttp3
    removes such a Host from the head before qproxy sees it (a library
    limit: RFC 9110 7.2 asks for 400): the request goes by its :authority,
    and the backend is never sent the Host as it came."""
    before = backend_counts(all_backends)
    marker = "/app/echo-headers?bad-host=%s" % host.replace(" ", "+")
    res = h3raw(qp.port, req(qp.port, path=marker, extra=["host: " + host]))
    assert res.returncode == 0 and len(res.outcomes) == 1, res
    if res.outcomes[0] in (H3_MESSAGE_ERROR, "status 400 body 16"):
        assert_backends_untouched(qp, all_backends, before, "a Host of %r" % host)
        return
    assert res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before[0])
    assert rec is not None
    assert header_values(rec, "host") == ["127.0.0.1:%d" % qp.port], rec


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


@pytest.mark.parametrize("authority", ["[::1]:{port}", "[::1]", "127.0.0.1:", "127.0.0.1",
                                       "localhost."],
                         ids=["ipv6-port", "ipv6", "empty-port", "no-port", "trailing-dot"])
def test_valid_authority_forms(qp, backend_app, authority):
    """Authorities that RFC 3986 3.2 allows, an empty port among them, are
    served as before, and go to the backend as Host as they came."""
    authority = authority.format(port=qp.port)
    before = backend_app.count
    marker = "/app/echo-headers?authority=%s" % authority
    res = h3raw(qp.port, req(qp.port, path=marker, authority=authority))
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before)
    assert rec is not None and header_values(rec, "host") == [authority], rec


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
# writes itself or takes from trusted_proxies only: sent between two that it may
FORBIDDEN_TRAILERS = [
    "content-length: 5", "host: 127.0.0.1", "te: trailers", "expect: 100-continue",
    "authorization: Basic eDp5", "proxy-authorization: Basic eDp5", "cookie: a=1",
    "x-forwarded-for: 192.0.2.66", "x-forwarded-proto: http", "forwarded: for=192.0.2.66",
    "via: 1.1 forged", "early-data: 1", "max-forwards: 3", "content-type: text/plain",
    "content-encoding: gzip", "range: bytes=0-1", "if-none-match: *", "cache-control: no-cache",
    "trailer: x-a", "x-real-ip: 192.0.2.66", "client-ip: 192.0.2.66",
    "x-client-ip: 192.0.2.66", "true-client-ip: 192.0.2.66",
    "x-cluster-client-ip: 192.0.2.66", "x-forwarded-host: evil.example",
    "x-forwarded-port: 8443", "x-forwarded-prefix: /evil", "x-original-url: /admin",
    "x-rewrite-url: /admin", "x-http-method-override: DELETE",
    "x-http-method: DELETE", "x-method-override: DELETE"]

# a response's fields, which a response's trailer section may not carry
# (test_proxy's RESPONSE_FORBIDDEN_TRAILERS): in a request's they say
# nothing its content needs, and pass as any other field
RESPONSE_FIELD_TRAILERS = [
    "set-cookie: a=1", "www-authenticate: Basic", "proxy-authenticate: Basic",
    "location: /x", "vary: *", "age: 5", "expires: 0", "retry-after: 5"]


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


def test_request_trailers_of_response_fields_forwarded(qp, backend_app):
    """Set-Cookie, WWW-Authenticate, Location, Vary and the other fields
    of a response in a request's trailer section reach the backend, in
    order, between two others: only a response's trailers drop them."""
    before = backend_app.count
    marker = "/app/upload?trailers-response-fields"
    trailers = ["x-a: 1"] + RESPONSE_FIELD_TRAILERS + ["x-b: 2"]
    res = h3raw(qp.port, req(qp.port, "POST", marker), data=100, trailers=trailers,
                timeout=10)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 200 "), res
    rec = _upload_record(backend_app, before, marker)
    assert rec["body_done"] and rec["body_length"] == 100, rec
    assert rec["trailers"] == [t.split(": ", 1) for t in trailers], rec


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


# ---------------------------------------------------------------- content length, streamed

@pytest.mark.parametrize("sent", [299999, 300001], ids=["too-few", "too-many"])
def test_streamed_body_against_its_content_length(qp, backend_app, sent):
    """RFC 9114 4.1.2: a body whose DATA add up to more or less than its
    Content-Length makes the request malformed, found only once the backend
    has had most of it (held bodies are in MALFORMED): the stream is reset
    with H3_MESSAGE_ERROR, and the backend never gets the body's end, so
    never a whole request (its connection is closed)."""
    before = backend_app.count
    malformed = stats(qp)["requests"]["malformed"]
    marker = "/app/upload?streamed-cl-%d" % sent
    res = h3raw(qp.port, req(qp.port, "POST", marker, extra=["content-length: 300000"]),
                data=sent, timeout=10)
    assert res.outcomes == [H3_MESSAGE_ERROR], res
    rec = backend_app.wait_for_request(lambda x: x["target"] == marker, start=before)
    assert rec is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rec = backend_app.wait_body_done(rec["id"], timeout=0.2)
        if rec["error"]:
            break
    assert rec["error"] and not rec["body_done"], rec
    assert stats(qp)["requests"]["malformed"] == malformed + 1


# ---------------------------------------------------------------- frames on a request stream
# RFC 9114 4.1, 7.1, 7.2, 9: the frames of a request stream, written by
# hand (--raw): HEADERS, DATA, HEADERS (trailers), in that order, with
# frames of unknown types anywhere between.

def frame(ftype, payload=b""):
    return quicinitial.varint(ftype) + quicinitial.varint(len(payload)) + payload


def head(port, path="/app/upload", method="POST"):
    return frame(0x01, field_section([(":method", method), (":scheme", "https"),
                                      (":authority", "127.0.0.1:%d" % port),
                                      (":path", path)]))


DATA = frame(0x00, b"abc")
TRAILERS = frame(0x01, field_section([("x-trailer", "1")]))
UNKNOWN = frame(0x21, b"xy")        # a reserved type, 0x1f * N + 0x21 (RFC 9114 7.2.8)
UNKNOWN_EMPTY = frame(0x1f * 3 + 0x21)

# -> (the request stream's bytes, the connection's close code)
BAD_FRAMES = {
    # 4.1: the order of HEADERS, DATA and trailers
    "data-before-headers": (lambda p: DATA + head(p), 0x105),
    "headers-after-trailers": (lambda p: head(p) + DATA + TRAILERS + TRAILERS, 0x105),
    "data-after-trailers": (lambda p: head(p) + DATA + TRAILERS + DATA, 0x105),
    # 7.2.4, 7.2.6, 7.2.7, 7.2.3: frames of the control stream
    "settings": (lambda p: head(p) + frame(0x04), 0x105),
    "settings-first": (lambda p: frame(0x04) + head(p), 0x105),
    "goaway": (lambda p: head(p) + frame(0x07, b"\x00"), 0x105),
    "max-push-id": (lambda p: head(p) + frame(0x0d, b"\x00"), 0x105),
    "cancel-push": (lambda p: head(p) + frame(0x03, b"\x00"), 0x105),
    # 7.2.5: a client sends no PUSH_PROMISE
    "push-promise": (lambda p: head(p) + frame(0x05, b"\x00" + field_section([])), 0x105),
    # 7.2.8: the frame types of HTTP/2 that HTTP/3 has not
    "h2-priority": (lambda p: head(p) + frame(0x02, b"\x00"), 0x105),
    "h2-priority-first": (lambda p: frame(0x02, b"\x00") + head(p), 0x105),
    "h2-ping": (lambda p: head(p) + frame(0x06, bytes(8)), 0x105),
    "h2-window-update": (lambda p: head(p) + frame(0x08, bytes(4)), 0x105),
    "h2-continuation": (lambda p: head(p) + frame(0x09), 0x105),
    # 7.1: a stream that ends inside a frame
    "truncated-data": (lambda p: head(p) + frame(0x00, b"abcde")[:-3], 0x106),
    "truncated-headers": (lambda p: head(p)[:-3], 0x106),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_frame_out_of_place_closes_the_connection(qp, all_backends, case):
    """A frame a request stream may not carry, or one out of its order, is
    a connection error: H3_FRAME_UNEXPECTED (0x105); a stream that ends in
    the middle of a frame, H3_FRAME_ERROR (0x106). The request, whole or
    not, reaches no backend."""
    raw, code = BAD_FRAMES[case]
    before = backend_counts(all_backends)
    errors = stats(qp)["limits"]["closed_protocol_errors"]
    res = h3raw(qp.port, [], extra=["--raw", raw(qp.port).hex()])
    assert res.outcomes == ["closed 0x%x" % code], res
    assert_backends_untouched(qp, all_backends, before, "a request stream's bad frames")
    assert stats(qp)["limits"]["closed_protocol_errors"] == errors + 1


@pytest.mark.parametrize("raw", ["", UNKNOWN.hex()], ids=["fin-only", "unknown-frame-only"])
def test_request_stream_without_headers(qp, all_backends, raw):
    """A request stream that ends with no HEADERS frame holds no request.
    RFC 9114 allows H3_REQUEST_INCOMPLETE for the stream (4.1, 8.1) as well
    as H3_FRAME_UNEXPECTED for the connection, an invalid frame sequence
    (4.1), which nghttp3 chooses; either way no backend hears of it."""
    before = backend_counts(all_backends)
    res = h3raw(qp.port, [], extra=["--raw", raw])
    assert res.outcomes in (["closed 0x105"], ["reset 0x10d"]), res
    assert_backends_untouched(qp, all_backends, before, "a request stream without HEADERS")


def test_options_asterisk_goes_to_a_route_without_a_path_prefix(qproxy_factory, backend_app):
    """OPTIONS * (RFC 9110 9.3.7: about the server as a whole) has no path
    for a path_prefix to match: a route with none takes it, and its backend
    gets the asterisk-form target as it came; with only routes that have
    one, qproxy answers 404 itself."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             routes=[("route all", [("backend", "app")])]))
    before = backend_app.count
    res = h3raw(q.port, req(q.port, "OPTIONS", "*"))
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status "), res
    got = [(x["method"], x["target"]) for x in backend_app.requests[before:]]
    assert got == [("OPTIONS", "*")], got
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server))
    before = backend_app.count
    res = h3raw(q.port, req(q.port, "OPTIONS", "*"))
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 404 "), res
    assert backend_app.count == before


@pytest.mark.parametrize("where", ["before-headers", "between", "after-trailers"])
def test_unknown_frames_are_skipped(qp, backend_app, where):
    """RFC 9114 9: frames of unknown types, reserved ones among them, may
    come before, between or after the others, and are skipped: the request
    is served as without them, body and trailers whole."""
    before = backend_app.count
    marker = "/app/upload?unknown-frames-%s" % where
    h = head(qp.port, marker)
    raw = {"before-headers": UNKNOWN + UNKNOWN_EMPTY + h + DATA + TRAILERS,
           "between": h + UNKNOWN + DATA + UNKNOWN_EMPTY + DATA + UNKNOWN + TRAILERS,
           "after-trailers": h + DATA + TRAILERS + UNKNOWN}[where]
    res = h3raw(qp.port, [], extra=["--raw", raw.hex()])
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("raw "), res
    assert int(res.outcomes[0].split()[1]) > 0, res
    rec = _upload_record(backend_app, before, marker)
    want = 6 if where == "between" else 3
    assert rec["body_done"] and rec["body_length"] == want, rec
    assert rec["trailers"] == [["x-trailer", "1"]], rec
