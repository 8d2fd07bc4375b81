"""Graceful shutdown on SIGTERM: in-flight requests finish, exit code 0."""

import signal
import socket
import subprocess
import time

import pytest

from helpers import (SLOW, KiB, MiB, background_get, expected_sha256, free_udp_port, h3_get,
                     h3raw, qproxyctl_binary, wait_until)


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
    if how == "qproxyctl":
        p = subprocess.run([qproxyctl_binary(), "-s", q.control_socket, "reload"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert p.stderr == "qproxyctl: shutting down\n", p.stderr
    else:
        q.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused: shutting down" in q.log_text(), "no refusal logged")
    assert q.running()
    # the new address is free: this binds it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", extra))
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
