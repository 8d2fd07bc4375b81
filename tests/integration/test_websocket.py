"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT (RFC 8441 4:
:method CONNECT, :protocol websocket) to qproxy becomes an HTTP/1.1
Upgrade to the backend, and after its 101 the stream is a tunnel of bytes.

h3raw opens such streams field by field (the tunnel's bytes are its -d
body, the backend's are the response body) against the test backend's /ws
endpoint: ?raw=1 echoes bytes as they come, the other knobs refuse, break
or end the tunnel (tests/integration/backend.py). Chromium, started with
RFC 9220 on, opens real WebSockets once it has an HTTP/3 connection to the
origin; nothing listens on TCP at qproxy's port, so none of them can have
gone another way.
"""

import base64
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from cdp import CDPError, Chromium, chromium_binary, spki_hash
from helpers import (SLOW, app_sections, h3raw, h3raw_binary, header_values,
                     qproxy_stats, qproxyctl, wait_until)

H3_MESSAGE_ERROR = "reset 0x10e"
H3_REQUEST_CANCELLED = "reset 0x10c"


@pytest.fixture
def proxy(qproxy_factory, backend_app, refusing, tmp_path):
    """A private qproxy: /app/ to the test backend; /idle/ there too, with
    a route's tunnel_timeout of 1 s, /idleb/ to a backend of 1 s, /small/
    with a max_body_size of 1k; /m/ takes
    GET alone to the backend (the rest of /m/ to a refused port); /ret/,
    /ok/ and /redir/ answered by qproxy. Its access log, JSON, is
    q.access_log."""
    log = str(tmp_path / "access.log")
    app = backend_app.tcp_server
    q = qproxy_factory(sections=app_sections(
        app, glob=[("access_log", log), ("access_log_format", "json")],
        backends=[("backend idleb", [("server", app), ("tunnel_timeout", "1s")]),
                  ("backend down", [("server", "127.0.0.1:%d" % refusing.port),
                                    ("connect_timeout", "1s")])],
        routes=[("route idle", [("path_prefix", "/idle/"), ("backend", "app"),
                                ("tunnel_timeout", "1s")]),
                ("route idleb", [("path_prefix", "/idleb/"), ("backend", "idleb")]),
                ("route small", [("path_prefix", "/small/"), ("backend", "app"),
                                 ("max_body_size", "1k")]),
                ("route m", [("path_prefix", "/m/"), ("methods", "GET"),
                             ("backend", "app")]),
                ("route m-other", [("path_prefix", "/m/"), ("backend", "down")]),
                ("route ret", [("path_prefix", "/ret/"), ("return", "403 go away")]),
                ("route ok", [("path_prefix", "/ok/"), ("return", "200 hello")]),
                ("route redir", [("path_prefix", "/redir/"),
                                 ("redirect", "308 /elsewhere")])]))
    q.access_log = log
    return q


def ws_fields(port, path="/app/ws?raw=1", method="CONNECT", protocol="websocket",
              drop=(), extra=()):
    """An extended CONNECT's fields, less the pseudo-header fields named in
    drop, with extra after them."""
    fields = [":method: " + method, ":protocol: " + protocol, ":scheme: https",
              ":authority: 127.0.0.1:%d" % port, ":path: " + path]
    return ([f for f in fields if f.split(": ", 1)[0] not in drop] +
            ["sec-websocket-version: 13"] + list(extra))


def tunnel(port, path, data, *, held=0, fin=True, extra_fields=(), extra=(), timeout=5,
           print_headers=False):
    """h3raw's extended CONNECT of path with a tunnel of data bytes ('a'):
    the first held of them sent with the request, the rest once its 200
    (or other final status) came; its FIN after them unless fin is
    false."""
    opts = ["--rest-after-head", str(held)] + (["--no-fin"] if not fin else [])
    return h3raw(port, ws_fields(port, path, extra=extra_fields), data=data,
                 extra=opts + list(extra), timeout=timeout, print_headers=print_headers)


def ws_record(backend, start, path, timeout=5):
    """The backend's record of the request for path (from start), once its
    connection ended."""
    rec = backend.wait_for_request(lambda r: r["target"] == path, start=start,
                                   timeout=timeout * SLOW)
    assert rec, "%s never reached the backend" % path
    deadline = time.monotonic() + timeout * SLOW
    while rec.get("ws_end") is None and time.monotonic() < deadline:
        time.sleep(0.02)
        rec = backend.requests[rec["id"]]
    return rec


def ws_stats(q):
    return qproxy_stats(q)["websockets"]


def access_lines(q, path):
    """The access log's lines (dicts) for path."""
    try:
        with open(q.access_log) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [line for line in lines if line.get("path") == path]


def wait_access_line(q, path):
    wait_until(lambda: access_lines(q, path), "the access log's line for %s" % path, 5)
    return access_lines(q, path)[0]


# ---------------------------------------------------------------- h3raw


def test_settings_enable_the_connect_protocol(proxy):
    """RFC 8441 3: the server's SETTINGS_ENABLE_CONNECT_PROTOCOL = 1,
    without which no client may send an extended CONNECT."""
    res = h3raw(proxy.port, [], extra=["--print-settings"])
    assert res.returncode == 0 and "settings connect-protocol 1" in res.stdout, res


def test_tunnel_reaches_the_backend_as_an_upgrade(proxy, backend_app):
    """The backend gets GET of the :path with the Upgrade fields, a key of
    qproxy's own and the client's fields; the client gets 200 with the
    101's end-to-end fields; bytes go both ways as they are, the client's
    FIN reaches the backend as EOF after them, the backend's FIN the
    client; counted in the stats and logged as a GET."""
    before = ws_stats(proxy)
    n0 = backend_app.count
    path = "/app/ws?raw=1&protocol=chat"
    client_key = "AAAAAAAAAAAAAAAAAAAAAA=="
    res = tunnel(proxy.port, path, 5, extra=["--print-body"], print_headers=True,
                 extra_fields=["sec-websocket-protocol: chat, superchat",
                               "sec-websocket-extensions: permessage-deflate",
                               "sec-websocket-key: " + client_key,
                               "origin: https://origin.example", "cookie: a=1",
                               "cookie: b=2", "user-agent: h3raw-ws"])
    assert res.returncode == 0 and res.outcomes == ["status 200 body 5"], res
    lines = res.stdout.splitlines()
    assert "< sec-websocket-protocol: chat" in lines and "< x-ws: tunnel" in lines, res
    assert "aaaaa" in lines, res          # the echo
    for name in ("sec-websocket-accept", "upgrade", "connection", "content-length",
                 "transfer-encoding"):
        assert not [x for x in lines if x.lower().startswith("< %s:" % name)], (name, res)

    rec = ws_record(backend_app, n0, path)
    assert (rec["method"], rec["version"]) == ("GET", "HTTP/1.1"), rec
    assert header_values(rec, "host") == ["127.0.0.1:%d" % proxy.port]
    assert header_values(rec, "upgrade") == ["websocket"]
    assert [v.lower() for v in header_values(rec, "connection")] == ["upgrade"]
    keys = header_values(rec, "sec-websocket-key")
    assert len(keys) == 1 and keys[0] != client_key, keys
    assert len(base64.b64decode(keys[0], validate=True)) == 16, keys
    assert header_values(rec, "sec-websocket-version") == ["13"]
    assert header_values(rec, "sec-websocket-protocol") == ["chat, superchat"]
    assert header_values(rec, "sec-websocket-extensions") == ["permessage-deflate"]
    assert header_values(rec, "origin") == ["https://origin.example"]
    assert "; ".join(header_values(rec, "cookie")) == "a=1; b=2"
    assert any("qproxy" in v for v in header_values(rec, "via")), rec["headers"]
    assert header_values(rec, "x-forwarded-proto") == ["https"]
    assert not header_values(rec, "content-length") and \
        not header_values(rec, "transfer-encoding"), rec["headers"]
    assert not [n for n, _ in rec["headers"] if n.startswith(":")], rec["headers"]
    assert (rec["ws_answer"], rec["ws_data"], rec["ws_end"]) == (101, b"aaaaa", "eof"), rec
    assert not rec["error"], rec

    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnel's end in the stats")
    after = ws_stats(proxy)
    assert after["opened"] - before["opened"] == 1, after
    assert after["bytes_to_backend"] - before["bytes_to_backend"] == 5, after
    assert after["bytes_to_client"] - before["bytes_to_client"] == 5, after
    assert after["refused"] == before["refused"], after
    line = wait_access_line(proxy, path)
    assert (line["method"], line["status"]) == ("GET", 200), line


@pytest.mark.parametrize("path,held", [("/app/ws?raw=1&big=1", 0),
                                       ("/app/ws?raw=1&big=1&wait=200", 3 * 1024 * 1024),
                                       ("/small/ws?raw=1&big=1", 0)],
                         ids=["after-200", "before-200", "max-body-size"])
def test_tunnel_carries_megabytes_both_ways(proxy, backend_app, path, held):
    """3 MiB each way, past every flow-control window's first credit: sent
    after the 200, or all at once with the request (held until the 101,
    which the backend sends 200 ms after the head); a route's
    max_body_size is for bodies, not tunnels."""
    n0 = backend_app.count
    n = 3 * 1024 * 1024
    res = tunnel(proxy.port, path, n, held=held, timeout=20)
    assert res.outcomes == ["status 200 body %d" % n], res
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_before_answer"], rec["ws_in"], rec["ws_end"]) == (0, n, "eof"), rec


def test_101s_framing_and_hop_by_hop_fields_stay_behind(proxy, backend_app):
    """The client's 200 has the 101's end-to-end fields, repeated ones
    too, and none of its framing or hop-by-hop fields: the tunnel's bytes
    have no length."""
    fields = ["Content-Length: 0", "Transfer-Encoding: chunked", "Keep-Alive: timeout=5",
              "Connection: X-Hop", "X-Hop: 1", "X-Two: a", "X-Two: b"]
    path = "/app/ws?raw=1" + "".join("&field=" + f.replace(" ", "%20") for f in fields)
    res = tunnel(proxy.port, path, 5, print_headers=True)
    assert res.outcomes == ["status 200 body 5"], res
    got = [line for line in res.stdout.splitlines() if line.startswith("< ")]
    assert [x for x in got if x.startswith("< x-two:")] == ["< x-two: a", "< x-two: b"], got
    for name in ("content-length", "transfer-encoding", "keep-alive", "connection", "x-hop",
                 "upgrade"):
        assert not [x for x in got if x.startswith("< %s:" % name)], (name, got)


def test_bytes_sent_before_the_200_wait_for_the_101(proxy, backend_app):
    """A client may send tunnel bytes right after its request (RFC 9220 is
    silent on waiting): qproxy holds them until the backend upgraded. The
    backend answers 300 ms after the head: none had come by then; all of
    them after, echoed."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&wait=300"
    res = tunnel(proxy.port, path, 100, held=100)
    assert res.outcomes == ["status 200 body 100"], res
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_before_answer"], rec["ws_in"], rec["ws_end"]) == (0, 100, "eof"), rec


def test_bytes_in_the_101s_segment_are_the_tunnels(proxy, backend_app):
    """What the backend sends right after its 101, in the same segment, is
    the tunnel's first bytes, before the echo."""
    n0 = backend_app.count
    res = tunnel(proxy.port, "/app/ws?raw=1&hello=1", 5, extra=["--print-body"])
    assert res.outcomes == ["status 200 body 10"], res
    assert "helloaaaaa" in res.stdout.splitlines(), res
    assert ws_record(backend_app, n0, "/app/ws?raw=1&hello=1")["ws_end"] == "eof"


@pytest.mark.parametrize("status", [301, 403, 503])
def test_refused_upgrade_is_passed_on_and_keeps_the_bytes(proxy, backend_app, status):
    """An answer that is not an upgrade goes to the client as it is, body
    too; the tunnel bytes the client sent with its request never reach
    the backend (they are no request of their own on that connection:
    nothing smuggled), and the connection is closed, never reused."""
    before = ws_stats(proxy)
    n0 = backend_app.count
    path = "/app/ws?refuse=%d" % status
    res = tunnel(proxy.port, path, 100, held=100, print_headers=True)
    body = "refused %d\n" % status
    assert res.outcomes == ["status %d body %d" % (status, len(body))], res
    if status == 301:
        assert "< location: /elsewhere" in res.stdout, res
    # the next request, at once, goes on another connection (on that one,
    # the backend would take it for more of what came after the upgrade)
    res = h3raw(proxy.port, [":method: GET", ":scheme: https",
                             ":authority: 127.0.0.1:%d" % proxy.port,
                             ":path: /app/bytes/1?after-refusal=1"])
    assert res.outcomes == ["status 200 body 1"], res
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_answer"], rec["ws_in"], rec["ws_end"]) == (status, 0, "eof"), rec
    nxt = backend_app.wait_for_request(lambda r: r["target"] == "/app/bytes/1?after-refusal=1",
                                       start=n0)
    assert nxt and nxt["conn"] != rec["conn"], (nxt, rec)
    after = ws_stats(proxy)
    assert after["refused"] - before["refused"] == 1, after
    assert after["opened"] == before["opened"] and after["current"] == 0, after


@pytest.mark.parametrize("knob", ["plain=1", "bad-accept=1", "no-accept=1", "no-upgrade=1",
                                  "upgrade=h2c"])
def test_answer_that_is_no_websocket_upgrade_is_502(proxy, backend_app, knob):
    """A 200 (not upgraded), or a 101 without the right Sec-WebSocket-Accept
    or without Upgrade: websocket: the client gets 502, and its bytes never
    reach the backend."""
    before = ws_stats(proxy)
    n0 = backend_app.count
    path = "/app/ws?" + knob
    res = tunnel(proxy.port, path, 100, held=100)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith("status 502 "), res
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_in"], rec["ws_end"]) == (0, "eof"), rec
    after = ws_stats(proxy)
    assert after["refused"] - before["refused"] == 1, after
    assert after["opened"] == before["opened"] and after["current"] == 0, after


MALFORMED = {
    # RFC 8441 4: :protocol on CONNECT alone
    "protocol-on-get": dict(method="GET"),
    "protocol-on-post": dict(method="POST"),
    # RFC 8441 4, RFC 9220 3: :scheme, :path and :authority all there
    "no-scheme": dict(drop=(":scheme",)),
    "no-path": dict(drop=(":path",)),
    "no-authority": dict(drop=(":authority",)),
    "empty-protocol": dict(protocol=""),
    # a tunnel has no length; with one, its bytes could be a body
    "content-length": dict(extra=["content-length: 5"], data=5),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_extended_connect_is_reset(proxy, backend_app, case):
    kw = dict(MALFORMED[case])
    data = kw.pop("data", None)
    n0 = backend_app.count
    res = h3raw(proxy.port, ws_fields(proxy.port, **kw), data=data)
    assert res.returncode == 0 and res.outcomes == [H3_MESSAGE_ERROR], res
    time.sleep(0.1)
    assert backend_app.count == n0, backend_app.requests_since(n0)


@pytest.mark.parametrize("path,fields,want", [
    # a protocol other than websocket
    ("/app/ws?raw=1", dict(protocol="connect-udp"), "status 501 "),
    # a plain CONNECT (RFC 9114 4.4) is no tunnel qproxy makes
    (None, None, "status 501 "),
    # routes that qproxy answers: as any request, but a 2xx
    ("/ret/ws", {}, "status 403 "),
    ("/redir/ws", {}, "status 308 "),
    ("/ok/ws", {}, "status 501 "),
])
def test_connect_answered_by_qproxy(proxy, backend_app, path, fields, want):
    n0 = backend_app.count
    if path is None:
        headers = [":method: CONNECT", ":authority: 127.0.0.1:%d" % proxy.port]
    else:
        headers = ws_fields(proxy.port, path, **fields)
    res = h3raw(proxy.port, headers, print_headers=True)
    assert len(res.outcomes) == 1 and res.outcomes[0].startswith(want), res
    if want.startswith("status 308"):
        assert "< location: /elsewhere" in res.stdout, res
    time.sleep(0.1)
    assert backend_app.count == n0, backend_app.requests_since(n0)


def test_routes_see_a_get(proxy, backend_app):
    """methods = GET takes the tunnel (the route after it, to a refused
    port, would answer 502), and the access log says GET."""
    n0 = backend_app.count
    res = tunnel(proxy.port, "/m/ws?raw=1", 3)
    assert res.outcomes == ["status 200 body 3"], res
    rec = ws_record(backend_app, n0, "/m/ws?raw=1")
    assert (rec["method"], rec["ws_data"]) == ("GET", b"aaa"), rec
    line = wait_access_line(proxy, "/m/ws?raw=1")
    assert (line["method"], line["status"]) == ("GET", 200), line


@pytest.mark.parametrize("prefix", ["/idle/", "/idleb/"])
def test_idle_tunnel_times_out(proxy, backend_app, prefix):
    """tunnel_timeout (1 s; a route's, or its backend's): a tunnel that
    carried its bytes and then none either way is reset with
    H3_REQUEST_CANCELLED, and the backend's connection closed."""
    before = ws_stats(proxy)
    n0 = backend_app.count
    path = prefix + "ws?raw=1"
    t0 = time.monotonic()
    res = tunnel(proxy.port, path, 3, fin=False, timeout=8)
    took = time.monotonic() - t0
    assert res.outcomes == [H3_REQUEST_CANCELLED], res
    assert 0.9 <= took < 6 * SLOW, took
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_data"], rec["ws_end"]) == (b"aaa", "eof"), rec
    after = ws_stats(proxy)
    assert after["timeouts"] - before["timeouts"] == 1, after
    assert after["current"] == 0, after


def test_backend_bytes_keep_a_tunnel_open(proxy, backend_app):
    """tunnel_timeout counts from the last byte either way: 4 bytes from
    the backend 200 ms apart keep a tunnel of 1 s open while the client
    is silent; it is reset 1 s after the last."""
    n0 = backend_app.count
    path = "/idle/ws?raw=1&tick=200&ticks=4"
    t0 = time.monotonic()
    res = tunnel(proxy.port, path, 0, fin=False, timeout=8)
    took = time.monotonic() - t0
    assert res.outcomes == [H3_REQUEST_CANCELLED], res
    assert took >= 1.6, took
    assert ws_record(backend_app, n0, path)["ws_end"] == "eof"


def test_backend_reset_resets_the_stream(proxy, backend_app):
    """The backend resets its connection in the middle of the tunnel: the
    client's stream is reset with H3_REQUEST_CANCELLED, not ended with a
    FIN that would look like a clean end."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&reset-after=3"
    res = tunnel(proxy.port, path, 3, fin=False)
    assert res.outcomes == [H3_REQUEST_CANCELLED], res
    assert ws_record(backend_app, n0, path)["ws_end"] == "rst-sent"
    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnel's end in the stats")


@pytest.mark.parametrize("fin", [False, True], ids=["before-fin", "after-fin"])
def test_client_reset_closes_the_backend_connection(proxy, backend_app, fin):
    """The client resets its stream once 2 bytes came from the backend,
    before or after its own FIN: the backend's connection is closed at
    once (the backend, sending a byte every 100 ms for 5 s, finds it gone
    long before its last)."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&tick=100&ticks=50&fin=%d" % fin
    res = tunnel(proxy.port, path, 3, fin=fin, extra=["--cancel-after", "2"], timeout=8)
    assert res.outcomes == ["cancelled"], res
    rec = ws_record(backend_app, n0, path, timeout=8)
    assert rec["ws_end"] in ("eof", "reset", "broken-pipe"), rec
    assert rec["ws_end_time"] - rec["time"] < 2.5, rec
    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnel's end in the stats")


def test_client_stop_sending_closes_the_backend_connection(proxy, backend_app):
    """The client's STOP_SENDING alone, once 2 bytes came from the backend
    (it no longer reads the tunnel: RFC 9114 4.4): the backend's connection
    is closed at once, and the tunnel's buffers freed, while the client
    keeps its connection (4 s) and its side of the stream open."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&tick=100&ticks=50"
    out = {}
    t = threading.Thread(target=lambda: out.update(res=tunnel(
        proxy.port, path, 3, fin=False, timeout=10,
        extra=["--stop-sending", "--cancel-after", "2", "--linger", "4"])))
    t.start()
    try:
        rec = ws_record(backend_app, n0, path, timeout=2.5)
        assert rec["ws_end"] in ("eof", "reset", "broken-pipe"), rec
        assert rec["ws_end_time"] - rec["time"] < 2.5, rec
        wait_until(lambda: qproxy_stats(proxy)["streams"]["current"] == 0,
                   "the stream's end")
        st = qproxy_stats(proxy)
        assert st["connections"]["current"] == 1, st["connections"]
        assert (st["websockets"]["current"], st["upstream"]["connections_current"],
                st["buffers"]["response_bytes"]) == (0, 0, 0), st
    finally:
        t.join()
    assert out["res"].outcomes == ["cancelled"], out["res"]


def test_tunnels_stopped_count_on_max_stream_resets(qproxy_factory, backend_app):
    """Tunnels that the client stops reading once they opened (STOP_SENDING
    alone), heeding no STOP_SENDING of qproxy's (its RESET_STREAM never
    goes), each a backend connection for nothing: they count on
    max_stream_resets as resets do, and past 5 of them the connection is
    closed."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             glob=[("max_stream_resets", "5")]))
    res = h3raw(q.port, ws_fields(q.port, "/app/ws?raw=1&tick=20&ticks=100"), count=12,
                timeout=10, extra=["--no-fin", "--stop-sending", "--cancel-after", "0",
                                   "--lose-resets", "--linger", "2"])
    assert set(res.outcomes) <= {"cancelled", "closed 0x107"}, res
    assert qproxy_stats(q)["limits"]["closed_stream_resets"] == 1


def test_backend_fin_first_leaves_the_client_sending(proxy, backend_app):
    """The backend's FIN ends the client's half alone (RFC 9220 does not end
    a tunnel on one side's FIN): the client's later bytes and FIN still
    reach the backend."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&half=1"
    # 3 bytes go with the request; 3 more once the 200 came
    res = tunnel(proxy.port, path, 6, held=3)
    assert len(res.outcomes) == 1 and res.outcomes[0] in (
        "status 200 body 3", "status 200 body 6"), res
    rec = ws_record(backend_app, n0, path)
    assert (rec["ws_data"], rec["ws_end"]) == (b"aaaaaa", "eof"), rec


def test_tunnel_lives_through_a_reload(proxy, backend_app):
    """A reload in the middle of a tunnel leaves it alone: the backend's
    5 bytes, 200 ms apart, then the echo and both FINs."""
    n0 = backend_app.count
    path = "/app/ws?raw=1&tick=200&ticks=5"
    out = {}
    t = threading.Thread(target=lambda: out.update(res=tunnel(proxy.port, path, 3)))
    t.start()
    try:
        wait_until(lambda: ws_stats(proxy)["current"] == 1, "the tunnel's opening")
        p = qproxyctl(proxy, "reload")
    finally:
        t.join()
    assert p.returncode == 0, p
    assert out["res"].outcomes == ["status 200 body 8"], out["res"]
    assert ws_record(backend_app, n0, path)["ws_end"] == "eof"


def test_shutdown_waits_for_a_tunnel(qproxy_factory, backend_app):
    """SIGTERM: an open tunnel is a request in flight, waited for until
    shutdown_timeout (1 s here), then closed with its connection; the
    backend's connection too."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server, shutdown_timeout="1s"))
    n0 = backend_app.count
    path = "/app/ws?raw=1&shutdown=1"
    out = {}
    t = threading.Thread(target=lambda: out.update(
        res=tunnel(q.port, path, 3, fin=False, timeout=10)))
    t.start()
    try:
        wait_until(lambda: backend_app.count > n0 and
                   backend_app.requests[n0]["ws_in"] == 3, "the tunnel's bytes")
        t0 = time.monotonic()
        q.stop(check=True)
        took = time.monotonic() - t0
    finally:
        t.join()
    assert 0.9 <= took < 5 * SLOW, took
    assert len(out["res"].outcomes) == 1 and out["res"].outcomes[0].startswith(
        ("closed ", "reset ")), out["res"]
    rec = ws_record(backend_app, n0, path)
    assert rec["ws_end"] in ("eof", "reset"), rec
    assert rec["ws_end_time"] - t0 >= 0.9, rec


def test_extended_connect_in_early_data_is_too_early(qproxy_factory, backend_app, tmp_path):
    """An extended CONNECT in 0-RTT gets 425 (a tunnel's bytes could be
    replayed), and the backend never hears of it."""
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server, glob=[("secret_file", str(tmp_path / "secret"))],
        listener=[("early_data", "on")]))
    sess = str(tmp_path / "session")

    def run(fields, *extra):
        return subprocess.run([h3raw_binary()] + sum((["-H", f] for f in fields), []) +
                              ["--session-file", sess, "-t", "5"] + list(extra) +
                              ["127.0.0.1", str(q.port)],
                              capture_output=True, text=True, timeout=30)
    p = run([":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
             ":path: /app/bytes/1"])
    assert "status 200 body 1" in p.stdout and os.path.exists(sess), p
    n0 = backend_app.count
    p = run(ws_fields(q.port, "/app/ws?raw=1&early=1"), "--early")
    assert "resumed yes" in p.stdout, p
    assert "status 425 " in p.stdout, p
    time.sleep(0.1)
    assert not [r for r in backend_app.requests_since(n0) if "early=1" in r["target"]]


# ---------------------------------------------------------------- Chromium


# Helpers in the page: wsOpen(path, protocols) resolves once the socket
# opened or failed, wsNext(ws) to its next message (null once closed),
# ws.closed to its close event's code, reason and wasClean.
WS_JS = r"""
window.wsOpen = (path, protocols) => new Promise(resolve => {
  const ws = new WebSocket('wss://' + location.host + path, protocols || []);
  ws.binaryType = 'arraybuffer';
  ws.inbox = [];
  ws.wake = null;
  ws.closed = new Promise(r => ws.addEventListener('close',
      e => r([e.code, e.reason, e.wasClean])));
  ws.onmessage = e => {
    ws.inbox.push(e.data);
    if (ws.wake) { const w = ws.wake; ws.wake = null; w(); }
  };
  ws.onopen = () => resolve(ws);
  ws.onerror = () => { ws.failed = true; resolve(ws); };
});
window.wsNext = ws => ws.inbox.length ? Promise.resolve(ws.inbox.shift())
  : Promise.race([new Promise(r => { ws.wake = r; }).then(() => ws.inbox.shift()),
                  ws.closed.then(() => null)]);
window.hex = async buf => Array.from(new Uint8Array(
    await crypto.subtle.digest('SHA-256', buf)))
  .map(x => x.toString(16).padStart(2, '0')).join('');
window.pattern = n => {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 11)) & 255;
  return b.buffer;
};
true
"""


@pytest.fixture
def tcp_port_taken(proxy):
    """qproxy's port number on TCP, bound here and not listening: a
    WebSocket that went over TCP would be refused."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", proxy.port))
    except OSError:
        pass        # another holds it: the test asks qproxy's stats anyway
    yield
    s.close()


@pytest.fixture
def browser(proxy, certificate, tcp_port_taken):
    """A headless Chromium with RFC 9220 on, on a page of the proxy's
    origin (so that it has an HTTP/3 connection there), WS_JS loaded."""
    if not chromium_binary():
        pytest.fail("chromium is not installed (make deps installs it)", pytrace=False)
    c = Chromium("127.0.0.1:%d" % proxy.port, spki_hash(certificate[0]),
                 timeout=30 * SLOW, extra_args=["--enable-features=EnableWebsocketsOverHttp3"])
    try:
        c.start()
    except CDPError as e:
        pytest.fail("chromium did not start: %s" % e, pytrace=False)
    r = c.navigate("https://127.0.0.1:%d/app/status/200" % proxy.port)
    assert not r.get("errorText"), "chromium could not load a page: %r\n%s" % (
        r, c.stderr_tail())
    assert c.evaluate(WS_JS) is True
    yield c
    c.close()


def evaluate(browser, proxy, js, timeout=30):
    try:
        return browser.evaluate(js, timeout=timeout * SLOW)
    except CDPError as e:
        raise AssertionError("%s\nchromium's stderr:\n%s\nqproxy's log:\n%s"
                             % (e, browser.stderr_tail(), proxy.log_tail(30)))


def test_chromium_websocket_echo(proxy, browser, backend_app):
    """Text and binary messages, up to 1 MiB and more, echoed whole; the
    backend's choice of subprotocol; a close by the page, its code and
    reason echoed; all over HTTP/3 through qproxy."""
    before = qproxy_stats(proxy)
    n0 = backend_app.count
    got = evaluate(browser, proxy, r"""(async () => {
      const ws = await wsOpen('/app/ws?protocol=chat', ['chat', 'other']);
      if (ws.failed) return {failed: true, closed: await ws.closed};
      const out = {protocol: ws.protocol, echoes: [], sent: []};
      const msgs = ['hello', 'ünïcødé ✓', '', pattern(1), pattern(70000),
                    pattern(1024 * 1024 + 3)];
      for (const m of msgs) ws.send(m);
      for (const m of msgs) {
        const e = await wsNext(ws);
        if (typeof m === 'string') {
          out.sent.push(m);
          out.echoes.push(e);
        } else {
          out.sent.push([m.byteLength, await hex(m)]);
          out.echoes.push(e instanceof ArrayBuffer ? [e.byteLength, await hex(e)] : e);
        }
      }
      ws.close(4321, 'page done');
      out.closed = await ws.closed;
      return out;
    })()""")
    assert not got.get("failed"), (got, browser.stderr_tail(), proxy.log_tail(30))
    assert got["protocol"] == "chat"
    assert got["echoes"] == got["sent"], [(a if isinstance(a, str) else a[0])
                                          for a in got["echoes"]]
    assert got["closed"] == [4321, "page done", True], got["closed"]

    rec = ws_record(backend_app, n0, "/app/ws?protocol=chat")
    assert rec["method"] == "GET" and rec["ws_answer"] == 101, rec
    assert any("qproxy" in v for v in header_values(rec, "via")), rec["headers"]
    assert header_values(rec, "origin") == ["https://127.0.0.1:%d" % proxy.port]
    assert header_values(rec, "sec-websocket-protocol") == ["chat, other"]
    assert "Chrome/" in header_values(rec, "user-agent")[0]
    sizes = [len("hello"), len("ünïcødé ✓".encode()), 0, 1, 70000, 1024 * 1024 + 3]
    assert [m[1] for m in rec["ws_messages"] if m[0] in (1, 2)] == sizes
    assert [m[2] for m in rec["ws_messages"] if m[0] == 2] == [s[1] for s in got["sent"][3:]]
    assert rec["ws_close"] == [4321, "page done"] and rec["ws_end"] == "eof", rec
    assert not rec["error"], rec

    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnel's end in the stats")
    after = qproxy_stats(proxy)
    ws = {k: after["websockets"][k] - before["websockets"][k]
          for k in ("opened", "bytes_to_backend", "bytes_to_client", "refused")}
    assert ws["opened"] == 1 and ws["refused"] == 0, ws
    # the messages, framed (a client's frames are masked: 4 bytes more)
    assert ws["bytes_to_backend"] > sum(sizes) > 1024 * 1024, ws
    assert ws["bytes_to_client"] > sum(sizes), ws
    # on the page's connection
    assert after["connections"]["total"] == before["connections"]["total"], after


def test_chromium_websocket_closed_by_backend(proxy, browser):
    """The backend's close (code 4000) after one message reaches the page,
    as a clean close."""
    got = evaluate(browser, proxy, r"""(async () => {
      const ws = await wsOpen('/app/ws?close-after=1');
      if (ws.failed) return {failed: true, closed: await ws.closed};
      ws.send('only one');
      return {echo: await wsNext(ws), closed: await ws.closed};
    })()""")
    assert got == {"echo": "only one", "closed": [4000, "close-after", True]}, (
        got, browser.stderr_tail())
    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnel's end in the stats")


def test_chromium_messages_keep_a_tunnel_open(proxy, browser, backend_app):
    """tunnel_timeout (1 s on /idle/) counts from the last byte either way:
    the page's messages, 250 ms apart for 1.5 s to a backend that echoes
    none, keep it open, and the page closes it."""
    n0 = backend_app.count
    got = evaluate(browser, proxy, r"""(async () => {
      const ws = await wsOpen('/idle/ws?mute=1');
      if (ws.failed) return 'failed';
      for (let k = 0; k < 6; k++) {
        await new Promise(r => setTimeout(r, 250));
        if (ws.readyState !== WebSocket.OPEN) return 'closed before ' + k;
        ws.send('message ' + k);
      }
      ws.close(1000);
      return await ws.closed;
    })()""")
    assert got == [1000, "", True], got
    rec = ws_record(backend_app, n0, "/idle/ws?mute=1")
    assert [m[3] for m in rec["ws_messages"] if m[0] == 1] == [
        b"message %d" % k for k in range(6)], rec["ws_messages"]


def test_chromium_websocket_refused(proxy, browser, backend_app):
    """The backend's 403 to the upgrade: the page's socket fails (1006),
    and the 403 went to Chromium as it was."""
    before = qproxy_stats(proxy)
    n0 = backend_app.count
    got = evaluate(browser, proxy, r"""(async () => {
      const ws = await wsOpen('/app/ws?refuse=403');
      return {failed: !!ws.failed, closed: await ws.closed};
    })()""")
    assert got == {"failed": True, "closed": [1006, "", False]}, got
    rec = ws_record(backend_app, n0, "/app/ws?refuse=403")
    assert (rec["ws_answer"], rec["ws_end"]) == (403, "eof"), rec
    after = qproxy_stats(proxy)
    assert after["websockets"]["refused"] - before["websockets"]["refused"] == 1
    assert after["websockets"]["opened"] == before["websockets"]["opened"]
    line = wait_access_line(proxy, "/app/ws?refuse=403")
    assert (line["method"], line["status"]) == ("GET", 403), line


def test_chromium_websockets_at_once(proxy, browser, backend_app):
    """Eight sockets at once on the page's one connection, 50 messages
    each, interleaved: every echo comes back on its own socket, in
    order."""
    before = qproxy_stats(proxy)
    n0 = backend_app.count
    got = evaluate(browser, proxy, r"""(async () => {
      const socks = await Promise.all(Array.from({length: 8},
          (_, i) => wsOpen('/app/ws?many=' + i)));
      if (socks.some(s => s.failed)) return 'failed';
      for (let k = 0; k < 50; k++)
        socks.forEach((s, i) => s.send('socket ' + i + ' message ' + k));
      const out = await Promise.all(socks.map(async (s, i) => {
        for (let k = 0; k < 50; k++)
          if (await wsNext(s) !== 'socket ' + i + ' message ' + k) return 'wrong at ' + k;
        s.close(1000);
        return (await s.closed)[0];
      }));
      return out;
    })()""")
    assert got == [1000] * 8, (got, browser.stderr_tail())
    for i in range(8):
        rec = ws_record(backend_app, n0, "/app/ws?many=%d" % i)
        assert len([m for m in rec["ws_messages"] if m[0] == 1]) == 50, rec["ws_messages"]
        assert rec["ws_end"] == "eof", rec
    wait_until(lambda: ws_stats(proxy)["current"] == 0, "the tunnels' end in the stats")
    after = qproxy_stats(proxy)
    assert after["websockets"]["opened"] - before["websockets"]["opened"] == 8
    assert after["connections"]["total"] == before["connections"]["total"], after


def test_tunnels_in_workers(qproxy_factory, backend_app):
    """[global] workers: each worker opens the tunnels of its own
    connections, and qproxyctl stats, from the supervisor, adds up their
    counts: six connections of one tunnel each, which their connection
    IDs spread over two workers."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             glob=[("workers", "2")]))
    wait_until(lambda: qproxy_stats(q)["workers"]["answered"] == 2,
               "both workers answering", 10 * SLOW)
    sizes = [1000 + 7 * i for i in range(6)]
    for i, n in enumerate(sizes):
        res = tunnel(q.port, "/app/ws?raw=1&n=%d" % i, n)
        assert res.outcomes == ["status 200 body %d" % n], res
    wait_until(lambda: ws_stats(q)["current"] == 0, "every tunnel closed", 5)
    st = ws_stats(q)
    assert (st["opened"], st["bytes_to_backend"], st["bytes_to_client"]) == \
        (6, sum(sizes), sum(sizes)), st
