"""Allocations that fail in the running daemon (tests/tools/nomem.c).

qproxy runs with nomem.so preloaded. A round of mixed work (GETs small
and large, chunked ones, POST and PUT bodies, many streams on one
connection, new connections, qproxyctl stats and conns) runs while the
shim fails allocations: the N-th one counted from the start of the
round, for a sweep of N, or each with a probability from a seed. After
each round, with the failures stopped: the daemon is alive, a new client
is served within a few seconds, and once the clients are gone the memory
rows of qproxyctl stats (streams, chunks, request, response, HTTP/3 and
QUIC bytes) come back to nothing; its stderr has no sanitizer report.

The sweep that runs with the suite is short. NOMEM_SWEEP sets a longer
one (make nomem):
  nth:FIRST:LAST:STEP     N from FIRST to LAST by STEP (LAST 0: to the
                          allocations a round makes)
  random:SEED:COUNT:PPM   COUNT seeds from SEED, each allocation failing
                          with probability PPM / 1000000
NOMEM_TRACE=1 has the shim write a backtrace for each failure to
qproxy's stderr.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pycurl
import pytest

from helpers import (SLOW, _preload, expected_body, expected_sha256, h3_get, h3_parallel,
                     make_easy,
                     h3_post, qproxyctl, qproxyctl_binary, sendshim_library, wait_until)
from test_ops import stats

# The rows of qproxyctl stats that hold nothing once every client is gone.
IDLE_ROWS = [("connections", "current"), ("connections", "handshakes_current"),
             ("connections", "closing"), ("streams", "current"),
             ("upstream", "queued"), ("buffers", "chunks"),
             ("buffers", "response_bytes"), ("buffers", "request_bytes"),
             ("buffers", "unparsed_bytes"), ("buffers", "h3_bytes"),
             ("buffers", "quic_bytes"), ("buffers", "done_stream_bytes"),
             ("buffers", "send_pending_bytes")]


class Shim:
    """The control file of a qproxy's nomem.so: arm() and off() signal it
    and wait until it took the new setting. With pid set, that process
    (a worker) is armed alone, in place of the one qproxy started as."""

    def __init__(self, q, path):
        self.q = q
        self.path = path
        self.gen = 0
        self.pid = None

    def _set(self, line):
        assert self.q.running(), "qproxy died; stderr:\n%s" % self.q.log_tail()
        self.gen += 1
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write("%d %s\n" % (self.gen, line))
        os.replace(tmp, self.path)
        if self.pid is None:
            self.q.signal(signal.SIGURG)
        else:
            os.kill(self.pid, signal.SIGURG)
        got = []

        def taken():
            try:
                with open(self.path + ".report") as f:
                    got[:] = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                return False
            return len(got) == 3 and got[0] == self.gen
        deadline = time.monotonic() + 5 * SLOW
        while not taken():
            assert time.monotonic() < deadline, "nomem.so took no generation %d" % self.gen
            time.sleep(0.002)
        return got[1], got[2]

    def nth(self, n, count=1):
        return self._set("nth %d %d" % (n, count))

    def random(self, seed, ppm, most=0):
        return self._set("random %d %d %d" % (seed, ppm, most))

    def off(self):
        """Stops the failures: (allocations counted, failed) since armed."""
        return self._set("off")

    def failing(self, n, run, what):
        """run() with the n-th allocation failing: (what it returned, how
        many failed). The daemon must still run, with no sanitizer report;
        what says which run it was, in a failure."""
        self.nth(n)
        got = run()
        _, failed = self.off()
        assert self.q.running(), "qproxy died %s:\n%s" % (what, self.q.log_tail())
        report = self.q.sanitizer_report()
        assert report is None, "%s:\n%s" % (what, report)
        return got, failed


def _reloads_logged(q):
    return q.log_text().count("configuration reloaded")


def preload_nomem(q, path):
    lib = os.path.join(os.path.dirname(sendshim_library()), "nomem.so")
    env = {"NOMEM_FILE": path}
    if os.environ.get("NOMEM_TRACE"):
        env["NOMEM_TRACE"] = "1"
    _preload(q, "nomem", lib, **env)
    return Shim(q, path)


def _sections(backend):
    def make(port, cert, key):
        return [("global", [("log_level", "info"), ("shutdown_timeout", "5s"),
                            ("idle_timeout", "3s"),
                            # closing and draining periods short
                            ("initial_rtt", "20ms")]),
                ("listener main", [("address", "127.0.0.1:%d" % port),
                                   ("certificate", cert), ("private_key", key),
                                   ("retry", "never")]),
                ("backend app", [("server", backend.tcp_server), ("connect_timeout", "2s"),
                                 ("read_timeout", "5s")]),
                ("route app", [("path_prefix", "/app/"), ("backend", "app")])]
    return make


def _workload(q):
    """One round of mixed work, its failures (of any kind) let be: what
    counts is what the daemon does after. Returns how many requests the
    daemon reset (the client saw "reset by server")."""
    t = 5 * SLOW
    urls = []
    for i in range(12):
        urls.append(q.url("/app/bytes/%d" % (100 + i)))
    # more than the 64 chunks kept for reuse at once: chunks allocated
    for i in range(4):
        urls.append(q.url("/app/bytes/%d" % (400000 + i)))
    urls.append(q.url("/app/chunked/70000"))
    urls.append(q.url("/nowhere"))
    urls.append({"url": q.url("/app/upload"), "method": "POST",
                 "body": expected_body(50000)})
    urls.append({"url": q.url("/app/upload"), "method": "PUT",
                 "body": expected_body(20000), "content_length": False})
    resets = 0
    for args, kw in (([urls], {}),
                     ([[q.url("/app/bytes/10"), q.url("/app/bytes/20000")]],
                      {"one_connection": False})):
        try:
            rs = h3_parallel(*args, timeout=t, connect_timeout=t, **kw)
        except (pycurl.error, AssertionError):
            continue
        resets += sum(1 for r in rs if r.error and "reset by server" in r.error[1])
    for args in (["stats"], ["conns"], ["stats", "--json"]):
        try:
            qproxyctl(q, *args)
        except subprocess.TimeoutExpired:
            pass
    return resets


def _round(q, shim, arm, what):
    """A round of work with the shim armed by arm(shim); fails unless the
    requests the daemon reset are counted in requests reset (qproxyctl(8):
    requests cut short). Returns (allocations, failed)."""
    before = stats(q)["requests"]["reset"]
    arm(shim)
    resets = _workload(q)
    try:
        allocs, failed = shim.off()
    except AssertionError as e:
        pytest.fail("%s: %s" % (what, e), pytrace=False)
    counted = stats(q)["requests"]["reset"] - before
    assert counted >= resets, ("%s: %d requests reset by qproxy, %d counted"
                               % (what, resets, counted))
    return allocs, failed


def _idle(q):
    st = stats(q)
    return {"%s %s" % rc: st[rc[0]][rc[1]] for rc in IDLE_ROWS if st[rc[0]][rc[1]] != 0}


def _check_serving(q, what):
    """Alive, serving a new client at once, and back to idle once it left."""
    assert q.running(), "qproxy died %s; stderr:\n%s" % (what, q.log_tail())
    assert q.sanitizer_report() is None, "%s:\n%s" % (what, q.sanitizer_report())
    deadline = time.monotonic() + 5 * SLOW
    while True:
        try:
            r = h3_get(q.url("/app/bytes/5000"), timeout=2 * SLOW, connect_timeout=2 * SLOW)
            if r.status == 200 and r.sha256 == expected_sha256(5000):
                break
            last = r
        except pycurl.error as e:
            last = e
        assert time.monotonic() < deadline, "not served %s: %s" % (what, last)
    r = h3_post(q.url("/app/upload"), expected_body(40000), timeout=5 * SLOW)
    assert r.status == 200 and r.json()["sha256"] == expected_sha256(40000), (what, r)
    left = {}

    def idle():
        left.clear()
        left.update(_idle(q))
        return not left
    try:
        wait_until(idle, "idle", 8)
    except AssertionError:
        pytest.fail("%s: still held once the clients were gone: %s" % (what, left),
                    pytrace=False)


def _sweep():
    """The rounds to run: [(kind, args)], from NOMEM_SWEEP or the short
    default (None for N: spread over the allocations a round makes)."""
    spec = os.environ.get("NOMEM_SWEEP")
    if not spec:
        return None
    kind, a, b, c = spec.split(":")
    if kind == "nth":
        return ("nth", int(a), int(b), int(c))
    if kind == "random":
        return ("random", int(a), int(b), int(c))
    raise ValueError("NOMEM_SWEEP=%s: nth:FIRST:LAST:STEP or random:SEED:COUNT:PPM" % spec)


def _start(qproxy_factory, backend_app, tmp_path):
    q = qproxy_factory(sections=_sections(backend_app), start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    # the readiness probe's connection gone, then a round to warm up:
    # libev's arrays, the chunk and exchange caches
    _workload(q)
    _check_serving(q, "before any failure")
    return q, shim


def test_every_nth_allocation_failing_in_turn(qproxy_factory, backend_app, tmp_path):
    """Rounds of mixed work each with one allocation failing, the N-th of
    the round, for N spread over all it makes (or NOMEM_SWEEP's)."""
    q, shim = _start(qproxy_factory, backend_app, tmp_path)
    shim.nth(0, 0)
    _workload(q)
    total, _ = shim.off()
    assert total > 100, "a round made only %d allocations: is the shim working?" % total
    sweep = _sweep()
    if sweep is None:
        ns = sorted({1 + total * i // 10 for i in range(10)})
    elif sweep[0] == "nth":
        ns = range(sweep[1], (sweep[2] or total) + 1, sweep[3])
    else:
        pytest.skip("NOMEM_SWEEP asks for random rounds")
    done = 0
    for n in ns:
        allocs, failed = _round(q, shim, lambda s: s.nth(n),
                                "with allocation %d failing" % n)
        done += failed
        _check_serving(q, "after allocation %d of %d failed" % (n, allocs))
    assert done > 0, "no allocation failed: the sweep tested nothing"


def test_every_allocation_of_a_new_connection_failing_in_turn(qproxy_factory, backend_app,
                                                              tmp_path):
    """A new connection's handshake and first request with each of its
    allocations failing in turn, every one: the daemon goes on (the Handshake
    key ngtcp2 freed twice when wolfSSL had no memory for the transport
    parameters crashed it)."""
    q, shim = _start(qproxy_factory, backend_app, tmp_path)

    def connect():
        try:
            h3_get(q.url("/app/bytes/10"), timeout=0.3 * SLOW, connect_timeout=0.1 * SLOW)
        except pycurl.error:
            pass
    shim.nth(0, 0)
    connect()
    total, _ = shim.off()
    for n in range(1, total + 1):
        shim.nth(n)
        connect()
        assert q.running() and q.sanitizer_report() is None, (
            "with allocation %d of about %d failing:\n%s"
            % (n, total, q.sanitizer_report() or q.log_tail()))
        shim.off()
    _check_serving(q, "after the sweep of %d allocations" % total)


def test_random_allocations_failing(qproxy_factory, backend_app, tmp_path):
    """Rounds of mixed work with allocations failing at random, a few in a
    thousand, for a few seeds (or NOMEM_SWEEP's)."""
    sweep = _sweep()
    if sweep is None:
        seeds, ppm = range(1, 3), 3000
    elif sweep[0] == "random":
        seeds, ppm = range(sweep[1], sweep[1] + sweep[2]), sweep[3]
    else:
        pytest.skip("NOMEM_SWEEP asks for the N-th allocation")
    q, shim = _start(qproxy_factory, backend_app, tmp_path)
    done = 0
    for seed in seeds:
        allocs, failed = _round(q, shim, lambda s: s.random(seed, ppm),
                                "with seed %d" % seed)
        done += failed
        _check_serving(q, "after seed %d (%d of %d allocations failed)"
                       % (seed, failed, allocs))
    assert done > 0, "no allocation failed: the sweep tested nothing"


def test_a_request_reset_for_lack_of_memory_is_counted(qproxy_factory, backend_app, tmp_path):
    """On a connection kept open, requests with each of their allocations
    failing in turn: one whose stream qproxy resets (the client sees "reset
    by server") is counted in requests reset, as qproxyctl(8) has it for a
    request cut short. One of its own answers whose fields (a route's
    set_response_header) got no memory was not, nor were the other resets
    for lack of memory in exchange.c. Warm, a request allocates little
    else: bodies and responses go through chunks kept for reuse."""
    def sections(port, cert, key):
        return _sections(backend_app)(port, cert, key) + [
            ("route ans", [("path_prefix", "/ans/"), ("return", "200 ok"),
                           ("set_response_header", "X-Answered: yes")])]
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    c, _ = make_easy(q.url("/ans/"), timeout=5 * SLOW)

    def transfer(url, body=None):
        """Whether the server reset the request's stream."""
        c.setopt(pycurl.URL, url)
        if body is not None:
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.POSTFIELDS, body)
        else:
            c.setopt(pycurl.HTTPGET, 1)
        try:
            c.perform()
        except pycurl.error as e:
            return "reset by server" in str(e)
        return False

    def round_():
        return (transfer(q.url("/ans/a")) + transfer(q.url("/app/upload"), expected_body(60000))
                + transfer(q.url("/ans/b")))
    try:
        round_()
        shim.nth(0, 0)
        round_()
        total, _ = shim.off()
        seen = 0
        for n in range(1, total + 4):
            before = stats(q)["requests"]["reset"]
            shim.nth(n)
            resets = round_()
            shim.off()
            after = stats(q)["requests"]["reset"]
            seen += resets
            assert after - before >= resets, (
                "allocation %d failing: %d reset by qproxy, %d counted"
                % (n, resets, after - before))
    finally:
        c.close()
    assert seen > 0, "no request was reset: the sweep tested nothing"
    _check_serving(q, "after the sweep")


def _shape(text):
    """A reply's text with its numbers (counts, ages, ports) as N and the
    spaces that pad them to their columns as one: what a lost piece of it
    changes, and time does not."""
    return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?", "N", text))


@pytest.mark.parametrize("args", [["stats"], ["stats", "--json"], ["backends"],
                                  ["backends", "--json"], ["metrics"], ["conns"],
                                  ["conns", "--json"]])
def test_a_control_reply_without_memory_is_whole_or_refused(qproxy_factory, backend_app,
                                                            tmp_path, args):
    """Each allocation of a qproxyctl reply failing in turn: qproxyctl gets
    the whole reply (exit 0, the text of one without failures, numbers
    aside) or exits non-zero saying "out of memory"; never a reply with a
    row lost that looks whole, nor "reply too long". The daemon serves on."""
    def sections(port, cert, key):
        # the connections kept open for the whole sweep, however slow
        return [(name, [(k, "60s" if k == "idle_timeout" else v) for k, v in keys])
                for name, keys in _sections(backend_app)(port, cert, key)]
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    # connections for conns to show (each a row), kept past the sweep
    keep = []
    for i in range(3):
        c, _ = make_easy(q.url("/app/bytes/10"), timeout=5 * SLOW)
        c.perform()
        keep.append(c)
    try:
        # no other connection (the start's probe, closing) among the rows
        wait_until(lambda: stats(q)["connections"]["current"] == len(keep),
                   "connections other than the three kept are open")
        want = qproxyctl(q, *args)
        assert want.returncode == 0, want.stderr
        # a sweep that refused none (once in CI, for backends: the daemon
        # logged no failure of the reply's allocations) is made again
        sweeps = []
        for _ in range(3):
            shim.nth(0, 0)
            qproxyctl(q, *args)
            total, _ = shim.off()
            assert total > 0, "the reply made no allocation: is the shim working?"
            refused = failures = 0
            for n in range(1, total + 3):
                what = "%s with allocation %d of %d failing" % (" ".join(args), n, total)
                p, failed = shim.failing(n, lambda: qproxyctl(q, *args), what)
                failures += failed
                if p.returncode == 0:
                    assert _shape(p.stdout) == _shape(want.stdout), (
                        "%s: exit 0 with another text:\n%s" % (what, p.stdout))
                else:
                    assert "out of memory" in p.stderr, "%s: %s" % (what, p.stderr)
                    refused += 1
            sweeps.append((total, failures, refused))
            if refused > 0:
                break
        assert refused > 0, ("no reply was refused: the sweeps tested nothing "
                             "(allocations, failed, refused): %s" % sweeps)
        p = qproxyctl(q, *args)
        assert p.returncode == 0 and _shape(p.stdout) == _shape(want.stdout), p
    finally:
        for c in keep:
            c.close()
    _check_serving(q, "after the sweep of %s" % " ".join(args))


def test_a_reload_without_memory_for_its_reply_says_whether_it_was_taken(
        qproxy_factory, backend_app, tmp_path):
    """Each allocation of a reload failing in turn, its reply's among
    them: a reload the daemon took is answered OK (exit 0),
    with a warning that the rest of the reply was lost when it was, never
    "out of memory" as if it had been refused; one it refused exits 1. A
    reload whose warnings were lost answered "ERR out of memory" though
    the new configuration ran."""
    q = qproxy_factory(sections=_sections(backend_app), start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    # a key only a restart applies: the reloads are taken, with a warning
    with open(q.conf, "a") as f:
        f.write("\n[global]\nworkers = 2\n")

    p = qproxyctl(q, "reload")
    assert p.returncode == 0 and "warning: " in p.stdout, p
    shim.nth(0, 0)
    before = _reloads_logged(q)
    assert qproxyctl(q, "reload").returncode == 0
    total, _ = shim.off()
    wait_until(lambda: _reloads_logged(q) == before + 1, "the counted reload logged")
    lost = 0
    for n in range(1, total + 3):
        before = _reloads_logged(q)
        what = "reload with allocation %d of %d failing" % (n, total)
        p, failed = shim.failing(n, lambda: qproxyctl(q, "reload"), what)
        if p.returncode == 0:
            wait_until(lambda: _reloads_logged(q) == before + 1,
                       "%s: exit 0, logged" % what)
            if "out of memory" in p.stdout:
                assert p.stdout == ("warning: out of memory for the rest of this "
                                    "reply; the log has it\n"), (what, p.stdout)
                lost += 1
            else:
                assert "workers changes take effect at restart" in p.stdout, (
                    what, p.stdout)
        else:
            time.sleep(0.05)
            assert failed and _reloads_logged(q) == before, (
                "%s: exit %d, but taken: %s" % (what, p.returncode, p.stderr))
    # the sweep reached the reply: one of its reloads lost it
    assert lost > 0, "no reply lost in allocations 1 to %d" % (total + 2)
    _check_serving(q, "after the sweep of reloads")


def _reload_text(q, text):
    """q's file rewritten to text, and reloaded: qproxyctl's result."""
    with open(q.conf, "w") as f:
        f.write(text)
    return qproxyctl(q, "reload")


def _backend_state(q, backend):
    """The state of backend's first server, as qproxyctl backends says."""
    for b in json.loads(qproxyctl(q, "backends", "--json").stdout)["backends"]:
        if b["name"] == backend:
            return b["servers"][0]["state"]
    return None


def test_a_reload_that_adds_health_checks_runs_them_or_is_refused(qproxy_factory, backend_app,
                                                                   tmp_path):
    """Each allocation of a reload failing in turn, the new file adding a
    backend checked every 100 ms on a closed port: a reload taken (exit 0)
    checks it, the server marked unhealthy at its first check; one refused
    leaves the generation as it was. The checks were begun only once the
    reload was applied, which cannot fail: out of memory there, the reload
    was taken without them ("some health checks do not run"), and the
    server, never checked, stayed up for new requests (with workers, in
    that worker alone)."""
    q = qproxy_factory(sections=_sections(backend_app), start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with open(q.conf) as f:
        old = f.read()
    new = old + ("\n[backend hc]\nserver = 127.0.0.1:%d\nhealth_check = /health\n"
                 "health_interval = 100ms\nhealth_fails = 1\n" % port)
    shim.nth(0, 0)
    assert _reload_text(q, new).returncode == 0
    total, _ = shim.off()
    wait_until(lambda: _backend_state(q, "hc") == "unhealthy", "hc checked", 5 * SLOW)
    assert _reload_text(q, old).returncode == 0
    refused = 0
    for n in range(1, total + 3):
        before = stats(q)["generation"]
        what = "reload with allocation %d of %d failing" % (n, total)
        p, failed = shim.failing(n, lambda: _reload_text(q, new), what)
        if p.returncode == 0:
            assert stats(q)["generation"] == before + 1, what
            wait_until(lambda: _backend_state(q, "hc") == "unhealthy",
                       "%s: exit 0, hc checked" % what, 3 * SLOW)
            assert _reload_text(q, old).returncode == 0, what
            assert _backend_state(q, "hc") is None, what
            continue
        refused += 1
        assert failed and stats(q)["generation"] == before, (what, p)
    assert refused > 0, "no reload refused in allocations 1 to %d" % (total + 2)
    assert "health checks do not run" not in q.log_text()
    _check_serving(q, "after the sweep of reloads")


def _worker_pids(q):
    with open("/proc/%d/task/%d/children" % (q.proc.pid, q.proc.pid)) as f:
        return sorted(int(x) for x in f.read().split())


def _each_worker(q, n):
    """What each worker says of itself, qproxyctl stats --json on its own
    socket."""
    each = []
    for i in range(n):
        p = subprocess.run([qproxyctl_binary(), "-s", "%s.%d" % (q.control_socket, i),
                            "stats", "--json"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        each.append(json.loads(p.stdout))
    return each


def _generations(q, n):
    """Each worker's configuration generation, from its own socket."""
    return [w["generation"] for w in _each_worker(q, n)]


def test_a_reload_with_workers_without_memory_in_the_supervisor_is_all_or_none(
        qproxy_factory, backend_app, tmp_path):
    """workers = 2, each allocation of the supervisor's in a reload failing
    in turn: exit 0 when every worker and the supervisor took the file
    (the supervisor's own error_log, new at each reload, has its line
    saying so), exit 1 when none did. The supervisor read the file once
    the workers had taken it: out of memory there, the reload was said
    taken and a worker started later ran the configuration before; and a
    worker's OK lost for want of memory for its text was "no answer", the
    reload refused though every worker ran it."""
    def sections(port, cert, key):
        s = _sections(backend_app)(port, cert, key)
        s[0][1].extend([("workers", "2"), ("error_log", str(tmp_path / "error.0"))])
        return s
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    wait_until(lambda: len(_worker_pids(q)) == 2, "two workers", 10 * SLOW)
    wait_until(lambda: stats(q)["workers"]["answered"] == 2, "both answering", 10 * SLOW)
    pids = _worker_pids(q)
    with open(q.conf) as f:
        conf = f.read()
    k = [0]

    def reload_():
        k[0] += 1
        with open(q.conf, "w") as f:
            f.write(conf.replace(str(tmp_path / "error.0"), str(tmp_path / ("error.%d" % k[0]))))
        return qproxyctl(q, "reload")

    def supervisor_took():
        try:
            with open(str(tmp_path / ("error.%d" % k[0]))) as f:
                return "reload: every worker took the configuration" in f.read()
        except FileNotFoundError:
            return False
    assert reload_().returncode == 0 and supervisor_took()
    shim.nth(0, 0)
    assert reload_().returncode == 0
    total, _ = shim.off()
    refused = 0
    for n in range(1, total + 3):
        before = _generations(q, 2)
        what = "reload with allocation %d of %d failing in the supervisor" % (n, total)
        p, failed = shim.failing(n, reload_, what)
        assert _worker_pids(q) == pids, "%s: a worker ended" % what
        moved = [a - b for a, b in zip(_generations(q, 2), before)]
        if p.returncode == 0:
            assert moved == [1, 1] and supervisor_took(), (what, moved, p)
            assert p.stdout in ("", "warning: out of memory for the rest of this reply; "
                                "the log has it\n"), (what, p.stdout)
        else:
            refused += 1
            assert failed and moved == [0, 0], (what, moved, p)
    assert refused > 0, "no reload refused in allocations 1 to %d" % (total + 2)
    _check_serving(q, "after the sweep of reloads")


def _served_everywhere(q, path, status, n=2):
    """Connections of their own, each to the worker the kernel gives it,
    ask for path until every one of the n workers has answered some: each
    answer is status."""
    def answered():
        return [sum(w["requests"].values()) for w in _each_worker(q, n)]
    before = answered()
    for i in range(48):
        r = h3_get(q.url(path))
        assert r.status == status, (path, i, r.status)
        if i % 8 == 7 and all(a > b for a, b in zip(answered(), before)):
            return
    pytest.fail("%s: a worker answered none of 48 connections" % path, pytrace=False)


def test_a_reload_one_worker_cannot_make_is_taken_by_none(qproxy_factory, backend_app,
                                                          tmp_path):
    """workers = 2, each allocation of one worker's in a reload failing in
    turn (the shim armed in that worker alone), the new file adding a
    route: exit 1 (reload refused) leaves both workers on the file before,
    a connection to either finding no route (404); exit 0 has both on the
    new one. The other worker took the file that the one without memory
    refused, and the two served two configurations from then on."""
    def sections(port, cert, key):
        s = _sections(backend_app)(port, cert, key)
        s[0][1].append(("workers", "2"))
        return s
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    wait_until(lambda: len(_worker_pids(q)) == 2, "two workers", 10 * SLOW)
    wait_until(lambda: stats(q)["workers"]["answered"] == 2, "both answering", 10 * SLOW)
    pids = _worker_pids(q)
    shim.pid = pids[1]
    with open(q.conf) as f:
        old = f.read()
    new = old + "\n[route new]\npath_prefix = /new/\nbackend = app\n"
    shim.nth(0, 0)
    assert _reload_text(q, new).returncode == 0
    total, _ = shim.off()
    assert total > 0, "the worker's reload made no allocation: is the shim armed?"
    assert _reload_text(q, old).returncode == 0
    refused = 0
    for n in range(1, total + 3):
        before = _generations(q, 2)
        what = "reload with allocation %d of %d failing in one worker" % (n, total)
        p, failed = shim.failing(n, lambda: _reload_text(q, new), what)
        assert _worker_pids(q) == pids, "%s: a worker ended" % what
        moved = [a - b for a, b in zip(_generations(q, 2), before)]
        if p.returncode == 0:
            assert moved == [1, 1], (what, moved, p)
            assert _reload_text(q, old).returncode == 0, what
            continue
        refused += 1
        assert failed and moved == [0, 0], (what, moved, p)
        assert p.stderr.startswith("qproxyctl: reload refused\n"), (what, p.stderr)
        _served_everywhere(q, "/new/bytes/10", 404)
    assert refused > 0, "no reload refused in allocations 1 to %d" % (total + 2)
    # and with memory, the file reaches every worker
    assert _reload_text(q, new).returncode == 0
    _served_everywhere(q, "/new/bytes/10", 200)
    _check_serving(q, "after the sweep of reloads")


def test_a_reload_out_of_memory_in_an_included_file_frees_what_it_read(
        qproxy_factory, backend_app, tmp_path):
    """Each allocation of the parse of a reload whose file includes
    another failing in turn: refused (exit 1) or taken (exit 0), and
    nothing the refused ones read is used once freed. config_load freed the configuration and then
    closed the files a parse stopped for want of memory left open, adding
    to the freed configuration's list of where its lines came from (ASan:
    heap-use-after-free in config_span_add)."""
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "a.conf").write_text("[route inc]\npath_prefix = /inc/\nreturn = 200 included\n"
                                "[route inc2]\npath_prefix = /inc2/\nbackend = app\n")
    q = qproxy_factory(sections=_sections(backend_app), start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    with open(q.conf, "a") as f:
        f.write("\ninclude = %s/*.conf\n[route last]\npath_prefix = /last/\n"
                "return = 200 last\n" % inc)
    q.start()

    # the allocations of the parse: those of a file refused at its end
    with open(q.conf) as f:
        conf = f.read()
    with open(q.conf, "a") as f:
        f.write("bogus = 1\n")
    shim.nth(0, 0)
    assert qproxyctl(q, "reload").returncode == 1
    total, _ = shim.off()
    with open(q.conf, "w") as f:
        f.write(conf)
    refused = 0
    for n in range(1, total + 1):
        before = _reloads_logged(q)
        what = "reload with allocation %d of %d failing" % (n, total)
        p, failed = shim.failing(n, lambda: qproxyctl(q, "reload"), what)
        if p.returncode == 0:
            wait_until(lambda: _reloads_logged(q) == before + 1,
                       "%s: exit 0, logged" % what)
        else:
            refused += 1
            time.sleep(0.05)
            assert failed and _reloads_logged(q) == before, (
                "%s: exit %d, but taken: %s" % (what, p.returncode, p.stderr))
    assert refused > 0, "no reload refused in allocations 1 to %d" % total
    assert h3_get(q.url("/inc/")).body == b"included\n"
    _check_serving(q, "after the sweep of reloads")


def test_the_event_loop_without_memory_for_its_own_arrays_waits_for_some(
        qproxy_factory, backend_app, tmp_path):
    """80 connections whose timers all come due at once (qproxy stopped
    past their idle_timeout) while the first allocations after fail:
    libev's array of the events pending grows then, and libev aborted the
    daemon when that failed, saying so on a line stderr's buffer kept. It
    tries again now, and the daemon goes on."""
    q = qproxy_factory(sections=_sections(backend_app), start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    keep = []
    try:
        for i in range(80):
            c, _ = make_easy(q.url("/app/bytes/10"), timeout=5 * SLOW)
            c.perform()
            keep.append(c)
        q.signal(signal.SIGSTOP)
        time.sleep(3.5)     # idle_timeout 3s
        # armed as it goes on: the shim's handler runs before the loop
        shim.gen += 1
        with open(shim.path + ".new", "w") as f:
            f.write("%d nth 1 20\n" % shim.gen)
        os.replace(shim.path + ".new", shim.path)
        q.signal(signal.SIGURG)
        q.signal(signal.SIGCONT)
        wait_until(lambda: "event loop: out of memory" in q.log_text() or not q.running(),
                   "libev's allocation failing", 5 * SLOW)
        _, failed = shim.off()
        assert failed > 0
    finally:
        for c in keep:
            c.close()
    _check_serving(q, "after libev had no memory")


@pytest.mark.parametrize("workers", [1, 2])
def test_disable_and_enable_without_memory_say_what_was_done(qproxy_factory, backend_app,
                                                             tmp_path, workers):
    """Each allocation of qproxyctl disable and enable failing in turn (the
    supervisor's, with workers): exit 0 when the server's state changed,
    with its line or the warning that the reply was lost, and a server
    disabled is in state_file (or the reply says it is not kept); exit 1
    when it did not change. A reply lost was an empty OK; the supervisor
    that had no memory for its own list let the workers disable the
    server but not one started later, nor state_file."""
    state = tmp_path / "state"

    def sections(port, cert, key):
        s = _sections(backend_app)(port, cert, key)
        s[0][1].extend([("workers", str(workers)), ("state_file", str(state))])
        return s
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    if workers > 1:
        wait_until(lambda: stats(q)["workers"]["answered"] == workers, "every worker answering",
                   10 * SLOW)
    server = backend_app.tcp_server

    def disabled():
        p = qproxyctl(q, "backends", "--json")
        assert p.returncode == 0, p
        return json.loads(p.stdout)["backends"][0]["servers"][0]["state"] == "disabled"

    def set_(on):
        return qproxyctl(q, "enable" if on else "disable", "app", server)
    assert set_(False).returncode == 0 and set_(True).returncode == 0
    shim.nth(0, 0)
    set_(False)
    total, _ = shim.off()
    assert set_(True).returncode == 0
    lost = 0
    for n in range(1, total + 3):
        for on in (False, True):
            if disabled() != on:
                assert set_(not on).returncode == 0
            what = "%s with allocation %d of %d failing" % ("enable" if on else "disable",
                                                            n, total)
            p, failed = shim.failing(n, lambda: set_(on), what)
            now = disabled()
            if p.returncode != 0:
                assert failed and now == on, (what, p)
                continue
            assert now != on, (what, p)
            if "out of memory for the rest" in p.stdout:
                lost += 1
                assert p.stdout == ("warning: out of memory for the rest of this reply; "
                                    "the log has it\n"), (what, p.stdout)
            else:
                assert p.stdout.startswith("backend app: server %s %s\n" % (
                    server, "enabled" if on else "disabled")), (what, p.stdout)
            if now and "not kept across a restart" not in p.stdout:
                assert ("disabled app %s\n" % server) in state.read_text(), (what, p.stdout)
    assert lost > 0, "no reply lost in allocations 1 to %d" % (total + 2)
    if disabled():
        assert set_(True).returncode == 0
    _check_serving(q, "after the sweep of disable and enable")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reopen_without_memory_says_whether_it_was_done(qproxy_factory, backend_app,
                                                          tmp_path, workers):
    """Each allocation of qproxyctl reopen failing in turn (the
    supervisor's, with workers), the log files moved away before each:
    exit 0 when they were opened anew, exit 1 when they were not. A
    worker's OK whose text the supervisor had no memory for was "no
    answer", the reopen said to have failed though every file was new."""
    acc, err = tmp_path / "access.log", tmp_path / "error.log"

    def sections(port, cert, key):
        s = _sections(backend_app)(port, cert, key)
        s[0][1].extend([("workers", str(workers)), ("access_log", str(acc)),
                        ("error_log", str(err))])
        return s
    q = qproxy_factory(sections=sections, start=False)
    shim = preload_nomem(q, str(tmp_path / "nomem"))
    q.start()
    if workers > 1:
        wait_until(lambda: stats(q)["workers"]["answered"] == workers, "every worker answering",
                   10 * SLOW)

    def rotate():
        for f in (acc, err):
            if f.exists():
                os.replace(str(f), str(f) + ".1")
        return qproxyctl(q, "reopen")
    assert rotate().returncode == 0
    shim.nth(0, 0)
    rotate()
    total, _ = shim.off()
    for n in range(1, total + 3):
        what = "reopen with allocation %d of %d failing" % (n, total)
        p, failed = shim.failing(n, rotate, what)
        if p.returncode == 0:
            assert acc.exists() and err.exists(), what
            assert p.stdout in ("", "warning: out of memory for the rest of this reply; "
                                "the log has it\n"), (what, p.stdout)
        else:
            assert failed and not acc.exists() and not err.exists(), (what, p)
    _check_serving(q, "after the sweep of reopens")
