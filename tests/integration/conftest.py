"""pytest fixtures for qproxy's end-to-end tests (helpers live in helpers.py).

Environment:
  QPROXY   path of the qproxy binary (required: tests that need it FAIL without it)
  H3RAW    path of the raw HTTP/3 test client (required by test_h3raw.py)
  QPROXY_TEST_LOG_LEVEL   log_level written into generated configs (default debug)
  QPROXY_TEST_SLOW        factor for generous upper time limits (default: 3 when
                          the binary's path contains "asan", else 1)
  QPROXY_TEST_TIME_LIMIT  per-test limit in seconds before SLOW (default 90)
"""

import os
import re
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(os.path.dirname(HERE), "tools")     # relay.py
for d in (HERE, TOOLS):
    if d not in sys.path:
        sys.path.insert(0, d)

import backend as backend_mod  # noqa: E402
from helpers import (CONNECT_TIMEOUT, SHORT_READ_TIMEOUT, SLOW, QProxy,  # noqa: E402
                     _global_section, _listener_section, _live, free_udp_port,
                     make_certificate, qproxy_binary, qproxyctl_binary,
                     require_pycurl_h3)


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qproxy-it"))


@pytest.fixture(scope="session")
def certificate(workdir):
    """(cert_path, key_path): self-signed EC P-256, CN=localhost,
    SAN DNS:localhost, IP:127.0.0.1."""
    d = os.path.join(workdir, "tls")
    os.makedirs(d, exist_ok=True)
    return make_certificate(d)


@pytest.fixture(scope="session")
def backend_app():
    with backend_mod.Backend(tcp=("127.0.0.1", 0), name="app") as b:
        yield b


@pytest.fixture(scope="session")
def backend_other():
    with backend_mod.Backend(tcp=("127.0.0.1", 0), name="other") as b:
        yield b


@pytest.fixture(scope="session")
def backend_unix(workdir):
    with backend_mod.Backend(unix=os.path.join(workdir, "backend.sock"), name="unixapp") as b:
        yield b


@pytest.fixture(scope="session")
def refusing():
    r = backend_mod.Refusing()
    yield r
    r.close()


@pytest.fixture(scope="session")
def blackhole():
    b = backend_mod.BlackHole()
    yield b
    b.close()


@pytest.fixture(scope="session")
def syndrop():
    s = backend_mod.SynDrop()
    yield s
    s.close()


@pytest.fixture(scope="session")
def all_backends(backend_app, backend_other, backend_unix):
    return [backend_app, backend_other, backend_unix]


def shared_sections(port, cert, key, app, other, unix, refusing, blackhole, syndrop):
    connect = "%gs" % CONNECT_TIMEOUT
    short = "%gs" % SHORT_READ_TIMEOUT

    def be(name, server, read="10s"):
        return ("backend %s" % name, [("server", server), ("connect_timeout", connect),
                                      ("read_timeout", read)])
    return [
        _global_section("10s"),
        _listener_section(port, cert, key),
        be("app", app.tcp_server),
        be("other", other.tcp_server),
        be("unixapp", "unix:%s" % unix.unix_path),
        be("short", app.tcp_server, read=short),
        be("down", "127.0.0.1:%d" % refusing.port),
        be("blackhole", "127.0.0.1:%d" % blackhole.port, read=short),
        be("syndrop", "127.0.0.1:%d" % syndrop.port),
        ("route byhost", [("host", "other.example"), ("backend", "other")]),
        ("route app", [("path_prefix", "/app/"), ("backend", "app")]),
        ("route unix", [("path_prefix", "/unix/"), ("backend", "unixapp")]),
        ("route short", [("path_prefix", "/short/"), ("backend", "short")]),
        ("route down", [("path_prefix", "/down/"), ("backend", "down")]),
        ("route blackhole", [("path_prefix", "/blackhole/"), ("backend", "blackhole")]),
        ("route syndrop", [("path_prefix", "/syndrop/"), ("backend", "syndrop")]),
    ]


@pytest.fixture(scope="session")
def qp(workdir, certificate, backend_app, backend_other, backend_unix, refusing, blackhole,
       syndrop):
    """The shared qproxy instance (routes: host other.example -> other;
    /app/ -> app (TCP); /unix/ -> unixapp (unix socket); /short/ -> app with
    read_timeout 2s; /down/ -> refused port; /blackhole/ -> accepts, never
    answers (read_timeout 2s); /syndrop/ -> connect times out (1s))."""
    binary = qproxy_binary()
    require_pycurl_h3()
    port = free_udp_port()
    cert, key = certificate
    q = QProxy(binary, workdir, "shared",
               shared_sections(port, cert, key, backend_app, backend_other, backend_unix,
                               refusing, blackhole, syndrop),
               port)
    q.start()
    yield q
    q.stop(check=True)


@pytest.fixture
def qproxy_factory(workdir, certificate, request):
    """Start private qproxy instances: factory(sections_fn or None, **kw).

    factory(backend_server="127.0.0.1:1234", shutdown_timeout="10s") builds a
    config with route /app/ -> that server; factory(sections=[...]) takes the
    sections verbatim (use factory.port / factory.cert / factory.key).
    Every instance is stopped at teardown with SIGTERM; exit code 0 and a
    sanitizer-free stderr are asserted (unless the test already stopped it)."""
    binary = qproxy_binary()
    require_pycurl_h3()
    started = []
    counter = [0]

    def factory(backend_server=None, sections=None, port=None, shutdown_timeout="10s",
                read_timeout="10s", connect_timeout="1s", start=True):
        # a port picked here may be taken before qproxy binds it: another
        # one then, unless the test chose it or wrote the sections itself
        retry = port is None and (sections is None or callable(sections))
        for attempt in range(5):
            q = make(backend_server, sections, port or free_udp_port(), shutdown_timeout,
                     read_timeout, connect_timeout)
            started.append(q)
            if not start or q.start(port_taken_ok=retry and attempt < 4) is not None:
                return q
            started.remove(q)

    def make(backend_server, sections, port, shutdown_timeout, read_timeout,
             connect_timeout):
        cert, key = certificate
        if sections is None:
            sections = [
                _global_section(shutdown_timeout),
                _listener_section(port, cert, key),
                ("backend app", [("server", backend_server), ("connect_timeout", connect_timeout),
                                 ("read_timeout", read_timeout)]),
                ("route app", [("path_prefix", "/app/"), ("backend", "app")]),
            ]
        elif callable(sections):
            sections = sections(port, cert, key)
        counter[0] += 1
        name = "%s-%d" % (re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60], counter[0])
        return QProxy(binary, workdir, name, sections, port)

    yield factory
    errors = []
    for q in started:
        if q.proc is None or q.expect_exit:
            q.kill()
            continue
        try:
            q.stop(check=True)
        except (AssertionError, pytest.fail.Exception) as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def _qproxy_health():
    """After each test: every qproxy that should be running still is, and no
    sanitizer report appeared in its stderr."""
    yield
    problems = []
    for q in list(_live):
        if q.expect_exit:
            continue
        report = q.sanitizer_report()
        if report:
            problems.append("sanitizer report in qproxy %s stderr:\n%s" % (q.name, report))
        elif not q.running():
            problems.append("qproxy %s died (exit %s); stderr:\n%s"
                            % (q.name, q.proc.returncode, q.log_tail()))
            _live.remove(q)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if (rep.when == "setup" and rep.failed and call.excinfo is not None
            and call.excinfo.errisinstance(pytest.fail.Exception)
            and str(call.excinfo.value).startswith(MISSING_TOOL_PREFIXES)):
        rep.missing_tool = True
    if rep.failed and _live:
        for q in list(_live):
            rep.sections.append(("qproxy %s stderr (tail)" % q.name, q.log_tail(40)))
            if rep.when == "call" and q.running():
                rep.sections.append(("qproxy %s stats" % q.name, _stats_text(q)))


def _stats_text(q):
    """qproxyctl stats of a live instance, for a failure report: what it
    held (streams, buffers, backend connections) when the test gave up."""
    try:
        p = subprocess.run([qproxyctl_binary(), "-s", q.control_socket, "stats"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired, pytest.fail.Exception) as e:
        return "qproxyctl stats: %s" % e
    return (p.stdout + p.stderr).strip()


MISSING_TOOL_PREFIXES = ("QPROXY", "H3RAW", "gtlsclient", "python3-pycurl", "this libcurl",
                         "chromium", "firefox-esr")


def pytest_report_teststatus(report, config):
    """A test whose fixture could not find $QPROXY (or $H3RAW, ...) counts as
    FAILED, not as a setup ERROR: a missing binary is a failing suite."""
    if getattr(report, "missing_tool", False):
        return "failed", "F", "FAILED"
    return None


# --------------------------------------------------------------------------
# The order tests go out to pytest-xdist's workers.


def pytest_collection_modifyitems(session, config, items):
    """Under pytest-xdist, the modules' tests interleaved: the first of
    each module, then the second of each, and so on. Its scheduler (3.1)
    hands each worker runs of consecutive tests, the last ones in larger
    runs, and test_limits.py's slow tests sit together: in one run of the
    plain suite they were the last 50 s of 160, on one worker while the
    other three had finished."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    by_module = {}
    for item in items:
        by_module.setdefault(item.module.__name__, []).append(item)
    queues = list(by_module.values())
    items[:] = [q[i] for i in range(max(map(len, queues), default=0))
                for q in queues if i < len(q)]


# --------------------------------------------------------------------------
# A per-test time limit (no pytest-timeout on Debian 12's pytest by default).

TEST_TIME_LIMIT = int(float(os.environ.get("QPROXY_TEST_TIME_LIMIT", "90")) * SLOW)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %ds" % TEST_TIME_LIMIT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
