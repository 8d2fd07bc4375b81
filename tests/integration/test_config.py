"""`qproxy -c FILE -t`: configuration checking with FILE:LINE: diagnostics."""

import json
import os
import re
import shutil
import subprocess

import pytest

from helpers import (SLOW, app_sections, h3_get, many_sites_sections, preload_strcmpcount,
                     qproxy_binary, qproxyctl, wait_until)
from backend import free_udp_port


def valid_lines(cert, key):
    # a secret_file of its own, which -t does not create
    secret = os.path.join(os.path.dirname(cert), "qproxy-test.secret")
    return [
        "# qproxy integration test configuration",     # 1
        "[global]",                                     # 2
        "log_level = debug",                            # 3
        "shutdown_timeout = 10s",                       # 4
        "secret_file = %s" % secret,                    # 5
        "[listener main]",                              # 6
        "address = 127.0.0.1:8443",                     # 7
        "certificate = %s" % cert,                      # 8
        "private_key = %s" % key,                       # 9
        "",                                             # 10
        "[backend app]",                                # 11
        "server = 127.0.0.1:8080",                      # 12
        "server = unix:/run/qproxy-test/app.sock",      # 13
        "connect_timeout = 1s",                         # 14
        "read_timeout = 2s",                            # 15
        "",                                             # 16
        "[backend other]",                              # 17
        "server = 127.0.0.1:8081",                      # 18
        "",                                             # 19
        "[route byhost]",                               # 20
        "host = other.example",                         # 21
        "backend = other",                              # 22
        "",                                             # 23
        "[route api]",                                  # 24
        "path_prefix = /api/",                          # 25
        "backend = app",                                # 26
    ]


def replace(lineno, text):
    def edit(lines):
        assert lines[lineno - 1].split("=")[0].strip() == text.split("=")[0].strip() \
            or text.startswith("[")
        lines[lineno - 1] = text
        return lineno
    return edit


def insert_after(lineno, text):
    def edit(lines):
        lines.insert(lineno, text)
        return lineno + 1
    return edit


# id -> edit(lines) -> the line number the error must be reported on
BROKEN = {
    "unknown-key-listener": insert_after(9, "bogus_key = 1"),
    "unknown-key-global": insert_after(3, "frobnicate = yes"),
    "unknown-key-route": insert_after(25, "colour = blue"),
    "bad-timeout": replace(14, "connect_timeout = soon"),
    "bad-port": replace(7, "address = 127.0.0.1:99999"),
    "bad-log-level": replace(3, "log_level = loud"),
    "route-to-undefined-backend": replace(26, "backend = nope"),
    "unknown-section": insert_after(19, "[frobnicator x]"),
    "cid-server-id-not-hex": insert_after(5, "cid_server_id = 0g"),
    "cid-server-id-too-long": insert_after(5, "cid_server_id = " + "ab" * 16),
    "cid-config-id-7": insert_after(5, "cid_config_id = 7"),
    "cid-nonce-too-short": insert_after(5, "cid_nonce_length = 3"),
    # the later of the two keys gets the error
    "cid-lengths-past-19": lambda lines: insert_after(5, "cid_server_id = " + "ab" * 10)(lines)
    and insert_after(6, "cid_nonce_length = 10")(lines),
    "request-rate-decimal": insert_after(5, "max_request_rate_per_client = 1.5"),
    "request-rate-per-hour": insert_after(5, "max_request_rate_per_client = 20/h"),
    "request-rate-too-high": insert_after(5, "max_request_rate_per_client = 2000000/s"),
    "request-burst-negative": insert_after(5, "request_burst_per_client = -1"),
    "set-header-no-colon": insert_after(26, "set_request_header = X-User alice"),
    "set-header-bad-name": insert_after(26, "set_response_header = X User: alice"),
    "set-header-framing": insert_after(26, "set_response_header = Content-Length: 5"),
    "set-header-host": insert_after(26, "set_request_header = Host: example.com"),
    "match-header-host": insert_after(26, "header = Host: example.com"),
    "route-access-log-a-path": insert_after(26, "access_log = /var/log/app.log"),
    # the state's text would replace the keys
    "state-file-is-secret-file":
    lambda lines: insert_after(5, "state_file = " + lines[4].split(" = ", 1)[1])(lines),
    "state-file-new-is-secret-file":
    lambda lines: insert_after(5, "state_file = " +
                               lines[4].split(" = ", 1)[1][:-len(".secret")])(lines)
    and (lines.__setitem__(4, lines[4][:-len(".secret")] + ".new") or 6),
    "default-state-file-is-secret-file":
    lambda lines: lines.__setitem__(4, lines[4].replace("qproxy-test.secret", "state")) or 5,
    "set-header-twice": lambda lines: insert_after(26, "set_request_header = X-A: 1")(lines)
    and insert_after(27, "set_request_header = x-a: 2")(lines),
    "allow-host-bits": insert_after(26, "allow = 10.0.0.1/8"),
    "deny-not-an-address": insert_after(26, "deny = localhost"),
    "allow-prefix-too-long": insert_after(26, "allow = 2001:db8::/129"),
    # qproxy's IPv6 sockets take IPv6 only: no client comes from such an address
    "deny-ipv4-mapped": insert_after(26, "deny = ::ffff:10.0.0.0/104"),
    "trusted-proxies-ipv4-mapped": insert_after(5, "trusted_proxies = ::ffff:192.0.2.1"),
    "health-check-host-bad": insert_after(15, "health_check_host = a b"),
    "strip-prefix-without-prefix": insert_after(22, "strip_prefix = on"),
    "strip-prefix-yes": insert_after(26, "strip_prefix = yes"),
    "balance-unknown": insert_after(15, "balance = random"),
    "server-weight-0": insert_after(12, "server = 127.0.0.1:8082 weight=0"),
    "server-weight-big": insert_after(12, "server = 127.0.0.1:8082 backup weight=101"),
    "server-option-unknown": insert_after(12, "server = 127.0.0.1:8082 bakup"),
    "server-option-in-unix-path": insert_after(12, "server = unix:/run/x.sock wieght=2"),
    "server-option-twice": insert_after(12, "server = 127.0.0.1:8082 weight=3 weight=1"),
    # the later line, whichever option it has
    "server-twice": insert_after(13, "server = 127.0.0.1:8080 backup"),
    "request-id-header-bad-name": insert_after(5, "request_id_header = X Request"),
    "request-id-header-via": insert_after(5, "request_id_header = Via"),
    # reported at request_id_header, wherever the route's is
    "request-id-header-set-by-route":
    lambda lines: insert_after(26, "set_response_header = X-Request-Id: 1")(lines)
    and insert_after(5, "request_id_header = x-request-id")(lines),
    "health-check-not-a-path": insert_after(15, "health_check = healthz"),
    "retry-on-not-5xx": insert_after(15, "retry_on = timeout 404"),
    "retry-on-unknown": insert_after(15, "retry_on = errors"),
    "health-interval-too-short": insert_after(15, "health_interval = 10ms"),
    "cid-lengths-under-7": lambda lines: insert_after(5, "cid_nonce_length = 4")(lines)
    and insert_after(6, "cid_server_id = ab")(lines),
    "line-too-long": insert_after(26, "set_response_header = X-Long: " + "a" * 8163),
    # 0 keeps the backend's; 500us answered 504 at once
    "route-read-timeout-under-1ms": insert_after(26, "read_timeout = 500us"),
    # 0 is no limit; 500us closed pooled connections at once
    "backend-idle-timeout-under-1ms": insert_after(15, "idle_timeout = 500us"),
    # a worker says it runs once a second: 0 never kills, 2.5s a busy one
    "worker-timeout-0": insert_after(5, "worker_timeout = 0"),
    "worker-timeout-under-3s": insert_after(5, "worker_timeout = 2500ms"),
    "worker-timeout-over-1h": insert_after(5, "worker_timeout = 61m"),
    "compress-brotli": insert_after(5, "compress = br"),
    "route-compress-on": insert_after(26, "compress = on"),
    "compress-types-no-slash": insert_after(5, "compress_types = text/html json"),
    "compress-types-star-type": insert_after(5, "compress_types = */*"),
    "compress-types-star-inside": insert_after(5, "compress_types = application/x*json"),
    "compress-types-empty-suffix": insert_after(5, "compress_types = application/*+"),
    "compress-types-empty": insert_after(5, "compress_types = \"\""),
    "compress-level-0": insert_after(5, "compress_level = 0"),
    "compress-level-10": insert_after(5, "compress_level = 10"),
    "compress-memory-small": insert_after(5, "compress_memory_total = 512k"),
}


def write(tmp_path, lines, name="qproxy.conf"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def check(path, extra=("-t",)):
    return subprocess.run([qproxy_binary(), "-c", path] + list(extra), capture_output=True,
                          text=True, errors="replace", timeout=10 * SLOW)


@pytest.mark.parametrize("case,message", [
    ("route-access-log-a-path",
     'access_log: invalid value "/var/log/app.log": expected on, off or errors'),
    ("retry-on-not-5xx", 'retry_on: invalid value "404": expected off, or error, '
     'timeout and statuses from 500 to 599'),
    ("retry-on-unknown", 'retry_on: invalid value "errors"'),
    ("match-header-host", 'header: HTTP/3 requests carry their host in :authority'),
    ("line-too-long", "line too long: at most 8192 characters"),
    ("route-read-timeout-under-1ms", 'read_timeout: invalid value "500us": expected 0, or a '
     'duration from 1ms to 24h'),
    ("server-option-unknown", 'server: unknown option "bakup": expected weight=N or backup'),
    ("server-option-in-unix-path", 'server: unknown option "wieght=2"'),
    ("server-option-twice", 'server: "weight=" is given twice'),
    ("server-twice", 'server: "127.0.0.1:8080" is already used at line 12'),
    ("worker-timeout-0", 'worker_timeout: invalid value "0": expected a duration from 3s '
     'to 1h'),
    ("worker-timeout-under-3s", 'worker_timeout: invalid value "2500ms": expected a duration '
     'from 3s to 1h'),
    ("worker-timeout-over-1h", 'worker_timeout: invalid value "61m": expected a duration '
     'from 3s to 1h'),
    ("deny-ipv4-mapped", 'deny: "::ffff:10.0.0.0/104" is an IPv4 address in IPv6 form, '
     'which no client has: write it as IPv4'),
    ("trusted-proxies-ipv4-mapped", 'trusted_proxies: "::ffff:192.0.2.1" is an IPv4 address '
     'in IPv6 form, which no client has: write it as IPv4'),
    ("compress-brotli", 'compress: invalid value "br": expected gzip or off'),
    ("route-compress-on", 'compress: invalid value "on": expected gzip or off'),
    ("compress-types-no-slash", 'compress_types: invalid media type "json": expected '
     'type/subtype, type/* or type/*+suffix'),
    ("compress-types-star-inside", 'compress_types: invalid media type "application/x*json"'),
    ("compress-level-10", 'compress_level: invalid value "10": expected an integer from 1 '
     'to 9'),
])
def test_broken_config_says_why(tmp_path, certificate, case, message):
    """The keys of a route or backend that share a name with another's, or
    take a list, say what they expected."""
    lines = valid_lines(*certificate)
    lineno = BROKEN[case](lines)
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 1
    assert "%s:%d: %s" % (path, lineno, message) in p.stdout + p.stderr, p.stderr


def test_valid_config_ok(tmp_path, certificate):
    path = write(tmp_path, valid_lines(*certificate))
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "configuration OK" in out


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_reports_file_and_line(tmp_path, certificate, case):
    lines = valid_lines(*certificate)
    lineno = BROKEN[case](lines)
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "configuration OK" not in out
    assert re.search(r"(?m)^%s:%d: \S" % (re.escape(path), lineno), out), \
        "expected a '%s:%d: message' line in:\n%s" % (path, lineno, out)
    # No diagnostic points at another line of this file.
    other = [m for m in re.findall(r"(?m)^%s:(\d+):" % re.escape(path), out)
             if int(m) != lineno]
    assert not other, out


def test_broken_config_refuses_to_start(tmp_path, certificate):
    """Without -t a broken configuration also exits (non-zero) with the
    diagnostic, instead of serving."""
    lines = valid_lines(*certificate)
    lineno = BROKEN["unknown-key-listener"](lines)
    path = write(tmp_path, lines)
    try:
        p = check(path, extra=())
    except subprocess.TimeoutExpired:
        pytest.fail("qproxy kept running with a broken configuration")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "%s:%d:" % (path, lineno) in out, out


def test_check_reads_the_certificate_and_key(tmp_path, certificate):
    """-t loads each listener's certificate and key as a start would: a
    certificate and key given the wrong way round fail the check, on the
    certificate's line, where they used to pass it and fail only the start."""
    cert, key = certificate
    lines = valid_lines(key, cert)
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "configuration OK" not in out
    assert re.search(r"(?m)^%s:8: listener main: certificate " % re.escape(path), out), out
    assert not os.path.exists(os.path.join(os.path.dirname(key), "qproxy-test.secret"))


def test_a_private_key_every_user_may_read_is_warned_about(tmp_path, certificate):
    """Allowed (root may have set it so on purpose), but said, on the
    key's line; a key only its owner and group may read is no news."""
    cert, key = certificate
    mine = tmp_path / "key.pem"
    shutil.copy(key, mine)
    for mode, warned in ((0o644, True), (0o640, False), (0o604, True)):
        os.chmod(mine, mode)
        p = check(write(tmp_path, valid_lines(cert, str(mine))))
        assert p.returncode == 0 and "configuration OK" in p.stdout, p
        line = "%s:9: private_key %s may be read by every user (mode %04o)" % (
            tmp_path / "qproxy.conf", mine, mode)
        assert (line in p.stderr) == warned, (oct(mode), p.stderr)


def _with_secret(tmp_path, certificate, make):
    """A valid configuration whose secret_file (line 5) make(path) creates;
    the configuration's path and the secret's."""
    lines = valid_lines(*certificate)
    secret = str(tmp_path / "secret")
    lines[4] = "secret_file = %s" % secret
    make(secret)
    return write(tmp_path, lines), secret


def _random_secret(mode):
    def make(secret):
        with open(secret, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(secret, mode)
    return make


def _refused_secret(path, why):
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "%s:5: secret_file: " % path in out and why in out, out


def test_check_refuses_a_secret_others_may_read(tmp_path, certificate):
    path, secret = _with_secret(tmp_path, certificate, _random_secret(0o644))
    _refused_secret(path, "0600")
    os.chmod(secret, 0o600)
    p = check(path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_check_refuses_a_secret_another_user_owns(tmp_path, certificate):
    """Whoever may write the secret chooses the keys of tokens, stateless
    resets and session tickets: a 0600 file of another user's passed."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")
    path, secret = _with_secret(tmp_path, certificate, _random_secret(0o600))
    os.chown(secret, 65534, 65534)
    _refused_secret(path, "belongs to user 65534")
    os.chown(secret, 0, 0)
    p = check(path)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("size,why", [(31, "shorter than 32 bytes"),
                                      (33, "longer than 32 bytes"),
                                      (65, "longer than 32 bytes")])
def test_check_refuses_a_secret_of_other_than_32_bytes(tmp_path, certificate, size, why):
    """Keys are the file's 32 bytes: 64 hexadecimal digits and a newline
    (openssl rand -hex 32) gave keys of their first 32 characters."""
    def make(secret):
        with open(secret, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(secret, 0o600)
    path, secret = _with_secret(tmp_path, certificate, make)
    _refused_secret(path, why)
    _random_secret(0o600)(secret)
    p = check(path)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("text,mode,why", [
    ("8f95f09245765f80256934e50c66207f\n", 0o644, "open to group or others"),
    ("8f95f09245765f80256934e50c66207", 0o600, "expected a key of 32 hexadecimal digits"),
    ("8f95f09245765f80256934e50c66207f00\n", 0o600, "expected a key of 32"),
    ("8f95f09245765f80256934e50c66207x\n", 0o600, "expected a key of 32"),
    (None, 0, "cannot open"),
])
def test_check_refuses_a_bad_cid_key_file(tmp_path, certificate, text, mode, why):
    """The QUIC-LB key: 32 hex digits on a line, in a file as private as
    secret_file; -t reads it as the start would, and names its line."""
    key = tmp_path / "lb.key"
    if text is not None:
        key.write_text(text)
        os.chmod(key, mode)
    lines = valid_lines(*certificate)
    lines[5:5] = ["cid_server_id = 0a0b", "cid_key_file = %s" % key]
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "%s:7: cid_key_file: " % path in out and why in out, out
    if text is not None:
        key.chmod(0o600)
        key.write_text("8f95f09245765f80256934e50c66207f\n")
        p = check(path)
        assert p.returncode == 0, p.stdout + p.stderr


def test_check_refuses_a_fifo_as_secret_without_waiting(tmp_path, certificate):
    """A FIFO as secret_file: the open waited for a writer, before the
    check that it is a regular file could refuse it (check timed out)."""
    path, _ = _with_secret(tmp_path, certificate, lambda s: os.mkfifo(s, 0o600))
    _refused_secret(path, "not a regular file")


@pytest.mark.parametrize("key", ["error_log", "access_log", "keylog_file"])
@pytest.mark.parametrize("what", ["symlink", "directory"])
def test_check_refuses_a_log_the_start_would_refuse(tmp_path, certificate, key, what):
    """-t said "configuration OK" for a log the daemon then refused to
    open at start (a link in its place, or a directory), on that key's
    line."""
    lines = valid_lines(*certificate)
    log = tmp_path / "the.log"
    if what == "symlink":
        os.symlink(tmp_path / "elsewhere.log", log)
    else:
        log.mkdir()
    lines.insert(3, "%s = %s" % (key, log))
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "configuration OK" not in out
    assert re.search(r"(?m)^%s:4: %s: %s is " % (re.escape(path), key, re.escape(str(log))),
                     out), out


def test_a_backend_of_many_servers_is_read_whole(tmp_path, certificate):
    """Each server added moved the servers before it: under ASan, whose
    realloc always moves, test_qproxyctl's 8,000 took 30 s to read (and the
    UDP port picked for that qproxy lay free all the while), and these
    20,000 more than check's timeout. The array now doubles as it fills:
    every server read, past each power of two (ASan sees any write past
    the room)."""
    lines = valid_lines(*certificate)
    lines[13:13] = ["server = 127.0.0.1:%d" % (10000 + i) for i in range(20000)]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_check_refuses_a_wildcard_beside_an_address_of_its_port(tmp_path, certificate):
    """0.0.0.0:P and 127.0.0.1:P cannot both be bound: -t passed such a
    file, and the start failed with "Address already in use"."""
    lines = valid_lines(*certificate)
    lines.insert(7, "address = 0.0.0.0:8443")
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "%s:8: address: \"0.0.0.0:8443\" overlaps 127.0.0.1:8443" % path in out, out


def test_check_refuses_an_ipv4_mapped_listener_address(tmp_path, certificate):
    """[::ffff:127.0.0.1]:P passed -t, and the start failed: qproxy's IPv6
    sockets take IPv6 only."""
    lines = valid_lines(*certificate)
    lines.insert(7, "address = [::ffff:127.0.0.1]:8444")
    path = write(tmp_path, lines)
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert ("%s:8: address: \"[::ffff:127.0.0.1]:8444\" is an IPv4 address in IPv6 form"
            % path) in out, out


TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _fields_said_refused():
    """The field names that qproxy.conf(5) and conf/qproxy.conf say
    set_request_header refuses."""
    man = open(os.path.join(TOP, "man/qproxy.conf.5")).read()
    entry = man[man.index(".It Ic set_request_header"):]
    entry = entry[:entry.index("\n.It Ic", 1)]
    names = set(re.findall(r"(?m)^\.Ql ([A-Za-z-]+) ?,?$", entry))
    conf = open(os.path.join(TOP, "conf/qproxy.conf")).read()
    said = re.search(r"qproxy's own fields \(([^)]*)\) are\s+#? ?refused", conf)
    assert said, "conf/qproxy.conf no longer says which fields are refused"
    listed = [w.strip() for w in re.sub(r"\s*#\s*", " ", said.group(1)).split(",")]
    # "framing and connection fields": words, not a name
    return names, {w for w in listed if " " not in w}


def test_the_fields_said_refused_are_refused(tmp_path, certificate):
    """Each field that qproxy.conf(5) or the example configuration names as
    one qproxy writes itself is refused in set_request_header: the example
    said "X-Forwarded-*", where X-Forwarded-Host or the manual's
    X-Forwarded-Prefix (for strip_prefix) are taken and sent."""
    man, conf = _fields_said_refused()
    assert len(man) >= 14 and len(conf) >= 6, (man, conf)
    for name in sorted(man | conf):
        lines = valid_lines(*certificate) + ["set_request_header = %s: x" % name]
        path = write(tmp_path, lines)
        p = check(path)
        assert p.returncode == 1 and ('qproxy writes "%s" itself' % name.lower()) in p.stderr, \
            (name, p.stdout + p.stderr)
    for name in ("X-Forwarded-Prefix", "X-Forwarded-Host"):
        lines = valid_lines(*certificate) + ["set_request_header = %s: /api" % name]
        p = check(write(tmp_path, lines))
        assert p.returncode == 0, (name, p.stdout + p.stderr)


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "does-not-exist.conf")
    p = check(path)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "configuration OK" not in out
    assert path in out, out


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    """-c naming a FIFO with no writer blocked the check (and a reload, and
    with it the daemon) in open(2)."""
    path = tmp_path / "qproxy.conf"
    os.mkfifo(path)
    p = check(str(path))
    assert p.returncode == 1, p
    assert p.stderr == "%s:0: cannot open: not a regular file\n" % path, p.stderr


def test_a_secret_file_that_cannot_be_made_names_its_line(tmp_path, certificate):
    """qproxy makes its secret_file at start when there is none: in a
    directory that does not exist it cannot, and said so without the
    file:line every configuration error has (a helper's hunt)."""
    lines = valid_lines(*certificate)
    lines[4] = "secret_file = %s" % (tmp_path / "gone" / "secret")
    lines[6] = "address = 127.0.0.1:%d" % free_udp_port()
    path = write(tmp_path, lines)
    p = check(path, extra=("-f",))
    assert p.returncode == 1, p
    assert "%s:5: secret_file: cannot create %s" % (path, tmp_path / "gone" / "secret") \
        in p.stderr, p.stderr


@pytest.mark.parametrize("extra,key,lineno", [
    (["retry_threshold = 500", "max_handshakes = 500"], "retry_threshold", 7),
    (["max_handshakes = 50"], "retry_threshold", 6),
    (["stream_window = 8m", "connection_window = 4m"], "stream_window", 7),
    (["response_buffer_total = 2m", "response_buffer_size = 4m"], "response_buffer_total", 7),
    (["stream_window = 2m", "request_buffer_total = 1m"], "request_buffer_total", 7),
    (["stream_window = 512k", "request_buffer_total = 2047k"], "request_buffer_total", 7),
    (["initial_rtt = 1s", "idle_timeout = 3s"], "initial_rtt", 7),
    (["quic_buffer_total = 600m"], "quic_buffer_total", 6),
    (["quic_buffer_total = 1m", "max_connections = 17"], "quic_buffer_total", 7),
    (["request_burst_per_client = 10"], "request_burst_per_client", 6),
])
def test_likely_mistakes_are_warned_about(tmp_path, certificate, extra, key, lineno):
    """Allowed, but not what anyone means: a retry_threshold that
    max_handshakes never lets handshakes reach, a stream window larger than
    its connection's, a stream's response buffer larger than all streams',
    a stream's widest window larger than all streams' request memory, an
    initial_rtt whose first PTO comes no sooner than the handshake's end,
    QUIC memory below 64 KiB a connection.
    The check passes with a warning on the later line."""
    lines = valid_lines(*certificate)
    lines[5:5] = extra                  # after line 5, in [global]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0, p
    assert "configuration OK" in p.stdout
    assert re.search(r"(?m)%s:%d: %s " % (re.escape(path), lineno, key), p.stderr), p.stderr
    # and nothing for the valid file as it is
    p = check(write(tmp_path, valid_lines(*certificate), name="plain.conf"))
    assert p.returncode == 0 and p.stderr == "", p


@pytest.mark.parametrize("size,warned", [("4m", True), ("1m", True), ("769k", True),
                                         ("768k", False), ("32k", False)])
def test_a_request_buffer_size_that_fills_the_total_is_warned_about(tmp_path, certificate,
                                                                     size, warned):
    """A backend's request_buffer_size is warned about, at the backend's
    line, when it and the four stream windows (64 KiB each) a client may
    send beyond it are above request_buffer_total (1m): one upload held
    there can be given up with 503, as a 2 MiB one was under a
    request_buffer_size of 1m, the total, on a new connection to its
    server. Not at or below the total, nor for a size below half a window,
    which holds no more than none."""
    lines = valid_lines(*certificate)
    lines[5:5] = ["request_buffer_total = 1m"]          # 6, in [global]
    at = lines.index("[backend app]")                    # 12
    lines[at + 1:at + 1] = ["request_buffer_size = %s" % size]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    want = ("qproxy[warn]: %s:12: backend app: its request_buffer_size, %s, and the four "
            "stream windows a client may send beyond it (256k) are above "
            "request_buffer_total, 1m: an upload to it can be given up (503)\n" % (path, size))
    assert p.stderr == (want if warned else ""), p.stderr


def test_warnings_come_in_line_order(tmp_path, certificate):
    """-t says its warnings in the order of their lines (they came in the
    order the checks are written: 6, 4, 8, 10, 9, 12 in a helper's file),
    and warns of a route's request_burst without max_request_rate and of
    a listener's max_connections above the global one, which bounds it:
    neither does what it says."""
    lines = valid_lines(*certificate)
    lines[5:5] = ["max_connections = 100",                  # 6
                  "stream_window = 8m",                     # 7
                  "connection_window = 4m"]                 # 8
    lines[9:9] = ["max_connections = 200"]                  # 10, in [listener main] (9)
    lines += ["[route slow]",                               # 31
              "path_prefix = /slow/",
              "backend = app",
              "request_burst = 5",
              "[route gone]",                               # 35
              "path_prefix = /gone",
              "return = 405",
              "[route quick]",                              # 38
              "path_prefix = /quick/",
              "backend = app",
              "max_request_rate = 10",
              "request_burst = 5"]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    got = [re.match(r"qproxy\[warn\]: %s:(\d+): (.*)" % re.escape(path), l).groups()
           for l in p.stderr.splitlines()]
    assert [(int(n), m.split(":")[0]) for n, m in got] == [
        (8, "stream_window is larger than connection_window"),
        (9, "listener main"),
        (31, "route slow"),
        (35, "route gone answers 405 without the Allow field that RFC 9110 asks of it"),
    ], p.stderr
    assert got[1][1] == ("listener main: its max_connections, 200, is above the global "
                         "max_connections, 100, which bounds it"), got
    assert got[2][1] == "route slow: request_burst does nothing without max_request_rate", got


def test_an_answer_without_the_field_its_status_needs_is_warned_about(tmp_path,
                                                                     certificate):
    """-t warns, at the route's line, of a return of 405 without Allow or
    of 401 without WWW-Authenticate (RFC 9110 asks them of both), in any
    case; with them, or of another status, nothing. The file is still
    good."""
    lines = valid_lines(*certificate) + [
        "[route no-allow]",                   # 27
        "path_prefix = /a",
        "return = 405",
        "[route allow]",                      # 30
        "path_prefix = /b",
        "return = 405",
        "set_response_header = allow: GET",
        "[route no-challenge]",               # 34
        "path_prefix = /c",
        "return = 401 who are you?",
        "set_response_header = X-Why: login",
        "[route challenge]",                  # 38
        "path_prefix = /d",
        "return = 401",
        "set_response_header = WWW-Authenticate: Bearer",
        "[route gone]",                       # 42
        "path_prefix = /e",
        "return = 410",
    ]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    assert sorted(p.stderr.splitlines()) == [
        "qproxy[warn]: %s:27: route no-allow answers 405 without the Allow field that "
        "RFC 9110 asks of it: add set_response_header = Allow: ..." % path,
        "qproxy[warn]: %s:34: route no-challenge answers 401 without the WWW-Authenticate "
        "field that RFC 9110 asks of it: add set_response_header = WWW-Authenticate: "
        "..." % path,
    ], p.stderr


def test_a_route_the_routes_before_it_hide_is_warned_about(tmp_path, certificate):
    """-t says, at its line, which route no request can reach, and which
    route before it takes them (by host, wildcard, path prefix, methods
    and header); a route that takes some requests the other does not is
    no news. The file is still good."""
    lines = valid_lines(*certificate) + [
        "[route api-v1]",                     # 27: after api, under /api/
        "path_prefix = /api/v1/",
        "backend = app",
        "[route wild]",                       # 30
        "host = *.example.org",
        "methods = GET HEAD",
        "header = X-Canary",
        "backend = app",
        "[route deeper]",                     # 35: every one wild takes
        "host = a.b.example.org",
        "methods = GET",
        "header = X-Canary: 1",
        "header = X-Team: web",
        "backend = app",
        "[route posts]",                      # 41: a POST, which wild does not take
        "host = a.example.org",
        "methods = POST",
        "header = X-Canary",
        "backend = app",
        "[route apex]",                       # 46: not under *.example.org
        "host = example.org",
        "backend = other",
        "[route all]",                        # 49
        "backend = app",
        "[route after]",                      # 51
        "host = other.example",
        "path_prefix = /x",
        "backend = app",
    ]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    warned = sorted(l.split(": ", 1)[1] for l in p.stderr.splitlines()
                    if "is never used" in l)
    assert warned == [
        "%s:27: route api-v1 is never used: route api, at %s:24, comes first "
        "and takes every request it would" % (path, path),
        "%s:35: route deeper is never used: route wild, at %s:30, comes first "
        "and takes every request it would" % (path, path),
        "%s:51: route after is never used: route byhost, at %s:20, comes first "
        "and takes every request it would" % (path, path),
    ], p.stderr


def test_an_auth_basic_file_of_no_users_is_warned_about(tmp_path, certificate):
    """A users file of comments alone is taken (every request to the
    route refused, 401), and -t says so at the route's line. (Such a file
    had qsort and bsearch given no array, which UBSan stops at.)"""
    users = tmp_path / "users"
    users.write_text("# nobody yet\n\n")
    lines = valid_lines(*certificate) + [
        "[route locked]",                     # 27
        "path_prefix = /locked/",
        "auth_basic_file = %s" % users,
        "backend = app",
    ]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    assert ("qproxy[warn]: %s:27: route locked: its auth_basic_file has no users: every "
            "request is refused (401)" % path) in p.stderr.splitlines(), p.stderr


def test_long_lines_are_read_whole(qproxy_factory, backend_app, tmp_path, certificate):
    """Lines past inih's 200-byte buffer, refused at 198 characters, are
    read up to 8192: a redirect's URL of 2000 bytes and a 600-byte
    Content-Security-Policy reach the client as written; the line that
    follows them keeps its number in errors."""
    url = "https://example.com/" + "u" * 1980
    csp = "default-src 'self'; img-src " + " ".join(
        "https://img%d.example.com" % i for i in range(23))
    assert len(url) == 2000 and len(csp) > 600
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server,
        first_routes=[("route long", [("path_prefix", "/long"), ("redirect", "308 " + url),
                                      ("set_response_header",
                                       "Content-Security-Policy: " + csp)])]))
    r = h3_get(q.url("/long"))
    assert r.status == 308, r
    assert r.header("location") == url
    assert r.header("content-security-policy") == csp
    lines = valid_lines(*certificate)
    lines[25:25] = ["set_response_header = Content-Security-Policy: " + csp,
                    "bogus = 1"]
    path = write(tmp_path, lines)
    p = check(path)
    assert p.returncode == 1
    assert (p.stdout + p.stderr).splitlines() == [
        "%s:27: unknown key \"bogus\" in [route api]" % path], p.stderr


def test_many_routes_are_looked_up_not_walked(qproxy_factory, backend_app, tmp_path):
    """6,000 routes of a host each, each with a backend of its own: a
    request for the last host reaches its route, whose count goes on
    across two reloads, and one for none of their hosts the route after;
    qproxyctl metrics shows them all, in more than the 16 MiB that was
    the most a reply could hold ("reply too long").
    Sections, backends and routes are found by their names and hosts, not
    by a walk of them all for each: strcmpcount.c counts qproxy's calls to
    strcmp. With the walks, the start and two reloads made about 225
    million at 5,000 routes (a reload of 10,000 routes stalled the loop
    1.5 s); now about 3 million."""
    n = 6000
    q = qproxy_factory(sections=many_sites_sections(backend_app.tcp_server, n), start=False)
    count = str(tmp_path / "strcmp.count")
    preload_strcmpcount(q, count)
    q.start()

    def get(host):
        r = h3_get("https://%s:%d/app/bytes/10" % (host, q.port),
                   resolve=["%s:%d:127.0.0.1" % (host, q.port)])
        assert r.status == 200 and len(r.body) == 10, r
        return r

    def requests(name):
        p = qproxyctl(q, "routes", "--json")
        assert p.returncode == 0, p.stderr
        return [r for r in json.loads(p.stdout)["routes"] if r["name"] == name][0]["requests"]

    # a request counts once its stream has ended, which may be after the
    # client has the whole response
    last = "site%d.example.com" % n
    for i in range(3):
        get(last)
        get("nosuch.example.com")
        wait_until(lambda: requests("r%d" % n) == i + 1 and requests("app") == i + 1,
                   "both requests counted")
        if i < 2:
            p = qproxyctl(q, "reload")
            assert p.returncode == 0, p.stdout + p.stderr
    p = qproxyctl(q, "metrics")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) > 16 << 20
    assert 'qproxy_route_requests_total{route="r%d"} 3\n' % n in p.stdout
    assert 'qproxy_backend_server_requests_total{backend="b%d",' % n in p.stdout
    q.stop()
    with open(count) as f:
        calls = int(f.read())
    assert calls < 10 * 1000 * 1000, calls


def test_a_large_backends_servers_are_looked_up_at_a_reload(qproxy_factory, backend_app,
                                                            tmp_path):
    """A backend of 5,000 servers, its one that is not a backup last: its
    count goes on across a reload, and across one that puts it first and
    the others in the reverse order, as each server's counters and
    health go on in the server of the same address. The old servers are
    looked up by their address, not walked for each: strcmpcount.c
    counts qproxy's calls to strcmp. With the walk, the start and two
    reloads made about 25 million; now about 200,000."""
    n = 4999
    spares = ["127.0.0.2:%d backup" % (20000 + i) for i in range(n)]
    servers = [("server", s) for s in spares] + [("server", backend_app.tcp_server)]
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server, backends=[("backend many", servers)],
        first_routes=[("route many", [("host", "many.example.com"),
                                      ("backend", "many")])]), start=False)
    count = str(tmp_path / "strcmp.count")
    preload_strcmpcount(q, count)
    q.start()

    def requests():
        p = qproxyctl(q, "backends", "--json")
        assert p.returncode == 0, p.stderr
        b = [b for b in json.loads(p.stdout)["backends"] if b["name"] == "many"][0]
        return [s["requests"] for s in b["servers"]
                if s["address"] == backend_app.tcp_server][0]

    for i in range(3):
        r = h3_get("https://many.example.com:%d/app/bytes/10" % q.port,
                   resolve=["many.example.com:%d:127.0.0.1" % q.port])
        assert r.status == 200 and len(r.body) == 10, r
        wait_until(lambda: requests() == i + 1, "the request counted")
        if i == 1:
            # the server first, the others in the reverse order
            with open(q.conf) as f:
                text = f.read()
            real = "server = %s\n" % backend_app.tcp_server
            head, rest = text.split("[backend many]\n", 1)
            body, tail = rest.split(real, 1)
            lines = body.splitlines(True)
            text = head + "[backend many]\n" + real + "".join(reversed(lines)) + tail
            with open(q.conf, "w") as f:
                f.write(text)
        if i < 2:
            p = qproxyctl(q, "reload")
            assert p.returncode == 0, p.stdout + p.stderr
    q.stop()
    with open(count) as f:
        calls = int(f.read())
    assert calls < 2 * 1000 * 1000, calls


def test_a_reload_of_many_warnings_says_how_many_more_the_log_has(qproxy_factory,
                                                                  backend_app):
    """A reload's reply holds its warnings up to 64 KiB, whole lines
    only, and then says how many more the log has, where every one is:
    1,000 routes hidden by the one before them made 999 "never used"
    warnings, and the reply ended in the middle of one without a word."""
    n = 1000
    routes = [("route r%d" % i, [("host", "same.example"), ("backend", "app")])
              for i in range(n)]
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server, routes=routes))
    log0 = len(q.log_text())
    p = qproxyctl(q, "reload")
    assert p.returncode == 0, p.stdout + p.stderr
    said = [l for l in p.stdout.splitlines() if l.startswith("warning: ")]
    hidden = [l for l in said if "is never used" in l]
    assert said[-1] == "warning: %d more warning(s) in the log" % (n - 1 - len(hidden)), said[-1]
    assert 100 < len(hidden) < n - 1
    assert all(l.endswith("comes first and takes every request it would") for l in hidden)
    assert len(p.stdout) < 64 << 10
    logged = [l for l in q.log_text()[log0:].splitlines() if "is never used" in l]
    assert len(logged) == n - 1
