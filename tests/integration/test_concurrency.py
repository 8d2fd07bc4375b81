"""Many streams on one QUIC connection, many connections at once, and a second
independent HTTP/3 client (ngtcp2's gtlsclient)."""

import collections
import json
import os
import signal
import time

import pytest

from helpers import (BIG_TIMEOUT, SLOW, KiB, MiB, app_sections, expected_body,
                     expected_sha256, file_sha256, generated_body, gtls_fetch, h3_parallel,
                     paused_h3raw, sha256)


def _check_all(sizes, responses):
    failed = [(n, r) for n, r in zip(sizes, responses)
              if r.error or r.status != 200 or r.sha256 != expected_sha256(n)]
    assert not failed, "%d of %d transfers failed, e.g. %r" % (
        len(failed), len(sizes), failed[:5])


def test_200_streams_on_one_connection(qp, backend_app):
    sizes = [(i * 7919) % (64 * KiB) + i for i in range(200)]
    before = backend_app.count
    rs = h3_parallel([qp.url("/app/bytes/%d" % n) for n in sizes], one_connection=True,
                     timeout=3 * BIG_TIMEOUT)
    _check_all(sizes, rs)
    # libcurl made exactly one connection for all 200 transfers.
    assert sum(r.num_connects for r in rs) == 1, [r.num_connects for r in rs]
    assert len({r.local_port for r in rs}) == 1
    assert backend_app.wait_for_count(before + 200) >= before + 200


def test_200_mixed_streams_on_one_connection(qp):
    """Chunked, close-delimited and fixed-length responses interleaved."""
    kinds = ("bytes", "chunked", "close", "unix-bytes")
    urls, sizes = [], []
    for i in range(200):
        n = (i * 104729) % (200 * KiB)
        kind = kinds[i % len(kinds)]
        path = "/unix/bytes/%d" % n if kind == "unix-bytes" else "/app/%s/%d" % (kind, n)
        urls.append(qp.url(path))
        sizes.append(n)
    rs = h3_parallel(urls, one_connection=True, timeout=3 * BIG_TIMEOUT)
    _check_all(sizes, rs)
    assert sum(r.num_connects for r in rs) == 1


def test_50_connections_in_parallel(qp):
    sizes = [100 * KiB + i for i in range(50)]
    rs = h3_parallel([qp.url("/app/bytes/%d" % n) for n in sizes], one_connection=False,
                     timeout=3 * BIG_TIMEOUT)
    _check_all(sizes, rs)
    assert [r.num_connects for r in rs] == [1] * 50
    assert len({r.local_port for r in rs}) == 50


def test_parallel_uploads_on_one_connection(qp):
    """20 concurrent uploads of about 256 KiB, half without content-length."""
    sizes = [256 * KiB + i for i in range(20)]
    reqs = [{"url": qp.url("/app/upload"), "method": "POST",
             "body": expected_body(n) if i % 2 else generated_body(n),
             "content_length": bool(i % 2)} for i, n in enumerate(sizes)]
    rs = h3_parallel(reqs, one_connection=True, timeout=3 * BIG_TIMEOUT)
    for n, r in zip(sizes, rs):
        assert r.error is None and r.status == 200, r
        j = r.json()
        assert j["length"] == n and j["sha256"] == expected_sha256(n)
    assert sum(r.num_connects for r in rs) == 1


def test_1000_requests_read_between_two_writes(qproxy_factory, backend_app):
    """With max_streams_bidi 1000, a client's last 980 requests come while
    qproxy is stopped, and are read in one go before it writes again. Each
    names QPACK's dynamic table (entries the first 20 made, which qproxy
    acknowledged), so each takes a Section Acknowledgment of up to 3 bytes
    on qproxy's decoder stream. nghttp3 keeps them until the next write,
    and past 20 bytes per stream the client may open, 2,000 bytes unless
    qproxy says more than 100 (nghttp3_conn_set_max_concurrent_streams),
    fails the connection with H3_INTERNAL_ERROR (0x102). qproxy did not
    say: bench's streams1000 with h2load failed so now and then, this
    always."""
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server, glob=[("max_streams_bidi", "1000")],
        first_routes=[("route ok", [("path_prefix", "/ok"), ("return", "200 ok")])]))
    get = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
           ":path: /ok", "user-agent: h3raw"]
    p = paused_h3raw(q, get, 1000, 20, SLOW, 20 * SLOW)
    # the pause ends and the other 980 requests go out, meanwhile
    q.signal(signal.SIGSTOP)
    try:
        time.sleep(1.5 * SLOW)
    finally:
        q.signal(signal.SIGCONT)
    # and h3raw, whose decoder acknowledges each response's field section
    # (its nghttp3 has the same bound), reads the answers in one go too:
    # a make check run saw 194 of them lost so, before h3raw said 1000
    os.kill(p.pid, signal.SIGSTOP)
    try:
        time.sleep(SLOW)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=30 * SLOW)
    outcomes = collections.Counter(line.split(" ", 2)[1] if line.startswith("status ")
                                   else line.split(" ", 1)[0] for line in out.splitlines())
    assert outcomes == {"200": 1000}, (outcomes, err[-2000:])
    assert "ERR_QPACK_FATAL" not in q.log_text()


# ---------------------------------------------------------------- gtlsclient

@pytest.mark.parametrize("n", [1 * KiB, 10 * MiB], ids=["1KiB", "10MiB"])
def test_gtlsclient_download(qp, tmp_path, n):
    p = gtls_fetch(qp.port, ["/app/bytes/%d" % n], tmp_path, timeout=BIG_TIMEOUT)
    f = tmp_path / str(n)
    assert f.exists(), "gtlsclient saved nothing:\n%s" % p.stderr[-3000:]
    assert p.statuses == [200], p.stderr[-3000:]
    assert os.path.getsize(f) == n
    assert file_sha256(f) == expected_sha256(n)


def test_gtlsclient_many_streams(qp, tmp_path):
    sizes = [1000 + 37 * i for i in range(30)]
    paths = ["/app/bytes/%d" % n for n in sizes[:15]] + \
            ["/app/chunked/%d" % n for n in sizes[15:]]
    p = gtls_fetch(qp.port, paths, tmp_path, timeout=BIG_TIMEOUT)
    assert p.statuses == [200] * 30, p.stderr[-3000:]
    for n in sizes:
        assert file_sha256(tmp_path / str(n)) == expected_sha256(n), n


def test_gtlsclient_upload(qp, tmp_path):
    n = 1 * MiB + 3
    src = tmp_path / "body.bin"
    src.write_bytes(expected_body(n))
    out = tmp_path / "out"
    p = gtls_fetch(qp.port, ["/app/upload"], out, timeout=BIG_TIMEOUT,
                   extra_args=["-m", "POST", "-d", str(src)])
    assert p.statuses == [200], p.stderr[-3000:]
    j = json.loads((out / "upload").read_bytes())
    assert j["length"] == n and j["sha256"] == sha256(expected_body(n))
    assert j["content_length"] == str(n)
