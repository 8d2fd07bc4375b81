"""Listeners: IPv6, wildcard binds answered from the right address, and
version negotiation for versions qproxy does not speak."""

import os
import select
import socket
import struct
import subprocess
import threading

import pytest

from helpers import expected_sha256, h3_get, h3raw, header_values, long_header_cids
from test_ops import stats

KiB = 1024


def _sections(addresses, backend):
    def build(port, cert, key):
        listener = [("address", a % port) for a in addresses]
        listener += [("certificate", cert), ("private_key", key)]
        return [
            ("global", [("log_level", "debug")]),
            ("listener main", listener),
            ("backend app", [("server", backend)]),
            ("route app", [("path_prefix", "/app/"), ("backend", "app")]),
        ]
    return build


def _have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_address_in_use_names_its_line(qproxy_factory, backend_app):
    """A start that cannot bind names the address's own line; it named the
    [listener] header, a line away from any address of several."""
    q = qproxy_factory(sections=_sections(["127.0.0.1:%d", "127.0.0.2:%d"],
                                          backend_app.tcp_server), start=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.2", q.port))
        p = subprocess.run([q.binary, "-c", q.conf], capture_output=True, text=True,
                           timeout=30)
    lines = open(q.conf).read().splitlines()
    lineno = lines.index("address = 127.0.0.2:%d" % q.port) + 1
    assert p.returncode != 0
    assert "%s:%d: listener main: cannot listen on udp 127.0.0.2:%d: Address already " \
        "in use" % (q.conf, lineno, q.port) in p.stderr, p.stderr


class _Relay:
    """Datagrams from a client on 127.0.0.1 go on to a broadcast or
    multicast address; whatever comes back goes to the client."""

    def __init__(self, target):
        self.target = target
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.back.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             socket.inet_aton("127.0.0.1"))
        self.back.bind(("127.0.0.1", 0))
        self.client = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                data, addr = s.recvfrom(65536)
                if s is self.front:
                    self.client = addr
                    self.back.sendto(data, self.target)
                elif self.client:
                    self.front.sendto(data, self.client)

    def close(self):
        self.stop = True
        self.thread.join()
        self.front.close()
        self.back.close()


@pytest.mark.parametrize("kind", ["broadcast", "multicast"])
def test_datagrams_to_broadcast_or_multicast_are_dropped(qproxy_factory, backend_app, kind):
    """A wildcard listener also receives datagrams sent to a broadcast
    address, or to a multicast group the host joined. There is no answer
    from such an address: a connection was made for them, its packets went
    out from it (EINVAL), and one such handshake turned GSO off for every
    connection."""
    q = qproxy_factory(sections=_sections(["0.0.0.0:%d"], backend_app.tcp_server))
    group = "239.255.77.%d" % (q.port % 200 + 1)
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
    relay = _Relay(("255.255.255.255" if kind == "broadcast" else group, q.port))
    before = stats(q)
    try:
        res = h3raw(relay.front.getsockname()[1],
                    [":method: GET", ":scheme: https", ":authority: localhost",
                     ":path: /app/bytes/10"], timeout=2)
    finally:
        relay.close()
        member.close()
    after = stats(q)
    assert res.outcomes != ["status 200 body 10"], res
    assert after["connections"]["total"] == before["connections"]["total"]
    assert after["udp_dropped"]["not_unicast"] > before["udp_dropped"]["not_unicast"], \
        "the %s datagrams never reached qproxy here" % kind
    # GSO is still on for everyone else
    n = 1024 * 1024
    r = h3_get("https://127.0.0.1:%d/app/bytes/%d" % (q.port, n), timeout=60)
    assert r.status == 200 and r.sha256 == expected_sha256(n)
    assert stats(q)["udp"]["gso_batches"] > after["udp"]["gso_batches"]


def test_ipv6_listener(qproxy_factory, backend_app):
    if not _have_ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback; the test needs ::1")
    q = qproxy_factory(sections=_sections(["127.0.0.1:%d", "[::1]:%d"],
                                          backend_app.tcp_server))
    r = h3_get("https://[::1]:%d/app/bytes/%d" % (q.port, KiB))
    assert r.status == 200
    assert r.sha256 == expected_sha256(KiB)
    rec = backend_app.requests[-1]
    assert header_values(rec, "x-forwarded-for") == ["::1"]
    assert any('for="[::1]"' in v for v in header_values(rec, "forwarded"))


def test_wildcard_bind_replies_from_the_address_the_client_used(
        qproxy_factory, backend_app):
    # The client's UDP socket is connected to 127.0.0.2: a reply from any
    # other source address (the kernel's choice for 0.0.0.0 without
    # IP_PKTINFO would be 127.0.0.1) never reaches it.
    q = qproxy_factory(sections=_sections(["0.0.0.0:%d"], backend_app.tcp_server))
    r = h3_get("https://127.0.0.2:%d/app/bytes/%d" % (q.port, KiB))
    assert r.status == 200
    assert r.sha256 == expected_sha256(KiB)


def _long_header(version, dcid, scid, size):
    pkt = bytes([0xc0]) + struct.pack("!I", version)
    pkt += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    return pkt + os.urandom(size - len(pkt))


def test_version_negotiation(qp):
    dcid, scid = os.urandom(8), os.urandom(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", qp.port))
        s.send(_long_header(0x1a2a3a4a, dcid, scid, 1200))
        reply = s.recv(2048)
    assert reply[0] & 0x80, "not a long header packet"
    assert struct.unpack("!I", reply[1:5])[0] == 0, "not Version Negotiation"
    rdcid, rscid, rest = long_header_cids(reply)
    assert rdcid == scid, "DCID must echo the client's SCID"
    assert rscid == dcid, "SCID must echo the client's DCID"
    versions = [struct.unpack("!I", rest[i:i + 4])[0] for i in range(0, len(rest), 4)]
    assert 0x00000001 in versions, versions
    assert 0x6b3343cf in versions, versions     # QUIC v2


def test_no_version_negotiation_for_small_datagrams(qp):
    # RFC 9000 6.1 and 14.1: a datagram below 1200 bytes could be used to
    # amplify; it gets no answer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.connect(("127.0.0.1", qp.port))
        s.send(_long_header(0x1a2a3a4a, os.urandom(8), os.urandom(8), 200))
        with pytest.raises(socket.timeout):
            s.recv(2048)
