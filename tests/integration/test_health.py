"""A backend's health_check: qproxy asks each server for a path now and
then, and new requests pass over a server that fails it, until it passes
again; libcurl's requests show where they went."""

import http.server
import json
import threading
import time

import pytest

from helpers import (SLOW, _global_section, _listener_section, h3_get, metric, metrics,
                     wait_until)
from test_ops import qproxyctl, stats


class _Toggle:
    """An HTTP/1.1 server whose /health answers 200 or, once failing is
    set, 503; any other path answers "toggle" and is counted."""

    def __init__(self):
        outer = self
        self.failing = False
        self.requests = 0
        self.checks = 0
        self.hosts = set()
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    if self.path == "/health":
                        outer.checks += 1
                        outer.hosts.add(self.headers.get("Host"))
                        code = 503 if outer.failing else 200
                    else:
                        outer.requests += 1
                        code = 200
                body = b"toggle\n"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.address = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _served(backend):
    """The requests a test backend had, health checks left out."""
    return sum(1 for r in backend.requests if r["path"] != "/health")


def _server_state(q, backend, address):
    for b in json.loads(qproxyctl(q, "backends", "--json").stdout)["backends"]:
        if b["name"] == backend:
            for s in b["servers"]:
                if s["address"] == address:
                    return s["state"]
    raise AssertionError("no server %s in %s" % (address, backend))


def _proxy(qproxy_factory, backend_app, toggle):
    """Route /app/ to app and toggle, both checked at /health (app answers
    404 there, so its checks fail: it has a path of its own below); route
    /lone/ to toggle alone."""
    def sections(port, cert, key):
        g, gitems = _global_section()
        l, litems = _listener_section(port, cert, key)
        checks = [("health_interval", "200ms"), ("health_timeout", "1s"),
                  ("health_fails", "2"), ("health_passes", "1")]
        return [(g, gitems), (l, litems),
                ("backend pair", [("server", backend_app.tcp_server),
                                  ("server", toggle.address),
                                  ("health_check", "/health")] + checks),
                ("backend lone", [("server", toggle.address),
                                  ("health_check", "/health")] + checks),
                ("route lone", [("path_prefix", "/lone/"), ("backend", "lone")]),
                ("route app", [("path_prefix", "/app/"), ("backend", "pair")])]
    return qproxy_factory(sections=sections)


def test_a_server_failing_its_health_check_is_passed_over(qproxy_factory, backend_app):
    toggle = _Toggle()
    try:
        q = _proxy(qproxy_factory, backend_app, toggle)
        # backend_app answers /health with 404: unhealthy after two checks
        wait_until(lambda: _server_state(q, "pair", backend_app.tcp_server) == "unhealthy",
                   "app marked unhealthy", 5 * SLOW)
        wait_until(lambda: toggle.checks >= 2, "toggle checked", 5 * SLOW)
        # every request goes to the server that passes
        before = _served(backend_app)
        for i in range(6):
            r = h3_get(q.url("/app/bytes/%d" % (10 + i)))
            assert r.status == 200 and r.body == b"toggle\n"
        assert _served(backend_app) == before
        assert _server_state(q, "pair", toggle.address) in ("up", "unknown")
        fams = metrics(q.control_socket)
        assert metric(fams, "qproxy_backend_server_down", backend="pair",
                      server=backend_app.tcp_server) == 1
        assert metric(fams, "qproxy_backend_server_down", backend="pair",
                      server=toggle.address) == 0
        st = stats(q)["upstream"]
        assert st["health_checks_failed"] >= 2 and st["health_checks"] > st["health_checks_failed"]

        # toggle fails too: with every server failing, requests are not
        # refused but go round both, as without checks
        toggle.failing = True
        # (each backend checks it on its own, at its own times)
        wait_until(lambda: all(_server_state(q, b, toggle.address) == "unhealthy"
                               for b in ("pair", "lone")),
                   "toggle marked unhealthy", 5 * SLOW)
        seen = set()
        for i in range(6):
            r = h3_get(q.url("/app/bytes/%d" % (10 + i)))
            assert r.status == 200
            seen.add(r.body == b"toggle\n")
        assert seen == {True, False}
        # a backend of one server: still sent there
        n = toggle.requests
        assert h3_get(q.url("/lone/x")).body == b"toggle\n"
        assert toggle.requests == n + 1

        # one check passes (health_passes 1): taken again
        toggle.failing = False
        wait_until(lambda: all(_server_state(q, b, toggle.address) != "unhealthy"
                               for b in ("pair", "lone")),
                   "toggle healthy again", 5 * SLOW)
        before = _served(backend_app)
        for i in range(4):
            assert h3_get(q.url("/app/bytes/%d" % (10 + i))).body == b"toggle\n"
        assert _served(backend_app) == before
        log = q.log_text()
        assert "backend pair: server %s fails its health check (status 404)" % \
            backend_app.tcp_server in log, q.log_tail()
        assert "backend lone: server %s passes its health check again" % toggle.address \
            in log, q.log_tail()
    finally:
        toggle.close()


def _closed_port_marked_unhealthy(qproxy_factory, backend_app):
    """q with a backend "pair" of the app's server and a closed port, checked
    every 200 ms, once the closed port is marked unhealthy; q and the port's
    address."""
    toggle = _Toggle()
    address = toggle.address
    toggle.close()
    q = qproxy_factory(sections=lambda port, cert, key: [
        _global_section(), _listener_section(port, cert, key),
        ("backend pair", [("server", backend_app.tcp_server), ("server", address),
                          ("health_check", "/status/200"), ("health_interval", "200ms"),
                          ("health_fails", "1")]),
        ("route app", [("path_prefix", "/app/"), ("backend", "pair")])])
    wait_until(lambda: _server_state(q, "pair", address) == "unhealthy",
               "closed port marked unhealthy", 5 * SLOW)
    return q, address


def test_a_server_that_refuses_connections_fails_its_check(qproxy_factory, backend_app):
    """A server whose port is closed fails at the connect; a reload keeps
    the mark (the server's counters go on) and the checks go on in the new
    configuration only."""
    q, address = _closed_port_marked_unhealthy(qproxy_factory, backend_app)
    assert _server_state(q, "pair", backend_app.tcp_server) == "unknown"
    failed = stats(q)["upstream"]["connect_failures"]
    for i in range(4):
        assert h3_get(q.url("/app/bytes/%d" % (10 + i))).status == 200
    # no request tried the closed port
    assert stats(q)["upstream"]["connect_failures"] == failed
    p = qproxyctl(q, "reload")
    assert p.returncode == 0, p.stderr
    assert _server_state(q, "pair", address) == "unhealthy"
    # one generation's checks only: about one every 200 ms per server
    c0 = stats(q)["upstream"]["health_checks"]
    wait_until(lambda: stats(q)["upstream"]["health_checks"] >= c0 + 6, "checks go on", 5 * SLOW)


def test_a_reload_that_removes_the_checks_lifts_the_marks(qproxy_factory, backend_app):
    """A server marked unhealthy, then its backend's health_check removed
    by a reload: no check is left to lift the mark, so the reload lifts it,
    and the server takes its turn again (a failed connect passes it over
    for fail_timeout, as without checks). The mark stayed until a restart,
    new requests passing the server over for good."""
    q, address = _closed_port_marked_unhealthy(qproxy_factory, backend_app)
    with open(q.conf) as f:
        text = f.read()
    with open(q.conf, "w") as f:
        f.write(text.replace("health_check = /status/200\n", ""))
    p = qproxyctl(q, "reload")
    assert p.returncode == 0, p.stderr
    assert _server_state(q, "pair", address) == "unknown"
    failed = stats(q)["upstream"]["connect_failures"]
    for i in range(4):
        assert h3_get(q.url("/app/bytes/%d" % (10 + i))).status == 200
    # its turn came: the closed port was tried, and is down now
    assert stats(q)["upstream"]["connect_failures"] == failed + 1
    assert _server_state(q, "pair", address) == "down"


@pytest.mark.parametrize("path,why", [
    ("/hang", "no status line within health_timeout"),
    ("/garbage", "not an HTTP/1.1 response"),
    ("/head/version-1x", "not an HTTP/1.1 response"),     # passed once
    ("/head/status-2000", "not an HTTP/1.1 response"),    # passed once
    ("/head/reason-ctl", "not an HTTP/1.1 response"),     # passed once
    ("/head/bare-lf", "not an HTTP/1.1 response"),        # passed once
    ("/close/0", "status 200"),     # passes: no mark
    ("/status/500", "status 500"),
])
def test_what_fails_a_check(qproxy_factory, backend_app, path, why):
    # Short for the check that hangs; the others answer, but a loaded test
    # backend was seen to take over 300 ms to, and the check then failed
    # for its timeout before its answer was read.
    timeout = "300ms" if path == "/hang" else "3s"
    q = qproxy_factory(sections=lambda port, cert, key: [
        _global_section(), _listener_section(port, cert, key),
        ("backend app", [("server", backend_app.tcp_server), ("health_check", path),
                         ("health_interval", "100ms"), ("health_timeout", timeout),
                         ("health_fails", "1")]),
        ("route app", [("path_prefix", "/app/"), ("backend", "app")])])
    if why == "status 200":
        wait_until(lambda: stats(q)["upstream"]["health_checks"] >= 3, "three checks",
                   5 * SLOW)
        assert stats(q)["upstream"]["health_checks_failed"] == 0
        assert _server_state(q, "app", backend_app.tcp_server) == "unknown"
        return
    wait_until(lambda: _server_state(q, "app", backend_app.tcp_server) == "unhealthy",
               "marked unhealthy", 5 * SLOW)
    assert "backend app: server %s fails its health check (%s)" % (
        backend_app.tcp_server, why) in q.log_text(), q.log_tail()
    # a backend of one server still takes its requests
    assert h3_get(q.url("/app/bytes/10")).status == 200


def test_health_check_host(qproxy_factory):
    """The Host of a check: the server's address as written, or
    health_check_host for an application that answers only its own names."""
    toggle = _Toggle()
    try:
        qproxy_factory(sections=lambda port, cert, key: [
            _global_section(), _listener_section(port, cert, key),
            ("backend named", [("server", toggle.address), ("health_check", "/health"),
                               ("health_check_host", "app.example.com:8443"),
                               ("health_interval", "100ms")]),
            ("backend plain", [("server", toggle.address), ("health_check", "/health"),
                               ("health_interval", "100ms")]),
            ("route a", [("path_prefix", "/a/"), ("backend", "named")]),
            ("route b", [("path_prefix", "/b/"), ("backend", "plain")])])
        wait_until(lambda: toggle.hosts >= {"app.example.com:8443", toggle.address},
                   "checks with both hosts", 5 * SLOW)
        assert toggle.hosts == {"app.example.com:8443", toggle.address}
    finally:
        toggle.close()


def test_reloads_more_often_than_health_timeout_leave_a_check_under_way(
        qproxy_factory, backend_app, blackhole):
    """A reload that changes neither a server nor its check leaves the check
    under way to end: each reload began every check again, so with reloads
    more often than health_timeout a server that never answers (a hung
    application) was never marked unhealthy, and new requests kept going to
    it for their read_timeout."""
    hung = "127.0.0.1:%d" % blackhole.port

    q = qproxy_factory(sections=lambda port, cert, key: [
        _global_section(), _listener_section(port, cert, key),
        ("backend app", [("server", backend_app.tcp_server), ("server", hung),
                         ("health_check", "/bytes/1"), ("health_interval", "500ms"),
                         ("health_timeout", "2s"), ("health_fails", "1"),
                         ("read_timeout", "10s")]),
        ("route app", [("path_prefix", "/app/"), ("backend", "app")])])
    with open(q.conf) as f:
        text = f.read()
    deadline = time.monotonic() + 8 * SLOW
    reloads = 0
    while _server_state(q, "app", hung) != "unhealthy":
        assert time.monotonic() < deadline, (reloads, stats(q)["upstream"])
        time.sleep(0.5)
        # a change elsewhere in the backend: the checks are the same
        with open(q.conf, "w") as f:
            f.write(text.replace("read_timeout = 10s", "read_timeout = %ds" % (11 + reloads % 2)))
        p = qproxyctl(q, "reload")
        assert p.returncode == 0, p.stderr
        reloads += 1
    assert reloads >= 3, reloads
    assert "server %s fails its health check (no status line within health_timeout)" \
        % hung in q.log_text(), q.log_tail()
    assert _server_state(q, "app", backend_app.tcp_server) != "unhealthy"
