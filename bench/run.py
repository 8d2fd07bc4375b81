#!/usr/bin/env python3
"""Benchmark qproxy side by side with nghttpx, both in front of one nginx.

Both proxies get the same certificate, the same nginx backend, the same
flow-control windows and stream limits, one worker and one thread. For each
workload, each server is started afresh, measured with h2load, and stopped;
servers alternate within a workload and each workload is repeated (median
reported, and the median of the ratios of runs made one after the other,
which a host whose speed drifts from minute to minute moves less). The
headline figure is the server's CPU time per unit of work,
read from /proc before and after the load: on a small machine the client
competes with the server, so requests/s alone misleads.

bench/setup.sh installs what this needs; `make bench` runs both.
"""

import argparse
import datetime
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = os.environ.get("QPROXY_BENCH_PREFIX", "/opt/qproxy-bench")
KIB = 1024
MIB = 1024 * 1024

FILES = {"1k": KIB, "100k": 100 * KIB, "10m": 10 * MIB, "100k.html": 100 * KIB}
# zlib's level of both gzip100k's compressors, qproxy's and nginx's
GZIP_LEVEL = 5
UPLOAD_SIZE = 10 * MIB

# Flow control and limits given to both servers where both have the knob.
STREAM_WINDOW = 256 * KIB          # nghttpx's default
CONNECTION_WINDOW = 4 * MIB        # qproxy's default
WINDOW_GROWTH = 4                  # qproxy autotunes up to 4x; so may nghttpx
DEFAULT_MAX_STREAMS = 100          # both servers' default
IDLE_TIMEOUT_S = 60

QPROXY, NGHTTPX, NGHTTPX_H2 = "qproxy", "nghttpx", "nghttpx-h2"
LABEL = {QPROXY: "qproxy (h3)", NGHTTPX: "nghttpx (h3)",
         NGHTTPX_H2: "nghttpx (h2+TLS)"}

SERVER_CPU = 1   # with 2+ cores: the server alone on this one,
CLIENT_CPU = 0   # h2load and nginx on this one


def die(msg):
    sys.stderr.write("bench: error: %s\n" % msg)
    sys.exit(1)


def setting(line):
    """--set's KEY = VALUE as (key, value)."""
    key, value = line.split("=", 1)
    return key.strip(), value.strip()


def note(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


class Workload:
    """One row of the table. kind: 'requests' (CPU per request), 'bytes'
    (MiB per CPU-second), 'handshakes' (per CPU-second), 'idle' (RSS per
    connection)."""

    def __init__(self, name, kind, path, clients, streams, requests,
                 upload=False, rate=None, max_streams=DEFAULT_MAX_STREAMS,
                 h2=False, gzip=False, descr=""):
        self.name = name
        self.kind = kind
        self.path = path
        self.clients = clients
        self.streams = streams
        self.requests = requests
        self.upload = upload
        self.rate = rate
        self.max_streams = max_streams
        self.h2 = h2
        # asked for with Accept-Encoding: gzip; qproxy compresses it, and
        # for nghttpx nginx does: each one's CPU counts nginx's with it
        self.gzip = gzip
        self.descr = descr

    @property
    def size(self):
        return UPLOAD_SIZE if self.upload else FILES[self.path.strip("/")]


def workloads(scale, smoke):
    def n(x, least=1):
        return max(least, int(x * scale))
    w = [
        Workload("get1k-10x10", "requests", "/1k", 10, 10, n(50000, 100),
                 h2=True, descr="1 KiB GET, 10 connections x 10 streams"),
        Workload("get1k-100x10", "requests", "/1k", 100, 10, n(50000, 1000),
                 h2=True, descr="1 KiB GET, 100 connections x 10 streams"),
        # One request at a time: the latency a lone client sees, where the
        # loop's waits between polls under load would show (p50, p99).
        Workload("get1k-1x1", "requests", "/1k", 1, 1, n(10000, 100),
                 descr="1 KiB GET, one connection, one request at a time"),
        Workload("get100k", "bytes", "/100k", 10, 10, n(5000, 100),
                 descr="100 KiB GET, 10 x 10"),
        # Compression where it is done: qproxy's compress = gzip, or the
        # origin's (nginx's gzip, behind nghttpx, which has none).
        Workload("gzip100k", "bytes", "/100k.html", 10, 10, n(5000, 100),
                 gzip=True,
                 descr="100 KiB HTML GET with Accept-Encoding: gzip, "
                       "10 x 10; gzip level %d by qproxy, or by nginx "
                       "behind nghttpx; MiB of the page per CPU-second "
                       "of the proxy and nginx together" % GZIP_LEVEL),
        Workload("get10m", "bytes", "/10m", 4, 1, n(64, 4),
                 descr="10 MiB GET, 4 connections x 1 stream"),
        # 128 uploads, not 32: at 32 (about a second a run) the runs of
        # either server spread by a third on the EPYC host, at 128 by a
        # tenth (RESULTS.md, 2026-12-06, second section).
        Workload("post10m", "bytes", "/upload", 4, 1, n(128, 4), upload=True,
                 descr="10 MiB POST upload, 4 x 1"),
        Workload("handshake", "handshakes", "/1k", n(1000, 50), 1,
                 n(1000, 50), rate=50,
                 descr="one 1 KiB GET per new connection, 500 new "
                       "connections/s"),
        Workload("idle1000", "idle", "/idle", 1000, 1, 2,
                 descr="1,000 connections held idle after one 1 KiB GET"),
        # One round of 1,000 streams. nghttpx (nghttp3 1.8.0, not told of
        # the 1,000 streams) closes some of these connections with
        # ERR_QPACK_FATAL, as qproxy did before 3d19856 (see RESULTS.md's
        # known problems); a failed run is retried once, and counted.
        Workload("streams1000", "requests", "/1k", 1, 1000, 1000,
                 max_streams=1000,
                 descr="1 KiB GET, 1 connection x 1,000 concurrent streams"),
        # The same at 500 streams, where neither has been seen to fail.
        Workload("streams500", "requests", "/1k", 1, 500, n(5000, 500),
                 max_streams=1000,
                 descr="1 KiB GET, 1 connection x 500 concurrent streams"),
    ]
    if smoke:
        w = [Workload("get1k-10x10", "requests", "/1k", 10, 10, 300, h2=True,
                      descr="1 KiB GET, 10 x 10 (smoke)"),
             Workload("post10m", "bytes", "/upload", 2, 1, 4, upload=True,
                      descr="10 MiB POST upload, 2 x 1 (smoke)"),
             Workload("gzip100k", "bytes", "/100k.html", 2, 2, 40, gzip=True,
                      descr="100 KiB HTML GET given gzip, 2 x 2 (smoke)")]
    return w


WORKLOAD_NAMES = [w.name for w in workloads(1, False)]


# ---------------------------------------------------------------- helpers

def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def nofile_limit():
    """Up to 65536 file descriptors, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    return max(soft, want)


def pinned(cpu):
    """A preexec_fn: pin to one CPU (when there are two or more) and allow
    enough file descriptors for thousands of connections."""
    def fn():
        os.setpgid(0, 0)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile_limit(), hard))
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return fn


def signal_and_wait(proc, sig, timeout):
    """Sends sig to a running proc and waits; kills it after timeout
    seconds.  False when it had to be killed."""
    if proc.poll() is not None:
        return True
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def children(pid):
    """Direct children of pid, from /proc (no CONFIG_PROC_CHILDREN needed)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def running(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2:].split()[0] != "Z"


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children(p))
    return pids


def thread_files(pids, name):
    """The text of /proc/PID/task/TID/name of every thread of these
    processes; a thread or process that ended meanwhile is left out."""
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/%s" % (pid, tid, name)) as f:
                    yield f.read()
            except OSError:
                pass


def cpu_ns(pids):
    """CPU time of every thread of these processes, in ns (schedstat is
    exact where utime+stime count 10 ms ticks)."""
    return sum(int(t.split()[0]) for t in thread_files(pids, "schedstat"))


MIN_TICKS = 20


def cpu_ticks(pids):
    """(user, kernel) clock ticks of every thread of these processes: too
    coarse to time a run, fine to split one in two."""
    user = kernel = 0
    for st in thread_files(pids, "stat"):
        fields = st[st.rindex(")") + 2:].split()
        user += int(fields[11])
        kernel += int(fields[12])
    return user, kernel


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/status" % (key, pid))


def percentile(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1,
                   int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


class BenchError(Exception):
    """A failed run: the first line of the message says what failed."""


class StartError(BenchError):
    """The server never served a request."""


# ---------------------------------------------------------------- set-up

def html_page(size):
    """size bytes of an HTML table: text that compresses as pages do
    (about 7 to 1 at gzip level 5), the same at every run."""
    rows = b"".join(b"<tr><td>%d</td><td>item %d</td><td class=\"n\">%d.%02d</td>"
                    b"</tr>\n" % (i, i * 7919 % 10007, i * 37 % 1000, i % 100)
                    for i in range(size // 40 + 1))
    return (b"<!DOCTYPE html>\n<html><body><table>\n" + rows)[:size]


class Env:
    def __init__(self, args):
        self.args = args
        self.pin = os.cpu_count() >= 2 and not args.no_pin
        self.h2load = os.path.join(PREFIX, "bin", "h2load")
        self.nghttpx = os.path.join(PREFIX, "bin", "nghttpx")
        for prog in (self.h2load, self.nghttpx):
            if not os.access(prog, os.X_OK):
                die("%s is missing: run sh bench/setup.sh first" % prog)
        self.nginx_bin = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
            else None)
        if not self.nginx_bin:
            die("nginx is not installed: run sh bench/setup.sh first")
        src = os.path.join(TOP, args.qproxy) if not os.path.isabs(
            args.qproxy) else args.qproxy
        if not os.access(src, os.X_OK):
            die("%s is missing: build qproxy first (make all)" % src)
        self.dir = tempfile.mkdtemp(prefix="qproxy-bench-")
        os.chmod(self.dir, 0o755)    # nginx's worker reads the files
        self.www = os.path.join(self.dir, "www")
        os.mkdir(self.www)
        # A private copy, so a rebuild during the run changes nothing.
        self.qproxy = os.path.join(self.dir, "qproxy")
        shutil.copy2(src, self.qproxy)
        self.nginx = None

    def cpu(self, which):
        if not self.pin:
            return None
        return SERVER_CPU if which == "server" else CLIENT_CPU

    def make_files(self):
        for name, size in FILES.items():
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(html_page(size) if name.endswith(".html")
                        else os.urandom(size))
        with open(os.path.join(self.www, "upload"), "wb") as f:
            f.write(b"ok\n")
        self.upload_body = os.path.join(self.dir, "upload.bin")
        with open(self.upload_body, "wb") as f:
            f.write(os.urandom(UPLOAD_SIZE))
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key,
             "-out", self.cert, "-days", "30", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            die("openssl could not make a certificate:\n" + r.stderr)

    def start_nginx(self):
        self.nginx_port = free_port(socket.SOCK_STREAM)
        d = self.dir
        self.nginx_sock = os.path.join(d, "nginx.sock")
        self.upload_log = os.path.join(d, "upload.log")
        self.idle_log = os.path.join(d, "idle.log")
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""\
%(user)s
daemon off;
worker_processes 1;
worker_rlimit_nofile %(nofile)d;
pid %(d)s/nginx.pid;
error_log %(d)s/nginx-error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path %(d)s/nginx-body;
    proxy_temp_path %(d)s/nginx-proxy;
    fastcgi_temp_path %(d)s/nginx-fastcgi;
    uwsgi_temp_path %(d)s/nginx-uwsgi;
    scgi_temp_path %(d)s/nginx-scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    log_format upload '$status $request_length $request';
    log_format idle '$status';
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        listen unix:%(d)s/nginx.sock backlog=4096;
        root %(www)s;
        # Upload bodies are read into memory, never into temporary files.
        client_max_body_size 0;
        client_body_buffer_size 16m;
        location / { }
        # gzip100k's: nghttpx's requests are given gzip here (they carry
        # Via: gzip_proxied), qproxy's ask for none
        location = /100k.html {
            gzip on;
            gzip_proxied any;
            gzip_comp_level %(gzip_level)d;
            gzip_min_length 256;
        }
        # idle1000 counts its requests here.
        location = /idle {
            access_log %(idle)s idle;
            try_files /1k =404;
        }
        # The upload sink: the mirror with its request body makes nginx read
        # the whole body before it answers; the log shows how much it read.
        # The static handler refuses POST with 405: answer with the file
        # "upload" (a GET of it) instead.
        location = /upload {
            mirror /upload-mirror;
            mirror_request_body on;
            access_log %(upload)s upload;
            error_page 405 =200 /upload-ok;
        }
        location = /upload-mirror {
            internal;
            return 204;
        }
        location = /upload-ok {
            internal;
            access_log %(upload)s upload;
            try_files /upload =404;
        }
    }
}
""" % {"user": user, "d": d, "port": self.nginx_port, "www": self.www,
       "nofile": nofile_limit(), "gzip_level": GZIP_LEVEL,
       "idle": self.idle_log, "upload": self.upload_log})
        self.nginx_err = open(os.path.join(d, "nginx.stderr"), "w")
        self.nginx = subprocess.Popen(
            [self.nginx_bin, "-c", conf, "-p", d],
            stdin=subprocess.DEVNULL, stdout=self.nginx_err,
            stderr=subprocess.STDOUT, preexec_fn=pinned(self.cpu("client")))
        deadline = time.monotonic() + 10
        while True:
            if self.nginx.poll() is not None:
                die("nginx exited with %s:\n%s%s" % (
                    self.nginx.returncode, tail(self.nginx_err.name),
                    tail(os.path.join(d, "nginx-error.log"))))
            try:
                socket.create_connection(("127.0.0.1", self.nginx_port),
                                         timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    die("nginx does not accept connections on port %d"
                        % self.nginx_port)
                time.sleep(0.05)

    def nginx_alive(self):
        return self.nginx is not None and self.nginx.poll() is None

    def cleanup(self):
        if self.nginx:
            signal_and_wait(self.nginx, signal.SIGQUIT, 10)
        if self.args.keep:
            note("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- servers

class Server:
    """One server process, started for one measured run."""

    def __init__(self, env, kind, wl, seq):
        self.env = env
        self.kind = kind
        self.wl = wl
        self.name = "%s-%s-%d" % (kind, wl.name, seq)
        self.stderr_path = os.path.join(env.dir, self.name + ".stderr")
        self.proc = None
        self.h3 = kind != NGHTTPX_H2
        self.port = free_port(socket.SOCK_DGRAM if self.h3
                              else socket.SOCK_STREAM)

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def command(self):
        env, wl = self.env, self.wl
        if self.kind == QPROXY:
            conf = os.path.join(env.dir, self.name + ".conf")
            glob = [("log_level", "warn"), ("access_log", "off"),
                    ("control_socket", "%s/%s.sock" % (env.dir, self.name)),
                    ("secret_file", "%s/%s.secret" % (env.dir, self.name)),
                    ("shutdown_timeout", "1s"),
                    ("idle_timeout", "%ds" % IDLE_TIMEOUT_S),
                    ("stream_window", "%dk" % (STREAM_WINDOW // KIB)),
                    ("connection_window", "%dk" % (CONNECTION_WINDOW // KIB)),
                    ("max_streams_bidi", "%d" % wl.max_streams)]
            if wl.gzip:
                glob += [("compress", "gzip"),
                         ("compress_level", "%d" % GZIP_LEVEL)]
            # --set: in place of the line of its key (qproxy refuses a
            # key given twice), or after them
            for key, value in map(setting, env.args.set):
                glob = [kv for kv in glob if kv[0] != key] + [(key, value)]
            with open(conf, "w") as f:
                f.write("""\
[global]
%(glob)s
[listener bench]
address = 127.0.0.1:%(port)d
certificate = %(cert)s
private_key = %(key)s
# nghttpx does not ask for address validation either.
retry = never

[backend nginx]
server = %(nserver)s
# nghttpx keeps every idle backend connection (for 2 s); so does this.
max_idle_connections = 10000

[route all]
backend = nginx
%(route)s""" % {"glob": "".join("%s = %s\n" % kv for kv in glob),
       "route": ("# nginx gives it none: qproxy does\n"
                 "set_request_header = Accept-Encoding: identity\n"
                 if wl.gzip else ""),
       "port": self.port, "cert": env.cert, "key": env.key,
       "nserver": ("unix:" + env.nginx_sock if env.args.unix_backend
                   else "127.0.0.1:%d" % env.nginx_port)})
            r = subprocess.run([env.qproxy, "-t", "-c", conf],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                raise StartError("qproxy -t refuses the bench "
                                 "configuration (exit status %d):\n%s"
                                 % (r.returncode, r.stdout))
            return [env.qproxy, "-c", conf]
        frontends = ["-f", "127.0.0.1,%d%s" % (self.port,
                                                ";quic" if self.h3 else "")]
        if self.h3:
            # Without a TCP frontend nghttpx adds its default, *:3000.
            tcp = free_port(socket.SOCK_STREAM)
            frontends += ["-f", "127.0.0.1,%d" % tcp]
        return [env.nghttpx, "--conf=/dev/null"] + frontends + [
                "-b", ("unix:" + env.nginx_sock if env.args.unix_backend
                       else "127.0.0.1,%d" % env.nginx_port),
                "--workers=1", "--single-thread", "--no-ocsp",
                "--log-level=WARN",
                "--errorlog-file=" + self.stderr_path + ".log",
                # the fields qproxy adds to every request
                "--add-x-forwarded-for", "--add-forwarded=for,proto,host",
                "--forwarded-for=ip",
                "--frontend-quic-idle-timeout=%ds" % IDLE_TIMEOUT_S,
                "--frontend-http3-idle-timeout=%ds" % IDLE_TIMEOUT_S,
                "--frontend-http3-window-size=%dK" % (STREAM_WINDOW // KIB),
                "--frontend-http3-max-window-size=%dK"
                % (STREAM_WINDOW * WINDOW_GROWTH // KIB),
                "--frontend-http3-connection-window-size=%dK"
                % (CONNECTION_WINDOW // KIB),
                "--frontend-http3-max-connection-window-size=%dK"
                % (CONNECTION_WINDOW * WINDOW_GROWTH // KIB),
                "--frontend-http3-max-concurrent-streams=%d" % wl.max_streams,
                "--frontend-http2-max-concurrent-streams=%d" % wl.max_streams,
                env.key, env.cert]

    def start(self):
        self.errf = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self.errf,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(self.env.cpu("server")))
        # Ready when a request goes through (nghttpx forks its worker first).
        time.sleep(0.05)
        deadline = time.monotonic() + 5
        last = ""
        while True:
            self.check_alive("while starting", StartError)
            ok, last = self.probe()
            if ok:
                break
            if time.monotonic() > deadline:
                raise StartError("no request through %s succeeded within 5 s "
                                 "(h2load: %s)\nh2load said:\n%s"
                                 % (self.kind, h2load_errors(last), last))
            time.sleep(0.1)
        if self.kind == QPROXY:
            self.worker = self.proc.pid
        else:
            kids = children(self.proc.pid)
            if len(kids) != 1:
                raise StartError("nghttpx has %d worker processes, expected "
                                 "one" % len(kids))
            self.worker = kids[0]

    def probe(self):
        cmd = [self.env.h2load, "-n1", "-c1"]
        if self.h3:
            cmd.append("--alpn-list=h3")
        cmd.append(self.url("/1k"))
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=3)
        except subprocess.TimeoutExpired:
            return False, "(h2load timed out)"
        return ("1 succeeded" in r.stdout and "1 2xx" in r.stdout), r.stdout

    def check_alive(self, when, error=BenchError):
        if self.proc.poll() is not None:
            raise error("%s died %s (exit status %s); its output:\n%s"
                        % (self.kind, when, self.proc.returncode,
                           tail(self.stderr_path)
                           + tail(self.stderr_path + ".log")))

    def cpu_ns(self):
        return cpu_ns(tree(self.proc.pid))

    def cpu(self):
        """cpu_ns() and cpu_ticks() of the server, read together."""
        pids = tree(self.proc.pid)
        return cpu_ns(pids), cpu_ticks(pids)

    def logged_error(self):
        """The first error the server logged, if any, shortened."""
        for path in (self.stderr_path, self.stderr_path + ".log"):
            for line in tail(path, 50).splitlines():
                if not re.search(r"error|ERROR|FATAL", line) or \
                        "IPC socket is closed" in line:
                    continue
                # nghttpx: TIME PID TID ID LEVEL (FILE:LINE) [OBJ] message
                m = re.search(r"\b(ERROR|FATAL) \(\S+\) (?:\[\S+\] )?(.*)",
                              line)
                return m.group(2) if m else line.strip()
        return ""

    def stop(self):
        """SIGTERM; qproxy must exit 0, nghttpx's master dies of it. Waits
        for nghttpx's worker too."""
        if self.proc is None:
            return
        workers = children(self.proc.pid) if self.proc.poll() is None else []
        if not signal_and_wait(self.proc, signal.SIGTERM, 15):
            raise BenchError("%s did not exit within 15 s of SIGTERM"
                             % self.kind)
        self.errf.close()
        deadline = time.monotonic() + 15
        while any(running(w) for w in workers):
            if time.monotonic() > deadline:
                for w in workers:
                    try:
                        os.kill(w, signal.SIGKILL)
                    except OSError:
                        pass
                raise BenchError("%s's worker did not exit within 15 s of "
                                 "SIGTERM" % self.kind)
            time.sleep(0.02)
        rc = self.proc.returncode
        if rc != 0 and not (self.kind != QPROXY and rc == -signal.SIGTERM):
            raise BenchError("%s exited with status %s after SIGTERM; its "
                             "output:\n%s" % (self.kind, rc,
                                              tail(self.stderr_path)))


# ---------------------------------------------------------------- h2load

H2_FINISHED = re.compile(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", re.M)
H2_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout", re.M)
H2_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                       r"(\d+) 5xx", re.M)
H2_TRAFFIC = re.compile(r"^traffic: .* \((\d+)\) data", re.M)
H2_PROTO = re.compile(r"^Application protocol: (\S+)", re.M)


def h2load_cmd(env, server, wl, log_file, script=None):
    cmd = [env.h2load, "-c%d" % wl.clients, "-m%d" % wl.streams,
           "--log-file=" + log_file]
    if server.h3:
        cmd.append("--alpn-list=h3")
    if wl.upload:
        cmd += ["-d", env.upload_body]
    if wl.gzip:
        cmd += ["-H", "accept-encoding: gzip"]
    if wl.rate:
        cmd += ["-r%d" % wl.rate, "--rate-period=100ms"]
    if script:
        cmd += ["-n%d" % wl.requests, "--timing-script-file=" + script]
    else:
        cmd += ["-n%d" % wl.requests, server.url(wl.path)]
    return cmd


H2_NORMAL = re.compile(
    r"^(starting benchmark|spawning thread|progress:|TLS Protocol|Cipher|"
    r"Server Temp Key|Application protocol|finished in|requests:|"
    r"status codes|traffic:|UDP datagram|\s+min\s+max|time for|time to|"
    r"req/s\s+:|\s*$)")


def h2load_errors(out):
    """The lines of h2load's output that are not its usual report."""
    lines = [l.strip() for l in out.splitlines() if not H2_NORMAL.match(l)]
    return "; ".join(lines[:3]) or "no error message"


def check_h2load(out, server, wl, expected):
    """Raises unless every request succeeded with a 2xx; returns
    (seconds, bytes of response data)."""
    who = "%s on %s" % (server.kind, wl.name)
    m, r, s = H2_FINISHED.search(out), H2_REQUESTS.search(out), \
        H2_STATUS.search(out)
    if not (m and r and s):
        raise BenchError("%s: cannot read h2load's output:\n%s" % (who, out))
    total, _, done, ok, failed, errored, tmo = map(int, r.groups())
    c2xx = int(s.group(1))
    if (total != expected or done != total or ok != total or failed
            or errored or tmo or c2xx != total):
        raise BenchError("%s: not every request succeeded (%d total, %d "
                         "done, %d succeeded, %d failed, %d errored, %d "
                         "timeout, %d 2xx; h2load: %s)\nh2load said:\n%s"
                         % (who, total, done, ok, failed, errored, tmo, c2xx,
                            h2load_errors(out), out))
    proto = H2_PROTO.search(out)
    want = "h3" if server.h3 else "h2"
    if not proto or proto.group(1) != want:
        raise BenchError("%s: h2load did not speak %s:\n%s" % (who, want, out))
    # "finished in" has two decimals; req/s is precise.
    reqps = float(m.group(3))
    secs = total / reqps if reqps > 0 else \
        float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    t = H2_TRAFFIC.search(out)
    return secs, int(t.group(1)) if t else None


def read_latencies(path):
    """Request times in ms from h2load's --log-file (third column, µs)."""
    vals = []
    with open(path) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                vals.append(int(cols[2]) / 1000.0)
    vals.sort()
    return vals


# ---------------------------------------------------------------- one run

def run_once(env, kind, wl, seq):
    """Start a server, run the workload against it, stop it; returns a
    dict of figures. Raises BenchError on any failure."""
    server = Server(env, kind, wl, seq)
    try:
        try:
            server.start()
            if wl.kind == "idle":
                res = run_idle(env, server, wl)
            else:
                res = run_h2load(env, server, wl)
            res["rss_kib"] = status_kib(server.worker, "VmHWM")
        except OSError as e:     # /proc of a process that is gone
            server.check_alive("during the run")
            raise BenchError("%s on %s: %s" % (kind, wl.name, e))
        server.check_alive("during the run")
        if not env.nginx_alive():
            raise BenchError("nginx died during the run")
    except BaseException as e:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        if isinstance(e, BenchError) and server.proc:
            logged = server.logged_error()
            if logged:
                first, _, rest = str(e).partition("\n")
                raise type(e)("%s [%s logged: %s]\n%s"
                              % (first, kind, logged, rest))
        raise
    server.stop()
    return res


def run_h2load(env, server, wl):
    log_file = os.path.join(env.dir, server.name + ".h2log")
    cmd = h2load_cmd(env, server, wl, log_file)
    uploads_before = count_lines(env.upload_log)
    out = open(os.path.join(env.dir, server.name + ".h2load"), "w+")
    cpu0, ticks0 = server.cpu()
    if wl.gzip:
        ncpu0 = cpu_ns(tree(env.nginx.pid))
    client = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=pinned(env.cpu("client")))
    deadline = time.monotonic() + env.args.timeout
    try:
        # h2load would wait for a dead server until its idle timeout.
        while client.poll() is None:
            server.check_alive("during the run")
            if time.monotonic() > deadline:
                raise BenchError("%s on %s: h2load did not finish within "
                                 "%d s" % (server.kind, wl.name,
                                           env.args.timeout))
            try:
                client.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    cpu1, ticks1 = server.cpu()
    if wl.gzip:
        # the origin's share: its gzip for nghttpx, its files for both
        cpu1 += cpu_ns(tree(env.nginx.pid)) - ncpu0
    server.check_alive("during the run")
    out.seek(0)
    text = out.read()
    out.close()
    if client.returncode != 0:
        raise BenchError("%s on %s: h2load exited with %d:\n%s"
                         % (server.kind, wl.name, client.returncode, text))
    secs, data = check_h2load(text, server, wl, wl.requests)
    if wl.upload:
        check_uploads(env, server, wl, uploads_before)
    elif wl.gzip:
        # given gzip (about 7 to 1), by whichever did it
        if data is not None and data > wl.requests * wl.size // 3:
            raise BenchError("%s on %s: %d bytes of response data, not "
                             "compressed (%d uncompressed)"
                             % (server.kind, wl.name, data,
                                wl.requests * wl.size))
    elif data is not None and data != wl.requests * wl.size:
        raise BenchError("%s on %s: %d bytes of response data, expected %d"
                         % (server.kind, wl.name, data,
                            wl.requests * wl.size))
    lat = read_latencies(log_file)
    if len(lat) != wl.requests:
        raise BenchError("%s on %s: h2load logged %d requests, expected %d"
                         % (server.kind, wl.name, len(lat), wl.requests))
    cpu_s = (cpu1 - cpu0) / 1e9
    if cpu_s <= 0:
        raise BenchError("%s on %s: no server CPU time measured"
                         % (server.kind, wl.name))
    res = {"secs": secs, "cpu_s": cpu_s, "p50": percentile(lat, 50),
           "p99": percentile(lat, 99)}
    user, kernel = ticks1[0] - ticks0[0], ticks1[1] - ticks0[1]
    # the kernel's part of the server's CPU time, in per cent; a run of
    # fewer than MIN_TICKS clock ticks is too short to split
    res["kernel"] = (100.0 * kernel / (user + kernel)
                     if user + kernel >= MIN_TICKS else None)
    mib = wl.requests * wl.size / MIB
    if wl.kind == "requests":
        res["rate"] = wl.requests / secs
        res["work"] = cpu_s * 1e6 / wl.requests          # µs per request
    elif wl.kind == "bytes":
        res["rate"] = mib / secs
        res["work"] = mib / cpu_s                         # MiB per CPU-s
    else:
        res["rate"] = wl.requests / secs
        res["work"] = wl.requests / cpu_s                 # handshakes/CPU-s
    return res


def check_uploads(env, server, wl, before):
    """nginx logged every upload as read in full and answered 200."""
    with open(env.upload_log) as f:
        lines = f.read().splitlines()[before:]
    good = [l for l in lines if l.split()[0] == "200"
            and int(l.split()[1]) >= UPLOAD_SIZE and l.split()[2] == "POST"]
    # The probe is a GET of /1k and never reaches this log.
    if len(good) != wl.requests or len(lines) != wl.requests:
        raise BenchError("%s on %s: nginx read %d complete uploads (of %d "
                         "logged), expected %d:\n%s"
                         % (server.kind, wl.name, len(good), len(lines),
                            wl.requests, "\n".join(lines[:10])))


IDLE_HOLD_MS = 12000


def run_idle(env, server, wl):
    """wl.clients connections, each one GET, then idle until a second GET
    IDLE_HOLD_MS after it started; RSS is read while they are all idle."""
    script = os.path.join(env.dir, "idle-script.txt")
    with open(script, "w") as f:
        f.write("0\t%s\n%d\t%s\n" % (server.url("/idle"), IDLE_HOLD_MS,
                                     server.url("/idle")))
    log_file = os.path.join(env.dir, server.name + ".h2log")
    cmd = h2load_cmd(env, server, Workload(
        wl.name, wl.kind, wl.path, wl.clients, 1, 2, rate=100), log_file,
        script=script)
    before_lines = count_lines(env.idle_log)
    time.sleep(0.2)
    rss0 = status_kib(server.worker, "VmRSS")
    cpu0 = server.cpu_ns()
    t0 = time.monotonic()
    out = open(os.path.join(env.dir, server.name + ".h2load"), "w+")
    client = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=pinned(env.cpu("client")))
    try:
        # Wait for the first request of every connection to reach nginx.
        while count_lines(env.idle_log) - before_lines < wl.clients:
            server.check_alive("while connections were opened")
            if client.poll() is not None:
                out.seek(0)
                raise BenchError("%s on %s: h2load exited early:\n%s"
                                 % (server.kind, wl.name, out.read()))
            if time.monotonic() - t0 > IDLE_HOLD_MS / 1000.0 - 5:
                raise BenchError("%s on %s: only %d of %d connections made "
                                 "their first request in %d s"
                                 % (server.kind, wl.name,
                                    count_lines(env.idle_log) - before_lines,
                                    wl.clients, IDLE_HOLD_MS / 1000 - 5))
            time.sleep(0.1)
        time.sleep(1.5)    # let the last responses and ACKs settle
        if count_lines(env.idle_log) - before_lines != wl.clients:
            raise BenchError("%s on %s: second requests began before the "
                             "measurement" % (server.kind, wl.name))
        rss1 = status_kib(server.worker, "VmRSS")
        cpu1 = server.cpu_ns()
        client.wait(IDLE_HOLD_MS / 1000.0 + env.args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s on %s: h2load did not finish"
                         % (server.kind, wl.name))
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    out.seek(0)
    text = out.read()
    out.close()
    if client.returncode != 0:
        raise BenchError("%s on %s: h2load exited with %d:\n%s"
                         % (server.kind, wl.name, client.returncode, text))
    # Both requests of every connection succeeded: none was dropped idle.
    check_h2load(text, server, wl, wl.clients * 2)
    # Request times would mix the first requests with those after the idle
    # period: none are reported.
    return {"secs": None, "rate": None, "cpu_s": (cpu1 - cpu0) / 1e9,
            "p50": None, "p99": None,
            "work": (rss1 - rss0) / wl.clients}   # KiB per connection


# ---------------------------------------------------------------- report

UNITS = {"requests": ("req/s", "µs CPU/req", "lower"),
         "bytes": ("MiB/s", "MiB/CPU-s", "higher"),
         "handshakes": ("conn/s", "handshakes/CPU-s", "higher"),
         "idle": ("-", "KiB RSS/conn", "lower")}


def median(results, key):
    vals = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return "%.*f" % (digits, v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


def paired(qs, ns):
    """q/n of each repetition's two runs, made one after the other (a
    noisy host's speed drifts less between them than across a workload):
    their median, and lowest and highest."""
    other = {r["rep"]: r["work"] for r in ns if r.get("work")}
    rs = sorted(q["work"] / other[q["rep"]] for q in qs
                if q.get("work") is not None and q["rep"] in other)
    if not rs:
        return "-"
    if len(rs) == 1:
        return "%.2f" % rs[0]
    return "%.2f (%.2f-%.2f)" % (statistics.median(rs), rs[0], rs[-1])


def table(wls, results, failed):
    rows = ["| workload | headline (better) | qproxy | nghttpx | ratio q/n "
            "| paired q/n (range) | CPU % in kernel q / n "
            "| throughput q / n | p50 ms q / n | p99 ms q / n "
            "| peak RSS MiB q / n | RSS ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def med(wl, kind):
        if not results.get((wl.name, kind)):
            return None
        return {k: median(results[(wl.name, kind)], k)
                for k in ("work", "rate", "p50", "p99", "rss_kib",
                          "kernel")}

    def cell(m, key, digits=None):
        return fmt(m[key], digits) if m else "FAIL"

    def row(name, wl, q, n, pair):
        rate_u, work_u, better = UNITS[wl.kind]
        rq = q["rss_kib"] / KIB if q and q["rss_kib"] else None
        rn = n["rss_kib"] / KIB if n and n["rss_kib"] else None
        thr = "-" if wl.kind == "idle" else "%s / %s %s" % (
            cell(q, "rate"), cell(n, "rate"), rate_u)
        kern = "-" if wl.kind == "idle" else "%s / %s" % (
            cell(q, "kernel", 0), cell(n, "kernel", 0))
        rows.append("| %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s / %s "
                    "| %s / %s | %s / %s | %s |" % (
                        name, work_u, better, cell(q, "work"),
                        cell(n, "work"),
                        ratio(q and q["work"], n and n["work"]), pair, kern,
                        thr,
                        cell(q, "p50"), cell(n, "p50"), cell(q, "p99"),
                        cell(n, "p99"), fmt(rq, 1) if q else "FAIL",
                        fmt(rn, 1) if n else "FAIL", ratio(rq, rn)))

    def pair(wl, kind):
        return paired(results.get((wl.name, QPROXY), []),
                      results.get((wl.name, kind), []))

    for wl in wls:
        row(wl.name, wl, med(wl, QPROXY), med(wl, NGHTTPX),
            pair(wl, NGHTTPX))
    for wl in wls:
        if wl.h2:
            row(wl.name + ", nghttpx over h2+TLS", wl, med(wl, QPROXY),
                med(wl, NGHTTPX_H2), pair(wl, NGHTTPX_H2))
    return "\n".join(rows)


def runs_table(wls, results, failed):
    lines = ["| workload | server | headline of each run | failed runs |",
             "|---|---|---|---:|"]
    for wl in wls:
        for kind in (QPROXY, NGHTTPX, NGHTTPX_H2):
            rs = results.get((wl.name, kind), [])
            fs = failed.get((wl.name, kind), [])
            if rs or fs:
                lines.append("| %s | %s | %s | %d |" % (
                    wl.name, LABEL[kind],
                    ", ".join(fmt(r["work"]) for r in rs) or "-", len(fs)))
    return "\n".join(lines)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def tree_commit():
    """The commit of the tree, and whether src/ differs from it."""
    def git(*a):
        r = subprocess.run(["git", "-C", TOP] + list(a),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "src"):
        commit += " (with uncommitted changes in src/)"
    return commit


def describe_run(args, started, elapsed, load_before, commit):
    """Date, commit, machine and command, for the top of the report."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    h2v = subprocess.run([os.path.join(PREFIX, "bin", "nghttpx"), "--version"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout.strip()
    pin = ("server pinned to CPU %d, h2load and nginx to CPU %d"
           % (SERVER_CPU, CLIENT_CPU)) if (
        os.cpu_count() >= 2 and not args.no_pin) else "no CPU pinning"
    return "\n".join([
        "- date: %s UTC (took %.0f s)" % (started.strftime("%Y-%m-%d %H:%M"),
                                         elapsed),
        "- tree at the start: %s; qproxy binary: %s" % (commit,
                                                        args.qproxy),
        "- machine: %d cores (%s), kernel %s; %s" % (
            os.cpu_count(), model or "unknown CPU", os.uname().release, pin),
        "- load average (1, 5, 15 min) before: %s, after: %s"
        % (load_before, loadavg()),
        "- peer: %s" % (h2v or "nghttpx"),
        "- backend: nginx by %s" % ("a Unix socket" if args.unix_backend
                                    else "TCP over loopback"),
        "- command: `%s`" % shlex.join(["bench/run.py"] + sys.argv[1:]),
        "- %d run(s) per workload and server, median shown" % args.repeat,
    ])


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        description="Benchmark qproxy against nghttpx (see bench/RESULTS.md).")
    ap.add_argument("--workloads", default=",".join(WORKLOAD_NAMES),
                    help="comma-separated, from: " + ", ".join(WORKLOAD_NAMES))
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per workload and server (median reported)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the request counts (idle1000 and "
                         "streams1000 stay as they are)")
    ap.add_argument("--smoke", action="store_true",
                    help="a few hundred requests per server, repeat 1: a "
                         "check that the harness and both servers work")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--qproxy", default="build/qproxy",
                    help="the qproxy binary (default: build/qproxy)")
    ap.add_argument("--timeout", type=int, default=300,
                    help="seconds one h2load run may take")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the server to CPU 1 and the client "
                         "and nginx to CPU 0")
    ap.add_argument("--keep", action="store_true",
                    help="keep the working directory (logs, configs)")
    ap.add_argument("--set", action="append", default=[],
                    metavar="'KEY = VALUE'",
                    help="a line for qproxy's [global], in place of the "
                         "bench's own for that key, to measure a setting "
                         "(repeatable; the report's command shows it)")
    ap.add_argument("--unix-backend", action="store_true",
                    help="both servers reach nginx by a Unix socket, not "
                         "TCP over loopback")
    args = ap.parse_args()
    for line in args.set:
        if "=" not in line or "\n" in line or not setting(line)[0]:
            die("--set takes one KEY = VALUE line: %r" % line)
    keys = [setting(line)[0] for line in args.set]
    if len(set(keys)) < len(keys):
        die("--set gives a key twice: %s" % ", ".join(args.set))

    if args.repeat < 1:
        die("--repeat must be at least 1")
    if args.smoke:
        args.repeat = 1
        args.timeout = min(args.timeout, 60)
        wls = workloads(1, True)
    else:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        bad = [w for w in wanted if w not in WORKLOAD_NAMES]
        if bad or not wanted:
            die("unknown workload %s; choose from %s"
                % (", ".join(bad) or "(none)", ", ".join(WORKLOAD_NAMES)))
        wls = [w for w in workloads(args.scale, False) if w.name in wanted]

    env = Env(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    commit = tree_commit()
    t_start = time.monotonic()
    # (workload, server) -> figures of each run / messages of failed runs
    results, failed, hopeless = {}, {}, set()
    try:
        env.make_files()
        env.start_nginx()
        # a --set that qproxy refuses ends the run here, not each of its runs
        if args.set:
            try:
                Server(env, QPROXY, wls[0], 0).command()
            except StartError as e:
                die(str(e))
        seq = 0
        for wl in wls:
            kinds = [QPROXY, NGHTTPX] + ([NGHTTPX_H2] if wl.h2 else [])
            note("%s: %s" % (wl.name, wl.descr))
            for rep in range(args.repeat):
                # Alternate which server goes first.
                order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
                for kind in order:
                    if (wl.name, kind) in hopeless:
                        continue
                    # A failed run is counted, and tried once more.
                    for attempt in range(2):
                        seq += 1
                        try:
                            res = run_once(env, kind, wl, seq)
                        except BenchError as e:
                            failed.setdefault((wl.name, kind), []).append(
                                str(e))
                            note("FAILED %s on %s: %s" % (kind, wl.name, e))
                            if not env.nginx_alive():
                                die("nginx died; stopping")
                            # Twice no request served at all (a port
                            # taken in between may explain once): give up.
                            if isinstance(e, StartError) and attempt == 1:
                                hopeless.add((wl.name, kind))
                            continue
                        break
                    else:
                        continue
                    res["rep"] = rep
                    results.setdefault((wl.name, kind), []).append(res)
                    lat = "" if res["p50"] is None else \
                        ", p50 %s ms, p99 %s ms" % (fmt(res["p50"]),
                                                   fmt(res["p99"]))
                    note("  %-16s run %d: %s %s%s, peak RSS %.1f MiB" % (
                        LABEL[kind], rep + 1, fmt(res["work"]),
                        UNITS[wl.kind][1], lat, res["rss_kib"] / KIB))
    except KeyboardInterrupt:
        env.cleanup()
        die("interrupted")
    except BaseException:
        env.cleanup()
        raise
    env.cleanup()

    # A server with no figures at all is a failure too.
    for wl in wls:
        for kind in [QPROXY, NGHTTPX] + ([NGHTTPX_H2] if wl.h2 else []):
            if (wl.name, kind) not in failed and not results.get(
                    (wl.name, kind)):
                failed[(wl.name, kind)] = ["no figures"]

    elapsed = time.monotonic() - t_start
    report = [describe_run(args, started, elapsed, load_before, commit), "",
              table(wls, results, failed), "",
              runs_table(wls, results, failed)]
    if failed:
        report += ["", "Failed runs:", ""]
        for (name, kind), msgs in failed.items():
            for msg in msgs:
                report.append("- %s on %s: %s" % (LABEL[kind], name,
                                                  msg.splitlines()[0]))
    text = "\n".join(report) + "\n"
    sys.stdout.write(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    if failed:
        note("failed runs: %s" % ", ".join(
            "%s on %s (%d)" % (LABEL[k], n, len(m))
            for (n, k), m in failed.items()))
        sys.exit(1)


if __name__ == "__main__":
    main()
