"""HTTP/3 client helpers and qproxy process management for the end-to-end tests.

See conftest.py for the environment variables.  Nothing here starts
anything at import time.
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import backend as backend_mod  # noqa: E402

try:
    import pycurl
except ImportError:      # pragma: no cover - reported by the tests that need it
    pycurl = None

# --------------------------------------------------------------------------
# Expected bodies, computed independently of backend.py (same seed, same XOF).

BODY_SEED = b"qproxy integration test body, v1"
_sha_cache = {}


def expected_body(n):
    return hashlib.shake_256(BODY_SEED).digest(n)


def expected_sha256(n):
    if n not in _sha_cache:
        _sha_cache[n] = hashlib.sha256(expected_body(n)).hexdigest()
    return _sha_cache[n]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


KiB = 1024
MiB = 1024 * 1024

# Timeouts of the shared qproxy instance's backends (seconds).
SHORT_READ_TIMEOUT = 2.0     # route /short/ and /blackhole/
CONNECT_TIMEOUT = 1.0        # every backend

# --------------------------------------------------------------------------
# Environment


def _slow_factor():
    env = os.environ.get("QPROXY_TEST_SLOW")
    if env:
        return float(env)
    q = os.environ.get("QPROXY", "")
    return 3.0 if "asan" in q.lower() else 1.0


SLOW = _slow_factor()

# curl's limit for one big (10 MiB) transfer; far above what a working proxy
# needs on loopback, low enough that a stalled transfer fails the test soon.
BIG_TIMEOUT = 20 * SLOW

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer")


def _env_binary(var, what, default, build_hint):
    """The program named by $var, or pytest.fail (never skip) saying how."""
    path = os.environ.get(var)
    if not path:
        pytest.fail("%s is not set: point it at %s (make integration does: %s=%s)"
                    % (var, what, var, default), pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("%s=%s is not an executable file (%s)" % (var, path, build_hint),
                    pytrace=False)
    return os.path.abspath(path)


def qproxy_binary():
    return _env_binary("QPROXY", "the qproxy binary", "build/qproxy",
                       "build it first: make")


def h3raw_binary():
    return _env_binary("H3RAW", "the h3raw test client", "build/tests/h3raw",
                       "make tests builds it")


def sendshim_library():
    return _env_binary("SENDSHIM", "tests/tools/sendshim.c's library",
                       "build/tests/sendshim.so", "make tests builds it")


def timeshift_library():
    return _env_binary("TIMESHIFT_LIB", "tests/tools/timeshift.c's library",
                       "build/tests/timeshift.so", "make tests builds it")


def _preload(q, name, lib, **env):
    """Makes the not yet started q run with lib preloaded and env set."""
    wrapper = os.path.join(os.path.dirname(q.conf), "qproxy-%s.sh" % name)
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\n'
                '# ASan wants to come first; the library only passes calls on\n'
                'ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" '
                'LD_PRELOAD="%s" %s exec "%s" "$@"\n'
                % (lib, " ".join('%s="%s"' % kv for kv in sorted(env.items())), q.binary))
    os.chmod(wrapper, 0o755)
    q.binary = wrapper


def preload_sendshim(q, flags_dir, gso_eagain=None):
    """Makes the not yet started q run with sendshim.so preloaded: its UDP
    sends fail while files of flags_dir say so, and with gso_eagain=K every
    K-th train sent with GSO fails with EAGAIN (see sendshim.c)."""
    env = {"SENDSHIM_DIR": flags_dir}
    if gso_eagain is not None:
        env["SENDSHIM_GSO_EAGAIN"] = str(gso_eagain)
    _preload(q, "sendshim", sendshim_library(), **env)


def preload_execdelay(q, pidfile=None, worker_sleep=None, restart_sleep=None):
    """Makes the not yet started q's upgrades wait a second between fork
    and exec, the child's id written to pidfile, with worker_sleep a new
    supervisor's second worker wait that many seconds as it is forked, and
    with restart_sleep (workers, seconds) each worker q's supervisor forks
    after its first workers wait that long (execdelay.c, built next to
    sendshim.so)."""
    lib = os.path.join(os.path.dirname(sendshim_library()), "execdelay.so")
    env = {}
    if pidfile is not None:
        env["EXECDELAY_PIDFILE"] = pidfile
    if worker_sleep is not None:
        env["EXECDELAY_WORKER_SLEEP"] = str(worker_sleep)
    if restart_sleep is not None:
        env["EXECDELAY_RESTART_SLEEP"] = "%d:%d" % restart_sleep
    _preload(q, "execdelay", lib, **env)


def preload_agefill(q, value):
    """Makes the not yet started q give every session ticket the
    ticket_age_add value (agefill.c, built next to sendshim.so)."""
    lib = os.path.join(os.path.dirname(sendshim_library()), "agefill.so")
    _preload(q, "agefill", lib, AGEFILL="0x%08x" % value)


def preload_chownlog(q, path):
    """Makes the not yet started q write a line to the file path for each
    chown, lchown, fchownat and fchown it makes: the call, the file (an
    fchown's by its descriptor's link) and the owner (chownlog.c, built
    next to sendshim.so)."""
    lib = os.path.join(os.path.dirname(sendshim_library()), "chownlog.so")
    _preload(q, "chownlog", lib, CHOWNLOG=path)


def preload_strcmpcount(q, path):
    """Makes the not yet started q write to the file path, as it exits, how
    many calls it made to strcmp (strcmpcount.c, built next to
    sendshim.so)."""
    lib = os.path.join(os.path.dirname(sendshim_library()), "strcmpcount.so")
    _preload(q, "strcmpcount", lib, STRCMPCOUNT=path)


def preload_h3nomem(q, path):
    """Makes the not yet started q's nghttp3 fail, out of memory, to submit
    a response head whose status is the one written in the file path, while
    there is one (h3nomem.c, built next to sendshim.so)."""
    lib = os.path.join(os.path.dirname(sendshim_library()), "h3nomem.so")
    _preload(q, "h3nomem", lib, H3NOMEM_FILE=path)


def preload_timeshift(q, shift):
    """Makes the not yet started q run with its wall clock shift seconds
    ahead (timeshift.so, see timeshift.c)."""
    _preload(q, "timeshift-%d" % shift, timeshift_library(), TIMESHIFT=shift)


def preload_clock(q, path, shift=0):
    """Makes the not yet started q run with its wall clock shift seconds
    ahead, read from the file path at each call (timeshift.so's
    TIMESHIFT_FILE): the function returned steps it while q runs, as NTP or
    a VM's resume would."""
    def step(seconds):
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write("%d\n" % seconds)
        os.replace(tmp, path)   # never an empty file: that would be 0
    step(shift)
    _preload(q, "clock", timeshift_library(), TIMESHIFT_FILE=path)
    return step


def qproxyctl_binary():
    return _env_binary("QPROXYCTL", "the qproxyctl binary", "build/qproxyctl",
                       "build it first: make")


def gtlsclient_binary():
    path = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
    if not os.access(path, os.X_OK):
        pytest.fail("gtlsclient (Debian package ngtcp2-client) is not installed; "
                    "run make deps", pytrace=False)
    return path


def require_pycurl_h3():
    if pycurl is None:
        pytest.fail("python3-pycurl is not installed; run make deps", pytrace=False)
    if not pycurl.version_info()[4] & (1 << 25):       # CURL_VERSION_HTTP3
        pytest.fail("this libcurl (%s) has no HTTP/3 support; run make deps" % pycurl.version,
                    pytrace=False)


# --------------------------------------------------------------------------
# Ports


free_tcp_port = backend_mod.free_tcp_port
free_udp_port = backend_mod.free_udp_port


# --------------------------------------------------------------------------
# Certificate


def qproxyctl(q, *args):
    """qproxyctl with args against a running instance's control socket."""
    return subprocess.run([qproxyctl_binary(), "-s", q.control_socket] + list(args),
                          capture_output=True, text=True, timeout=30)


def qproxy_stats(q):
    """qproxyctl stats --json of a running instance, as a dict."""
    p = qproxyctl(q, "stats", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def make_certificate(directory):
    """A self-signed EC P-256 certificate for localhost / 127.0.0.1.

    Returns (cert_path, key_path)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    return cert, key


def write_pem_pair(directory, name, cert, key):
    """A certificate and its private key (the cryptography package's
    objects) as name.pem and name.key (mode 0600) in directory.

    Returns (cert_path, key_path)."""
    from cryptography.hazmat.primitives import serialization
    pem, kpem = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    with open(pem, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(kpem, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return pem, kpem


# --------------------------------------------------------------------------
# HTTP/3 client helpers (pycurl, HTTP/3 only)


class Response:
    def __init__(self):
        self.status = None
        self.headers = []           # [(lowercase name, value)] of the final response
        self.interim = []           # [(status, headers)] of 1xx responses
        self.trailers = []          # [(lowercase name, value)]: field lines after the
        #                             final head's end (HTTP/3 trailers, as libcurl
        #                             hands them to the header callback)
        self.body_before_trailers = None    # body bytes received when the first came
        self.body = b""
        self.http_version = None
        self.num_connects = None
        self.local_port = None
        self.elapsed = None
        self.error = None           # (curl errno, message) for multi transfers

    def header(self, name, default=None):
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def sha256(self):
        return sha256(self.body)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %d bytes err=%s>" % (self.status, len(self.body), self.error)


class _Collector:
    """Header and body callbacks for one transfer."""

    def __init__(self, resp, on_data=None):
        self.resp = resp
        self.chunks = []
        self.block = None
        self.status = None
        self.on_data = on_data
        self.received = 0
        self.final_done = False

    def header(self, line):
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            if self.final_done:
                # the handle's next transfer, on a collector used again
                self.final_done = False
                self.resp.trailers = []
                self.resp.body_before_trailers = None
            parts = text.split(" ", 2)
            self.status = int(parts[1])
            self.block = []
            return
        if self.final_done:
            if ":" in text:
                n, _, v = text.partition(":")
                if self.resp.body_before_trailers is None:
                    self.resp.body_before_trailers = self.received
                self.resp.trailers.append((n.strip().lower(), v.strip()))
            return
        if text == "":
            if self.status is not None:
                if 100 <= self.status < 200:
                    self.resp.interim.append((self.status, self.block))
                else:
                    self.resp.status = self.status
                    self.resp.headers = self.block
                    self.final_done = True
            return
        if self.block is not None and ":" in text:
            n, _, v = text.partition(":")
            self.block.append((n.strip().lower(), v.strip()))

    def write(self, data):
        self.chunks.append(data)
        self.received += len(data)
        if self.on_data is not None:
            self.on_data(self.received)

    def finish(self, c):
        r = self.resp
        r.body = b"".join(self.chunks)
        if r.status is None and self.status is not None:
            r.status = self.status
            r.headers = self.block or []
        try:
            r.http_version = c.getinfo(pycurl.INFO_HTTP_VERSION)
        except (AttributeError, pycurl.error):
            pass
        r.num_connects = c.getinfo(pycurl.NUM_CONNECTS)
        r.local_port = c.getinfo(pycurl.LOCAL_PORT)
        r.elapsed = c.getinfo(pycurl.TOTAL_TIME)
        if not r.status:
            r.status = c.getinfo(pycurl.RESPONSE_CODE) or None


def _body_reader(body):
    """A pycurl READFUNCTION over bytes, a file path or an iterable of bytes."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        view = memoryview(body)
        pos = [0]

        def read(size):
            chunk = view[pos[0]:pos[0] + size]
            pos[0] += len(chunk)
            return bytes(chunk)
        return read, len(view)
    if isinstance(body, (str, os.PathLike)):
        f = open(body, "rb")

        def read(size):
            data = f.read(size)
            if not data:
                f.close()
            return data
        return read, os.path.getsize(body)
    # an iterable with a length attribute: a Content-Length, pieces still
    # produced as curl asks (a slow client)
    length = getattr(body, "length", None)
    it = iter(body)
    pending = [b""]

    def read(size):
        while not pending[0]:
            try:
                pending[0] = next(it)
            except StopIteration:
                return b""
        data, pending[0] = pending[0][:size], pending[0][size:]
        return data
    return read, length


def generated_body(n, piece=100003):
    """The deterministic pattern as a stream of pieces (no length known)."""
    data = expected_body(n)
    for off in range(0, n, piece):
        yield data[off:off + piece]


def make_easy(url, *, method=None, headers=(), body=None, content_length=True,
              timeout=30, connect_timeout=10, connect_to=None, resolve=None,
              verify=False, cainfo=None, on_data=None, head=False, path_as_is=False,
              source=None, client_cert=None, accept_encoding=None):
    """A configured pycurl.Curl (HTTP/3 only) and its collector; path_as_is:
    the URL's path is sent without curl removing its dot segments; source: the
    local address to send from (any of 127.0.0.0/8 on loopback); client_cert:
    (certificate, key) files, shown when the server asks for one;
    accept_encoding: curl's Accept-Encoding ("": every coding it has), whose
    bodies it decodes."""
    require_pycurl_h3()
    c = pycurl.Curl()
    resp = Response()
    col = _Collector(resp, on_data)
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, 31)          # CURL_HTTP_VERSION_3ONLY
    c.setopt(pycurl.NOSIGNAL, 1)
    if path_as_is:
        c.setopt(pycurl.PATH_AS_IS, 1)
    if source:
        c.setopt(pycurl.INTERFACE, "host!" + source)
    if accept_encoding is not None:
        c.setopt(pycurl.ACCEPT_ENCODING, accept_encoding)
    if client_cert:
        c.setopt(pycurl.SSLCERT, client_cert[0])
        c.setopt(pycurl.SSLKEY, client_cert[1])
    c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
    c.setopt(pycurl.CONNECTTIMEOUT_MS, int(connect_timeout * 1000))
    if verify:
        c.setopt(pycurl.SSL_VERIFYPEER, 1)
        c.setopt(pycurl.SSL_VERIFYHOST, 2)
        if cainfo:
            c.setopt(pycurl.CAINFO, cainfo)
    else:
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.HEADERFUNCTION, col.header)
    c.setopt(pycurl.WRITEFUNCTION, col.write)
    if connect_to:
        c.setopt(pycurl.CONNECT_TO, list(connect_to))
    if resolve:
        c.setopt(pycurl.RESOLVE, list(resolve))
    hdrs = list(headers)
    if head:
        c.setopt(pycurl.NOBODY, 1)
    if body is not None:
        read, size = _body_reader(body)
        hdrs.append("Expect:")                 # never wait for 100-continue
        m = (method or "POST").upper()
        if m == "POST":
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.READFUNCTION, read)
            if content_length and size is not None:
                c.setopt(pycurl.POSTFIELDSIZE_LARGE, size)
        else:
            c.setopt(pycurl.UPLOAD, 1)
            c.setopt(pycurl.READFUNCTION, read)
            if content_length and size is not None:
                c.setopt(pycurl.INFILESIZE_LARGE, size)
            if m != "PUT":
                c.setopt(pycurl.CUSTOMREQUEST, m)
    elif method and method.upper() not in ("GET", "HEAD"):
        c.setopt(pycurl.CUSTOMREQUEST, method.upper())
    if hdrs:
        c.setopt(pycurl.HTTPHEADER, hdrs)
    return c, col


def h3_request(url, **kw):
    """One HTTP/3 request; returns Response.  Raises pycurl.error on failure."""
    c, col = make_easy(url, **kw)
    t0 = time.monotonic()
    try:
        c.perform()
        col.finish(c)
    finally:
        col.resp.elapsed = time.monotonic() - t0
        c.close()
    col.resp.body = b"".join(col.chunks)
    return col.resp


def udp_ports_held(pid, descendants=True):
    """The local ports of the UDP sockets that process pid and (unless
    told not to) its descendants hold (their descriptors, matched in
    /proc/net/udp and udp6 by inode). Whether a port a qproxy let go is
    free cannot be asked by binding it: the suite's clients and other
    instances take ephemeral ports all the time, and one took such a port
    within a test's second."""
    pids, inodes = [pid], set()
    while pids:
        p = pids.pop()
        try:
            for fd in os.listdir("/proc/%d/fd" % p):
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (p, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            for task in os.listdir("/proc/%d/task" % p) if descendants else ():
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    pids.extend(int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue            # it exited meanwhile: it holds nothing
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_until(predicate, what, timeout=5.0):
    """Polls predicate until true; fails with what after timeout (x SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def h3_get(url, **kw):
    return h3_request(url, **kw)


def h3_head(url, **kw):
    return h3_request(url, head=True, **kw)


def h3_post(url, body, content_length=True, **kw):
    return h3_request(url, method="POST", body=body, content_length=content_length, **kw)


def h3_put(url, body, content_length=True, **kw):
    return h3_request(url, method="PUT", body=body, content_length=content_length, **kw)


def background_get(url, threshold, timeout=60, **kw):
    """Start a GET in a thread (make_easy's keywords in kw); returns (thread,
    out dict, progress dict, event set once `threshold` body bytes arrived
    or the transfer ended)."""
    out, progress = {}, {"bytes": 0}
    reached = threading.Event()

    def on_data(got):
        progress["bytes"] = got
        if got >= threshold:
            reached.set()

    def run():
        try:
            out["r"] = h3_get(url, timeout=timeout, on_data=on_data, **kw)
        except pycurl.error as e:
            out["e"] = e
        finally:
            out["end"] = time.monotonic()
            reached.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out, progress, reached


def h3_parallel(urls, *, one_connection=True, timeout=60, **kw):
    """Run many transfers at once with CurlMulti.

    one_connection=True: multiplexed, PIPEWAIT, at most one connection to the
    host; the caller should check sum(num_connects) == 1.
    one_connection=False: every transfer on a fresh connection of its own.
    An entry of urls may be a dict: {"url": ..., plus make_easy() keywords}.
    Returns [Response] in the order of urls; failed ones have .error set."""
    require_pycurl_h3()
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, 2)                   # CURLPIPE_MULTIPLEX
    if one_connection:
        m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        if hasattr(pycurl, "M_MAX_CONCURRENT_STREAMS"):
            m.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, max(100, len(urls)))
    handles = []
    for url in urls:
        args = dict(kw)
        if isinstance(url, dict):
            args.update(url)
            url = args.pop("url")
        c, col = make_easy(url, timeout=timeout, **args)
        if one_connection:
            c.setopt(pycurl.PIPEWAIT, 1)
        else:
            c.setopt(pycurl.FRESH_CONNECT, 1)
            c.setopt(pycurl.FORBID_REUSE, 1)
        handles.append((c, col))
        m.add_handle(c)
    by_handle = {id(c): col for c, col in handles}
    deadline = time.monotonic() + timeout + 5
    remaining = len(handles)
    try:
        while remaining:
            while True:
                ret, _ = m.perform()
                if ret != pycurl.E_CALL_MULTI_PERFORM:
                    break
            while True:
                queued, ok, failed = m.info_read()
                for c in ok:
                    by_handle[id(c)].finish(c)
                    remaining -= 1
                for c, errno, msg in failed:
                    col = by_handle[id(c)]
                    col.finish(c)
                    col.resp.error = (errno, msg)
                    remaining -= 1
                if not queued:
                    break
            if not remaining:
                break
            if time.monotonic() > deadline:
                raise AssertionError("parallel transfers did not finish in %ss (%d left)"
                                     % (timeout, remaining))
            m.select(0.2)
    finally:
        for c, col in handles:
            col.resp.body = b"".join(col.chunks)
            m.remove_handle(c)
            c.close()
        m.close()
    return [col.resp for _, col in handles]


# --------------------------------------------------------------------------
# gtlsclient (ngtcp2's example client, GnuTLS)


GTLS_STATUS = re.compile(r"^http: stream (0x[0-9a-fA-F]+) \[:status: (\d+)\]", re.M)


def gtls_fetch(port, paths, download_dir, host="127.0.0.1", authority=None, timeout=30,
               quiet=False, extra_args=()):
    """Fetch paths over one QUIC connection with gtlsclient --download.

    Files land in download_dir under the last path component of each path.
    gtlsclient exits 0 even when the connection fails, so check the files.
    With quiet=False its debug output is parsed: .statuses lists the response
    statuses in stream order (keep that for small transfers: the debug output
    has a line per frame).  Returns the CompletedProcess."""
    os.makedirs(str(download_dir), exist_ok=True)
    auth = authority or "%s:%d" % (host, port)
    urls = ["https://%s%s" % (auth, p) for p in paths]
    cmd = [gtlsclient_binary(), "--no-quic-dump", "--no-http-dump",
           "--exit-on-all-streams-close", "--timeout=%ds" % max(5, int(timeout)),
           "--download=%s" % download_dir] + list(extra_args)
    if quiet:
        cmd.append("-q")
    cmd += [host, str(port)] + urls
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10,
                          errors="replace")
    found = sorted((int(sid, 16), int(st)) for sid, st in
                   GTLS_STATUS.findall(proc.stdout + "\n" + proc.stderr))
    proc.statuses = [st for _, st in found]
    proc.cmd = cmd
    return proc


# --------------------------------------------------------------------------
# h3raw


H3RAW_OUTCOME = re.compile(r"^(status (\d+) body (\d+)|raw \d+|reset 0x[0-9a-fA-F]+|closed 0x[0-9a-fA-F]+"
                           r"|local-reset 0x[0-9a-fA-F]+|local-close 0x[0-9a-fA-F]+|goaway"
                           r"|cancelled|timeout)\s*$")


class RawResult:
    def __init__(self, proc, cmd):
        self.cmd = cmd
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        # One outcome line per request, in request order; --print-headers
        # lines ("< name: value") and --print-body output follow them.
        self.outcomes = [m.group(1) for m in
                         (H3RAW_OUTCOME.match(line) for line in proc.stdout.splitlines()) if m]

    def __repr__(self):
        return ("h3raw %r -> rc=%s\nstdout:\n%s\nstderr:\n%s"
                % (self.cmd, self.returncode, self.stdout, self.stderr[-2000:]))


def h3raw(port, headers, *, data=None, fin_separate=False, trailers=(), count=None,
          sni=None, timeout=5, print_headers=False, host="127.0.0.1", extra=()):
    """Run $H3RAW; headers are "name: value" strings sent exactly as given."""
    cmd = [h3raw_binary()]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["-d", str(data)]
    if fin_separate:
        cmd.append("--fin-separate")
    for t in trailers:
        cmd += ["--trailer", t]
    if count is not None:
        cmd += ["-n", str(count)]
    if sni:
        cmd += ["--sni", sni]
    cmd += ["-t", str(timeout)]
    if print_headers:
        cmd.append("--print-headers")
    cmd += list(extra) + [host, str(port)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          timeout=timeout * SLOW + 10)
    return RawResult(proc, cmd)


# --------------------------------------------------------------------------
# qproxy process management


def skip_if_unix_sockets_hold_more(most, why):
    """Skips a test that needs a Unix socket to hold at most `most` bytes
    (wmem_default, what the daemon's may queue for a client), saying why."""
    with open("/proc/sys/net/core/wmem_default") as f:
        wmem = int(f.read())
    if wmem > most:
        pytest.skip("a Unix socket here holds %d bytes: %s" % (wmem, why))


def reload_refused_while_stopping(q, how):
    """Asks q, shutting down gracefully, for a reload ("qproxyctl" or
    "SIGHUP"), and waits for it to log the refusal (qproxy(8)); qproxyctl
    must say why and exit 1."""
    if how == "qproxyctl":
        p = subprocess.run([qproxyctl_binary(), "-s", q.control_socket, "reload"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert p.stderr == "qproxyctl: shutting down\n", p.stderr
    else:
        q.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused: shutting down" in q.log_text(), "no refusal logged")


def paused_h3raw(q, headers, count, pause_after, pause, timeout, extra=()):
    """h3raw on one connection: count GETs of headers, of which pause_after
    go first; then nothing read for pause seconds (--deaf-pause: the
    datagrams that come wait) while the rest go out. Returns the process
    (pipes for its output), once the pause has begun."""
    p = subprocess.Popen([h3raw_binary(), "-t", str(timeout), "-n", str(count),
                          "--pause-after", str(pause_after), "--pause", str(pause),
                          "--deaf-pause"] + list(extra) +
                         [a for h in headers for a in ("-H", h)] + ["127.0.0.1", str(q.port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while not seen or seen[-1] not in ("h3raw: paused\n", ""):
        seen.append(p.stderr.readline())
    if seen[-1] == "":
        p.kill()
        out, err = p.communicate()
        pytest.fail("h3raw did not pause: %r" % ((out, "".join(seen) + err),))
    return p


def render_config(sections):
    """sections: [(header, [(key, value), ...])] -> INI text."""
    out = []
    for header, items in sections:
        out.append("[%s]" % header)
        for k, v in items:
            out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


PROBE_PATH = "/.qproxy-test-readiness-probe"
_live = []          # running QProxy instances, for failure reports and health checks


# qproxy's shutdown_timeout when its configuration names none (config.c)
DEFAULT_SHUTDOWN_TIMEOUT = "30s"


def duration_seconds(text):
    """A duration as qproxy's configuration reads it ("500ms", "10s", "2m",
    "1h", "50us", or seconds without a unit), in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|)", text.strip())
    assert m, "not a duration: %r" % text
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1, "": 1, "m": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * unit


def slow_control_relay(path, daemon_path, pause):
    """A Unix socket at path whose one client's request goes to the daemon
    on daemon_path, and the reply back: the first 64 KiB of it taken at
    once, then nothing while pause() runs, then the rest, to the daemon's
    EOF; the client gets it all then. For a client that stops taking its
    reply: qproxyctl takes it as fast as it comes. The thread, started."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(20 * SLOW)

    def run():
        with listener:
            c, _ = listener.accept()
        with c, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as d:
            d.connect(daemon_path)
            d.sendall(c.recv(1024))
            got = d.recv(65536)
            pause()
            while True:
                b = d.recv(1 << 20)
                if not b:
                    break
                got += b
            c.sendall(got)
    t = threading.Thread(target=run)
    t.start()
    return t


def raw_exchange(socket_path, data, timeout=10):
    """Send data on a fresh connection to the control socket and read until
    the daemon closes; returns (reply bytes, closed by the daemon)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    try:
        s.connect(socket_path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass            # the daemon stopped reading and closed: fine
        chunks, closed = [], False
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except socket.timeout:
                break
            if not b:
                closed = True
                break
            chunks.append(b)
        return b"".join(chunks), closed
    finally:
        s.close()


class QProxy:
    def __init__(self, binary, workdir, name, sections, port, extra_args=()):
        self.binary = binary
        self.name = name
        self.port = port
        self.conf = os.path.join(workdir, "%s.conf" % name)
        self.log = os.path.join(workdir, "%s.stderr" % name)
        self.extra_args = list(extra_args)
        # Every instance gets its own control socket, on a short path
        # (sun_path holds 108 bytes), unless the test set one itself.
        sections = [(n, list(items)) for n, items in sections]
        glob = [items for n, items in sections if n == "global"]
        if not glob:
            sections.insert(0, ("global", []))
            glob = [sections[0][1]]
        # how long stop() waits: what qproxy itself will wait, so as the
        # configuration it is given says
        given = [v for k, v in glob[0] if k == "shutdown_timeout"]
        self.shutdown_timeout = duration_seconds(given[-1] if given
                                                 else DEFAULT_SHUTDOWN_TIMEOUT)
        given = [v for k, v in glob[0] if k == "control_socket"]
        self._ctl_dir = None
        if given:
            self.control_socket = given[0]
        else:
            self._ctl_dir = tempfile.mkdtemp(prefix="qpctl-")
            atexit.register(shutil.rmtree, self._ctl_dir, True)
            self.control_socket = os.path.join(self._ctl_dir, "control.sock")
            glob[0].append(("control_socket", self.control_socket))
        # and its own secret file, unless the test names one
        if not [v for k, v in glob[0] if k == "secret_file"]:
            if self._ctl_dir is None:
                self._ctl_dir = tempfile.mkdtemp(prefix="qpctl-")
                atexit.register(shutil.rmtree, self._ctl_dir, True)
            glob[0].append(("secret_file", os.path.join(self._ctl_dir, "secret")))
        self.sections = sections
        with open(self.conf, "w") as f:
            f.write(render_config(sections))
        self.proc = None
        self._logf = None
        self._checked = 0
        self.expect_exit = False
        # what start()'s request shows a listener with client_ca
        self.probe_client_cert = None

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def start(self, timeout=15, port_taken_ok=False):
        """Starts qproxy and waits for an answer. port_taken_ok: when it
        exits as its UDP port is taken (a port picked free in advance can
        be taken meanwhile), None is returned instead of failing."""
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf] + self.extra_args,
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf)
        _live.append(self)
        deadline = time.monotonic() + timeout * SLOW
        last = None
        while True:
            if self.proc.poll() is not None:
                _live.remove(self)
                if port_taken_ok and "Address already in use" in self.log_text():
                    return None
                pytest.fail("qproxy exited with %s during startup; stderr:\n%s"
                            % (self.proc.returncode, self.log_tail()), pytrace=False)
            try:
                h3_request(self.url(PROBE_PATH), timeout=1, connect_timeout=0.5,
                           client_cert=self.probe_client_cert)
                # the answer may be another server's, which took the port
                # before this qproxy bound it: its own control socket too
                if self.control_answers():
                    return self
                last = "control socket %s not answering yet" % self.control_socket
            except pycurl.error as e:
                last = e
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("qproxy did not answer HTTP/3 on UDP port %d within %ss "
                            "(last error: %s); stderr:\n%s"
                            % (self.port, timeout * SLOW, last, self.log_tail()),
                            pytrace=False)
            time.sleep(0.1)

    def control_answers(self):
        """Whether this instance answers on its control socket, a path of
        its own: qproxy serves it only once its UDP sockets are bound
        (a supervisor of workers makes it before them, and answers on it
        after). Read to the end, which the daemon's close of its side
        makes: the descriptor is not its any more (test_proxy counts
        them)."""
        try:
            reply, _ = raw_exchange(self.control_socket, b"QPROXY/1 version\n",
                                    timeout=1 / SLOW)
        except OSError:
            return False
        return reply.startswith((b"OK\n", b"ERR "))

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def sanitizer_report(self):
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                i = text.index(marker)
                return text[max(0, i - 200):i + 3000]
        return None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self in _live:
            _live.remove(self)
        if self._logf:
            self._logf.close()
            self._logf = None

    def stop(self, check=True):
        """SIGTERM, wait for the exit; with check, assert exit 0 and a clean log."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=self.shutdown_timeout + 5 * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            if check:
                pytest.fail("qproxy %s did not exit within shutdown_timeout + %ss of SIGTERM; "
                            "stderr:\n%s" % (self.name, 5 * SLOW, self.log_tail()),
                            pytrace=False)
            return None
        if self in _live:
            _live.remove(self)
        if self._logf:
            self._logf.close()
            self._logf = None
        if check:
            report = self.sanitizer_report()
            assert report is None, "sanitizer report in qproxy's stderr:\n" + report
            assert rc == 0, ("qproxy %s exited with %s after SIGTERM; stderr:\n%s"
                             % (self.name, rc, self.log_tail()))
        return rc


def _listener_section(port, cert, key):
    return ("listener main", [("address", "127.0.0.1:%d" % port),
                              ("certificate", cert), ("private_key", key)])


def _global_section(shutdown_timeout="10s"):
    return ("global", [("log_level", os.environ.get("QPROXY_TEST_LOG_LEVEL", "debug")),
                       ("shutdown_timeout", shutdown_timeout)])


def app_sections(backend_server, glob=(), listener=(), backends=(), routes=(),
                 first_routes=(), shutdown_timeout="10s", app_route=()):
    """A sections function for qproxy_factory: the usual global and listener
    sections (with glob and listener items added), backend app at
    backend_server routed from /app/ (with app_route items added), and any
    more backends and routes (first_routes before that one, routes after
    it)."""
    def sections(port, cert, key):
        g, gitems = _global_section(shutdown_timeout)
        l, litems = _listener_section(port, cert, key)
        return ([(g, gitems + list(glob)), (l, litems + list(listener)),
                 ("backend app", [("server", backend_server)])] + list(backends) +
                list(first_routes) +
                [("route app", [("path_prefix", "/app/"), ("backend", "app")] +
                  list(app_route))] +
                list(routes))
    return sections


def many_sites_sections(backend_server, n, **kw):
    """app_sections with n sites more, each a route of its own host
    (siteI.example.com, route rI) to a backend of its own (bI, at
    backend_server), before the app's route."""
    backends = [("backend b%d" % i, [("server", backend_server)])
                for i in range(1, n + 1)]
    routes = [("route r%d" % i, [("host", "site%d.example.com" % i),
                                 ("backend", "b%d" % i)]) for i in range(1, n + 1)]
    return app_sections(backend_server, backends=backends, first_routes=routes, **kw)




# --------------------------------------------------------------------------
# qproxyctl metrics, read by Prometheus's own Python client


def metrics(socket_path):
    """qproxyctl -s socket_path metrics, parsed by prometheus_client's text
    parser: {family name: family}. A counter's family is named without its
    "_total", as that parser has it."""
    from prometheus_client.parser import text_string_to_metric_families
    p = subprocess.run([qproxyctl_binary(), "-s", socket_path, "metrics"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    fams = list(text_string_to_metric_families(p.stdout))
    names = [f.name for f in fams]
    assert len(names) == len(set(names)), names
    return {f.name: f for f in fams}


def metric(fams, family, sample=None, **labels):
    """The value of one sample: of the family's only one, or the one named
    sample (a histogram's _bucket, _sum or _count) with these labels."""
    got = [s for s in fams[family].samples
           if (sample is None or s.name == sample) and
           all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (family, sample, labels, fams[family].samples)
    return got[0].value


# --------------------------------------------------------------------------
# "The backend saw no request"


def backend_counts(backends):
    return [b.count for b in backends]


def assert_backends_untouched(qp, backends, before, what="the request"):
    """Assert no backend received a request since `before` (from
    backend_counts).  A valid sentinel request is sent through qproxy first and
    waited for, so that anything qproxy forwarded earlier has arrived."""
    import uuid
    marker = uuid.uuid4().hex
    app = backends[0]
    r = h3_get(qp.url("/app/echo-headers?sentinel=%s" % marker), timeout=10)
    assert r.status == 200, "sentinel request through qproxy failed: %r" % r
    assert app.wait_for_request(lambda x: marker in x["target"], start=before[0], timeout=5)
    time.sleep(0.05)

    def another_proxys(x):
        # the backends are the session's: a qproxy of an earlier test may
        # have forwarded requests that its backend reads only now (a
        # flood of them, the proxy gone), each with that proxy's own
        # client's Host; one with any other Host is suspect
        host = header_values(x, "host")
        m = re.fullmatch(r"127\.0\.0\.1:(\d+)", host[0]) if len(host) == 1 else None
        return m is not None and int(m.group(1)) != qp.port

    for b, n in zip(backends, before):
        new = [x for x in b.requests_since(n)
               if marker not in x["target"] and not another_proxys(x)]
        assert not new, ("backend %s received %s, but qproxy should have rejected %s:\n%s"
                         % (b.name, len(new), what,
                            "\n".join("%s %s %s" % (x["method"], x["target"], x["headers"])
                                      for x in new)))


def header_values(record_or_json, name):
    """All values of a header field (case-insensitive) from a backend record
    or an /echo-headers reply."""
    name = name.lower()
    return [v for n, v in record_or_json["headers"] if n.lower() == name]


def long_header_cids(pkt):
    """A QUIC long header packet's (DCID, SCID, what follows them)."""
    n = pkt[5]
    m = pkt[6 + n]
    return pkt[6:6 + n], pkt[7 + n:7 + n + m], pkt[7 + n + m:]
