"""CPU amplification: inputs that cost qproxy's one event loop far more than
an ordinary request of the same size does, so that one cheap peer (a
client, or a backend) takes the loop from every other connection.

qproxy's CPU time is read from /proc/PID/sched (se.sum_exec_runtime, in
milliseconds, finer than /proc/PID/stat's clock ticks), before and after
each input. The instances here log at "info": at "debug" the log lines
themselves would be most of the cost.

Each test compares an input with a baseline of the same size that takes
the ordinary path, and fails while the input costs many times more.
"""

import subprocess

from helpers import SLOW, h3raw_binary, wait_until

from test_ops import stats


def _cpu_ms(q):
    with open("/proc/%d/sched" % q.proc.pid) as f:
        for line in f:
            if line.startswith("se.sum_exec_runtime"):
                return float(line.split(":")[1])
    raise AssertionError("no se.sum_exec_runtime in /proc/PID/sched")


def _sections(backend_server, glob=(), routes=None):
    def make(port, cert, key):
        return [("global", [("log_level", "info"), ("shutdown_timeout", "5s")] + list(glob)),
                ("listener main", [("address", "127.0.0.1:%d" % port), ("certificate", cert),
                                   ("private_key", key), ("retry", "never")]),
                ("backend app", [("server", backend_server), ("read_timeout", "20s")])] + (
                    routes if routes is not None else
                    [("route app", [("path_prefix", "/app/"), ("backend", "app")])])
    return make


def _idle(q):
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "no connection", 10 * SLOW)


def _run(q, args, timeout=30):
    """h3raw with args: (its outcome lines, qproxy's CPU ms meanwhile)."""
    _idle(q)
    before = _cpu_ms(q)
    p = subprocess.run([h3raw_binary(), "-t", str(timeout * SLOW)] + list(args) +
                       ["127.0.0.1", str(q.port)], capture_output=True, text=True,
                       errors="replace", timeout=timeout * SLOW + 20)
    _idle(q)
    return p.stdout.split("\n"), _cpu_ms(q) - before


def _get(q, path):
    return ["-H", ":method: GET", "-H", ":scheme: https",
            "-H", ":authority: 127.0.0.1:%d" % q.port, "-H", ":path: %s" % path]


def test_a_response_head_in_small_pieces_is_not_parsed_again_from_its_start(
        qproxy_factory, backend_app):
    """A response head is parsed from its first byte again at each read
    that brings more of it (ex_parse_rbuf -> http1_parse_response on the
    whole of rbuf): a head of H bytes arriving in pieces of k bytes costs
    about H*H/2k bytes of scanning, up to max_header_size (1m here). A
    backend that writes its head 200 bytes at a time, 0.1 ms apart, costs
    the loop about 0.5 s for one 900 KB head, against about 6 ms for the
    same head in one piece (measured: 470-510 ms vs 6 ms; 1.1 s for 100-byte
    pieces); at the default max_header_size (64k), a 57 KB head in 10-byte
    pieces cost 94 ms against 1 ms. Once parsed incrementally (looking for
    the head's end only in the new bytes: tried, this test passes), a read
    should cost about what its own bytes do."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server,
                                          glob=[("max_header_size", "1m")]))
    target = "/app/trickle/10?cl=1&pad=900000&fields=100"
    pieces = 4500
    out, whole = _run(q, _get(q, target + "&step=10000000&us=0"))
    assert "status 200 body 10" in out, out
    out, trickled = _run(q, _get(q, target + "&step=200&us=100"), timeout=60)
    assert "status 200 body 10" in out, out
    # 20 us a read for the reads themselves, and ten times the whole head
    allowed = 10 * whole + 0.02 * pieces
    assert trickled < allowed, (
        "a 900 KB response head in %d pieces cost qproxy %.0f ms of CPU, in one "
        "piece %.1f ms (allowed %.0f ms)" % (pieces, trickled, whole, allowed))


def test_a_path_of_slashes_is_not_walked_once_per_route(qproxy_factory, backend_app):
    """A run of "/" in a path matches one "/" of a route's prefix (so that
    "/app//admin/" cannot pass a guard of "/app/admin/"); matched route by
    route, each walked the whole run again: with 500 path_prefix routes,
    20 requests whose paths were 60,000 "/" cost the loop about 33 times
    what 20 with a 60 KB query did (found by helper-62). The path is
    made so once a request now."""
    routes = [("route r%d" % i, [("path_prefix", "/r%d/x/" % i), ("backend", "app")])
              for i in range(500)]
    routes.append(("route app", [("path_prefix", "/"), ("backend", "app")]))
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, routes=routes))
    _, base = _run(q, _get(q, "/app/bytes/10?" + "a" * 60000) + ["-n", "20"])
    out, slashes = _run(q, _get(q, "/" * 60000 + "app/bytes/10") + ["-n", "20"])
    assert out.count("status 200 body 10") == 20, out
    assert slashes < 5 * base, (
        "20 requests with 60 KB of slashes cost %.0f ms, with a 60 KB query %.1f ms "
        "(500 routes)" % (slashes, base))


def test_a_body_of_one_byte_chunks_costs_about_its_bytes(qproxy_factory, backend_app):
    """A chunked body whose chunks are 1 byte long ("1\\r\\nx\\r\\n", six
    bytes on the wire for one of the body): each chunk is one span of
    the parser's, and for each one the rest of the read buffer was moved
    down over it and the stream woken: about eight times what the same
    bytes on the wire cost in one chunk (measured here: 163 ms against
    19 ms). The buffer is moved, and the stream woken, once a parse now
    (measured: 55 ms against 18 ms)."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server))
    n = 400000                      # 2.4 MB on the wire in 1-byte chunks
    out, whole = _run(q, _get(q, "/app/chunked/%d?size=%d" % (6 * n, 6 * n)) + ["-n", "5"])
    assert out.count("status 200 body %d" % (6 * n)) == 5, out
    out, tiny = _run(q, _get(q, "/app/chunked/%d?size=1" % n) + ["-n", "5"])
    assert out.count("status 200 body %d" % n) == 5, out
    assert tiny < 6 * whole, (
        "five bodies of %d 1-byte chunks cost qproxy %.0f ms of CPU, the same "
        "bytes on the wire in one chunk %.1f ms" % (n, tiny, whole))
