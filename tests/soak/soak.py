#!/usr/bin/python3
"""qproxy soak: a mixed load for a long while, with loss, backend restarts
and reloads, then checks that nothing was lost and nothing grew.

    QPROXY=build-asan/qproxy QPROXYCTL=build-asan/qproxyctl \\
        python3 tests/soak/soak.py --duration 600

What runs (all at once, for --duration seconds):
  - --workers threads of libcurl HTTP/3 (pycurl), each looping over GETs of
    random sizes (Content-Length, chunked, close-delimited; a third of them
    by a route with compress = gzip, which libcurl asks for and decodes)
    and uploads (held whole up to the backend's request_buffer_size, 512k,
    and streamed past it), through the fault relay (--loss each way);
  - gtlsclient (ngtcp2's client) fetching several streams every few seconds;
  - h3raw opening WebSockets (RFC 9220) one after another, each a tunnel of
    random size (up to 300 KB) echoed by the backend's /ws?raw=1 (a tunnel
    the backend's restart cuts is only counted);
  - h2load (built by bench/setup.sh; $QPROXY_BENCH_PREFIX, /opt/qproxy-bench)
    in bursts of 200 requests on 4 connections x 10 streams, as its own
    client mix (it checks no bodies: its requests count in the counters);
  - the backend stopped for a second and restarted at random (~every 20 s);
  - a reload (SIGHUP) every 30 s.
At the end, after the load stops: qproxy is still running; its stderr has no
sanitizer report; every 200 response's body matched (a wrong body is a
failure, an error is only counted); qproxy's counters agree with the
clients' (requests = responses + resets + malformed, nothing in flight);
and its RSS, once idle, is within --rss-slack (10 %) of what it was when
idle after a --warmup of the same load (--rss-slack -1: not checked, for
sanitizer builds, whose quarantine keeps freed memory).
--set KEY=VALUE adds a [global] setting (repeatable): --set
response_buffer_total=1m soaks that limit, which the load then reaches.
Exit status 0 when all holds.
"""

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "integration"))
sys.path.insert(0, os.path.join(TESTS, "tools"))

import backend as backend_mod  # noqa: E402
from helpers import (QProxy, expected_body, free_udp_port, gtlsclient_binary,  # noqa: E402
                     h3_get, h3_post, h3raw, make_certificate, qproxy_binary,
                     qproxyctl_binary)
from relay import Faults, Relay  # noqa: E402

import pycurl  # noqa: E402


# The body of a response qproxy makes itself, such as "502 Bad Gateway\n".
ERROR_BODY = re.compile(rb"\A[45][0-9][0-9] [A-Za-z -]+\n\Z")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(q):
    p = subprocess.run([qproxyctl_binary(), "-s", q.control_socket, "stats", "--json"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("qproxyctl stats: %s" % p.stderr.strip())
    return json.loads(p.stdout)


H2LOAD = os.path.join(os.environ.get("QPROXY_BENCH_PREFIX", "/opt/qproxy-bench"),
                      "bin", "h2load")
H2LOAD_DONE = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded")


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {"ok": 0, "error": 0, "wrong_body": 0, "5xx": 0,
                  "h2load_ok": 0, "h2load_other": 0, "ws_ok": 0, "ws_other": 0}
        self.wrong = []

    def add(self, key, detail=None):
        with self.lock:
            self.n[key] += 1
            if key == "wrong_body" and len(self.wrong) < 10:
                self.wrong.append(detail)


def curl_worker(relay, stop, tally, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        kind = rng.choice(["bytes", "bytes", "chunked", "close", "upload"])
        n = rng.choice([0, 1, 100, 4096, 65536, 300000, 2000000])
        try:
            if kind == "upload":
                body = os.urandom(n)
                r = h3_post(relay.url("/app/upload"), body, timeout=60)
                if r.status == 200:
                    got = r.json()
                    ok = got["sha256"] == hashlib.sha256(body).hexdigest()
                    tally.add("ok" if ok else "wrong_body", ("upload", n))
                else:
                    tally.add("5xx" if r.status >= 500 else "error")
                continue
            # a third through /gz/, whose bodies are given gzip (libcurl
            # asks for it and decodes it)
            gz = rng.random() < 1 / 3
            r = h3_get(relay.url("/%s/%s/%d" % ("gz" if gz else "app", kind, n)),
                       timeout=60, accept_encoding="" if gz else None)
            if r.status == 200:
                if r.body == expected_body(n):
                    tally.add("ok")
                else:
                    tally.add("wrong_body", (kind, n, len(r.body)))
            else:
                tally.add("5xx" if r.status >= 500 else "error")
        except pycurl.error:
            tally.add("error")


def gtls_worker(relay, stop, tally, workdir):
    i = 0
    while not stop.is_set():
        i += 1
        out = os.path.join(workdir, "gtls-%d" % (i % 4))
        os.makedirs(out, exist_ok=True)
        sizes = [1000 + i % 7, 50000, 250000]
        urls = ["https://127.0.0.1:%d/app/bytes/%d" % (relay.port, n) for n in sizes]
        subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                        "--timeout=20s", "--download=%s" % out, "127.0.0.1",
                        str(relay.port)] + urls,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        for n in sizes:
            path = os.path.join(out, str(n))
            if not os.path.exists(path):
                tally.add("error")
                continue
            with open(path, "rb") as f:
                data = f.read()
            os.unlink(path)
            if data == expected_body(n):
                tally.add("ok")
            elif ERROR_BODY.match(data):
                # gtlsclient saves any status's body: qproxy's own 502/504
                # while the backend restarts
                tally.add("5xx")
            else:
                tally.add("wrong_body", ("gtls", n, len(data), data[:40]))
        stop.wait(2)


def ws_worker(relay, stop, tally, seed):
    """WebSockets one after another: each an extended CONNECT whose tunnel
    of n bytes the backend echoes (ws_ok), or fails as the backend
    restarts (ws_other); an echo of another length is a wrong body."""
    rng = random.Random(seed)
    while not stop.is_set():
        n = rng.choice([1, 1000, 20000, 300000])
        res = h3raw(relay.port, [":method: CONNECT", ":protocol: websocket",
                                 ":scheme: https", ":authority: 127.0.0.1:%d" % relay.port,
                                 ":path: /app/ws?raw=1", "sec-websocket-version: 13"],
                    data=n, extra=["--rest-after-head", "0"], timeout=30)
        got = res.outcomes[0] if len(res.outcomes) == 1 else ""
        if got == "status 200 body %d" % n:
            tally.add("ws_ok")
        elif got.startswith("status 200 body "):
            tally.add("wrong_body", ("ws", n, got))
        else:
            tally.add("ws_other")
        stop.wait(0.2)


def h2load_worker(relay, stop, tally):
    """Bursts of h2load over HTTP/3: 200 requests, 4 connections x 10
    streams; its counts go to the tally (h2load_ok, h2load_other)."""
    while not stop.is_set():
        p = subprocess.run([H2LOAD, "--alpn-list=h3", "-n", "200", "-c", "4", "-m", "10",
                            "https://127.0.0.1:%d/app/bytes/2000" % relay.port],
                           capture_output=True, text=True, timeout=120)
        m = H2LOAD_DONE.search(p.stdout)
        with tally.lock:
            if m:
                tally.n["h2load_ok"] += int(m.group(3))
                tally.n["h2load_other"] += int(m.group(1)) - int(m.group(3))
            else:
                tally.n["h2load_other"] += 200
        stop.wait(3)


def start_load(relay, stop, tally, workers, workdir, seed=0):
    threads = [threading.Thread(target=curl_worker, args=(relay, stop, tally, seed + s))
               for s in range(workers)]
    threads.append(threading.Thread(target=gtls_worker, args=(relay, stop, tally, workdir)))
    threads.append(threading.Thread(target=h2load_worker, args=(relay, stop, tally)))
    threads.append(threading.Thread(target=ws_worker, args=(relay, stop, tally, seed)))
    for t in threads:
        t.start()
    return threads


def wait_idle(q):
    """Until qproxy has no connection left (idle ones go at idle_timeout),
    and a little more for its once-a-second trim."""
    deadline = time.monotonic() + 60
    while q.running() and time.monotonic() < deadline and \
            stats(q)["connections"]["current"] > 0:
        time.sleep(1)
    time.sleep(3)


def main():
    if not os.access(H2LOAD, os.X_OK):
        sys.exit("soak: %s is missing: sh bench/setup.sh builds it" % H2LOAD)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--rss-slack", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [global] setting for qproxy (repeatable), such as "
                    "response_buffer_total=1m to soak a limit")
    args = ap.parse_args()
    settings = []
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error("--set wants KEY=VALUE: %r" % kv)
        settings.append((k.strip(), v.strip()))
    rng = random.Random(args.seed)

    workdir = tempfile.mkdtemp(prefix="qproxy-soak-")
    cert, key = make_certificate(workdir)
    bport = int(backend_mod.free_tcp_port())
    be = backend_mod.Backend(tcp=("127.0.0.1", bport), name="app").start()
    port = free_udp_port()
    sections = [
        ("global", [("log_level", "info"), ("secret_file", os.path.join(workdir, "secret")),
                    ("shutdown_timeout", "10s")] + settings),
        ("listener main", [("address", "127.0.0.1:%d" % port), ("certificate", cert),
                           ("private_key", key)]),
        ("backend app", [("server", "127.0.0.1:%d" % bport), ("connect_timeout", "1s"),
                         ("read_timeout", "20s"), ("request_buffer_size", "512k")]),
        ("route app", [("path_prefix", "/app/"), ("backend", "app")]),
        ("route gz", [("path_prefix", "/gz/"), ("backend", "app"), ("compress", "gzip")]),
    ]
    # the test backend's bodies are application/octet-stream
    if "compress_types" not in dict(settings):
        sections[0][1].append(("compress_types", "application/octet-stream"))
    q = QProxy(qproxy_binary(), workdir, "soak", sections, port)
    q.start()
    relay = Relay(port, seed=args.seed, c2s=Faults(drop=args.loss),
                  s2c=Faults(drop=args.loss), record=False)
    relay.start()

    tally = Tally()
    # Warm-up: the same load for a while, then idle: caches, pools and the
    # allocator reach their working size; that idle RSS is the baseline.
    stop = threading.Event()
    warm = start_load(relay, stop, tally, args.workers, workdir)
    time.sleep(args.warmup)
    stop.set()
    for t in warm:
        t.join(120)
    wait_idle(q)
    rss0 = rss_kib(q.proc.pid)
    print("soak: warm-up done, RSS %d KiB; running %ds" % (rss0, args.duration), flush=True)

    stop = threading.Event()
    threads = start_load(relay, stop, tally, args.workers, workdir, seed=100)
    t0 = time.monotonic()
    next_reload = t0 + 30
    next_restart = t0 + rng.uniform(10, 30)
    reloads = restarts = 0
    peak = rss0
    problems = []
    while time.monotonic() - t0 < args.duration:
        time.sleep(1)
        now = time.monotonic()
        if not q.running():
            problems.append("qproxy exited during the soak")
            break
        peak = max(peak, rss_kib(q.proc.pid))
        if now >= next_reload:
            q.signal(signal.SIGHUP)
            reloads += 1
            next_reload = now + 30
        if now >= next_restart:
            be.stop()
            time.sleep(1)
            be = backend_mod.Backend(tcp=("127.0.0.1", bport), name="app").start()
            restarts += 1
            next_restart = now + rng.uniform(10, 30)
        if int(now - t0) % 60 == 0:
            print("soak: %ds %r rss %d KiB" % (now - t0, tally.n, rss_kib(q.proc.pid)),
                  flush=True)
    stop.set()
    for t in threads:
        t.join(120)

    wait_idle(q)
    if q.running():
        s = stats(q)
        rss1 = rss_kib(q.proc.pid)
        req = s["requests"]
        answered = sum(req[k] for k in ("1xx", "2xx", "3xx", "4xx", "5xx"))
        if s["streams"]["current"] != 0:
            problems.append("streams still open after the load: %r" % s["streams"])
        if s["websockets"]["current"] != 0:
            problems.append("tunnels still open after the load: %r" % s["websockets"])
        if s["buffers"]["chunks"] != 0 or s["buffers"]["response_bytes"] != 0 or \
                s["buffers"]["request_bytes"] != 0:
            problems.append("body buffers still held after the load: %r" % s["buffers"])
        if s["compress"]["memory_bytes"] != 0 or s["compress"]["responses"] == 0:
            problems.append("gzip streams held after the load, or none: %r" % s["compress"])
        if req["total"] > answered + req["reset"] + req["malformed"]:
            problems.append("requests unaccounted for: %r" % req)
        if args.rss_slack >= 0 and rss1 > rss0 * (1 + args.rss_slack):
            problems.append("RSS %d KiB after the load, %d KiB after warm-up" % (rss1, rss0))
        print("soak: qproxy stats %s" % json.dumps(s["requests"]), flush=True)
        print("soak: compress %s" % json.dumps(s["compress"]), flush=True)
        print("soak: limits %s, response_peak_bytes %d, request_peak_bytes %d" % (
            json.dumps(s["limits"]), s["buffers"]["response_peak_bytes"],
            s["buffers"]["request_peak_bytes"]), flush=True)
        print("soak: RSS warm-up %d KiB, peak %d KiB, after %d KiB" % (rss0, peak, rss1))
    report = q.sanitizer_report()
    if report:
        problems.append("sanitizer report:\n%s" % report)
    if tally.n["wrong_body"]:
        problems.append("%d wrong bodies: %r" % (tally.n["wrong_body"], tally.wrong))
    if tally.n["ok"] == 0:
        problems.append("no request succeeded")
    if tally.n["h2load_ok"] == 0:
        problems.append("no h2load request succeeded")
    if tally.n["ws_ok"] == 0:
        problems.append("no WebSocket's tunnel was echoed")
    relay.stop()
    try:
        q.stop(check=not problems)
    except AssertionError as e:
        problems.append(str(e))
    be.stop()
    print("soak: %d reloads, %d backend restarts, client tally %r"
          % (reloads, restarts, tally.n))
    for p in problems:
        print("soak: FAIL: %s" % p)
    if not problems:
        print("soak: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
