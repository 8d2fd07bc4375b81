#!/usr/bin/python3
"""Writes the hand-made seed inputs of the fuzz targets into corpus/<target>/.

Run from anywhere: python3 tests/fuzz/make_seeds.py [target...]. Files are
named seed-*; inputs the fuzzers found (crashes kept as regressions) live
beside them under other names and are left alone. fuzz_udp's datagram
captures come from capture_udp.py instead.
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

from qpack import prefix_int  # noqa: E402


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- fuzz_config: the file itself ----

# Files that exist on any Linux host, so certificate and private_key pass.
CERT = "/etc/passwd"

BASE = """[global]
log_level = debug
shutdown_timeout = 10s

[listener main]
address = 127.0.0.1:8443
certificate = %s
private_key = %s

[backend app]
server = 127.0.0.1:8080
server = unix:/run/qproxy-test/app.sock
connect_timeout = 1s
read_timeout = 2s

[backend other]
server = 127.0.0.1:8081

[route byhost]
host = other.example
backend = other

[route api]
path_prefix = /api/
backend = app
""" % (CERT, CERT)


def config_seeds():
    t = "fuzz_config"
    with open(os.path.join(ROOT, "conf", "qproxy.conf")) as f:
        write(t, "example-conf", f.read())
    write(t, "valid", BASE)
    write(t, "every-global-key", """\ufeff; a BOM, then every key
[global]
user = root
control_socket = /run/qproxy/control.sock
error_log = stderr
log_level = warn
access_log = /var/log/qproxy/access.log
access_log_format = json
secret_file = /var/lib/qproxy/secret
retry_threshold = 0
congestion_control = bbr
qlog_dir = /tmp
keylog_file = off
shutdown_timeout = 1.5s
idle_timeout = 500ms
stream_window = 4k
connection_window = 256M
response_buffer_size = 64m
max_header_size = 1M
qpack_table_size = 0
qpack_blocked_streams = 1000
max_streams_bidi = 10000
[global]

[listener a]
address = [::]:443
address = 0.0.0.0:443
certificate = %s
private_key = %s
retry = always
early_data = on
early_data_methods = GET HEAD OPTIONS PROPFIND
[listener b]
address = [::1]:4433 ; a comment
certificate = %s
private_key = %s
retry = never
[backend app]
server = [::1]:8080
max_idle_connections = 0
connect_timeout = 1h
read_timeout = 2m
[route v6]
host = [2001:DB8::1]
backend = app
[route wild]
host = *.Example.COM.
path_prefix = /static/
backend = app
[route default]
backend = app
""" % (CERT, CERT, CERT, CERT))
    write(t, "errors", """key = outside
[global
[global] trailing
[listener]
[listener bad/name]
[bogus x]
[listener l]
address = 127.0.0.1:99999
address = 127.0.0.1:443
address = 127.0.0.1:443
certificate = /nonexistent
private_key = /
retry = sometimes
early_data_methods = get
[backend b]
server = host.example:80
server = unix:relative
connect_timeout = 0
read_timeout = 25h
max_idle_connections = -1
unknown = 1
server
= value
[route r]
host = bad host
path_prefix = no-slash
backend = missing
[route r]
[global]
log_level = loud
stream_window = 1k
connection_window = 1x
max_header_size = 18446744073709551616
idle_timeout = 1.5.5s
shutdown_timeout = 4294967296
user = no-such-user-here
control_socket = /%s
access_log = relative
""" % ("x" * 120))
    write(t, "nul-byte", "[global]\nlog_level = info\0\n")
    write(t, "long-line", "[global]\nlog_level = " + "a" * 300 + "\n")
    write(t, "durations", "[global]\n" + "".join(
        "shutdown_timeout = %s\n" % d for d in
        ["0", "0s", "24h", "86400", "86400.0001", "1.123456789123s",
         "999ms", "1m", ".5s", "5.s", "5 s", "-1s"]))
    write(t, "listener-only", "[listener x]\naddress = 127.0.0.1:1\n"
          "certificate = %s\nprivate_key = %s\n" % (CERT, CERT))
    write(t, "crlf", BASE.replace("\n", "\r\n"))
    write(t, "empty", "")
    # one error each, in an otherwise valid file (as tests/integration's
    # test_config.py breaks it)
    broken = {
        "unknown-key": ("private_key = %s" % CERT,
                        "private_key = %s\nbogus_key = 1" % CERT),
        "duplicate-key": ("read_timeout = 2s",
                          "read_timeout = 2s\nread_timeout = 3s"),
        "bad-duration": ("connect_timeout = 1s", "connect_timeout = 1x"),
        "bad-address": ("address = 127.0.0.1:8443",
                        "address = 127.0.0.1:0x20"),
        "ipv6-unbracketed": ("address = 127.0.0.1:8443",
                             "address = ::1:8443"),
        "missing-backend": ("backend = other", "backend = nowhere"),
        "missing-server": ("server = 127.0.0.1:8081", "connect_timeout = 1s"),
        "unix-too-long": ("server = unix:/run/qproxy-test/app.sock",
                          "server = unix:/" + "d" * 120),
        "duplicate-section": ("[backend other]", "[backend app]"),
        "bad-section-name": ("[route api]", "[route a/b]"),
        "header-garbage": ("[route api]", "[route api] x"),
        "no-equals": ("backend = app", "backend app"),
        "empty-value": ("host = other.example", "host ="),
        "host-wildcard": ("host = other.example", "host = *.Other.Example."),
        "host-bad": ("host = other.example", "host = -a..b"),
        "size-overflow": ("read_timeout = 2s",
                          "read_timeout = 2s\n[global]\n"
                          "max_header_size = 99999999999999999999k"),
        "listener-in-use": ("[backend app]",
                            "[listener second]\naddress = 127.0.0.1:8443\n"
                            "certificate = %s\nprivate_key = %s\n"
                            "[backend app]" % (CERT, CERT)),
    }
    for name, (old, new) in broken.items():
        assert old in BASE, name
        write(t, name, BASE.replace(old, new, 1))


# ---- fuzz_http1: flags, a 4-byte cutting seed, the response bytes ----

def http1(name, resp, head=False, eof=True, seed=0x01020304):
    flags = (1 if head else 0) | (2 if eof else 0)
    write("fuzz_http1", name, bytes([flags]) + struct.pack(">I", seed) +
          (resp.encode("latin-1") if isinstance(resp, str) else resp))


def http1_seeds():
    http1("length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    http1("length-list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n"
          "content-length: 5\r\n\r\nhello")
    http1("length-conflict", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
          "Content-Length: 6\r\n\r\nhello!")
    http1("length-zero", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    http1("length-short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    http1("length-extra", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
          "abcHTTP/1.1 200 OK\r\n\r\n")
    http1("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    http1("chunked-ext-trailers", "HTTP/1.1 200 OK\r\n"
          "Transfer-Encoding: gzip, chunked\r\n\r\n"
          "5;name=value;quoted=\"a;b\"\r\nhello\r\nA \t; x\r\n0123456789\r\n"
          "0;last\r\nExpires: never\r\nX-Trailer: a b\r\n\r\n", seed=7)
    http1("chunked-upper-hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
          "chunked\r\n\r\n00aF\r\n" + "x" * 0xaf + "\r\n0\r\n\r\n")
    http1("chunked-bad-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
          "chunked\r\n\r\nfffffffffffffffff\r\n")
    http1("chunked-and-length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    http1("chunked-twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    http1("te-not-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
          "\r\nbytes until close")
    http1("chunked-eof", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
          "\r\n5\r\nhel")
    http1("close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
          "\r\nuntil the end", seed=99)
    http1("close-no-eof", "HTTP/1.1 200 OK\r\n\r\nmore to come", eof=False)
    http1("http10-keepalive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
          "Content-Length: 2\r\n\r\nokHTTP/1.0 204 No Content\r\n\r\n")
    http1("connection-close", "HTTP/1.1 200 OK\r\nConnection: Upgrade, close"
          "\r\nContent-Length: 1\r\n\r\nx")
    http1("continue-then-200", "HTTP/1.1 100 Continue\r\n\r\n"
          "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    http1("switching", "HTTP/1.1 101 Switching Protocols\r\n"
          "Upgrade: websocket\r\n\r\n")
    http1("head", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
          head=True)
    http1("204", "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n")
    http1("304", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked"
          "\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    http1("pipelined", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n"
          "0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    http1("bare-lf", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx")
    http1("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n")
    http1("space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n"
          "\r\nx")
    http1("no-reason", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx")
    http1("bad-version", "HTTP/2.0 200 OK\r\n\r\n")
    http1("ctl-in-value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n")
    http1("many-headers", "HTTP/1.1 200 OK\r\n" +
          "".join("X-H%d: %d\r\n" % (i, i) for i in range(130)) + "\r\n")
    http1("huge-length", "HTTP/1.1 200 OK\r\nContent-Length: "
          "4611686018427387904\r\n\r\n")
    http1("chunk-line-too-long", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
          "chunked\r\n\r\n1;" + "e" * 4100 + "\r\nx\r\n0\r\n\r\n")
    http1("trailer-obs-fold", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
          "chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n")


# ---- fuzz_request: flags, then length-prefixed names and values ----

def field(s):
    if isinstance(s, str):
        s = s.encode("latin-1")
    n = len(s)
    if n < 255:
        return bytes([n]) + s
    return b"\xff" + struct.pack(">H", n) + s


def request(name, fields, flags=0x01):
    write("fuzz_request", name, bytes([flags]) +
          b"".join(field(n) + field(v) for n, v in fields))


GET = [(":method", "GET"), (":scheme", "https"),
       (":authority", "example.com"), (":path", "/")]


def request_seeds():
    request("get", GET + [("user-agent", "fuzz"), ("accept", "*/*")])
    request("get-v6-early", GET + [("cookie", "a=1"), ("cookie", "b=2")],
            flags=0x01 | 0x02 | 0x04)
    request("post-length", [(":method", "POST"), (":scheme", "https"),
                            (":authority", "example.com:443"),
                            (":path", "/upload?x=1"),
                            ("content-length", "10"),
                            ("content-type", "text/plain")],
            flags=0x10 | (3 << 5))
    request("post-chunked", [(":method", "POST"), (":scheme", "http"),
                             (":authority", "a.example"), (":path", "/p")],
            flags=0x00)
    request("put-all-in", [(":method", "PUT"), (":scheme", "https"),
                           (":authority", "a.example"), (":path", "/p")],
            flags=0x10 | (5 << 5))
    request("host-only", [(":method", "GET"), (":scheme", "https"),
                          (":path", "/"), ("host", "example.com")])
    request("host-and-authority", GET + [("host", "EXAMPLE.com")])
    request("options-star", [(":method", "OPTIONS"), (":scheme", "https"),
                             (":authority", "x"), (":path", "*")])
    request("connect", [(":method", "CONNECT"),
                        (":authority", "example.com:443")])
    request("proxy-fields", GET + [
        ("x-forwarded-for", "10.0.0.1"), ("forwarded", "for=10.0.0.1"),
        ("via", "1.1 other"), ("te", "trailers"),
        ("expect", "100-continue"), ("early-data", "1"),
        ("http2-settings", "x"), ("x-forwarded-proto", "http")])
    # client_cert_header's: dropped, whether a certificate was shown (0x04)
    request("client-cert-field", GET + [("x-client-cert", "Hash=forged")], 0x05)
    # and spelt with "_"
    request("client-cert-spellings", GET + [("x_client_cert", "a"), ("x-client_cert", "b")],
            0x05)
    # compress = gzip's reading of them (check_accept)
    request("accept-encoding", GET + [("accept-encoding", "br;q=1.0, gzip;q=0.5, *;q=0"),
                                      ("accept-encoding", "x-gzip; Q=0.001 ,, identity")])
    request("accept-encoding-malformed", GET + [("accept-encoding", "gzip;q=1.5, *;q=0.")])
    request("crlf-in-value", GET + [("x-a", "a\r\nx-injected: 1")])
    request("nul-in-value", GET + [("x-a", "a\0b")])
    request("uppercase-name", GET + [("X-A", "1")])
    request("space-in-name", GET + [("x a", "1")])
    request("colon-in-name", GET + [("x:a", "1")])
    request("pseudo-after-regular", [(":method", "GET"), ("x", "1"),
                                     (":path", "/")])
    request("repeated-pseudo", GET + [(":path", "/again")])
    request("unknown-pseudo", GET + [(":protocol", "websocket")])
    request("connection-fields", GET + [("connection", "close"),
                                        ("keep-alive", "1"),
                                        ("upgrade", "h2c"),
                                        ("transfer-encoding", "chunked"),
                                        ("proxy-connection", "x")])
    request("two-lengths", GET + [("content-length", "1"),
                                  ("content-length", "1")], flags=0)
    request("length-with-fin", GET + [("content-length", "5")])
    request("bad-length", GET + [("content-length", "+5")], flags=0)
    request("body-too-long", [(":method", "POST"), (":scheme", "https"),
                              (":authority", "a"), (":path", "/"),
                              ("content-length", "3")], flags=(4 << 5))
    request("path-with-space", [(":method", "GET"), (":scheme", "https"),
                                (":authority", "a"), (":path", "/a b")])
    request("userinfo", [(":method", "GET"), (":scheme", "https"),
                         (":authority", "u@a"), (":path", "/")])
    request("scheme-ftp", [(":method", "GET"), (":scheme", "ftp"),
                           (":authority", "a"), (":path", "/")])
    request("odd-method", [(":method", "M-SEARCH"), (":scheme", "https"),
                           (":authority", "a"), (":path", "/x")])
    request("long-value", GET + [("x-long", "v" * 3000)], flags=0x01)
    request("too-large", GET + [("x-long", "v" * 1200)], flags=0x09)


# ---- fuzz_control: what a client sends ----

def control_seeds():
    t = "fuzz_control"
    for cmd in ["stats", "conns", "backends", "routes", "reload", "reopen", "version",
                "upgrade"]:
        write(t, cmd, "QPROXY/1 %s\n" % cmd)
        write(t, cmd + "-json", "QPROXY/1 %s json\r\n" % cmd)
    write(t, "no-newline", "QPROXY/1 stats")
    write(t, "empty-line", "\n")
    write(t, "bad-version", "QPROXY/3 stats\n")
    # QPROXY/2: the same replies, each with its end line
    write(t, "v2-stats", "QPROXY/2 stats\n")
    write(t, "v2-conns-json", "QPROXY/2 conns json\r\n")
    write(t, "v2-reload", "QPROXY/2 reload\n")
    write(t, "v2-disable", "QPROXY/2 disable app 127.0.0.1:8080\n")
    write(t, "v2-alone", "QPROXY/2\r\n")
    write(t, "v2-unknown", "QPROXY/2 st\n")
    write(t, "v2-too-long", "QPROXY/2 " + "d" * (1024 - 9) + "\n")
    write(t, "v2-no-space", "QPROXY/2stats\n")
    write(t, "unknown", "QPROXY/1 frobnicate\x01\xff\"\n")
    write(t, "two-spaces", "QPROXY/1  stats\n")
    write(t, "extra-arg", "QPROXY/1 stats json json\n")
    write(t, "nul", "QPROXY/1 st\0ats\n")
    write(t, "two-lines", "QPROXY/1 version\nQPROXY/1 reload\n")
    write(t, "long", "QPROXY/1 " + "a" * 1100 + "\n")
    write(t, "exactly-max", "QPROXY/1 " + "b" * (1023 - 9) + "\n")
    write(t, "one-too-long", "QPROXY/1 " + "c" * (1024 - 9) + "\n")
    write(t, "crlf-only", "\r\n")
    write(t, "cr-inside", "QPROXY/1 st\rats\n")
    write(t, "prefix", "QPROXY/1 sta\n")
    write(t, "tab", "QPROXY/1\tstats\n")
    write(t, "json-reload", "QPROXY/1 reload json\n")
    # a worker's reload in steps, as its supervisor asks it
    write(t, "v2-reload-prepare", "QPROXY/2 reload prepare 12\n")
    write(t, "v2-reload-prepare-digest",
          "QPROXY/2 reload prepare 12 0123456789abcdef\n")
    write(t, "reload-commit-too-long", "QPROXY/1 reload commit 12345678901234567890\n")
    write(t, "binary", bytes(range(256)))


# ---- fuzz_udp: a script of operations (enum op in fuzz_udp.c) ----

(OP_CONNECT, OP_PUMP, OP_STREAM, OP_UNI, OP_REQUEST, OP_RESET, OP_RAW_A,
 OP_RAW_B, OP_CORRUPT, OP_BACKEND, OP_CLOSE, OP_MIGRATE, OP_KEY_UPDATE,
 OP_REPLAY, OP_SHUTDOWN) = range(15)


def op(code, arg=b""):
    if isinstance(arg, str):
        arg = arg.encode("latin-1")
    return bytes([code]) + field(arg)


def fields(pairs):
    return b"".join(field(n) + field(v) for n, v in pairs)


def varint(v):
    if v < 64:
        return bytes([v])
    if v < 16384:
        return struct.pack(">H", 0x4000 | v)
    return struct.pack(">I", 0x80000000 | v)


def frame(ftype, payload):
    return varint(ftype) + varint(len(payload)) + payload


def qpack_literal(pairs):
    """A field section of literal field lines with literal names."""
    out = b"\0\0"
    for n, v in pairs:
        n, v = n.encode(), v.encode()
        out += prefix_int(0x20, 3, len(n)) + n + prefix_int(0, 7, len(v)) + v
    return out


def udp(name, *ops):
    write("fuzz_udp", name, b"".join(ops))


def udp_seeds():
    get = fields(GET)
    post = fields([(":method", "POST"), (":scheme", "https"),
                   (":authority", "a.example"), (":path", "/upload"),
                   ("content-length", "5")])
    udp("get", op(OP_CONNECT, b"\0"), op(OP_REQUEST, b"\x04" + get),
        op(OP_PUMP, b"\x07"))
    udp("get-retry-v2", op(OP_CONNECT, b"\x03"),
        op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("get-full-handshake", op(OP_CONNECT, b"\x20"),
        op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("early-data", op(OP_CONNECT, b"\x40"), op(OP_PUMP, b"\x07"))
    udp("early-data-retry", op(OP_CONNECT, b"\x41"), op(OP_PUMP, b"\x07"))
    udp("get-cvn-nosni", op(OP_CONNECT, b"\x0c"),
        op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("post-body", op(OP_CONNECT),
        op(OP_REQUEST, b"\x01" + post),
        op(OP_STREAM, b"\x05" + frame(0, b"hello")), op(OP_PUMP, b"\x07"))
    put = fields([(":method", "PUT"), (":scheme", "https"),
                  (":authority", "a.example"), (":path", "/put")])
    udp("post-chunked-reset", op(OP_CONNECT), op(OP_REQUEST, b"\x02" + put),
        op(OP_STREAM, b"\x02" + frame(0, b"x" * 100)),
        op(OP_RESET, b"\x0a\x01\x0c"), op(OP_PUMP, b"\x03"))
    udp("put-chunked", op(OP_CONNECT), op(OP_REQUEST, b"\x00" + put),
        op(OP_PUMP, b"\x03"), op(OP_STREAM, b"\x00" + frame(0, b"hello")),
        op(OP_PUMP, b"\x03"), op(OP_STREAM, b"\x04" + frame(0, b"world")),
        op(OP_PUMP, b"\x07"))
    udp("expect-continue", op(OP_CONNECT),
        op(OP_REQUEST, b"\x00" + fields(
            [(":method", "POST"), (":scheme", "https"),
             (":authority", "a.example"), (":path", "/upload"),
             ("content-length", "5"), ("expect", "100-continue")])),
        op(OP_PUMP, b"\x03"), op(OP_STREAM, b"\x04" + frame(0, b"hello")),
        op(OP_PUMP, b"\x07"))
    udp("connect-method", op(OP_CONNECT), op(OP_REQUEST, b"\x04" + fields(
        [(":method", "CONNECT"), (":authority", "a.example:443")])),
        op(OP_PUMP, b"\x03"))
    udp("header-too-large", op(OP_CONNECT),
        op(OP_REQUEST, b"\x04" + fields(GET + [("x-big", "b" * 17000)])),
        op(OP_PUMP, b"\x03"))
    udp("no-route-scheme", op(OP_CONNECT), op(OP_REQUEST, b"\x04" + fields(
        [(":method", "GET"), (":scheme", "ftp"), (":authority", "a"),
         (":path", "/")])), op(OP_PUMP, b"\x03"))
    udp("keepalive-reuse", op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get),
        op(OP_PUMP, b"\x07"), op(OP_REQUEST, b"\x05" + get),
        op(OP_PUMP, b"\x07"))
    udp("backend-hop-by-hop", op(OP_BACKEND, b"\x00" +
        b"HTTP/1.1 200 OK\r\nConnection: x-foo, keep-alive\r\n"
        b"X-Foo: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked"
        b"\r\nContent-Length: 3\r\nUpgrade: h2c\r\nX-Ok: yes\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get),
        op(OP_REQUEST, b"\x05" + get), op(OP_PUMP, b"\x07"))
    udp("body-longer-than-length", op(OP_CONNECT),
        op(OP_REQUEST, b"\x01" + post),
        op(OP_STREAM, b"\x05" + frame(0, b"hello, world")))
    udp("raw-headers-frame", op(OP_CONNECT),
        op(OP_STREAM, b"\x04" + frame(1, qpack_literal(GET))),
        op(OP_PUMP, b"\x05"))
    udp("malformed-headers", op(OP_CONNECT),
        op(OP_STREAM, b"\x04" + frame(1, b"\0\0\x2f\x7f")),
        op(OP_STREAM, b"\x05" + frame(1, qpack_literal(
            [(":method", "GET"), ("Upper", "x")]))), op(OP_PUMP, b"\x05"))
    udp("qpack-dynamic", op(OP_CONNECT),
        # encoder stream: set capacity 256, insert with literal name
        op(OP_UNI, b"\x01" + b"\x3f\xe1\x01" + b"\x44host\x0bexample.com"),
        # a field section that refers to the dynamic table entry
        op(OP_STREAM, b"\x04" + frame(1, b"\x02\x00" +
                                      qpack_literal(GET)[2:] + b"\x80")),
        op(OP_PUMP, b"\x05"))
    udp("qpack-blocked", op(OP_CONNECT),
        op(OP_STREAM, b"\x04" + frame(1, b"\x05\x00\x80")),
        op(OP_PUMP, b"\x03"))
    udp("control-frames", op(OP_CONNECT, b"\x10"),
        op(OP_UNI, b"\x00" + b"\x00" + frame(4, varint(6) + varint(4096) +
                                            varint(1) + varint(100))),
        op(OP_UNI, b"\x00" + frame(7, varint(0))),        # GOAWAY
        op(OP_UNI, b"\x00" + frame(0xd, varint(3))),      # MAX_PUSH_ID
        op(OP_UNI, b"\x00" + frame(3, varint(0))),        # CANCEL_PUSH
        op(OP_PUMP, b"\x03"))
    udp("second-control-stream", op(OP_CONNECT),
        op(OP_UNI, b"\x03" + b"\x00" + frame(4, b"")), op(OP_PUMP))
    udp("data-before-headers", op(OP_CONNECT),
        op(OP_STREAM, b"\x04" + frame(0, b"abc")), op(OP_PUMP, b"\x03"))
    udp("unknown-frames", op(OP_CONNECT),
        op(OP_STREAM, b"\x00" + frame(0x21, b"grease") +
           frame(1, qpack_literal(GET)) + frame(0x1f * 3 + 0x21, b"")),
        op(OP_STREAM, b"\x04" + frame(5, b"\x00")), op(OP_PUMP, b"\x05"))
    udp("backend-chunked", op(OP_BACKEND, b"\x00" +
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    # BF_SPLIT (0x08): the answer in two reads, cut at (flags >> 4) + 1
    # seventeenths: here inside the head, and inside a chunk-size line.
    udp("backend-split-head", op(OP_BACKEND, bytes([0x08 | 3 << 4]) +
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"),
        op(OP_REQUEST, b"\x05" + get), op(OP_PUMP, b"\x07"))
    udp("backend-split-chunked", op(OP_BACKEND, bytes([0x08 | 11 << 4]) +
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("backend-close-delimited", op(OP_BACKEND, b"\x01" +
        b"HTTP/1.0 200 OK\r\n\r\nuntil close"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("backend-garbage", op(OP_BACKEND, b"\x01garbage\r\n\r\n"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get), op(OP_PUMP, b"\x07"))
    udp("backend-early-100", op(OP_BACKEND, b"\x02" +
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get),
        op(OP_REQUEST, b"\x05" + get), op(OP_PUMP, b"\x07"))
    udp("backend-silent", op(OP_BACKEND, b"\x04"), op(OP_CONNECT),
        op(OP_REQUEST, b"\x04" + get), op(OP_RESET, b"\x00"),
        op(OP_PUMP, b"\x03"))
    udp("backend-too-long", op(OP_BACKEND, b"\x00" +
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcdef"),
        op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get),
        op(OP_REQUEST, b"\x05" + get), op(OP_PUMP, b"\x07"))
    udp("four-requests", op(OP_CONNECT),
        *[op(OP_REQUEST, bytes([0x04 | i]) + get) for i in range(4)],
        op(OP_PUMP, b"\x07"))
    udp("rapid-reset", op(OP_CONNECT),
        *[op(OP_REQUEST, bytes([i & 3]) + get) + op(OP_RESET, bytes([i & 3]))
          for i in range(8)], op(OP_PUMP, b"\x07"))
    udp("migrate", op(OP_CONNECT), op(OP_MIGRATE, b"\x00"),
        op(OP_REQUEST, b"\x04" + get), op(OP_MIGRATE, b"\x01"),
        op(OP_PUMP, b"\x07"))
    udp("key-update", op(OP_CONNECT), op(OP_KEY_UPDATE),
        op(OP_REQUEST, b"\x04" + get), op(OP_KEY_UPDATE),
        op(OP_PUMP, b"\x07"))
    udp("close", op(OP_CONNECT), op(OP_REQUEST, b"\x00" + get),
        op(OP_CLOSE, b"\x01"), op(OP_REPLAY, b"\x00"),
        op(OP_PUMP, b"\x03"))
    udp("corrupt-initial", op(OP_CORRUPT, b"\x00\x01"), op(OP_CONNECT),
        op(OP_REQUEST, b"\x04" + get), op(OP_CORRUPT, b"\x05\x80\x20\x01"),
        op(OP_PUMP, b"\x03"))
    udp("replay", op(OP_CONNECT), op(OP_REQUEST, b"\x04" + get),
        op(OP_REPLAY, b"\x00"), op(OP_REPLAY, b"\x01"),
        op(OP_REPLAY, b"\x05"), op(OP_PUMP, b"\x03"))
    udp("shutdown", op(OP_CONNECT), op(OP_REQUEST, b"\x00" + get),
        op(OP_SHUTDOWN), op(OP_STREAM, b"\x04"),
        op(OP_REQUEST, b"\x05" + get), op(OP_PUMP, b"\x07"))
    udp("short-header-unknown", op(OP_RAW_A, b"\x40" + b"\x11" * 16 +
                                   b"\x00" * 40))
    udp("version-negotiation", op(OP_RAW_A, b"\xc0\x1a\x2a\x3a\x4a\x08" +
                                  b"\x01" * 8 + b"\x08" + b"\x02" * 8 +
                                  b"\x00" * 1200))
    udp("initial-garbage", op(OP_RAW_B, b"\xc0\x00\x00\x00\x01\x08" +
                              b"\x01" * 8 + b"\x00\x00\x44\xd0" +
                              b"\x00" * 1200))
    udp("bad-retry-token", op(OP_RAW_B, b"\xc0\x00\x00\x00\x01\x08" +
                              b"\x01" * 8 + b"\x00\x10\xb6" + b"\x5a" * 15 +
                              b"\x44\xd0" + b"\x00" * 1200))


def cert_seeds():
    """Certificates (DER) whose subjects hold what tls_cert_subject
    escapes or writes apart: specials, spaces at the ends, a '#' first,
    non-ASCII, a control character, a multi-valued RDN, a BMPString, a
    type RFC 4514 does not name, none at all. Made with the cryptography
    package, each run anew (new keys): the subject is what counts."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    A, R = x509.NameAttribute, x509.RelativeDistinguishedName

    def cert(name, subject):
        c = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
             .public_key(key.public_key()).serial_number(1)
             .not_valid_before(when).not_valid_after(when + datetime.timedelta(days=1))
             .sign(key, hashes.SHA256()))
        write("fuzz_cert", name, c.public_bytes(serialization.Encoding.DER))

    cert("plain", x509.Name([A(NameOID.COMMON_NAME, "alice"),
                             A(NameOID.ORGANIZATION_NAME, "Example")]))
    cert("specials", x509.Name([A(NameOID.COMMON_NAME, ' #a,b+c;d<e>f"g\\h '),
                                A(NameOID.ORGANIZATION_NAME, "#x")]))
    cert("non-ascii", x509.Name([A(NameOID.COMMON_NAME, "Zo\u00e9 \u2603")]))
    cert("control", x509.Name([A(NameOID.COMMON_NAME, "a\tb", _ASN1Type.UTF8String)]))
    cert("multi-valued", x509.Name([R([A(NameOID.ORGANIZATION_NAME, "Example"),
                                       A(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops")])]))
    cert("bmpstring", x509.Name([A(NameOID.TITLE, "x", _ASN1Type.BMPString)]))
    cert("oid-type", x509.Name([A(NameOID.EMAIL_ADDRESS, "a@example.com"),
                                A(NameOID.DOMAIN_COMPONENT, "example")]))
    cert("empty", x509.Name([]))


TARGETS = {
    "fuzz_config": config_seeds,
    "fuzz_http1": http1_seeds,
    "fuzz_request": request_seeds,
    "fuzz_control": control_seeds,
    "fuzz_udp": udp_seeds,
    "fuzz_cert": cert_seeds,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or TARGETS:
        TARGETS[name]()
