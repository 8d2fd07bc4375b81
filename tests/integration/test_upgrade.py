"""qproxyctl upgrade: the binary on disk takes over from the running
process; the running process's downloads finish through it, new clients
go to the new one, and a new process that cannot start leaves the running
one as it was."""

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pycurl
import pytest

from helpers import (SLOW, KiB, MiB, app_sections, background_get, expected_body,
                     expected_sha256, free_udp_port, gtls_fetch, h3_get, h3raw, h3raw_binary,
                     make_easy, preload_execdelay, qproxy_binary, qproxy_stats, qproxyctl,
                     qproxyctl_binary, udp_ports_held, wait_until)
import quicinitial  # tests/tools, on sys.path by conftest.py
from relay import Faults, Relay
from test_ops import stats
from test_workers import N as WORKERS, _pid_of, _worker0_started, _worker_stats, _workers


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            # a zombie is as good as gone: its parent (init) reaps it
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stop(pid):
    """Ends a process that is not the test's child (the old one started
    it), and waits until it has gone."""
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20 * SLOW
    while _alive(pid):
        assert time.monotonic() < deadline, "process %d did not exit" % pid
        time.sleep(0.05)


def _quic(q):
    return qproxy_stats(q)["quic"]


def _upgrade(q):
    """qproxyctl upgrade, which must take: the new process's id."""
    p = qproxyctl(q, "upgrade")
    assert p.returncode == 0, (p.stdout, p.stderr, q.log_tail())
    return int(p.stdout.split()[1])


SLOW_BYTES = 8 * MiB     # a download that spans an upgrade


def _draining_proxy(qproxy_factory, backend_app, workers):
    """q for a download that outlives an upgrade (shutdown_timeout 30 s):
    with test_workers' workers, or a lone process."""
    if workers:
        return _workers(qproxy_factory, backend_app, shutdown_timeout="30s")
    return qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")


def _slow_download(q, ms):
    """A download of SLOW_BYTES from q that takes ms milliseconds, begun
    (its first 256 KiB in): background_get's thread, out and progress."""
    t, out, progress, reached = background_get(q.url("/app/slow/%d?ms=%d" % (
        SLOW_BYTES, ms)), 256 * KiB)
    assert reached.wait(15 * SLOW), "the download did not start"
    return t, out, progress


def _downloaded(t, out, what):
    """The download of _slow_download ends whole; what says how it failed."""
    t.join(60 * SLOW)
    assert not t.is_alive()
    assert "e" not in out, "%s: %s" % (what, out.get("e"))
    assert out["r"].status == 200 and out["r"].sha256 == expected_sha256(SLOW_BYTES)


class _Hold:
    """A relay rewrite that holds the client's datagram number index (from
    1) until released: a handshake under way across an upgrade."""

    def __init__(self, index):
        self.index = index
        self.held, self._go = threading.Event(), threading.Event()

    def __call__(self, data, index):
        if index == self.index:
            self.held.set()
            self._go.wait(20 * SLOW)
        return data

    def release(self):
        self._go.set()


def _upgrade_while_held(q, hold, check=None):
    """Once hold has the client's datagram (and check, if any, passed
    meanwhile), qproxyctl upgrade, then the datagram goes on: the new
    process's id."""
    try:
        assert hold.held.wait(10 * SLOW), \
            "the client sent no datagram %d" % hold.index
        if check is not None:
            check()
        return _upgrade(q)
    finally:
        hold.release()


def test_upgrade_keeps_downloads_and_takes_new_clients(qproxy_factory, backend_app):
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    old = q.proc.pid
    n = 8 * MiB
    t, out, progress, reached = background_get(q.url("/app/slow/%d?ms=2500" % n),
                                               256 * KiB)
    assert reached.wait(15 * SLOW), "the download did not start"
    assert progress["bytes"] < n, "the download ended before the upgrade: nothing tested"

    p = qproxyctl(q, "upgrade")
    assert p.returncode == 0, (p.stdout, p.stderr, q.log_tail())
    m = re.fullmatch(r"process (\d+) took over; process (\d+) drains its connections "
                     r"for at most 30 s\n", p.stdout)
    assert m, p.stdout
    new = int(m.group(1))
    assert int(m.group(2)) == old and new != old
    try:
        assert _alive(new)
        # a new client: the new process's, while the old one still runs
        r = h3_get(q.url("/app/bytes/1000"))
        assert r.status == 200 and r.sha256 == expected_sha256(1000)
        assert q.running(), "the old process did not wait for its download"
        # a datagram for no connection of either: the new process passes
        # it on, the old one answers it with a stateless reset (and does
        # not pass it back)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(3 * SLOW)
            u.sendto(bytes([0x40]) + os.urandom(1199), ("127.0.0.1", q.port))
            reset, _ = u.recvfrom(2048)
        assert 21 <= len(reset) < 1200 and reset[0] & 0xc0 == 0x40, reset
        assert q.running()
        # one upgrade at a time: not while the process before drains
        p = qproxyctl(q, "upgrade")
        assert p.returncode == 1 and p.stderr == (
            "qproxyctl: the process before this one still serves connections: "
            "upgrade once it has exited\n"), (p.stdout, p.stderr)
        # the control socket is the new process's: only it passes datagrams on
        wait_until(lambda: _quic(q)["upgrade_forwarded"] > 0,
                   "the download's datagrams never went to the old process")
        assert _quic(q)["upgrade_forward_dropped"] == 0

        t.join(60 * SLOW)
        assert not t.is_alive()
        assert "e" not in out, "the download failed across the upgrade: %s" % out.get("e")
        r = out["r"]
        assert r.status == 200 and len(r.body) == n and r.sha256 == expected_sha256(n)
        # drained, the old process goes, long before shutdown_timeout
        assert q.wait(timeout=10 * SLOW) == 0
        assert _alive(new)
        r = h3_get(q.url("/app/bytes/2000"))
        assert r.status == 200 and r.sha256 == expected_sha256(2000)
        log = q.log_text()
        assert "upgrade: took over from the process before" in log
        assert "upgrade: the process before has exited" in log
        # a second upgrade, by the new process
        newer = _upgrade(q)
        wait_until(lambda: not _alive(new), "the idle process did not exit", 10 * SLOW)
        new = newer
        r = h3_get(q.url("/app/bytes/3000"))
        assert r.status == 200 and r.sha256 == expected_sha256(3000)
    finally:
        _stop(new)
    assert q.log_text().count("qproxy stopped") == 3, q.log_tail()
    assert q.sanitizer_report() is None


def test_upgrade_that_cannot_start_leaves_the_running_process(qproxy_factory, backend_app,
                                                              tmp_path):
    q = qproxy_factory(backend_server=backend_app.tcp_server)
    with open(q.conf) as f:
        good = f.read()
    with open(q.conf, "w") as f:
        f.write(good + "\n[route broken]\nbackend = nowhere\n")
    p = qproxyctl(q, "upgrade")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr.startswith("qproxyctl: the new process exited before it was ready"), \
        p.stderr
    assert "exit status 1" in p.stderr, p.stderr
    # its reason is in the log it shares
    assert "nowhere" in q.log_text()
    # the running process goes on: it reads its sockets and answers
    r = h3_get(q.url("/app/bytes/1000"))
    assert r.status == 200
    assert _quic(q)["upgrade_forwarded"] == 0
    # and can be upgraded once the file is right
    with open(q.conf, "w") as f:
        f.write(good)
    new = _upgrade(q)
    try:
        assert q.wait(timeout=10 * SLOW) == 0
        r = h3_get(q.url("/app/bytes/1000"))
        assert r.status == 200
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_tickets_the_old_process_may_have_taken_resume_nothing_after_an_upgrade(
        qproxy_factory, backend_app, tmp_path):
    """The tickets taken are in the process's memory: after an upgrade, a
    ClientHello the old process had served, replayed to the new one with
    its early data, found its ticket not taken. For 12 s after the new
    process took over, a ticket of a listener with early_data that it did
    not issue resumes nothing (tickets_unsure; its request is served after
    a full handshake); one it issued resumes, early data and all."""
    from test_transport import _early_sections, _gtls, _resumable
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")))
    old = _resumable(q, tmp_path)
    new = _upgrade(q)
    try:
        _gtls(q.port, "/app/bytes/2", tmp_path, *old)
        assert (tmp_path / "2").read_bytes() == expected_body(2)
        st = _quic(q)
        assert (st["resumed_handshakes"], st["early_data_requests"],
                st["tickets_unsure"]) == (0, 0, 1), st
        (tmp_path / "new").mkdir()
        mine = _resumable(q, tmp_path / "new")
        _gtls(q.port, "/app/bytes/3", tmp_path, *mine)
        assert (tmp_path / "3").read_bytes() == expected_body(3)
        st = _quic(q)
        assert (st["resumed_handshakes"], st["early_data_requests"],
                st["tickets_unsure"]) == (1, 1, 1), st
    finally:
        _stop(new)


def test_a_new_secret_file_takes_a_restart(qproxy_factory, backend_app):
    """The new process keeps the running one's secret: a secret_file of
    another name in its configuration is warned about with the file it
    came from, and is neither read nor made; a session ticket from before
    resumes after."""
    q = qproxy_factory(backend_server=backend_app.tcp_server)
    with open(q.conf) as f:
        text = f.read()
    old_path = re.search(r"^secret_file = (.*)$", text, re.M).group(1)
    new_path = old_path + ".new"
    d = os.path.dirname(q.conf)
    sess, tp = os.path.join(d, "session"), os.path.join(d, "tp")
    g = gtls_fetch(q.port, ["/app/bytes/10"], os.path.join(d, "dl"), quiet=True,
                   extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp,
                               "--wait-for-ticket"])
    assert os.path.exists(sess), ("no session ticket came", g.stderr[-2000:])
    new = _upgrade(q)
    try:
        assert "secret_file" not in q.log_text()
        # and once more, the file named anew: the process before's secret
        with open(q.conf, "w") as f:
            f.write(text.replace(old_path, new_path))
        assert q.wait(timeout=10 * SLOW) == 0
        newer = _upgrade(q)
        wait_until(lambda: not _alive(new), "the idle process did not exit", 10 * SLOW)
        new = newer
        assert re.search(r"\.conf:\d+: secret_file %s: the running process's secret, from "
                         r"%s, is kept; a new one takes effect at a restart"
                         % (re.escape(new_path), re.escape(old_path)), q.log_text()), \
            q.log_tail()
        assert not os.path.exists(new_path)
        # the same secret: the first process's ticket resumes at the third
        gtls_fetch(q.port, ["/app/bytes/20"], os.path.join(d, "dl"), quiet=True,
                   extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp])
        assert _quic(q)["resumed_handshakes"] == 1
    finally:
        _stop(new)


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_a_new_control_socket_path_at_an_upgrade_leaves_no_old_file(qproxy_factory,
                                                                     backend_app, workers):
    """control_socket names another file at an upgrade: the new process
    listens there, and removes the running one's socket files (with
    workers, the supervisor's and each worker's) once it has taken over.
    Both processes left them: the old one's files belong to whoever takes
    the path, and no one did."""
    glob = [("workers", str(workers))] if workers else []
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server, glob=glob))
    if workers:
        wait_until(lambda: stats(q)["workers"]["answered"] == workers, "every worker")
    old_path = q.control_socket
    olds = [old_path] + ["%s.%d" % (old_path, i) for i in range(workers)]
    assert all(os.path.exists(f) for f in olds), olds
    new_path = old_path + ".new"
    with open(q.conf) as f:
        text = f.read()
    with open(q.conf, "w") as f:
        f.write(text.replace("control_socket = %s\n" % old_path,
                             "control_socket = %s\n" % new_path))
    new = _upgrade(q)
    try:
        q.control_socket = new_path
        wait_until(lambda: not any(os.path.exists(f) for f in olds),
                   "the old control sockets' files stayed", 10 * SLOW)
        assert qproxyctl(q, "version").returncode == 0
        if workers:
            wait_until(lambda: stats(q)["workers"]["answered"] == workers, "every worker")
            assert all(os.path.exists("%s.%d" % (new_path, i)) for i in range(workers))
        assert q.wait(timeout=10 * SLOW) == 0
        assert "upgrade: control socket %s of the process before removed" % old_path \
            in q.log_text(), q.log_tail()
        r = h3_get(q.url("/app/bytes/1000"))
        assert r.status == 200 and r.sha256 == expected_sha256(1000)
    finally:
        _stop(new)
    # the new process removes its own at its end
    assert not any(os.path.exists(f) for f in
                   [new_path] + ["%s.%d" % (new_path, i) for i in range(workers)])


def _notify_socket(tmp_path, monkeypatch, watchdog_usec):
    """A service manager's notify socket for the qproxy started next, with
    a watchdog of watchdog_usec: the socket, and its messages as (sender's
    pid, lines). The watchdog is not the first process's (WATCHDOG_PID
    the test's): the new one's is its own."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(10 * SLOW)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    def messages():
        while True:
            yield _notify_message(sock)

    return sock, messages()


def _notify_message(sock):
    """The next message on a notify socket: (sender's pid, lines)."""
    ucred = struct.Struct("iII")
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size))
    pid = [ucred.unpack(d[:ucred.size])[0] for level, kind, d in anc
           if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    return pid[0], data.decode().split("\n")


@pytest.mark.parametrize("workers", [1, WORKERS])
def test_upgrade_tells_systemd_the_new_main_process(qproxy_factory, backend_app, tmp_path,
                                                    monkeypatch, workers):
    """The old process gives systemd the new one as MAINPID, and says
    neither STOPPING=1 (the service goes on) nor anything after; the new
    one keeps systemd's watchdog, which names the main process's id
    (WATCHDOG_PID), and does not say READY=1 again. With workers, the
    supervisors speak for them. The new process is the old one's sibling,
    the service manager's child."""
    sock, it = _notify_socket(tmp_path, monkeypatch, 200000)
    q = qproxy_factory(backend_server=backend_app.tcp_server) if workers == 1 else \
        _workers(qproxy_factory, backend_app)
    old = q.proc.pid
    assert next(it) == (old, ["READY=1"])
    new = _upgrade(q)
    try:
        # the old one's sibling: the service manager's child (the
        # test's), whose death systemd sees
        with open("/proc/%d/stat" % new) as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
        assert next(it) == (old, ["MAINPID=%d" % new])
        with open("/proc/%d/environ" % new, "rb") as f:
            env = f.read().split(b"\0")
        assert b"WATCHDOG_PID=%d" % new in env
        assert q.wait(timeout=10 * SLOW) == 0
        # the watchdog's, from the new process, and nothing else
        for _ in range(3):
            assert next(it) == (new, ["WATCHDOG=1"])
    finally:
        _stop(new)
        try:
            os.waitpid(new, 0)
        except ChildProcessError:
            pass
    assert next(it) == (new, ["STOPPING=1"])
    sock.close()


def test_the_new_supervisor_feeds_the_watchdog_while_the_old_workers_hand_over(
        qproxy_factory, backend_app, tmp_path, monkeypatch):
    """From the old supervisor's MAINPID= on, the new one is the process
    systemd watches, and it waits (up to three seconds) for the old
    workers to say they stopped reading before its own read. It fed the
    watchdog only after that wait: with an old side slow to answer (here
    an old worker stopped, then the old supervisor too), the first
    WATCHDOG=1 came three seconds after MAINPID=, past a 2 s WatchdogSec,
    and systemd would have killed the service. Now it comes every half
    period meanwhile."""
    period = 2.
    sock, it = _notify_socket(tmp_path, monkeypatch, int(period * 1e6))
    q = _workers(qproxy_factory, backend_app)
    old = q.proc.pid
    assert next(it) == (old, ["READY=1"])
    # its supervisor waits a second for this one's word, time to stop it too
    slow = _pid_of(q, 0)
    os.kill(slow, signal.SIGSTOP)
    stopped = [slow]
    ctl = subprocess.Popen([qproxyctl_binary(), "-s", q.control_socket, "upgrade"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    new = None
    try:
        pid, lines = next(it)
        assert pid == old and len(lines) == 1 and lines[0].startswith("MAINPID="), \
            (pid, lines, q.log_tail())
        os.kill(old, signal.SIGSTOP)
        stopped.append(old)
        since = time.monotonic()
        new = int(lines[0].split("=")[1])
        fed = []
        sock.settimeout(0.1)
        while time.monotonic() < since + 2 * period:
            try:
                pid, lines = _notify_message(sock)
            except socket.timeout:
                continue
            assert (pid, lines) == (new, ["WATCHDOG=1"]), (pid, lines)
            fed.append(time.monotonic())
        gaps = [b - a for a, b in zip([since] + fed, fed + [time.monotonic()])]
        assert max(gaps) < period, "no WATCHDOG=1 for %.1f s (%s)" % (max(gaps), gaps)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        out, err = ctl.communicate(timeout=30 * SLOW)
        if new is not None:
            _stop(new)
        sock.close()
    assert ctl.returncode == 0 and out.startswith("process %d took over" % new), (out, err)
    assert q.wait(timeout=10 * SLOW) == 0
    assert q.sanitizer_report() is None


def test_an_address_the_new_configuration_drops_stays_the_old_processs(qproxy_factory,
                                                                      backend_app):
    """The old process keeps reading a socket the new process did not take
    (its configuration dropped the address): its download there finishes,
    a new client there is refused at once, and the port is let go when
    the old process exits."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    with open(q.conf) as f:
        one = f.read()
    extra = free_udp_port()
    line = "address = 127.0.0.1:%d\n" % q.port
    with open(q.conf, "w") as f:
        f.write(one.replace(line, line + "address = 127.0.0.1:%d\n" % extra))
    assert qproxyctl(q, "reload").returncode == 0
    n = 8 * MiB
    url = "https://127.0.0.1:%d/app/slow/%d?ms=2500" % (extra, n)
    t, out, progress, reached = background_get(url, 256 * KiB)
    assert reached.wait(15 * SLOW), "the download did not start"
    assert progress["bytes"] < n, "the download ended before the upgrade: nothing tested"
    with open(q.conf, "w") as f:
        f.write(one)
    new = _upgrade(q)
    try:
        r = h3raw(extra, [":method: GET", ":scheme: https",
                          ":authority: 127.0.0.1:%d" % extra, ":path: /app/bytes/1"],
                  timeout=5 * SLOW)
        assert "handshake failed: connection closed by peer (0x2)" in r.stderr, r
        assert h3_get(q.url("/app/bytes/1000")).status == 200
        t.join(60 * SLOW)
        assert not t.is_alive()
        assert "e" not in out, "the download failed across the upgrade: %s" % out.get("e")
        assert out["r"].status == 200 and out["r"].sha256 == expected_sha256(n)
        assert q.wait(timeout=10 * SLOW) == 0
        assert "closed udp 127.0.0.1:%d" % extra in q.log_text()
        assert "closed udp 127.0.0.1:%d" % q.port not in q.log_text()
        assert extra not in udp_ports_held(new)
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_the_old_process_reads_again_when_the_new_one_dies(qproxy_factory, backend_app):
    """A new process that dies after it took over leaves nobody reading the
    sockets: the old one reads them again for its own connections (a
    download finishes) and refuses new ones, as it drains."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    t, out, progress = _slow_download(q, 3000)
    assert progress["bytes"] < SLOW_BYTES, "the download ended before the upgrade: nothing tested"
    new = _upgrade(q)
    os.kill(new, signal.SIGKILL)
    wait_until(lambda: "upgrade: the new process has gone" in q.log_text(),
               "the old process did not see the new one go")
    r = h3raw(q.port, [":method: GET", ":scheme: https",
                       ":authority: 127.0.0.1:%d" % q.port, ":path: /app/bytes/1"],
              timeout=5 * SLOW)
    assert "handshake failed: connection closed by peer (0x2)" in r.stderr, r
    _downloaded(t, out, "the download failed")
    assert q.wait(timeout=10 * SLOW) == 0
    log = q.log_text()
    assert "upgrade: the new process %d was ended by signal 9" % new in log
    assert "closed udp 127.0.0.1:%d" % q.port in log
    assert q.sanitizer_report() is None


def test_a_new_process_that_stops_says_so_through_a_full_link(qproxy_factory, backend_app):
    """A new process that stops (SIGTERM) while the old one drains tells it
    over their link that it reads no more, then closes the link: the old
    one reads its sockets again for its connections. The link may be full
    then, of datagrams passed to an old process slow to read them (stopped
    here while a flood of them fills it). The word was tried once, and
    lost: the old one read its sockets again at the link's close all the
    same, but took the stop for a death, with a warning that the new
    process had gone. The word is tried again now, for a second, as the
    old one reads."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    old = q.proc.pid
    t, out, _ = _slow_download(q, 2500 * SLOW)
    new = _upgrade(q)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    os.kill(old, signal.SIGSTOP)
    try:
        # short headers of no connection of the new one's: passed on
        packet = b"\x40" + os.urandom(1199)
        deadline = time.monotonic() + 20 * SLOW
        while _quic(q)["upgrade_forward_dropped"] == 0:
            assert time.monotonic() < deadline, "the link did not fill"
            for _ in range(500):
                flood.sendto(packet, ("127.0.0.1", q.port))
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: "waiting for process %d" % old in q.log_text(),
                   "the new process did not stop", 10 * SLOW)
        time.sleep(0.2)
    finally:
        os.kill(old, signal.SIGCONT)
        flood.close()
    try:
        _downloaded(t, out, "the download failed")
        assert q.wait(timeout=10 * SLOW) == 0
        log = q.log_text()
        assert "upgrade: the new process has stopped: this one reads" in log, log
        assert "the new process has gone" not in log, log
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_sigterm_to_the_old_process_after_an_upgrade_lets_it_drain(qproxy_factory, backend_app):
    """A SIGTERM to the old process once it drains (an operator's kill, or
    a stop under KillMode=control-group, which signals every process of
    the unit) is its first: it goes on draining, and its
    download finishes, rather than being cut as at a second one."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    t, out, _ = _slow_download(q, 2500)
    new = _upgrade(q)
    try:
        q.signal(signal.SIGTERM)
        _downloaded(t, out, "the download was cut")
        assert q.wait(timeout=10 * SLOW) == 0
        assert "second signal" not in q.log_text()
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_the_process_that_took_over_outlives_the_one_that_drains(qproxy_factory,
                                                                 backend_app, workers):
    """After an upgrade the new process is systemd's main one, and the old
    one drains. A stop (systemctl stop, restart) under the unit's
    KillMode=mixed sends SIGTERM to the main process alone, and once that
    has exited kills what is left of the unit with SIGKILL: the old
    process's requests with it. The new process had no requests and went
    at once. Now it waits for the old one to finish and exit first (found
    by a review): here a download under way at the upgrade finishes after
    the new process's SIGTERM, and only then does the new one go."""
    q = _draining_proxy(qproxy_factory, backend_app, workers)
    t, out, progress = _slow_download(q, 2500 * SLOW)
    new = _upgrade(q)
    try:
        os.kill(new, signal.SIGTERM)
        time.sleep(0.5)
        assert progress["bytes"] < SLOW_BYTES, "the download ended before the test"
        assert _alive(new), "the new process went while the old one drained"
        _downloaded(t, out, "the download was cut")
        assert q.wait(timeout=10 * SLOW) == 0
        deadline = time.monotonic() + 5 * SLOW
        while _alive(new):
            assert time.monotonic() < deadline, "the new process stayed after the old one"
            time.sleep(0.05)
        log = q.log_text()
        assert "waiting for process %d" % q.proc.pid in log, q.log_tail()
        # told apart from a death, not a warning: by the old workers too
        assert re.search(r"%supgrade: the new process has stopped: this one reads" % (
            r"worker \d: " if workers else ""), log), log
        assert "the new process has gone" not in log, log
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_the_process_that_took_over_feeds_the_watchdog_while_it_outlives_the_other(
        qproxy_factory, backend_app, tmp_path, monkeypatch, workers):
    """Stopped while the process before it drains, the one that took over
    waits for that one to exit first, and is systemd's main process
    meanwhile: it fed the watchdog once a second then, whatever the
    period (too seldom for a WatchdogSec under 2 s: systemd would have
    killed the service, the draining requests with it). Now every half
    period, as its loop does; here 0.8 s."""
    period = 0.8
    sock, it = _notify_socket(tmp_path, monkeypatch, int(period * 1e6))
    q = _draining_proxy(qproxy_factory, backend_app, workers)
    t, out, progress = _slow_download(q, 6000 * SLOW)
    new = _upgrade(q)
    try:
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: "waiting for process %d" % q.proc.pid in q.log_text(),
                   "the new process did not wait for the old one", 10 * SLOW)
        since, fed = time.monotonic(), []
        sock.settimeout(0.1)
        while time.monotonic() < since + 4 * period:
            try:
                pid, lines = _notify_message(sock)
            except socket.timeout:
                continue
            if pid == new and lines == ["WATCHDOG=1"]:
                fed.append(time.monotonic())
        gaps = [b - a for a, b in zip([since] + fed, fed + [time.monotonic()])]
        # read no more: its queue full (10 datagrams), sd_notify would block
        # the new process for good, the rest of the download (18 s under
        # ASan) being time for 45
        sock.close()
        assert progress["bytes"] < SLOW_BYTES and _alive(new), \
            "the old process stopped draining before the test's end"
        assert max(gaps) < period, "no WATCHDOG=1 for %.2f s (%s)" % (max(gaps), gaps)
        _downloaded(t, out, "the download was cut")
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        _stop(new)
        sock.close()
    assert q.sanitizer_report() is None


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_a_reopen_reaches_the_process_that_drains_after_an_upgrade(qproxy_factory,
                                                                    backend_app, tmp_path,
                                                                    workers):
    """logrotate moves the log files and has qproxy reopen them (qproxyctl
    reopen), on the control socket the new process took at an upgrade.
    The old process, which still drains a download, is told over its link
    (with workers, each old worker by the new one of its number, the old
    supervisor by the new one) and reopens its own: the download's line
    and its last ones go to the new files. It was not told, and wrote
    them to the moved files until it exited."""
    log, err = tmp_path / "access.log", tmp_path / "error.log"
    glob = [("access_log", str(log)), ("error_log", str(err))]
    if workers:
        q = _workers(qproxy_factory, backend_app, glob=glob, shutdown_timeout="30s")
    else:
        q = qproxy_factory(sections=app_sections(backend_app.tcp_server, glob=glob,
                                                 shutdown_timeout="30s"))
    n = SLOW_BYTES
    t, out, progress = _slow_download(q, 2500 * SLOW)
    new = _upgrade(q)
    try:
        os.rename(str(log), str(log) + ".1")
        os.rename(str(err), str(err) + ".1")
        p = qproxyctl(q, "reopen")
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert progress["bytes"] < n, "the download ended before the reopen: nothing tested"
        _downloaded(t, out, "the download failed")
        assert q.wait(timeout=10 * SLOW) == 0
        moved = (open(str(log) + ".1").read(), open(str(err) + ".1").read())
        assert "/app/slow/%d" % n in log.read_text(), (log.read_text(), moved[0])
        assert "/app/slow/%d" % n not in moved[0]
        # the old process's last lines: its supervisor's, and the draining
        # worker's (an idle one may have stopped before the files moved)
        stops = [re.findall(r"qproxy\[info\]: (worker \d: )?qproxy stopped", text)
                 for text in (err.read_text(), moved[1])]
        assert "" in stops[0] and "" not in stops[1], stops
        assert len(stops[0]) >= 1 + (workers > 0) and \
            len(stops[0]) + len(stops[1]) == 1 + workers, stops
        assert "log files reopened, as the new process was asked" in err.read_text()
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_a_signal_between_fork_and_exec_is_the_new_processs(qproxy_factory, backend_app,
                                                            tmp_path):
    """A SIGTERM to the new process before its exec (systemd's stop, which
    signals every process of the unit) is not taken by the handlers it
    has of the old one (libev's, which noted it in the child's copy and
    woke the old one's loop): it waits, held, for the new process, which
    shuts down gracefully once it runs."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, start=False)
    pidfile = str(tmp_path / "child.pid")
    preload_execdelay(q, pidfile)
    q.start()
    res = {}
    t = threading.Thread(target=lambda: res.update(p=qproxyctl(q, "upgrade")))
    t.start()
    wait_until(lambda: os.path.exists(pidfile), "the child did not start", 5 * SLOW)
    with open(pidfile) as f:
        child = int(f.read())
    os.kill(child, signal.SIGTERM)
    t.join(20 * SLOW)
    try:
        assert res["p"].returncode == 0, (res["p"].stdout, res["p"].stderr, q.log_tail())
        assert int(res["p"].stdout.split()[1]) == child
        wait_until(lambda: not _alive(child), "the new process lost its SIGTERM", 5 * SLOW)
        assert "signal 15: shutting down gracefully" in q.log_text()
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        _stop(child)
    assert q.sanitizer_report() is None


@pytest.mark.parametrize("workers", [1, WORKERS])
def test_a_handshake_under_way_at_the_upgrade_completes(qproxy_factory, backend_app,
                                                        workers):
    """The old process answered a client's first Initial; the client's next
    datagram (its Initial ACK with its Handshake packets, to the old
    process's connection ID) reaches the new one, which cannot read it
    with that ID's keys: it goes to the old process, and the handshake
    completes there, rather than being dropped by a connection the new
    process began for it. With workers, the new worker of the number the
    old worker's connection ID names passes it to that old worker."""
    q = _draining_proxy(qproxy_factory, backend_app, workers != 1)
    hold = _Hold(2)
    with Relay(q.port, seed=1, c2s=Faults(rewrite=hold)) as r:
        t, res, _, _ = background_get("https://127.0.0.1:%d/app/bytes/1000" % r.port, 1,
                                      timeout=30)
        new = _upgrade_while_held(q, hold)
        try:
            t.join(40 * SLOW)
            assert "e" not in res, res.get("e")
            assert res["r"].status == 200 and res["r"].sha256 == expected_sha256(1000)
            assert "an Initial that begins nothing passed to the process before" in \
                q.log_text(), q.log_tail()
            assert q.wait(timeout=10 * SLOW) == 0
        finally:
            _stop(new)
    assert q.sanitizer_report() is None


def test_upgrade_after_the_privilege_drop(qproxy_factory, backend_app, certificate):
    """Started as root with [global] user, qproxy dropped its privileges: the
    new process runs as that user, reads what a reload reads (the file,
    certificate and key, readable to it here), and is given the keys
    the old one read as root (its secret_file is root's alone)."""
    if os.geteuid() != 0:
        pytest.fail("the privilege drop test needs to start qproxy as root")
    nobody = pwd.getpwnam("nobody")
    d = tempfile.mkdtemp(prefix="qpup-")
    try:
        os.chmod(d, 0o755)
        files = []
        for path in certificate:
            files.append(shutil.copy(path, d))
            os.chmod(files[-1], 0o644)
        q = qproxy_factory(sections=lambda port, c, k: app_sections(
            backend_app.tcp_server, glob=[("user", "nobody")])(port, *files), start=False)
        conf = os.path.join(d, "qproxy.conf")
        shutil.copy(q.conf, conf)
        os.chmod(conf, 0o644)
        q.conf = conf
        q.start()
        secret = [v for k, v in q.sections[0][1] if k == "secret_file"][0]
        assert os.stat(secret).st_uid == 0 and os.stat(secret).st_mode & 0o077 == 0
        # a session ticket of the old process's, for the new one
        sess, tp = os.path.join(d, "session"), os.path.join(d, "tp")
        g = gtls_fetch(q.port, ["/app/bytes/10"], os.path.join(d, "dl"), quiet=True,
                       extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp,
                                   "--wait-for-ticket"])
        assert os.path.exists(sess), ("no session ticket came", g.stderr[-2000:])
        new = _upgrade(q)
        try:
            with open("/proc/%d/status" % new) as f:
                uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
            assert uids == [str(nobody.pw_uid)] * 4
            assert q.wait(timeout=10 * SLOW) == 0
            r = h3_get(q.url("/app/bytes/1000"))
            assert r.status == 200 and r.sha256 == expected_sha256(1000)
            assert "upgrade: the process before has exited" in q.log_text()
            # the same secret: the old process's ticket resumes here
            gtls_fetch(q.port, ["/app/bytes/20"], os.path.join(d, "dl"), quiet=True,
                       extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp])
            with open(os.path.join(d, "dl", "20"), "rb") as f:
                assert f.read() == expected_body(20)
            assert _quic(q)["resumed_handshakes"] == 1
        finally:
            _stop(new)
        assert q.sanitizer_report() is None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_clients_see_no_failure_across_an_upgrade(qproxy_factory, backend_app):
    """libcurl clients request all along: two with a new connection a
    request (some in their handshake at the switch), one that keeps its
    connection while it may. None sees a failure; the one that kept its
    connection moves to the new process after the old one's GOAWAY."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="30s")
    n = 2000
    stop = threading.Event()
    errors, done = [], {"fresh": 0, "kept": 0}
    connects = []

    def fresh():
        while not stop.is_set():
            try:
                r = h3_get(q.url("/app/bytes/%d" % n), timeout=10)
                if r.status != 200 or r.sha256 != expected_sha256(n):
                    errors.append(("fresh", r.status))
                done["fresh"] += 1
            except pycurl.error as e:
                errors.append(("fresh", e))

    def kept():
        c, col = make_easy(q.url("/app/bytes/%d" % n), timeout=10)
        try:
            while not stop.is_set():
                del col.chunks[:]
                try:
                    c.perform()
                except pycurl.error as e:
                    errors.append(("kept", e))
                    continue
                body = b"".join(col.chunks)
                if c.getinfo(pycurl.RESPONSE_CODE) != 200 or \
                        hashlib.sha256(body).hexdigest() != expected_sha256(n):
                    errors.append(("kept", c.getinfo(pycurl.RESPONSE_CODE), len(body)))
                connects.append(c.getinfo(pycurl.NUM_CONNECTS))
                done["kept"] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (fresh, fresh, kept)]
    for t in threads:
        t.start()
    new = None
    try:
        wait_until(lambda: done["fresh"] >= 10 and done["kept"] >= 10, "no requests")
        new = _upgrade(q)
        at = dict(done)
        wait_until(lambda: done["fresh"] >= at["fresh"] + 20 and
                   done["kept"] >= at["kept"] + 20, "no requests after the upgrade",
                   20)
    finally:
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
        try:
            assert not errors, errors[:5]
            # the kept connection was left for one to the new process, once
            assert sum(connects) == 2, connects
            assert q.wait(timeout=10 * SLOW) == 0
        finally:
            if new is not None:
                _stop(new)


def test_a_handshake_under_way_after_a_retry_completes(qproxy_factory, backend_app):
    """As above, for a client the old process sent a Retry: its next
    datagram carries the Retry token in its Initial, to the old process's
    connection ID, which the token was not made for. The new process
    does not refuse it as an invalid token (a close the client cannot
    read, the datagram lost until the client's PTO): it goes to the old
    process, which has the connection."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             listener=[("retry", "always")]))
    # 1: Initial, answered with Retry; 2: Initial with the token;
    # 3: its ACK of the old process's Initial, and Handshake packets
    hold = _Hold(3)
    retries = _quic(q)["retries_sent"]

    def retried():
        assert _quic(q)["retries_sent"] == retries + 1

    with Relay(q.port, seed=1, c2s=Faults(rewrite=hold)) as r:
        t, res, _, _ = background_get("https://127.0.0.1:%d/app/bytes/1000" % r.port, 1,
                                      timeout=30)
        new = _upgrade_while_held(q, hold, retried)
        try:
            t.join(40 * SLOW)
            assert "e" not in res, res.get("e")
            assert res["r"].status == 200 and res["r"].sha256 == expected_sha256(1000)
            # the new process's: the datagram went on, not refused
            quic = _quic(q)
            assert quic["tokens_invalid"] == 0, quic
            assert "a Retry token for another connection ID passed to the " \
                "process before" in q.log_text(), q.log_tail()
            assert q.wait(timeout=10 * SLOW) == 0
        finally:
            _stop(new)
    assert q.sanitizer_report() is None


def test_a_client_in_its_handshake_that_sends_no_request_lets_the_old_process_go(
        qproxy_factory, backend_app):
    """The grace of a connection in its handshake at the switch lasts until
    its first request, or a second or two past the handshake: one whose
    requests never come (h3raw --lose-starts) is then sent GOAWAY and
    closed, and the old process exits long before shutdown_timeout."""
    q = qproxy_factory(backend_server=backend_app.tcp_server, shutdown_timeout="120s")
    hold = _Hold(2)
    with Relay(q.port, seed=1, c2s=Faults(rewrite=hold)) as r:
        client = subprocess.Popen(
            [h3raw_binary(), "--lose-starts", "-t", "120", "-H", ":method: GET",
             "-H", ":scheme: https", "-H", ":authority: 127.0.0.1:%d" % q.port,
             "-H", ":path: /app/bytes/1", "127.0.0.1", str(r.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        new = None
        try:
            new = _upgrade_while_held(q, hold)
            wait_until(lambda: "handshake completed" in q.log_text().split(
                "upgrade: started")[-1], "the handshake did not complete", 10)
            assert q.wait(timeout=20 * SLOW) == 0
        finally:
            hold.release()
            client.kill()
            client.wait(10)
            if new is not None:
                _stop(new)
    assert q.sanitizer_report() is None


# --------------------------------------------------------------------------
# with [global] workers: the new supervisor's worker i takes the sockets
# worker i read, and passes the old worker i its connections' datagrams

def _unix_queued(path):
    """Whether a connection to the Unix socket at path waits to be
    accepted (/proc/net/unix: the queued end has the listener's path, and
    not its flag __SO_ACCEPTCON)."""
    with open("/proc/net/unix") as f:
        next(f)
        return any(len(r) == 8 and r[7] == path and r[3] != "00010000"
                   for r in (line.split() for line in f))


def _children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def _downloads_on_each_worker(q, n, ms):
    """Downloads of n bytes over ms each (times SLOW: starting several takes
    longer under a sanitizer), a connection each, started until every
    worker has one under way: [(thread, out, progress)]. A worker's open
    request streams tell, not its connections: those count one that is
    closing too, such as the harness's start-up probe's for three PTOs,
    which a worker does not wait for when it is handed over."""
    ms = int(ms * SLOW)
    gets = []
    while len(gets) < 16:
        t, out, progress, reached = background_get(
            q.url("/app/slow/%d?ms=%d" % (n, ms)), 256 * KiB)
        assert reached.wait(15 * SLOW), "a download did not start"
        gets.append((t, out, progress))
        if all(_worker_stats(q, i)["streams"]["current"] > 0 for i in range(WORKERS)):
            break
    else:
        pytest.fail("16 connections and still a worker without one")
    assert all(p["bytes"] < n for _, _, p in gets), \
        "a download ended before the upgrade: nothing tested"
    return gets


def _downloads_done(gets, n):
    for t, out, _ in gets:
        t.join(60 * SLOW)
        assert not t.is_alive()
        assert "e" not in out, "a download failed across the upgrade: %s" % out.get("e")
        r = out["r"]
        assert r.status == 200 and len(r.body) == n and r.sha256 == expected_sha256(n)


def test_upgrade_with_workers_keeps_downloads_and_takes_new_clients(qproxy_factory,
                                                                    backend_app):
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="60s")
    old = q.proc.pid
    old_workers = _children(old)
    n = 8 * MiB
    gets = _downloads_on_each_worker(q, n, 3000)

    p = qproxyctl(q, "upgrade")
    assert p.returncode == 0, (p.stdout, p.stderr, q.log_tail())
    m = re.fullmatch(r"process (\d+) took over; the 2 workers of process (\d+) drain their "
                     r"connections for at most 60 s\n", p.stdout)
    assert m, p.stdout
    new = int(m.group(1))
    assert int(m.group(2)) == old and new != old
    try:
        assert len(_children(new)) == WORKERS
        # new clients: the new workers', each of them, while the old ones
        # still run
        for size in range(1000, 17000, 1000):
            r = h3_get(q.url("/app/bytes/%d" % size))
            assert r.status == 200 and r.sha256 == expected_sha256(size)
            if all(_worker_stats(q, i)["connections"]["total"] > 0
                   for i in range(WORKERS)):
                break
        else:
            pytest.fail("16 new clients and still a new worker without one")
        assert q.running() and all(_alive(w) for w in old_workers), \
            "the old workers did not wait for their downloads"
        # a datagram for no connection: a new worker passes it on, the old
        # worker of the same index answers it with a stateless reset
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(3 * SLOW)
            u.sendto(bytes([0x40]) + os.urandom(1199), ("127.0.0.1", q.port))
            reset, _ = u.recvfrom(2048)
        assert 21 <= len(reset) < 1200 and reset[0] & 0xc0 == 0x40, reset
        # one upgrade at a time
        p = qproxyctl(q, "upgrade")
        assert p.returncode == 1 and p.stderr == (
            "qproxyctl: the process before this one still serves connections: "
            "upgrade once it has exited\n"), (p.stdout, p.stderr)
        # the control socket is the new supervisor's, its workers pass
        # datagrams on
        wait_until(lambda: stats(q)["quic"]["upgrade_forwarded"] > 0,
                   "the downloads' datagrams never went to the old workers")
        assert stats(q)["quic"]["upgrade_forward_dropped"] == 0

        _downloads_done(gets, n)
        # drained, the old supervisor goes after its workers, leaving the
        # control sockets' files to the new one
        assert q.wait(timeout=10 * SLOW) == 0
        assert not any(_alive(w) for w in old_workers)
        assert stats(q)["workers"] == {"count": WORKERS, "running": WORKERS,
                                       "answered": WORKERS, "restarts": 0}
        log = q.log_text()
        assert "upgrade: took over from the process before, whose workers serve" in log
        assert log.count("upgrade: the new worker serves new connections") == WORKERS
        # a second upgrade, by the new supervisor
        newer = _upgrade(q)
        wait_until(lambda: not _alive(new), "the idle supervisor did not exit", 10 * SLOW)
        new = newer
        r = h3_get(q.url("/app/bytes/5000"))
        assert r.status == 200 and r.sha256 == expected_sha256(5000)
    finally:
        _stop(new)
    assert q.log_text().count("qproxy stopped") == 3 * (1 + WORKERS), q.log_tail()
    assert q.sanitizer_report() is None


def test_new_workers_read_once_the_old_ones_have_stopped(qproxy_factory, backend_app):
    """A new worker runs while another is slow to start (a preload holds the
    new supervisor's second worker as it is forked). It does not read its
    socket while the old worker of its number still does: of a connection
    either made, the other would have read datagrams now and then, and
    answered them with a stateless reset. New clients meanwhile are all
    served, by the old workers."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             glob=[("workers", str(WORKERS))]), start=False)
    preload_execdelay(q, worker_sleep=min(3 * SLOW, 5))
    q.start()
    wait_until(lambda: stats(q)["workers"]["answered"] == WORKERS, "every worker answering",
               10 * SLOW)
    res = {}
    t = threading.Thread(target=lambda: res.update(p=qproxyctl(q, "upgrade")))
    t.start()
    p = None
    try:
        wait_until(lambda: _worker0_started(q) == 2, "the new worker 0 running", 5 * SLOW)
        for size in range(1000, 13000, 1000):
            r = h3_get(q.url("/app/bytes/%d" % size))
            assert r.status == 200 and r.sha256 == expected_sha256(size)
        assert t.is_alive(), "the upgrade was done before the clients: nothing tested"
        t.join(20 * SLOW)
        p = res["p"]
        assert p.returncode == 0, (p.stdout, p.stderr, q.log_tail())
        assert stats(q)["quic"]["stateless_resets_sent"] == 0
        r = h3_get(q.url("/app/bytes/500"))
        assert r.status == 200 and r.sha256 == expected_sha256(500)
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        # the new supervisor is not the test's child: ended here, whatever
        # failed (a client's reset leaves the upgrade to finish meanwhile)
        t.join(20 * SLOW)
        p = res.get("p")
        if p is not None and p.returncode == 0:
            _stop(int(p.stdout.split()[1]))


def test_upgrade_to_another_number_of_workers_is_refused(qproxy_factory, backend_app):
    """The sockets go over in groups of one a worker: a new binary with
    another number of workers (or with workers where there were none) ends
    with the reason in the log, and the running processes go on."""
    for before, after in ((WORKERS, 3), (1, WORKERS)):
        if before > 1:
            q = _workers(qproxy_factory, backend_app)
        else:
            q = qproxy_factory(backend_server=backend_app.tcp_server)
        pids = _children(q.proc.pid)
        with open(q.conf) as f:
            good = f.read()
        with open(q.conf, "w") as f:
            f.write(good.replace("[global]\n", "[global]\nworkers = %d\n" % after, 1)
                    if before == 1 else
                    good.replace("workers = %d" % before, "workers = %d" % after))
        p = qproxyctl(q, "upgrade")
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert p.stderr.startswith("qproxyctl: the new process exited before it was "
                                   "ready: the log says why; process "), p.stderr
        why = ("workers %d, where the running process has %d: their number changes at a "
               "restart, not an upgrade" % (after, before))
        assert why in q.log_text(), q.log_tail()
        assert _children(q.proc.pid) == pids
        r = h3_get(q.url("/app/bytes/1000"))
        assert r.status == 200 and r.sha256 == expected_sha256(1000)
        q.stop()


def test_upgrade_with_workers_and_server_ids(qproxy_factory, backend_app, tmp_path):
    """Workers with QUIC-LB connection IDs, which name their worker at the
    byte after the server ID: an upgrade keeps downloads on each worker
    (the new worker of the same number passes their datagrams to the old
    one, as steered by the same byte), and the new workers' IDs name the
    server under the key the running process handed down. A new binary
    whose IDs would name the worker elsewhere (cid_server_id where there
    was none) is refused, with the reason in the log."""
    from test_cid import KEY, Config, _key_file, _server_cids
    key = _key_file(tmp_path)
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="60s",
                 glob=[("cid_server_id", "a1b2"), ("cid_key_file", key)])
    n = 4 * MiB
    gets = _downloads_on_each_worker(q, n, 2500)
    new = _upgrade(q)
    try:
        _downloads_done(gets, n)
        assert stats(q)["quic"]["stateless_resets_sent"] == 0
        cfg = Config(2, 14, 0, bytes.fromhex(KEY))
        cids, _ = _server_cids(q, tmp_path)
        assert cids and all(cfg.decode(c)[0] == bytes.fromhex("a1b2") for c in cids), cids
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        _stop(new)
    q = _workers(qproxy_factory, backend_app)
    pids = _children(q.proc.pid)
    with open(q.conf) as f:
        good = f.read()
    with open(q.conf, "w") as f:
        f.write(good.replace("[global]\n", "[global]\ncid_server_id = a1b2\n", 1))
    p = qproxyctl(q, "upgrade")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert ("the running workers' connection IDs name their worker at byte 0, where this "
            "configuration's would at byte 3: with workers, a change of cid_server_id's "
            "length, or between off and a server ID, takes a restart, not an upgrade"
            in q.log_text()), q.log_tail()
    assert _children(q.proc.pid) == pids
    r = h3_get(q.url("/app/bytes/1000"))
    assert r.status == 200 and r.sha256 == expected_sha256(1000)


# A build from before workers took cid_server_id, as its upgrade_init has
# it: QPROXY_UPGRADE_WORKERS is the count and a pair of descriptors for
# each worker, nothing more, and any other QPROXY_UPGRADE_ variable is
# unknown to it (this script then runs the binary as that build would).
_BUILD_BEFORE_CID_OFFSETS = """#!/bin/sh
check() {
    [ $# -eq $((1 + 2 * $1)) ] && return 0
    echo "qproxy: QPROXY_UPGRADE_WORKERS: not a count of workers and their descriptors" >&2
    exit 1
}
if [ -n "$QPROXY_UPGRADE_WORKERS" ]; then
    check $QPROXY_UPGRADE_WORKERS
fi
unset QPROXY_UPGRADE_CID_OFFSET
exec %s "$@"
"""


def test_a_build_before_cid_offsets_does_not_take_over_workers_with_server_ids(
        qproxy_factory, backend_app, tmp_path):
    """Workers with server IDs upgraded to a build that knows nothing of
    the byte after the server ID (whose configuration has no cid_server_id,
    as it takes none with workers): it steered by the first byte, which is
    the same for every QUIC-LB ID, and the old workers' downloads failed
    as their datagrams went to the wrong new workers. That build refuses to
    start now, as the running workers' offset comes in what it parses, and
    the running processes go on."""
    from test_cid import _key_file
    binary = tmp_path / "qproxy"
    shutil.copy(qproxy_binary(), binary)
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server, glob=[("workers", str(WORKERS)), ("cid_server_id", "a1b2"),
                                      ("cid_key_file", _key_file(tmp_path))]), start=False)
    q.binary = str(binary)
    q.start()
    wait_until(lambda: stats(q)["workers"]["answered"] == WORKERS, "every worker answering",
               10 * SLOW)
    pids = _children(q.proc.pid)
    os.unlink(binary)
    binary.write_text(_BUILD_BEFORE_CID_OFFSETS % qproxy_binary())
    os.chmod(binary, 0o755)
    with open(q.conf) as f:
        text = f.read()
    with open(q.conf, "w") as f:
        f.write("".join(line for line in text.splitlines(True)
                        if not line.startswith("cid_")))
    p = qproxyctl(q, "upgrade")
    if p.returncode == 0:
        _stop(int(p.stdout.split()[1]))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "the new process exited before it was ready" in p.stderr, p.stderr
    assert _children(q.proc.pid) == pids
    r = h3_get(q.url("/app/bytes/1000"))
    assert r.status == 200 and r.sha256 == expected_sha256(1000)


def test_a_new_supervisor_that_fails_removes_the_control_sockets_it_made(
        qproxy_factory, backend_app):
    """A new supervisor that makes its control sockets at a new path, and
    then fails (here an address the new configuration adds is taken by
    another socket), removes those files: it left them. The running
    process's stay, and it answers there."""
    q = _workers(qproxy_factory, backend_app)
    old_path = q.control_socket
    new_path = old_path + ".new"
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        with open(q.conf) as f:
            text = f.read()
        line = "address = 127.0.0.1:%d\n" % q.port
        with open(q.conf, "w") as f:
            f.write(text.replace("control_socket = %s\n" % old_path,
                                 "control_socket = %s\n" % new_path)
                    .replace(line, line + "address = 127.0.0.1:%d\n"
                             % taken.getsockname()[1]))
        p = qproxyctl(q, "upgrade")
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert p.stderr.startswith("qproxyctl: the new process exited before it was "
                                   "ready"), p.stderr
    finally:
        taken.close()
    made = [new_path] + ["%s.%d" % (new_path, i) for i in range(WORKERS)]
    assert not any(os.path.exists(f) for f in made), made
    assert all(os.path.exists(f) for f in
               [old_path] + ["%s.%d" % (old_path, i) for i in range(WORKERS)])
    assert stats(q)["workers"]["answered"] == WORKERS
    r = h3_get(q.url("/app/bytes/1000"))
    assert r.status == 200 and r.sha256 == expected_sha256(1000)


def test_old_workers_read_again_when_the_new_supervisor_dies(qproxy_factory, backend_app):
    """The new supervisor killed after the handover: its workers stop, and
    once their ends of the links are closed the old workers read their
    sockets again, for their downloads."""
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="60s")
    n = 8 * MiB
    gets = _downloads_on_each_worker(q, n, 4000)
    new = _upgrade(q)
    new_workers = _children(new)
    os.kill(new, signal.SIGKILL)
    wait_until(lambda: not any(_alive(w) for w in new_workers),
               "the new workers did not stop with their supervisor", 15 * SLOW)
    _downloads_done(gets, n)
    assert q.wait(timeout=10 * SLOW) == 0
    log = q.log_text()
    assert log.count("upgrade: the new process has gone: this one reads its sockets "
                     "again") == WORKERS, q.log_tail()
    assert re.search(r"upgrade: the new process %d was killed by signal 9 while the "
                     r"workers here still served connections" % new, log), q.log_tail()


def test_a_new_worker_that_stops_hands_back_the_socket_of_its_number_at_once(
        qproxy_factory, backend_app):
    """The new supervisor stopped while one of its workers still has a long
    download (of a client since the upgrade) and the other none: the idle
    new worker exits, and the old worker of its number reads its socket
    again then, its download going on at once, not once the busy new
    worker has ended too (nobody read that socket meanwhile)."""
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="60s")
    n = 8 * MiB
    gets = _downloads_on_each_worker(q, n, 4000)
    new = _upgrade(q)
    try:
        # a long download on one new worker (busy), none on the other:
        # twice as long as the old workers', which end while it runs
        mine = []
        while len(mine) < 8:
            mine.append(background_get(q.url("/app/slow/%d?ms=%d" % (n, 8000 * SLOW)),
                                       256 * KiB))
            assert mine[-1][3].wait(15 * SLOW), "a download did not start"
            current = [_worker_stats(q, i)["connections"]["current"] for i in range(WORKERS)]
            if 0 in current:
                break
        else:
            pytest.fail("8 new connections, and none of the new workers idle")
        idle = current.index(0)
        os.kill(new, signal.SIGTERM)
        _downloads_done(gets, n)
        assert all(t.is_alive() for t, _, _, _ in mine), \
            "the old workers' downloads waited for the new worker's to end"
        assert re.search(r"worker %d: upgrade: the new process has stopped: this one "
                         r"reads its sockets again" % idle, q.log_text()), q.log_tail()
        for t, out, _, _ in mine:
            t.join(60 * SLOW)
            assert "e" not in out, "a download of the new worker failed: %s" % out.get("e")
            assert out["r"].status == 200 and out["r"].sha256 == expected_sha256(n)
        assert q.wait(timeout=10 * SLOW) == 0
    finally:
        _stop(new)
    assert "the new process has gone" not in q.log_text(), q.log_tail()
    assert q.sanitizer_report() is None


def test_a_new_worker_that_dies_while_the_old_ones_drain_cuts_none_of_their_downloads(
        qproxy_factory, backend_app):
    """New worker 0 killed while the old workers drain: until it is started
    again its datagrams are not steered to new worker 1, which would pass
    them to old worker 1, where the connections of old worker 0 are not
    and a stateless reset would end them. Started again, new worker 0
    passes them to old worker 0 as before."""
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="60s")
    n = 8 * MiB
    gets = _downloads_on_each_worker(q, n, 6000)
    new = _upgrade(q)
    try:
        first = _children(new)[0]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "worker 0 (pid %d) was killed by signal 9; starting it again"
                   % first in q.log_text(), "the new supervisor did not see worker 0 die")
        wait_until(lambda: len(_children(new)) == WORKERS and first not in _children(new),
                   "new worker 0 was not started again", 10 * SLOW)
        _downloads_done(gets, n)
        assert q.wait(timeout=10 * SLOW) == 0
        assert stats(q)["workers"]["running"] == WORKERS
        r = h3_get(q.url("/app/bytes/1000"))
        assert r.status == 200 and r.sha256 == expected_sha256(1000)
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_upgrade_with_workers_after_the_privilege_drop(qproxy_factory, backend_app,
                                                       certificate):
    """As test_upgrade_after_the_privilege_drop, with workers: the new
    supervisor and its workers run as the user, and the new supervisor is
    given the keys the old one read as root (its secret_file is root's
    alone), which its workers use: a ticket of an old worker resumes."""
    if os.geteuid() != 0:
        pytest.fail("the privilege drop test needs to start qproxy as root")
    nobody = pwd.getpwnam("nobody")
    d = tempfile.mkdtemp(prefix="qpup-")
    try:
        os.chmod(d, 0o755)
        files = []
        for path in certificate:
            files.append(shutil.copy(path, d))
            os.chmod(files[-1], 0o644)
        q = qproxy_factory(sections=lambda port, c, k: app_sections(
            backend_app.tcp_server, glob=[
                ("user", "nobody"), ("workers", str(WORKERS)),
                # where the supervisor, as the user, reaches its workers'
                ("control_socket", os.path.join(d, "control.sock"))])(port, *files),
            start=False)
        conf = os.path.join(d, "qproxy.conf")
        shutil.copy(q.conf, conf)
        os.chmod(conf, 0o644)
        q.conf = conf
        q.start()
        # {"workers": []} until one answers
        wait_until(lambda: stats(q)["workers"] == {"count": WORKERS, "running": WORKERS,
                                                   "answered": WORKERS, "restarts": 0},
                   "every worker answering", 10 * SLOW)
        secret = [v for k, v in q.sections[0][1] if k == "secret_file"][0]
        assert os.stat(secret).st_uid == 0 and os.stat(secret).st_mode & 0o077 == 0
        sess, tp = os.path.join(d, "session"), os.path.join(d, "tp")
        g = gtls_fetch(q.port, ["/app/bytes/10"], os.path.join(d, "dl"), quiet=True,
                       extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp,
                                   "--wait-for-ticket"])
        assert os.path.exists(sess), ("no session ticket came", g.stderr[-2000:])
        new = _upgrade(q)
        try:
            for pid in [new] + _children(new):
                with open("/proc/%d/status" % pid) as f:
                    uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
                assert uids == [str(nobody.pw_uid)] * 4, pid
            assert len(_children(new)) == WORKERS
            assert q.wait(timeout=10 * SLOW) == 0
            assert stats(q)["workers"]["running"] == WORKERS
            r = h3_get(q.url("/app/bytes/1000"))
            assert r.status == 200 and r.sha256 == expected_sha256(1000)
            # the same secret: the old worker's ticket resumes at a new one
            gtls_fetch(q.port, ["/app/bytes/20"], os.path.join(d, "dl"), quiet=True,
                       extra_args=["--session-file=%s" % sess, "--tp-file=%s" % tp])
            with open(os.path.join(d, "dl", "20"), "rb") as f:
                assert f.read() == expected_body(20)
            assert stats(q)["quic"]["resumed_handshakes"] == 1
        finally:
            _stop(new)
        assert q.sanitizer_report() is None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_an_address_the_new_configuration_drops_stays_the_old_workers(qproxy_factory,
                                                                     backend_app):
    """As test_an_address_the_new_configuration_drops_stays_the_old_processs,
    with workers: the old workers are told which addresses the new ones
    took, and keep reading the other, where a download finishes and a new
    client is refused at once; the port is let go when they exit."""
    extra = free_udp_port()
    # the download lasts past the probes (under half a second on an idle
    # machine), well within shutdown_timeout
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="30s",
                 listener=[("address", "127.0.0.1:%d" % extra)])
    with open(q.conf) as f:
        two = f.read()
    line = "address = 127.0.0.1:%d\n" % extra
    assert line in two
    n = 8 * MiB
    url = "https://127.0.0.1:%d/app/slow/%d?ms=%d" % (extra, n, 4000 * SLOW)
    t, out, progress, reached = background_get(url, 256 * KiB)
    assert reached.wait(15 * SLOW), "the download did not start"
    assert progress["bytes"] < n, "the download ended before the upgrade: nothing tested"
    with open(q.conf, "w") as f:
        f.write(two.replace(line, ""))
    old_workers = _children(q.proc.pid)
    new = _upgrade(q)
    try:
        # the old worker without a connection has gone (reaped, which is
        # when its supervisor steers), the other drains
        wait_until(lambda: len(set(_children(q.proc.pid)) & set(old_workers)) == 1,
                   "the idle old worker did not exit", 10 * SLOW)
        # a new client there is refused whichever worker's number its
        # connection ID has (the first byte's, modulo their number)
        for i in range(WORKERS):
            c = quicinitial.Client(extra)
            try:
                c.dcid = bytes([i]) + os.urandom(7)
                c.tx = quicinitial.Keys(c.dcid, server=False)
                c.rx = quicinitial.Keys(c.dcid, server=True)
                c.send_crypto(quicinitial.client_hello(c.scid))
                # until the refusal, not until quiet: the download goes on
                c.sock.settimeout(5 * SLOW)
                got = c._initial_frames(c.sock.recv(65535))
            except socket.timeout:
                got = None
            finally:
                c.close()
            assert ("CONNECTION_CLOSE", 0x2) in (got or []), (i, got)
        assert progress["bytes"] < n, "the download ended before the probes: nothing tested"
        assert h3_get(q.url("/app/bytes/1000")).status == 200
        t.join(60 * SLOW)
        assert not t.is_alive()
        assert "e" not in out, "the download failed across the upgrade: %s" % out.get("e")
        assert out["r"].status == 200 and out["r"].sha256 == expected_sha256(n)
        assert q.wait(timeout=10 * SLOW) == 0
        # neither the new processes nor an old worker left behind
        for pid in [new] + old_workers:
            assert extra not in udp_ports_held(pid), pid
        assert h3_get(q.url("/app/bytes/2000")).status == 200
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_upgrade_while_an_old_worker_waits_to_be_started_again(qproxy_factory, backend_app):
    """Old worker 0 died and waits for its restart when the upgrade comes:
    the others are told, it is not started again after the handover (it
    would read the sockets the new workers took, and never drain), and the
    old supervisor exits once the others have."""
    q = _workers(qproxy_factory, backend_app)
    old = q.proc.pid
    first, second = _children(old)
    # the death and the request wait together while the supervisor is stopped
    os.kill(old, signal.SIGSTOP)
    res = {}
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not _alive(first), "old worker 0 did not die")
        t = threading.Thread(target=lambda: res.update(p=qproxyctl(q, "upgrade")))
        t.start()
        wait_until(lambda: _unix_queued(q.control_socket), "qproxyctl did not connect")
    finally:
        os.kill(old, signal.SIGCONT)
    t.join(20 * SLOW)
    p = res["p"]
    assert p.returncode == 0, (p.stdout, p.stderr, q.log_tail())
    m = re.fullmatch(r"process (\d+) took over; the 1 workers of process %d drain their "
                     r"connections for at most 10 s\n" % old, p.stdout)
    assert m, p.stdout
    new = int(m.group(1))
    try:
        assert q.wait(timeout=10 * SLOW) == 0
        assert not _alive(second)
        assert q.log_text().count("upgrade: the new worker serves new connections") == 1
        assert stats(q)["workers"]["running"] == WORKERS
        for size in (1000, 2000, 3000):
            r = h3_get(q.url("/app/bytes/%d" % size))
            assert r.status == 200 and r.sha256 == expected_sha256(size)
    finally:
        _stop(new)
    assert q.sanitizer_report() is None


def test_upgrade_while_a_worker_drains_after_its_sigterm(qproxy_factory, backend_app):
    """Old worker 0, told to stop (SIGTERM), drains its download when the
    upgrade hands it over too. It set its shutdown's timers (the deadline,
    the final GOAWAY's) again while libev still held them, which broke
    libev's timer heap: when the first came due the worker looped on it,
    taking memory, until it crashed (fuzz_udp, calling server_shutdown
    twice, once it checked libev's heap). It keeps its SIGTERM's deadline
    and stops at it, as its supervisor does after the others."""
    timeout = int(5 * SLOW)
    q = _workers(qproxy_factory, backend_app, shutdown_timeout="%ds" % timeout)
    n = 8 * MiB
    gets = _downloads_on_each_worker(q, n, 1000 * (timeout + 20))
    first = _pid_of(q, 0)
    os.kill(first, signal.SIGTERM)
    termed = time.monotonic()
    wait_until(lambda: "worker 0: signal 15: shutting down gracefully" in q.log_text(),
               "old worker 0 did not take its SIGTERM")
    new = _upgrade(q)
    try:
        assert time.monotonic() - termed < timeout, \
            "the upgrade came after worker 0's deadline: nothing tested"
        wait_until(lambda: not _alive(first), "old worker 0 did not stop at its deadline",
                   timeout + 5 * SLOW)
        assert q.wait(timeout=timeout + 10 * SLOW) == 0
        for t, _, _ in gets:    # cut at the deadlines
            t.join(10 * SLOW)
            assert not t.is_alive()
        log = q.log_text()
        assert log.count("worker 0: qproxy stopped") == 1, q.log_tail()
        assert "(libev)" not in log, q.log_tail()
    finally:
        _stop(new)
    assert q.sanitizer_report() is None
