"""Graceful shutdown on SIGTERM: in-flight requests finish, exit code 0."""

import signal
import socket
import subprocess
import time

import pytest

from helpers import (SLOW, KiB, MiB, app_sections, background_get, expected_sha256,
                     free_udp_port, h3_get, h3raw, h3raw_binary, paused_h3raw, qproxy_stats,
                     reload_refused_while_stopping, udp_ports_held, wait_until)


def test_sigterm_lets_in_flight_download_finish(qproxy_factory, backend_app):
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="10s")
    n = 10 * MiB
    t, out, progress, reached = background_get(q.url("/app/slow/%d?ms=2000" % n), 256 * KiB)
    assert reached.wait(15 * SLOW), "the download did not start"
    assert "e" not in out, out.get("e")
    at_signal = progress["bytes"]
    assert at_signal < n, "the download finished before SIGTERM; nothing was tested"
    q.signal(signal.SIGTERM)
    # once qproxy is shutting down, a new client is refused at once
    # (CONNECTION_REFUSED), not left to time out while the download ends
    deadline = time.monotonic() + 5 * SLOW
    while "shutting down gracefully" not in q.log_text():
        assert time.monotonic() < deadline, q.log_text()[-2000:]
        time.sleep(0.01)
    late = time.monotonic()
    r = h3raw(q.port, [":method: GET", ":scheme: https",
                       ":authority: 127.0.0.1:%d" % q.port, ":path: /app/bytes/1"],
              timeout=5 * SLOW)
    assert "handshake failed: connection closed by peer (0x2)" in r.stderr, r
    assert time.monotonic() - late < 2 * SLOW
    t.join(60 * SLOW)
    assert not t.is_alive()
    assert "e" not in out, "the in-flight download failed after SIGTERM: %s" % (out.get("e"),)
    r = out["r"]
    assert r.status == 200
    assert len(r.body) == n and r.sha256 == expected_sha256(n)
    rc = q.wait(timeout=q.shutdown_timeout + 5 * SLOW)
    assert rc == 0
    assert q.sanitizer_report() is None


def test_sigterm_when_idle_exits_promptly(qproxy_factory, backend_app):
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="10s")
    r = h3_get(q.url("/app/bytes/1000"))
    assert r.status == 200
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    rc = q.wait(timeout=q.shutdown_timeout + 5 * SLOW)
    assert rc == 0
    assert time.monotonic() - t0 < 3 * SLOW, "idle qproxy took long to exit"
    assert q.sanitizer_report() is None


def test_shutdown_timeout_bounds_in_flight_requests(qproxy_factory, backend_app):
    """A request that never completes does not hold the exit beyond
    shutdown_timeout (1s here), and the exit is still clean."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="1s",
                       read_timeout="30s")
    before = backend_app.count
    t, out, _, _ = background_get(q.url("/app/hang"), 1, timeout=30)
    assert backend_app.wait_for_request(lambda x: x["path"] == "/app/hang", start=before,
                                        timeout=10 * SLOW)
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    rc = q.wait(timeout=1 + 5 * SLOW)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert 0.9 <= elapsed < 1 + 3 * SLOW, "exit %.2fs after SIGTERM" % elapsed
    # On the way out qproxy closes the connection (CONNECTION_CLOSE), so the
    # client learns at once instead of waiting for its idle timeout.
    limit = 2 + 2 * SLOW
    t.join(limit)
    assert not t.is_alive(), ("qproxy exited without closing the client's connection: "
                              "the client still waits %.0fs later" % limit)
    assert "e" in out or out["r"].status != 200
    assert q.sanitizer_report() is None


def _deaf_client(q, pause, *extra):
    """h3raw on one connection: a request, then, once it has its answer,
    nothing read for pause seconds (the datagrams that come wait), then a
    second request sent before what came is read. Returns the process,
    once the pause has begun."""
    get = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
           ":path: /app/bytes/1000"]
    return paused_h3raw(q, get, 2, 1, pause, pause + 20 * SLOW, extra)


@pytest.mark.parametrize("pause", [0.5, 1.5])
def test_a_request_crossing_a_goaway_is_served_or_refused_not_lost(qproxy_factory,
                                                                  backend_app, pause):
    """A client reads nothing from just before SIGTERM, for half a second
    then for one and a half, and then sends a request before it reads what
    came: the shutdown's GOAWAY notice (no new request, please), and a
    second later (it did not acknowledge the notice) the final GOAWAY.
    - 0.5 s: the request crossed the notice alone, and is served. The final
      GOAWAY went three round trips after the notice, 50 ms here: the
      request was refused.
    - 1.5 s: it crossed the final GOAWAY too, and is refused with
      H3_REQUEST_REJECTED, which clients send again on a new connection.
      The connection, idle at the final GOAWAY, was closed with it, and
      such a request lost (libcurl failed it, ERR_DRAINING)."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="10s")
    p = _deaf_client(q, pause, "--await-refusal")
    before = backend_app.count
    q.signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30 * SLOW)
    if pause < 1:
        assert out.splitlines() == ["status 200 body 1000"] * 2, (out, err)
        assert backend_app.count == before + 1
    else:
        assert out.splitlines() == ["status 200 body 1000", "reset 0x10b"], (out, err)
        assert backend_app.count == before, "the refused request reached the backend"
    assert q.wait(timeout=10 * SLOW) == 0
    assert q.sanitizer_report() is None


def test_the_final_goaway_follows_the_clients_acknowledgement_of_the_notice(
        qproxy_factory, backend_app):
    """A client that acknowledges the shutdown's GOAWAY notice gets the
    final GOAWAY then, not a second later (for clients that do not, at
    least), and its connection, idle, is closed once it acknowledges that
    one: h3raw stays connected after its request, and the two GOAWAYs come
    in well under the second."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="10s")
    get = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
           ":path: /app/bytes/1000"]
    p = subprocess.Popen([h3raw_binary(), "-v", "-t", str(30 * SLOW), "--linger",
                          str(20 * SLOW)] + [a for h in get for a in ("-H", h)] +
                         ["127.0.0.1", str(q.port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: qproxy_stats(q)["requests"]["2xx"] >= 1, "the request")
        time.sleep(0.2)     # the client's ACKs have come
        q.signal(signal.SIGTERM)
        goaways = []
        for line in p.stderr:
            if line.startswith("h3raw: GOAWAY received"):
                goaways.append((time.monotonic(), line.split()[-1]))
        assert [g[1] for g in goaways] == ["4611686018427387900", "4"], goaways
        assert goaways[1][0] - goaways[0][0] < 0.5, goaways
        assert p.wait(timeout=5) == 0
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        p.kill()
        p.communicate()
    assert q.sanitizer_report() is None


def test_a_client_silent_after_the_final_goaway_holds_no_shutdown(qproxy_factory,
                                                                  backend_app):
    """An idle connection is kept after the final GOAWAY until its client
    has acknowledged it, but a second or two at most: a client that reads
    nothing for 30 s does not hold the exit for shutdown_timeout (300 s)."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="300s")
    p = _deaf_client(q, 30 * SLOW)
    try:
        q.signal(signal.SIGTERM)
        assert q.wait(timeout=10 * SLOW) == 0
        assert p.poll() is None, "the client's pause ended before qproxy exited"
    finally:
        p.kill()
        p.communicate()
    assert q.sanitizer_report() is None


def test_an_acknowledgement_of_the_settings_is_not_one_of_the_notice(qproxy_factory,
                                                                     backend_app):
    """The final GOAWAY waits for an acknowledgement of the notice itself,
    not of any control stream data: the client's datagrams take a second to
    reach qproxy, and SIGTERM comes while its acknowledgement of qproxy's
    SETTINGS (sent with its Finished) is on its way, after its second
    request, sent before the notice reached it. That acknowledgement came
    first, was taken for the notice's, and the final GOAWAY refused the
    second request (H3_REQUEST_REJECTED): a request sent before the client
    had the notice is served."""
    from relay import Faults, Relay

    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="10s")
    get = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
           ":path: /app/bytes/1000"]
    with Relay(q.port, c2s=Faults(delay_ms=1000)) as relay:
        p = subprocess.Popen([h3raw_binary(), "-v", "-t", str(30 * SLOW), "-n", "2",
                              "--pause-after", "1", "--pause", "0.1", "--await-refusal"] +
                             [a for h in get for a in ("-H", h)] +
                             ["127.0.0.1", str(relay.port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = []
            while not seen or seen[-1] not in ("h3raw: handshake completed\n", ""):
                seen.append(p.stderr.readline())
            assert seen[-1] != "", seen
            # the second request has gone (0.1 s), the SETTINGS' ACK has
            # not come (1 s)
            time.sleep(0.45)
            q.signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30 * SLOW)
            assert out.splitlines() == ["status 200 body 1000"] * 2, (out, "".join(seen) + err)
            # the relay carries the client's last ACKs and its close
            assert q.wait(timeout=10 * SLOW) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert q.sanitizer_report() is None


def test_a_connection_its_client_closed_holds_no_shutdown(qproxy_factory, backend_app):
    """A connection whose client has closed it drains for three PTOs (RFC
    9000 10.2.2), sending nothing: on a path of a second's round trip,
    about five seconds, for which a shutdown waited. In a shutdown it is
    let go at once."""
    from relay import Faults, Relay

    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    with Relay(q.port, c2s=Faults(delay_ms=500), s2c=Faults(delay_ms=500)) as relay:
        r = h3raw(relay.port, [":method: GET", ":scheme: https",
                               ":authority: 127.0.0.1:%d" % q.port, ":path: /app/bytes/1000"],
                  timeout=20 * SLOW)
        assert r.outcomes == ["status 200 body 1000"], r
        # its close has come: the connection drains
        wait_until(lambda: qproxy_stats(q)["connections"]["closing"] == 1,
                   "the client's close", 5 * SLOW)
        t0 = time.monotonic()
        q.signal(signal.SIGTERM)
        assert q.wait(timeout=30 * SLOW) == 0
        assert time.monotonic() - t0 < 2, "the draining connection held the exit"
    assert q.sanitizer_report() is None


@pytest.mark.parametrize("how", ["qproxyctl", "SIGHUP"])
def test_no_reload_during_graceful_shutdown(qproxy_factory, backend_app, tmp_path,
                                            monkeypatch, how):
    """A reload while requests drain after SIGTERM was carried out: systemd,
    told STOPPING=1, was told READY=1 again, and a listener the new file
    added was bound. It is refused now: qproxyctl gets "ERR shutting
    down" and exits 1, SIGHUP is logged and ignored. Found by a review."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s",
                       read_timeout="30s")
    before = backend_app.count
    background_get(q.url("/app/hang"), 1, timeout=30)
    assert backend_app.wait_for_request(lambda x: x["path"] == "/app/hang", start=before,
                                        timeout=10 * SLOW)
    extra = free_udp_port()
    with open(q.conf) as f:
        text = f.read()
    with open(q.conf, "w") as f:
        f.write(text.replace("address = 127.0.0.1:%d\n" % q.port,
                             "address = 127.0.0.1:%d\naddress = 127.0.0.1:%d\n"
                             % (q.port, extra)))
    q.signal(signal.SIGTERM)
    wait_until(lambda: "shutting down gracefully" in q.log_text(), "no graceful shutdown")
    reload_refused_while_stopping(q, how)
    assert q.running()
    # the new address was not bound
    assert extra not in udp_ports_held(q.proc.pid)
    assert q.port in udp_ports_held(q.proc.pid)
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    sock.close()
    states = [l for m in got for l in m.split("\n") if l in ("READY=1", "RELOADING=1",
                                                             "STOPPING=1")]
    assert states == ["READY=1", "STOPPING=1"], got
    assert "configuration reloaded" not in q.log_text()


def test_handshakes_never_completed_hold_no_shutdown(qproxy_factory, backend_app):
    """Connections whose clients sent a ClientHello and nothing more get
    the shutdown's GOAWAYs, which they never acknowledge (about two
    seconds: a second for the notice, a second's linger after the final
    one), and are then closed; their closing periods (three PTOs, about
    three seconds more at the initial RTT) held the exit though no
    request was ever served on them (5.9 s in all here): they are let go
    at once (2.9 s)."""
    from test_ops import pending_handshakes

    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             listener=[("retry", "never")]),
                       shutdown_timeout="30s")
    clients = pending_handshakes(q, 20)
    try:
        t0 = time.monotonic()
        q.signal(signal.SIGTERM)
        assert q.wait(timeout=30 * SLOW) == 0
        took = time.monotonic() - t0
    finally:
        for c in clients:
            c.close()
    assert q.sanitizer_report() is None
    assert took < 4.5, "the pending handshakes held the exit for %.1f s" % took
