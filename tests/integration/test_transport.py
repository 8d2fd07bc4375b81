"""QUIC transport: the secret file, stateless reset, Retry and tokens,
QUIC v2 with compatible version negotiation."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from helpers import (SLOW, expected_body, expected_sha256, file_sha256, gtls_fetch,
                     gtlsclient_binary, h3_get, h3raw, h3raw_binary, long_header_cids,
                     preload_agefill, preload_clock, preload_sendshim, render_config,
                     timeshift_library, wait_until)
from test_ops import qproxyctl, stats
from backend import free_udp_port

import quicinitial  # tests/tools, on sys.path by conftest.py
from relay import S2C, Faults, Relay

KiB = 1024


def _sections(cert, key, port, backend, secret, retry="auto", extra=()):
    return [("global", [("log_level", "debug"), ("secret_file", secret)] +
             list(extra)),
            ("listener main", [("address", "127.0.0.1:%d" % port),
                               ("certificate", cert), ("private_key", key),
                               ("retry", retry)]),
            ("backend app", [("server", backend)]),
            ("route app", [("path_prefix", "/app/"), ("backend", "app")])]


def _varint(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return struct.pack("!H", 0x4000 | n)
    return struct.pack("!I", 0x80000000 | n)


def _initial(dcid, scid, token=b"", version=1, size=1200):
    """A client Initial's header with a token and junk as payload: enough
    for qproxy to decide on the token, which is in the clear."""
    head = bytes([0xc3]) + struct.pack("!I", version)
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    head += _varint(len(token)) + token
    rest = size - len(head) - 2
    return head + _varint(rest) + os.urandom(rest)


def _exchange(port, pkt, timeout=2.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.send(pkt)
        try:
            return s.recv(4096)
        except socket.timeout:
            return None


def _long_type(pkt):
    return (pkt[0] & 0x30) >> 4     # v1: 0 Initial, 3 Retry


def test_secret_file_is_created_private_and_refused_when_readable(
        qproxy_factory, certificate, backend_app, tmp_path):
    secret = tmp_path / "secret"
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(secret)))
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_bytes()) == 32
    q.stop()
    os.chmod(secret, 0o640)
    p = subprocess.run([q.binary, "-c", q.conf], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    assert "secret_file" in p.stderr and "0600" in p.stderr, p.stderr


def test_stateless_resets_are_rate_limited(qproxy_factory, certificate, backend_app,
                                          tmp_path):
    """Stateless resets go out at most 100 a second (a burst of as many):
    400 packets for unknown connections at once get about 100 answers, and
    the rest count in stateless_resets_limited. An unlimited reset is a
    reflector for anyone who can spoof a source address."""
    secret = str(tmp_path / "secret")
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, secret))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(400):
            s.sendto(bytes([0x40]) + os.urandom(16) + os.urandom(60), ("127.0.0.1", q.port))
    finally:
        s.close()

    def answered():
        quic = stats(q)["quic"]
        return quic["stateless_resets_sent"] + quic["stateless_resets_limited"]
    wait_until(lambda: answered() >= 380, "the 400 packets read", timeout=10)
    quic = stats(q)["quic"]
    assert 90 <= quic["stateless_resets_sent"] <= 150, quic
    assert quic["stateless_resets_limited"] >= 250, quic


def test_stateless_reset_for_unknown_connections(qproxy_factory, certificate,
                                                 backend_app, tmp_path):
    secret = str(tmp_path / "secret")
    make = lambda port, c, k: _sections(c, k, port, backend_app.tcp_server,
                                        secret)
    q = qproxy_factory(sections=make)
    cid = os.urandom(16)
    pkt = bytes([0x40]) + cid + os.urandom(60)
    reply = _exchange(q.port, pkt)
    assert reply is not None, "no stateless reset"
    assert reply[0] & 0xc0 == 0x40, "a reset looks like a short header packet"
    assert 21 <= len(reply) < len(pkt)
    token = reply[-16:]
    assert stats(q)["quic"]["stateless_resets_sent"] == 1
    # at debug, with the connection ID it was for
    assert re.search(r"stateless reset to 127\.0\.0\.1:\d+ for dcid %s" % cid.hex(),
                     q.log_text()), q.log_text()[-2000:]
    # too small to answer without risking a loop of resets
    assert _exchange(q.port, bytes([0x40]) + cid + b"\x00" * 4, 0.5) is None
    # the token comes from the secret file: a restart keeps it
    port = q.port
    q.stop()
    q2 = qproxy_factory(sections=make, port=port)
    reply2 = _exchange(q2.port, pkt)
    assert reply2 is not None and reply2[-16:] == token


def test_retry_forced_and_token_round_trip(qproxy_factory, certificate,
                                          backend_app, tmp_path):
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        retry="always"))
    before = stats(q)["quic"]["retries_sent"]
    r = h3_get(q.url("/app/bytes/%d" % KiB))
    assert r.status == 200 and r.sha256 == expected_sha256(KiB)
    after = stats(q)["quic"]
    assert after["retries_sent"] - before == 1
    # a raw Initial without a token gets a Retry packet
    reply = _exchange(q.port, _initial(os.urandom(8), os.urandom(8)))
    assert reply is not None and _long_type(reply) == 3, "no Retry"


def test_initial_with_a_short_dcid_is_dropped(qproxy_factory, backend_app, tmp_path):
    """RFC 9000 7.2: a client's first DCID has at least 8 bytes. With a
    token (any bytes), ngtcp2 lets shorter ones through: here, qproxy's
    Retry for them failed and they went uncounted; without Retry, the short
    ID went into the connection ID table. They are dropped, as invalid."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        retry="always"))
    before = stats(q)["udp_dropped"]["invalid"]
    for n in (0, 4, 7):
        assert _exchange(q.port, _initial(os.urandom(n), os.urandom(8), b"\x00junk"),
                         0.5) is None, n
    assert stats(q)["udp_dropped"]["invalid"] - before == 3, stats(q)
    # 8 bytes is the least, and answered
    reply = _exchange(q.port, _initial(os.urandom(8), os.urandom(8), b"\x00junk"))
    assert reply is not None and _long_type(reply) == 3


def _protected_initial(dcid, scid, frames, size=1200, pn=0):
    """A client Initial of QUIC v1, protected as RFC 9001 5 says (keys from
    dcid), with frames and PADDING up to size bytes, packet number pn (one
    byte)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
    import hmac

    def expand_label(secret, label, n):
        full = b"tls13 " + label
        info = struct.pack("!HB", n, len(full)) + full + b"\x00"
        return HKDFExpand(hashes.SHA256(), n, info).derive(secret)
    salt = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
    initial = hmac.new(salt, dcid, "sha256").digest()
    client = expand_label(initial, b"client in", 32)
    key = expand_label(client, b"quic key", 16)
    iv = expand_label(client, b"quic iv", 12)
    hp = expand_label(client, b"quic hp", 16)
    head = (bytes([0xc0]) + struct.pack("!I", 1) + bytes([len(dcid)]) + dcid +
            bytes([len(scid)]) + scid + b"\x00")
    payload_len = size - len(head) - 2 - 1 - 16
    payload = frames + b"\x00" * (payload_len - len(frames))
    head += struct.pack("!H", 0x4000 | (1 + len(payload) + 16))
    pn_off = len(head)
    head += bytes([pn])
    nonce = iv[:-1] + bytes([iv[-1] ^ pn])
    sealed = AESGCM(key).encrypt(nonce, payload, head)
    sample = sealed[4 - 1:4 - 1 + 16]
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sample)
    head = bytearray(head)
    head[0] ^= mask[0] & 0x0f
    head[pn_off] ^= mask[1]
    return bytes(head) + sealed


def test_initial_without_the_start_of_the_client_hello_gets_a_retry(qproxy_factory,
                                                                     backend_app, tmp_path):
    """A ClientHello of two packets (a large key share, say) whose second
    packet comes first: ngtcp2 asks for a Retry, after which the client
    sends all of it again at once. qproxy dropped the packet instead,
    counted as a failed handshake, and the client waited for its
    retransmission timer."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"), retry="never"))
    dcid, scid = os.urandom(8), os.urandom(8)
    data = os.urandom(300)
    crypto = b"\x06" + _varint(1100) + _varint(len(data)) + data  # at offset 1100
    before = stats(q)
    reply = _exchange(q.port, _protected_initial(dcid, scid, crypto))
    assert reply is not None, "no answer"
    assert _long_type(reply) == 3, "not a Retry: %r" % reply[:8]
    after = stats(q)
    assert after["quic"]["retries_sent"] - before["quic"]["retries_sent"] == 1
    assert after["connections"]["total"] == before["connections"]["total"]
    # the same packet protection, from the start: a real Initial is taken
    # (its ClientHello is garbage, so the handshake fails, with a close)
    crypto0 = b"\x06" + _varint(0) + _varint(len(data)) + data
    reply = _exchange(q.port, _protected_initial(os.urandom(8), scid, crypto0))
    assert reply is not None and _long_type(reply) == 0


def test_handshake_that_never_ends_is_closed_at_idle_timeout(qproxy_factory, backend_app,
                                                             tmp_path):
    """A client that starts a ClientHello and never finishes it, but sends
    a PING now and then, kept one of max_handshakes for as long as it
    liked: its packets restarted the idle timer. A handshake now has
    idle_timeout from its start."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"), retry="never",
        extra=[("idle_timeout", "2s")]))
    dcid, scid = os.urandom(8), os.urandom(8)
    # a ClientHello message that says it has 2,000 bytes, of which 300 come
    hello = b"\x01" + (2000).to_bytes(3, "big") + os.urandom(296)
    crypto = b"\x06" + _varint(0) + _varint(len(hello)) + hello
    before = stats(q)["connections"]
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", q.port))
        s.send(_protected_initial(dcid, scid, crypto))
        pn = 1
        # idle_timeout, then the closing period (three PTOs of about 1 s)
        while time.monotonic() - t0 < 8 * SLOW:
            time.sleep(0.5)
            s.send(_protected_initial(dcid, scid, b"\x01", pn=pn))    # PING
            pn += 1
            if stats(q)["connections"]["handshakes_current"] == \
                    before["handshakes_current"]:
                break
    after = stats(q)["connections"]
    assert after["handshakes_current"] == before["handshakes_current"], after
    assert after["handshakes_failed"] - before["handshakes_failed"] == 1
    assert 1.5 <= time.monotonic() - t0 < 8 * SLOW


def test_forged_and_expired_retry_tokens_are_refused(qproxy_factory, certificate,
                                                      backend_app, tmp_path):
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        retry="always"), start=False)
    clock = preload_clock(q, str(tmp_path / "clock"))
    q.start()
    dcid, scid = os.urandom(8), os.urandom(8)
    forged = bytes([0xb7]) + os.urandom(80)
    reply = _exchange(q.port, _initial(dcid, scid, forged))
    assert reply is not None and _long_type(reply) == 0, \
        "a forged Retry token must get CONNECTION_CLOSE(INVALID_TOKEN)"
    assert stats(q)["quic"]["tokens_invalid"] == 1

    # a real token, used after it expired (10 s, of the wall clock: the
    # token says when it was made, for any process of the same secret)
    retry = _exchange(q.port, _initial(dcid, scid))
    assert retry is not None and _long_type(retry) == 3
    rdcid, rscid, rest = long_header_cids(retry)
    assert rdcid == scid
    token = rest[:-16]                      # the integrity tag ends it
    clock(11)
    reply = _exchange(q.port, _initial(rscid, scid, token))
    assert reply is not None and _long_type(reply) == 0
    assert stats(q)["quic"]["tokens_invalid"] == 2


def _gtls(port, path, outdir, *extra):
    """gtlsclient fetching path, or each path of a list, over one connection."""
    paths = [path] if isinstance(path, str) else path
    p = subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                        "--download=%s" % outdir, "--timeout=10s"] + list(extra) +
                       ["127.0.0.1", str(port)] +
                       ["https://127.0.0.1:%d%s" % (port, x) for x in paths],
                       capture_output=True, timeout=60)
    return p


def test_new_token_spares_the_next_retry(qproxy_factory, certificate, backend_app,
                                         tmp_path):
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        retry="always"))
    tokfile = tmp_path / "token"
    s0 = stats(q)["quic"]
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    assert (tmp_path / "100").read_bytes() == expected_body(100)
    s1 = stats(q)["quic"]
    assert s1["retries_sent"] - s0["retries_sent"] == 1
    assert s1["new_tokens_sent"] - s0["new_tokens_sent"] == 1
    assert tokfile.exists() and tokfile.stat().st_size > 0
    (tmp_path / "100").unlink()
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    assert (tmp_path / "100").exists()
    s2 = stats(q)["quic"]
    assert s2["retries_sent"] == s1["retries_sent"], \
        "a client with a NEW_TOKEN token must not need a Retry"


def _closes_with(port, extra=b"", **hello):
    """The code of the CONNECTION_CLOSE that a ClientHello (and extra bytes
    after it on the CRYPTO stream) gets, or None; and the frames seen."""
    c = quicinitial.Client(port)
    try:
        c.send_crypto(quicinitial.client_hello(c.scid, **hello) + extra)
        frames = c.receive(1.0 * SLOW)
    finally:
        c.close()
    codes = [f[1] for f in frames if f[0] == "CONNECTION_CLOSE"]
    return (codes[0] if codes else None), frames


def test_an_initial_that_only_closes_begins_no_connection(qproxy_factory, backend_app):
    """A new client's Initial that carries a CONNECTION_CLOSE frame alone
    (nothing to begin a handshake with): ngtcp2 takes the close and drains,
    and qproxy kept the connection it had made for the packet, with its
    connection IDs, for the three PTOs of draining, counted as a connection
    and a failed handshake. A datagram that begins nothing is dropped now,
    as one with no ClientHello is (udp_dropped invalid), and nothing is
    sent back (a draining endpoint sends nothing, RFC 9000 10.2.2)."""
    q = qproxy_factory(backend_server=backend_app.tcp_server)
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "no connection", 10 * SLOW)
    before = stats(q)
    c = quicinitial.Client(q.port)
    try:
        c.send_initial(b"\x1c\x00\x00\x00")     # NO_ERROR, frame type 0, no reason
        got = c.receive(0.5 * SLOW)
    finally:
        c.close()
    after = stats(q)
    assert got == [], got
    conns = after["connections"]
    assert (conns["current"], conns["total"] - before["connections"]["total"],
            conns["handshakes_current"],
            conns["handshakes_failed"] - before["connections"]["handshakes_failed"]) == \
        (0, 0, 0, 0), conns
    assert after["quic"]["cids_current"] == before["quic"]["cids_current"], after["quic"]
    assert after["udp_dropped"]["invalid"] - before["udp_dropped"]["invalid"] == 1, \
        after["udp_dropped"]
    # qproxy takes the next client as before
    r = h3_get(q.url("/app/bytes/10"))
    assert r.status == 200 and r.body == expected_body(10)


def test_client_hello_by_hand_gets_a_server_hello(qp):
    """The hand-made ClientHello of the tests below is one qproxy takes."""
    code, frames = _closes_with(qp.port)
    assert code is None and any(f[0] == "CRYPTO" and f[2][:1] == b"\x02" for f in frames), \
        frames


@pytest.mark.parametrize("cuts,order", [
    ((1,), None), ((1, 4), None), ((2, 4), None), ((3, 4), None),
    ((1, 2, 4), None), ((2, 4), (2, 0, 1))],
    ids=["1", "1-4", "2-4", "3-4", "1-2-4", "2-4-reordered"])
def test_client_hello_header_cut_into_frames_gets_a_server_hello(qp, cuts, order):
    """Chromium cuts its ClientHello into CRYPTO frames at random, some a
    few bytes long. wolfSSL 5.7.2 failed the handshake (CRYPTO_ERROR) when
    the message's 4-byte header came in two pieces and the second ended
    with the header: about one Chromium handshake in forty. Here the
    frames cut the ClientHello at the offsets given, in one Initial
    packet, in the order given."""
    c = quicinitial.Client(qp.port)
    try:
        ch = quicinitial.client_hello(c.scid)
        bounds = [0] + list(cuts) + [len(ch)]
        frames = [quicinitial.crypto_frame(a, ch[a:b]) for a, b in zip(bounds, bounds[1:])]
        if order:
            frames = [frames[i] for i in order]
        c.send_initial(b"".join(frames))
        got = c.receive(1.0 * SLOW)
    finally:
        c.close()
    assert not [f for f in got if f[0] == "CONNECTION_CLOSE"], got
    assert any(f[0] == "CRYPTO" and f[2][:1] == b"\x02" for f in got), got


@pytest.mark.parametrize("alpn", [b"\x01x\x02h", b"\x03abc\x02h"], ids=["x-then-h", "abc-then-h"])
def test_client_hello_with_an_alpn_entry_past_its_list_is_refused(qp, alpn):
    """An ALPN list whose last entry claims more bytes than the list has
    left: wolfSSL 5.7.2 checked the entries of a list but its last two
    bytes, and then read past its copy of the list comparing names
    (CVE-2026-3547). setup-deps builds it with a patch that checks them all:
    the ClientHello is refused (decode_error) before any name is read."""
    code, frames = _closes_with(qp.port, alpn=alpn)
    assert code == 0x132, frames


def test_client_hello_past_16_kib_is_refused(qp):
    """A ClientHello that declares 1 MiB less a little: wolfSSL would gather
    all of it for as long as the handshake may last (1 MiB per handshake,
    1 GiB at max_handshakes). Past 16 KiB of the Initial CRYPTO stream the
    connection is closed with CRYPTO_BUFFER_EXCEEDED."""
    code, frames = _closes_with(qp.port, os.urandom(20000), declared=0x0ff000)
    assert code == 0xd, frames


def test_client_hello_with_a_legacy_session_id_is_refused(qp):
    """RFC 9001 8.4: no middlebox compatibility mode in QUIC."""
    code, frames = _closes_with(qp.port, session_id=os.urandom(32))
    assert code == 0xa, frames                  # PROTOCOL_VIOLATION


def test_client_hello_without_transport_parameters_is_refused(qp):
    """RFC 9001 8.2: missing_extension, as CRYPTO_ERROR 0x16d."""
    code, frames = _closes_with(qp.port, transport_params=False)
    assert code == 0x16d, frames


def _unshare_time_works():
    try:
        return subprocess.run(["unshare", "-T", "--monotonic", "1", "--fork", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_new_token_holds_on_a_host_up_for_longer(qproxy_factory, certificate,
                                                 backend_app, tmp_path):
    """Tokens are stamped with the time of day: the secret makes them good
    on a restarted server and on others that share it, whose time since
    boot differs. Stamped with that, a token fresh from one server was
    void on one up two days longer (and one from a host up longer stayed
    good on the others for as long as the difference)."""
    if not _unshare_time_works():
        pytest.skip("needs time namespaces (unshare -T, as root)")
    secret = str(tmp_path / "s")
    a = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, secret, retry="always"))
    tokfile = tmp_path / "token"
    _gtls(a.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    assert tokfile.exists() and tokfile.stat().st_size > 0
    a.stop()
    # the same secret, on a host whose clock since boot is two days ahead
    b = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, secret, retry="always"), start=False)
    wrapper = os.path.join(os.path.dirname(b.conf), "qproxy-uptime.sh")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec unshare -T --monotonic 172800 --fork "%s" "$@"\n'
                % b.binary)
    os.chmod(wrapper, 0o755)
    b.binary = wrapper
    b.start()
    try:
        (tmp_path / "100").unlink()
        before = stats(b)["quic"]
        _gtls(b.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
        assert (tmp_path / "100").read_bytes() == expected_body(100)
        after = stats(b)["quic"]
        assert after["tokens_invalid"] == before["tokens_invalid"], after
        assert after["retries_sent"] == before["retries_sent"], after
    finally:
        # unshare passes no signal on: qproxy, its child, is stopped directly
        with open("/proc/%d/task/%d/children" % (b.proc.pid, b.proc.pid)) as f:
            os.kill(int(f.read().split()[0]), signal.SIGTERM)
    b.stop()


def test_new_token_is_taken_once(qproxy_factory, certificate, backend_app, tmp_path):
    """RFC 9000 8.1.3: a NEW_TOKEN token SHOULD NOT be accepted more than
    once. One seen on the path, sent again from its client's address, got a
    whole handshake past the anti-amplification limit as often as it came.
    Taken again, it proves nothing: with retry = always, a Retry."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        retry="always"))
    tokfile = tmp_path / "token"
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    saved = tokfile.read_bytes()
    s0 = stats(q)["quic"]
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    s1 = stats(q)["quic"]
    assert s1["retries_sent"] == s0["retries_sent"], "the first use needs no Retry"
    assert s1["tokens_remembered"] == s0["tokens_remembered"] + 1, s1
    tokfile.write_bytes(saved)          # the same token again
    (tmp_path / "100").unlink()
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    assert (tmp_path / "100").read_bytes() == expected_body(100)
    s2 = stats(q)["quic"]
    assert s2["retries_sent"] == s1["retries_sent"] + 1, s2
    assert s2["tokens_reused"] == s1["tokens_reused"] + 1, s2
    assert s2["tokens_invalid"] == s1["tokens_invalid"], s2


def test_new_token_of_a_client_refused_for_load_is_not_spent(qproxy_factory, certificate,
                                                            backend_app, tmp_path):
    """A token is taken once its connection is under way: one refused at
    max_connections was counted as taken, and the client, back when there
    was room, was sent a Retry, an extra round trip when the server was
    busiest."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"), retry="always",
        extra=[("max_connections", "1"), ("idle_timeout", "2s")]))
    tokfile = tmp_path / "token"
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "the probe gone", 10)
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    saved = tokfile.read_bytes()
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "no connection", 10)
    hold = subprocess.Popen([h3raw_binary(), "-t", str(20 * SLOW), "-H", ":method: GET",
                             "-H", ":scheme: https", "-H", ":authority: 127.0.0.1:%d" % q.port,
                             "-H", ":path: /app/hang", "127.0.0.1", str(q.port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: stats(q)["connections"]["current"] == 1, "the one connection", 10)
        before = stats(q)
        _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
        assert stats(q)["limits"]["refused_max_connections"] == \
            before["limits"]["refused_max_connections"] + 1
    finally:
        hold.terminate()    # h3raw closes its connection on SIGTERM
        hold.wait()
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "room again", 20 * SLOW)
    tokfile.write_bytes(saved)
    (tmp_path / "100").unlink()
    _gtls(q.port, "/app/bytes/100", tmp_path, "--token-file=%s" % tokfile)
    assert (tmp_path / "100").read_bytes() == expected_body(100)
    after = stats(q)["quic"]
    assert after["tokens_reused"] == before["quic"]["tokens_reused"], after
    assert after["retries_sent"] == before["quic"]["retries_sent"], after


def test_quic_v2_for_a_client_that_prefers_it(qproxy_factory, certificate,
                                             backend_app, tmp_path):
    log = tmp_path / "access.log"
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        extra=[("access_log", str(log)), ("access_log_format", "json")]))
    # v1 Initial, v2 preferred: compatible version negotiation (RFC 9368)
    _gtls(q.port, "/app/bytes/10", tmp_path, "--preferred-versions=v2,v1",
          "--available-versions=v2,v1")
    # v1 only: stays v1
    _gtls(q.port, "/app/bytes/11", tmp_path, "--preferred-versions=v1",
          "--available-versions=v1")
    deadline = time.monotonic() + 5 * SLOW
    while True:
        lines = [json.loads(l) for l in log.read_text().splitlines()] \
            if log.exists() else []
        by_path = {e["path"]: e for e in lines}
        if "/app/bytes/10" in by_path and "/app/bytes/11" in by_path:
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    assert by_path["/app/bytes/10"]["quic_version"] == "0x6b3343cf"
    assert by_path["/app/bytes/11"]["quic_version"] == "0x1"
    assert (tmp_path / "10").read_bytes() == __import__("helpers").expected_body(10)


def _shimmed(qproxy_factory, backend_app, tmp_path, *flags, gso_eagain=None):
    """A private qproxy whose UDP sends fail while files in tmp_path/flags
    say so (tests/tools/sendshim.c), flags set from the start; with
    gso_eagain=K, every K-th train sent with GSO fails with EAGAIN."""
    flags_dir = tmp_path / "flags"
    flags_dir.mkdir()
    for f in flags:
        (flags_dir / f).touch()
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"), retry="never"),
        start=False)
    preload_sendshim(q, str(flags_dir), gso_eagain=gso_eagain)
    q.start()
    return q, flags_dir


def test_gso_refused_sends_one_by_one(qproxy_factory, backend_app, tmp_path):
    """A device that cannot segment (EIO for UDP_SEGMENT): the first train
    goes out one datagram at a time, and every later one too."""
    q, _ = _shimmed(qproxy_factory, backend_app, tmp_path, "gso-eio")
    n = 2 * 1024 * 1024
    r = h3_get(q.url("/app/bytes/%d" % n), timeout=60)
    assert r.status == 200 and r.sha256 == expected_sha256(n)
    udp = stats(q)["udp"]
    assert udp["gso_batches"] == 0 and udp["send_errors"] == 0, udp
    assert q.log_text().count("UDP GSO refused") == 1, q.log_tail()


def test_gso_refused_for_a_train_held_back(qproxy_factory, backend_app, tmp_path):
    """A train the socket refused (EAGAIN) is held and sent when it is
    writable; if GSO fails then, it goes one by one as any other. Its
    datagrams were dropped instead, and the client waited for their loss
    to be seen."""
    q, flags = _shimmed(qproxy_factory, backend_app, tmp_path)
    n = 8 * 1024 * 1024
    out = []
    # over 3 s, in 40 pieces of trains: time to step in
    t = threading.Thread(target=lambda: out.append(
        h3_get(q.url("/app/slow/%d?ms=3000" % n), timeout=60)))
    t.start()
    wait_until(lambda: stats(q)["udp"]["gso_batches"] > 10, "a transfer in trains", 20)
    (flags / "eagain").touch()
    wait_until(lambda: stats(q)["udp"]["send_blocked"] > 0, "a train held back", 10)
    # held, and shown (buffers send_pending_bytes)
    assert 0 < stats(q)["buffers"]["send_pending_bytes"] <= 65535, stats(q)["buffers"]
    (flags / "gso-eio").touch()
    (flags / "eagain").unlink()
    t.join(90)
    assert out and out[0].status == 200 and out[0].sha256 == expected_sha256(n)
    assert stats(q)["buffers"]["send_pending_bytes"] == 0
    udp = stats(q)["udp"]
    assert udp["send_errors"] == 0, udp
    assert q.log_text().count("UDP GSO refused") == 1, q.log_tail()


def test_gso_counts_trains_held_back(qproxy_factory, backend_app, tmp_path):
    """A train the socket refused (EAGAIN) and sent later from the socket's
    write callback is a GSO batch as any other: gso_batches and
    gso_datagrams count every sendmsg with UDP_SEGMENT that went, once.
    Those sent later were left out."""
    q, flags = _shimmed(qproxy_factory, backend_app, tmp_path, gso_eagain=5)
    n = 2 * 1024 * 1024
    r = h3_get(q.url("/app/bytes/%d" % n), timeout=60)
    assert r.status == 200 and r.sha256 == expected_sha256(n)
    udp = stats(q)["udp"]
    # one in 5 refused: a fifth or so of the batches went from the callback
    assert udp["send_blocked"] >= 5, udp
    assert udp["send_errors"] == 0, udp
    batches, datagrams = map(int, (flags / "gso-sent").read_text().split())
    assert batches >= 20, batches
    assert (udp["gso_batches"], udp["gso_datagrams"]) == (batches, datagrams), udp


def test_gso_batches_during_a_large_transfer(qp):
    before = stats(qp)["udp"]
    n = 10 * 1024 * 1024
    r = h3_get(qp.url("/app/bytes/%d" % n), timeout=60)
    assert r.status == 200 and r.sha256 == expected_sha256(n)
    after = stats(qp)["udp"]
    batches = after["gso_batches"] - before["gso_batches"]
    datagrams = after["gso_datagrams"] - before["gso_datagrams"]
    assert batches > 0, "no datagram left in a GSO batch"
    assert datagrams >= 2 * batches
    # no train was too large for one send (65507 bytes), none was lost
    assert after["send_errors"] - before["send_errors"] == 0
    # most of the transfer's datagrams went out in batches
    sent = after["datagrams_sent"] - before["datagrams_sent"]
    assert datagrams > sent // 2, (datagrams, sent)
    # and few on their own: a write's packets fit one batch (46 packets
    # of 1444 bytes once made a batch of 45 and one sendmsg for the last:
    # 120 alone for 214 batches). Under ASan, more of the client's ACKs
    # come one at a time and get one packet each: 56 for 216 in one run.
    alone = sent - datagrams
    assert alone < batches // 3, (alone, batches)


def test_gro_splits_a_coalesced_train(qp):
    """A train sent with UDP_SEGMENT crosses loopback as one buffer, and
    qproxy's UDP_GRO socket receives it whole: each of its datagrams, here
    Initials of an unknown version, must still be handled on its own (one
    Version Negotiation each, from distinct connection IDs)."""
    udp_segment = 103                   # from linux/udp.h
    n, size = 4, 1200
    before = stats(qp)["udp"]
    train = b"".join(_initial(os.urandom(8), os.urandom(8),
                              version=0x1a2a3a4a, size=size) for _ in range(n))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0 * SLOW)
        s.sendmsg([train], [(socket.IPPROTO_UDP, udp_segment,
                             struct.pack("H", size))], 0, ("127.0.0.1", qp.port))
        replies = []
        try:
            while len(replies) < n:
                replies.append(s.recv(4096))
        except socket.timeout:
            pass
    after = stats(qp)["udp"]
    assert len(replies) == n, replies
    assert all(r[1:5] == b"\0\0\0\0" for r in replies)   # Version Negotiation
    assert after["gro_datagrams"] - before["gro_datagrams"] == n
    assert after["version_negotiations"] - before["version_negotiations"] == n


def test_a_backlog_of_trains_is_read_a_budget_at_a_time(qproxy_factory, backend_app):
    """Trains (GSO sent, GRO received) left waiting while qproxy was off the
    CPU are read about 256 KiB at a time, not 16 at once (up to 1 MiB):
    what a read brought is handled and written on before the next, while it
    is still in the CPU's caches. The guess of a message's size comes from
    the reads before, so a first train comes alone."""
    q = qproxy_factory(backend_server=backend_app.tcp_server)
    udp_segment = 103                   # from linux/udp.h
    size, per, n = 1400, 40, 32         # 56,000 bytes a train

    def train():
        # 1-RTT packets of no connection: counted, and dropped
        return b"".join(bytes([0x40]) + os.urandom(size - 1) for _ in range(per))

    def received():
        return stats(q)["udp"]["datagrams_received"]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

        def send():
            s.sendmsg([train()], [(socket.IPPROTO_UDP, udp_segment,
                                   struct.pack("H", size))], 0, ("127.0.0.1", q.port))

        before = received()
        send()
        wait_until(lambda: received() - before == per, "the first train", 10)
        first = stats(q)["udp"]
        q.signal(signal.SIGSTOP)
        try:
            for _ in range(n):
                send()
        finally:
            q.signal(signal.SIGCONT)
    wait_until(lambda: received() - before == per * (n + 1), "the trains", 10)
    after = stats(q)["udp"]
    assert after["gro_datagrams"] - first["gro_datagrams"] == per * n, after
    reads = after["recv_batches"] - first["recv_batches"]
    # at most 4 trains a read (224,000 bytes): 8 reads or more; 16 a read
    # made 2
    assert reads >= n // 4, (reads, after)


def _resumable(q, tmp_path, path="/app/bytes/1"):
    """A first connection that leaves a session ticket and transport
    parameters behind for the next one."""
    sess, tp = tmp_path / "session", tmp_path / "tp"
    _gtls(q.port, path, tmp_path, "--session-file=%s" % sess,
          "--tp-file=%s" % tp, "--wait-for-ticket")
    assert sess.exists() and tp.exists(), "no session ticket came"
    return ["--session-file=%s" % sess, "--tp-file=%s" % tp]


def _early_sections(backend, secret, early="on", log=None, glob=()):
    def make(port, c, k):
        s = _sections(c, k, port, backend, secret,
                      extra=([("access_log", log)] if log else []) + list(glob))
        s[1][1].append(("early_data", early))
        # answered by qproxy, replayed or not
        s.insert(3, ("route ping", [("path_prefix", "/ping"), ("return", "200 pong")]))
        return s
    return make


def test_zero_rtt_request_reaches_the_backend_marked(qproxy_factory, backend_app,
                                                     tmp_path):
    log = str(tmp_path / "access.log")
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s"), log=log))
    resume = _resumable(q, tmp_path)
    before = backend_app.count
    _gtls(q.port, "/app/early1/echo-headers", tmp_path, *resume)
    rec = backend_app.wait_for_request(lambda r: r["path"] == "/app/early1/echo-headers",
                                       start=before, timeout=5 * SLOW)
    assert rec, "the early request never reached the backend"
    from helpers import header_values
    assert header_values(rec, "early-data") == ["1"]
    assert stats(q)["quic"]["early_data_requests"] == 1

    # a POST in early data: 425, and the backend never sees it
    body = tmp_path / "body"
    body.write_bytes(b"hello")
    before = backend_app.count
    _gtls(q.port, "/app/upload", tmp_path, "-m", "POST", "-d", str(body), *resume)
    deadline = time.monotonic() + 5 * SLOW
    while '"POST /app/upload" 425' not in open(log).read():
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.05)
    assert stats(q)["quic"]["early_data_refused"] == 1
    time.sleep(0.2)
    assert not [r for r in backend_app.requests_since(before)
                if r["path"] == "/app/upload"]

    # no backend, nothing to replay: a route's return answers a POST in
    # early data too
    _gtls(q.port, "/ping", tmp_path, "-m", "POST", "-d", str(body), *resume)
    while '"POST /ping" 200' not in open(log).read():
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.05)
    assert stats(q)["quic"]["early_data_refused"] == 1


def test_zero_rtt_from_an_unproven_address_passes_no_allow(qproxy_factory, backend_app,
                                                          tmp_path):
    """A route's allow and deny judge a client by an address it has proven:
    in 0-RTT the source address is what the packets say, which anyone may
    write, and a ticket is no proof of it. A request in early data to a
    route with allow or deny, from a client that brought no NEW_TOKEN
    token, is answered 425 (the client asks again after the handshake);
    it reached the backend, so a blind request from anywhere passed
    "allow = 127.0.0.1". With a token, it is served from early data."""
    log = str(tmp_path / "access.log")
    base = _early_sections(backend_app.tcp_server, str(tmp_path / "s"), log=log)

    def make(port, c, k):
        s = base(port, c, k)
        s.insert(3, ("route inner", [("path_prefix", "/app/inner/"), ("backend", "app"),
                                     ("allow", "127.0.0.1"), ("deny", "all")]))
        return s
    q = qproxy_factory(sections=make)
    token = tmp_path / "token"
    resume = _resumable(q, tmp_path) + ["--token-file=%s" % token]
    before = backend_app.count
    _gtls(q.port, "/app/inner/early/echo-headers", tmp_path, *resume)
    deadline = time.monotonic() + 5 * SLOW
    while '"GET /app/inner/early/echo-headers" 425' not in open(log).read():
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.05)
    st = stats(q)["quic"]
    assert (st["early_data_requests"], st["early_data_refused"]) == (0, 1), st
    time.sleep(0.2)
    assert not [r for r in backend_app.requests_since(before)
                if r["path"].startswith("/app/inner/")]
    # that connection left a token (and a ticket): the address is proven
    assert token.exists() and token.stat().st_size > 0
    _gtls(q.port, "/app/inner/proven/echo-headers", tmp_path, *resume)
    rec = backend_app.wait_for_request(
        lambda r: r["path"] == "/app/inner/proven/echo-headers", start=before,
        timeout=5 * SLOW)
    assert rec, open(log).read()
    from helpers import header_values
    assert header_values(rec, "early-data") == ["1"]
    st = stats(q)["quic"]
    assert (st["early_data_requests"], st["early_data_refused"]) == (1, 1), st


def test_zero_rtt_from_an_unproven_address_spends_no_allowance_of_it(
        qproxy_factory, backend_app, tmp_path):
    """max_request_rate_per_client keeps a client's allowance by its
    address. In 0-RTT the source address is what the packets say: with a
    ticket of its own, anyone could send requests in early data as another
    address, never hearing back (nor finishing the handshake), and spend
    that address's allowance, so that its own requests were answered 429.
    With the limit set, a request in early data from an address no token
    proved is answered 425, and spends none of it."""
    base = _early_sections(backend_app.tcp_server, str(tmp_path / "s"))
    burst = 16

    def make(port, c, k):
        s = base(port, c, k)
        s[0][1].extend([("max_request_rate_per_client", "1/m"),
                        ("request_burst_per_client", str(burst)),
                        ("idle_timeout", "3s")])    # and the handshake's
        return s
    q = qproxy_factory(sections=make)
    resume = _resumable(q, tmp_path)
    before = backend_app.count
    # a sender of forged packets hears nothing: no handshake completes
    with Relay(q.port, s2c=Faults(drop=1.0)) as r:
        _gtls(r.port, "/app/forged/echo-headers", tmp_path, "-n", str(burst),
              "--timeout=2s", *resume)
    wait_until(lambda: stats(q)["requests"]["total"] >= 2 + burst,
               "the early requests", 10)
    st = stats(q)
    assert (st["quic"]["early_data_requests"], st["quic"]["early_data_refused"],
            st["requests"]["rate_limited"]) == (0, burst, 0), st
    assert not [x for x in backend_app.requests_since(before)
                if x["path"] == "/app/forged/echo-headers"]
    # the address's own requests are served
    for i in range(3):
        assert h3_get(q.url("/app/bytes/%d" % (i + 1))).status == 200, i
    assert stats(q)["requests"]["rate_limited"] == 0


def _h3raw_get(q, path, sess, *extra, port=None, wait=5):
    """h3raw's GET of path from q (through port, a relay's, when given),
    its session kept in the file sess; extra, more of its options; wait,
    its -t."""
    return subprocess.run(
        [h3raw_binary(), "-H", ":method: GET", "-H", ":scheme: https",
         "-H", ":authority: 127.0.0.1:%d" % q.port, "-H", ":path: " + path,
         "--session-file", sess, "-t", str(wait)] + list(extra) +
        ["127.0.0.1", str(port or q.port)], capture_output=True, text=True, timeout=30)


def test_zero_rtt_from_an_unproven_address_spends_no_password_check_of_it(
        qproxy_factory, backend_app, tmp_path):
    """auth_check_rate_per_client keeps a client's password checks by its
    address, so that one sending passwords fast cannot keep other
    clients' users out. Requests in early data from a forged address
    (h3raw --early, hearing nothing back) spent that address's checks,
    and its own user's password then got 429; from many forged addresses
    they would take every check. A request in early data from an address
    no token proved, to a route with auth_basic_file, is answered 425."""
    import base64
    users = tmp_path / "users"
    users.write_text("alice:%s\n" % subprocess.run(
        ["openssl", "passwd", "-6", "s3cret"], check=True, capture_output=True,
        text=True).stdout.strip())
    base = _early_sections(backend_app.tcp_server, str(tmp_path / "s"))

    def make(port, c, k):
        s = base(port, c, k)
        s[0][1].extend([("auth_check_rate_per_client", "1/m"),
                        ("idle_timeout", "3s")])    # and the handshake's
        s.insert(3, ("route staging", [("path_prefix", "/app/staging/"),
                                       ("backend", "app"),
                                       ("auth_basic_file", str(users))]))
        return s
    q = qproxy_factory(sections=make)
    sess = str(tmp_path / "session")

    def request(port, path, cred, *extra):
        auth = "authorization: Basic " + base64.b64encode(cred.encode()).decode()
        return _h3raw_get(q, path, sess, "-H", auth, *extra, port=port, wait=2)
    # a ticket, with no password checked
    p = request(q.port, "/app/bytes/1", "x:y")
    assert "status 200 " in p.stdout, p
    # a sender of forged packets hears nothing: no handshake completes
    with Relay(q.port, s2c=Faults(drop=1.0)) as r:
        request(r.port, "/app/staging/forged", "alice:guess", "--early")
    wait_until(lambda: stats(q)["requests"]["total"] >= 3, "the early request", 10)
    st = stats(q)
    assert (st["quic"]["early_data_refused"], st["auth"]["checks"]) == (1, 0), st
    # the address's own user is let in
    p = request(q.port, "/app/staging/echo-headers", "alice:s3cret")
    assert "status 200 " in p.stdout, p
    assert stats(q)["auth"]["client_throttled"] == 0


def test_zero_rtt_get_that_overrides_its_method_is_too_early(
        qproxy_factory, backend_app, tmp_path):
    """Applications that take X-HTTP-Method-Override (or X-HTTP-Method,
    X-Method-Override) in place of the method would make a GET in early
    data, which a replayed ClientHello serves again, a DELETE. A request
    whose override names a method outside early_data_methods is answered
    425; one that names a method inside it is served."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")))
    sess = str(tmp_path / "session")

    def request(path, *extra):
        return _h3raw_get(q, path, sess, *extra)
    for field, status in (("x-http-method-override: DELETE", 425),
                          ("x-http-method: put", 425),
                          ("x-method-override: HEAD, POST", 425),
                          ("x-http-method-override: HEAD", 200)):
        p = request("/ping")        # a ticket, which resumes once
        assert "status 200 " in p.stdout, p
        before = backend_app.count
        p = request("/app/early/echo-headers", "--early", "-H", field)
        assert "resumed yes" in p.stdout, (field, p)
        assert "status %d " % status in p.stdout, (field, p)
        assert len(backend_app.requests_since(before)) == (status == 200), field
    st = stats(q)["quic"]
    assert (st["early_data_requests"], st["early_data_refused"]) == (1, 3), st


def test_zero_rtt_ticket_is_taken_once(qproxy_factory, backend_app, tmp_path):
    """A session ticket resumes once (RFC 8446 8.1): the same ticket again,
    as a replayed ClientHello would bring it, gets a whole handshake and no
    early data, so its 0-RTT request is not served twice; the request still
    goes through, after the handshake."""
    log = str(tmp_path / "access.log")
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s"), log=log))
    resume = _resumable(q, tmp_path)
    sess = resume[0].split("=", 1)[1]
    # gtlsclient writes the next ticket over its session file: two copies
    # of this one
    for name in ("first", "again"):
        shutil.copy(sess, str(tmp_path / name))
    tp = resume[1]
    before = backend_app.count
    _gtls(q.port, "/app/once/echo-headers", tmp_path,
          "--session-file=%s" % (tmp_path / "first"), tp)
    assert stats(q)["quic"]["early_data_requests"] == 1
    _gtls(q.port, "/app/twice/echo-headers", tmp_path,
          "--session-file=%s" % (tmp_path / "again"), tp)
    rec = backend_app.wait_for_request(lambda r: r["path"] == "/app/twice/echo-headers",
                                       start=before, timeout=5 * SLOW)
    assert rec, "the request after the refused ticket never reached the backend"
    from helpers import header_values
    assert header_values(rec, "early-data") == []
    st = stats(q)["quic"]
    assert (st["early_data_requests"], st["tickets_reused"]) == (1, 1), st
    assert st["tickets_remembered"] == 1, st


def test_zero_rtt_after_hello_retry_request(qproxy_factory, backend_app, tmp_path):
    """A client resuming with early data whose only key share is of a group
    qproxy does not take (X448) gets a HelloRetryRequest, which rejects its
    early data (RFC 8446 4.2.10). wolfSSL had handed the 0-RTT key to
    ngtcp2 already, and ngtcp2 aborted qproxy on the client's 0-RTT
    packets (no transport parameters yet). gtlsclient itself aborts on its
    side of it (ngtcp2's client asserts on a 0-RTT key installed twice), so
    only qproxy's side is checked: it counts the retry, serves nothing
    from early data, and goes on serving."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")))
    resume = _resumable(q, tmp_path)
    _gtls(q.port, "/app/bytes/10", tmp_path,
          "--groups=-GROUP-ALL:+GROUP-X448:+GROUP-X25519", *resume)
    st = stats(q)["quic"]
    assert (st["hello_retries"], st["early_data_requests"]) == (1, 0), st
    (tmp_path / "11").unlink(missing_ok=True)
    p = _gtls(q.port, "/app/bytes/11", tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "11").read_bytes() == expected_body(11)
    assert q.running()


def _after_the_hello(extra, separate):
    """A rewrite (relay.Faults) of a client's first Initial: extra bytes
    after its ClientHello, in the ClientHello's CRYPTO frame or in a frame
    of their own."""
    def edit(frames):
        out = []
        for off, data in frames:
            whole = 4 + int.from_bytes(data[1:4], "big") if off == 0 else 0
            if not whole or len(data) < whole:
                out.append((off, data))
            elif separate:
                out += [(0, data[:whole]), (whole, extra + data[whole:])]
            else:
                out.append((0, data[:whole] + extra + data[whole:]))
        return out if any(off == 0 for off, _ in frames) else None

    def rewrite(data, index):
        return quicinitial.rewrite_client_initial(data, edit) if index == 1 else data
    return rewrite


@pytest.mark.parametrize("extra,separate", [
    (b"\x14", False),                   # a next message's type
    (b"\x14\x00\x00\x20\x00", False),   # its header and a byte of its body
    (b"\x14\x00", True),                # in a frame of their own
], ids=["one-byte", "header-and-body", "own-frame"])
def test_zero_rtt_after_hello_retry_request_with_more_bytes(qproxy_factory, backend_app,
                                                           tmp_path, extra, separate):
    """As above, with bytes after the ClientHello in the client's first
    Initial (a relay puts them there; any client can). The check for a
    HelloRetryRequest looked only for CRYPTO data that ended where the
    ClientHello does, and with bytes after it in the same frame qproxy
    aborted on the 0-RTT packets as before (bdac808). In a frame of their
    own they come to wolfSSL in a feed of their own."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")))
    resume = _resumable(q, tmp_path)
    with Relay(q.port, c2s=Faults(rewrite=_after_the_hello(extra, separate))) as r:
        _gtls(r.port, "/app/bytes/10", tmp_path,
              "--groups=-GROUP-ALL:+GROUP-X448:+GROUP-X25519", *resume)
        assert r.stats()["c2s"]["rewritten"] == 1
    st = stats(q)["quic"]
    assert (st["hello_retries"], st["early_data_requests"]) == (1, 0), st
    assert q.running()
    (tmp_path / "11").unlink(missing_ok=True)
    p = _gtls(q.port, "/app/bytes/11", tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "11").read_bytes() == expected_body(11)


def test_zero_rtt_survives_a_restart_after_twelve_seconds(qproxy_factory, backend_app,
                                                         tmp_path):
    """Tickets come from the secret file, so a restart keeps them good;
    the tickets taken are the process's, in memory. A ClientHello replayed
    soon after it was sent (wolfSSL takes one up to 11 s late: see
    test_a_replay_more_than_eleven_seconds_late_resumes_nothing), after a
    restart, found its ticket not taken and was served again, early data
    and all. For 12 s after it starts, a process resumes only the tickets
    it issued: one of the process before resumes nothing (its client makes
    a full handshake, its request served in it), and is taken all the
    same, so that a replay of it later finds it taken; after those 12 s,
    another ticket of the process before resumes with early data."""
    make = _early_sections(backend_app.tcp_server, str(tmp_path / "s"))
    q = qproxy_factory(sections=make)
    (tmp_path / "other").mkdir()
    other = _resumable(q, tmp_path / "other")
    resume = _resumable(q, tmp_path)
    sess = resume[0].split("=", 1)[1]
    shutil.copy(sess, sess + ".replay")     # the same ticket, for later
    port = q.port
    q.stop()
    q2 = qproxy_factory(sections=make, port=port)
    _gtls(q2.port, "/app/bytes/2", tmp_path, *resume)
    assert (tmp_path / "2").read_bytes() == expected_body(2)
    st = stats(q2)
    assert st["uptime"] < 12, "too slow a start to see the first 12 s: %s" % st["uptime"]
    assert (st["quic"]["resumed_handshakes"], st["quic"]["early_data_requests"],
            st["quic"]["tickets_unsure"]) == (0, 0, 1), st["quic"]
    wait_until(lambda: stats(q2)["uptime"] > 12.2, "12 s of the new process", 15)
    got = {}
    for name, args in (("replay", ["--session-file=%s.replay" % sess, resume[1]]),
                       ("other", other)):
        before = stats(q2)["quic"]
        _gtls(q2.port, "/app/bytes/3", tmp_path, *args)
        assert (tmp_path / "3").read_bytes() == expected_body(3)
        after = stats(q2)["quic"]
        got[name] = tuple(after[k] - before[k] for k in (
            "resumed_handshakes", "early_data_requests", "tickets_reused"))
    assert got == {"replay": (0, 0, 1), "other": (1, 1, 0)}, got


def test_a_ticket_refused_as_unsure_counts_once_across_a_hello_retry_request(
        qproxy_factory, backend_app, tmp_path):
    """A ClientHello sent again after a HelloRetryRequest repeats its ticket
    (RFC 8446 4.1.4). One refused in a new process's first 12 s as perhaps
    taken by the process before, and taken then, was counted again as
    taken before (tickets_reused) at the second ClientHello: it is refused
    again as it was the first time, and counted once, as unsure. (h3raw
    offers no key share, as in
    test_a_ticket_resumes_after_a_hello_retry_request.)"""
    from helpers import h3raw
    make = _early_sections(backend_app.tcp_server, str(tmp_path / "s"))
    q = qproxy_factory(sections=make)
    get = ["%s: %s" % kv for kv in ((":method", "GET"), (":scheme", "https"),
                                   (":authority", "localhost"), (":path", "/app/bytes/5"))]
    sess = str(tmp_path / "h3raw.session")
    r = h3raw(q.port, get, extra=["--session-file", sess])
    assert r.returncode == 0 and "resumed no" in r.stdout, r
    port = q.port
    q.stop()
    q2 = qproxy_factory(sections=make, port=port)
    r = h3raw(q2.port, get, extra=["--session-file", sess, "--no-key-shares"])
    assert r.returncode == 0 and "resumed no" in r.stdout, r
    assert r.outcomes == ["status 200 body 5"], r
    st = stats(q2)["quic"]
    assert (st["hello_retries"], st["tickets_unsure"], st["tickets_reused"]) == (1, 1, 0), st


def test_a_replay_more_than_eleven_seconds_late_resumes_nothing(qproxy_factory, backend_app,
                                                               tmp_path):
    """A new process resumes no ticket it did not issue for 12 s only
    (test_zero_rtt_survives_a_restart_after_twelve_seconds), because
    wolfSSL refuses a ticket whose age as its client gives it is more than
    11 s short of its age (RFC 8446 8.3): a ClientHello replayed later than
    that resumes nothing. Here qproxy's wall clock is put ahead as a replay
    would come late: 5 s, and the ticket resumes with early data; 13 s, and
    it does not (its request is served after a full handshake)."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")), start=False)
    step = preload_clock(q, str(tmp_path / "clock"))
    q.start()
    got = {}
    for late in (5, 13):
        # a ticket of its own each time (a ticket resumes once)
        resume = _resumable(q, tmp_path)
        step(late)
        before = stats(q)["quic"]
        _gtls(q.port, "/app/bytes/%d" % late, tmp_path, *resume)
        after = stats(q)["quic"]
        step(0)
        got[late] = ((tmp_path / str(late)).read_bytes() == expected_body(late),
                     after["resumed_handshakes"] - before["resumed_handshakes"],
                     after["early_data_requests"] - before["early_data_requests"])
    assert got == {5: (True, 1, 1), 13: (True, 0, 0)}, got


def test_zero_rtt_is_not_taken_after_a_reload_lowers_a_limit(qproxy_factory, backend_app,
                                                             tmp_path):
    """A client sends 0-RTT within the limits it remembers from the ticket's
    connection (RFC 9000 7.4.1, RFC 9114 7.2.4.2). After a reload that
    lowered max_streams_bidi to 1, early data on such a ticket was taken,
    and a client that opened two streams in it was closed with
    STREAM_LIMIT_ERROR. Tickets are bound to those limits: this one
    resumes nothing, and the requests go in a full handshake. A reload that
    changes none of them keeps 0-RTT."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")))
    resume = _resumable(q, tmp_path)
    conf = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(conf.replace("[global]\n", "[global]\nshutdown_timeout = 9s\n", 1))
    assert qproxyctl(q, "reload").returncode == 0
    _gtls(q.port, "/app/bytes/3", tmp_path, *resume)
    assert (tmp_path / "3").read_bytes() == expected_body(3)
    assert stats(q)["quic"]["early_data_requests"] == 1

    resume = _resumable(q, tmp_path)      # (itself in 0-RTT, on the last ticket)
    with open(q.conf, "w") as f:
        f.write(conf.replace("[global]\n", "[global]\nmax_streams_bidi = 1\n", 1))
    assert qproxyctl(q, "reload").returncode == 0
    before = stats(q)["quic"]["early_data_requests"]
    _gtls(q.port, ["/app/bytes/4", "/app/bytes/5"], tmp_path, *resume)
    assert (tmp_path / "4").read_bytes() == expected_body(4)
    assert (tmp_path / "5").read_bytes() == expected_body(5)
    assert stats(q)["quic"]["early_data_requests"] == before


def test_a_ticket_resumes_only_on_its_own_listener(qproxy_factory, backend_app,
                                                   tmp_path):
    """Ticket keys came from the secret and the 0-RTT limits alone: a
    session from one listener resumed, with early data and no certificate,
    on another with a certificate of its own. They are the listener's."""
    other = free_udp_port()

    def make(port, c, k):
        s = _early_sections(backend_app.tcp_server, str(tmp_path / "s"))(port, c, k)
        s.insert(2, ("listener other", [("address", "127.0.0.1:%d" % other),
                                        ("certificate", c), ("private_key", k),
                                        ("early_data", "on")]))
        return s
    q = qproxy_factory(sections=make)
    resume = _resumable(q, tmp_path)
    # a copy: the client keeps the ticket the other listener gives it
    for name in ("session", "tp"):
        shutil.copy(tmp_path / name, tmp_path / ("other-" + name))
    p = subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                        "--download=%s" % tmp_path, "--timeout=10s",
                        "--session-file=%s" % (tmp_path / "other-session"),
                        "--tp-file=%s" % (tmp_path / "other-tp")] +
                       ["127.0.0.1", str(other), "https://127.0.0.1:%d/app/bytes/6" % other],
                       capture_output=True, timeout=60)
    assert (tmp_path / "6").read_bytes() == expected_body(6), p
    assert stats(q)["quic"]["early_data_requests"] == 0
    _gtls(q.port, "/app/bytes/7", tmp_path, *resume)          # its own: resumed
    assert stats(q)["quic"]["early_data_requests"] == 1


def test_early_data_off_refuses_zero_rtt(qproxy_factory, backend_app, tmp_path):
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s"), early="off"))
    resume = _resumable(q, tmp_path)
    before = backend_app.count
    _gtls(q.port, "/app/late1/echo-headers", tmp_path, *resume)
    rec = backend_app.wait_for_request(lambda r: r["path"] == "/app/late1/echo-headers",
                                       start=before, timeout=5 * SLOW)
    from helpers import header_values
    assert rec and header_values(rec, "early-data") == []
    assert stats(q)["quic"]["early_data_requests"] == 0


def _with_qlog_dir(qproxy_factory, backend_app, tmp_path):
    """A private qproxy with qlog_dir on; it and the directory."""
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        extra=[("qlog_dir", str(qdir))]))
    return q, qdir


def test_qlog_dir_writes_one_qlog_per_connection(qproxy_factory, backend_app,
                                                 tmp_path):
    q, qdir = _with_qlog_dir(qproxy_factory, backend_app, tmp_path)
    start = set(os.listdir(qdir))       # the harness's readiness probe
    for _ in range(2):
        assert h3_get(q.url("/app/bytes/10")).status == 200
    deadline = time.monotonic() + 5 * SLOW
    while len(set(os.listdir(qdir)) - start) < 2:
        assert time.monotonic() < deadline, os.listdir(qdir)
        time.sleep(0.05)
    for name in set(os.listdir(qdir)) - start:
        f = qdir / name
        assert name.endswith(".sqlog") and f.stat().st_mode & 0o777 == 0o600
        # JSON text sequences (RFC 7464): records start with RS
        records = [r for r in f.read_bytes().split(b"\x1e") if r.strip()]
        assert records, name
        head = json.loads(records[0])
        assert "qlog_version" in head or "qlog_format" in head, head


def _qlog_metrics(qdir, names):
    """The data of the recovery:metrics_updated records in these qlogs
    (a record cut short, the file still being written, left out)."""
    out = []
    for name in names:
        for rec in (qdir / name).read_bytes().split(b"\x1e"):
            try:
                j = json.loads(rec)
            except ValueError:
                continue
            if j.get("name") == "recovery:metrics_updated":
                out.append(j["data"])
    return out


@pytest.mark.parametrize("cc", ["cubic", "reno", "bbr"])
def test_congestion_control_is_the_one_configured(qproxy_factory, backend_app, tmp_path,
                                                  cc):
    """congestion_control reaches ngtcp2, as its qlog shows over a download
    that loses 5 % of qproxy's datagrams: at each loss cubic sets the slow
    start threshold to 0.7 of the window and reno to half of it; bbr keeps
    none. The ratio is read against the window last logged before, which
    may have grown since: the median tells them apart (0.70 for cubic,
    0.54 or so for reno, in runs here)."""
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        extra=[("qlog_dir", str(qdir)), ("congestion_control", cc)]))
    start = set(os.listdir(qdir))       # the harness's readiness probe
    with Relay(q.port, seed=2, s2c=Faults(drop=0.05)) as r:
        resp = h3_get(r.url("/app/bytes/1000000"), timeout=30 * SLOW)
        assert resp.status == 200 and len(resp.body) == 1000000
        assert r.stats()[S2C]["dropped"] > 10, r.stats()
    time.sleep(0.5)
    metrics = _qlog_metrics(qdir, set(os.listdir(qdir)) - start)
    assert len(metrics) > 100, len(metrics)
    ratios, cwnd, ssthresh = [], None, None
    for d in metrics:
        if d.get("ssthresh") not in (None, ssthresh) and cwnd:
            ratios.append(d["ssthresh"] / cwnd)
        ssthresh = d.get("ssthresh", ssthresh)
        cwnd = d.get("congestion_window", cwnd)
    if cc == "bbr":
        assert ratios == [] and ssthresh is None, ratios
        return
    assert len(ratios) >= 5, ratios
    median = sorted(ratios)[len(ratios) // 2]
    if cc == "cubic":
        assert 0.65 <= median <= 0.75, sorted(ratios)
    else:
        assert 0.45 <= median < 0.62, sorted(ratios)


def test_a_qlog_dir_that_is_gone_is_logged_once_a_second(qproxy_factory, backend_app,
                                                         tmp_path):
    """Every connection opens its qlog: with the directory gone, each
    logged a line, so clients could fill the error log (a helper's hunt:
    68 lines in 2 s). Once a second, as for what clients cause."""
    q, qdir = _with_qlog_dir(qproxy_factory, backend_app, tmp_path)
    shutil.rmtree(qdir)
    t0 = time.monotonic()
    for i in range(10):
        assert h3_get(q.url("/app/bytes/%d" % (10 + i))).status == 200
    took = time.monotonic() - t0
    lines = [l for l in q.log_text().splitlines() if "qlog %s/" % qdir in l]
    assert 1 <= len(lines) <= took + 1 < 10, (took, lines)
    assert "No such file or directory" in lines[0], lines


def test_an_initial_cannot_take_another_connections_qlog(qproxy_factory, backend_app,
                                                         tmp_path):
    """qlog files were named by the client's first DCID alone and opened
    with O_TRUNC, and one whose packet ngtcp2 then dropped was removed: an
    Initial with a connection's DCID emptied and removed its qlog. qproxy's
    own connection ID is in the name now."""
    q, qdir = _with_qlog_dir(qproxy_factory, backend_app, tmp_path)
    start = set(os.listdir(qdir))
    assert h3_get(q.url("/app/bytes/10")).status == 200
    wait_until(lambda: set(os.listdir(qdir)) - start, "a qlog file", 5)
    name = (set(os.listdir(qdir)) - start).pop()
    odcid = bytes.fromhex(re.match(r"[0-9a-f]+", name).group(0))
    # its DCID free for a new connection's
    wait_until(lambda: stats(q)["connections"]["current"] == 0, "the connection gone", 10)
    before = stats(q)["udp_dropped"]["invalid"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(_initial(odcid, os.urandom(8)), ("127.0.0.1", q.port))
    wait_until(lambda: stats(q)["udp_dropped"]["invalid"] - before >= 3, "junk dropped", 5)
    assert (qdir / name).exists() and (qdir / name).stat().st_size > 0, os.listdir(qdir)


def test_junk_initials_leave_no_connection_or_qlog(qproxy_factory, backend_app, tmp_path):
    """An Initial whose payload does not decrypt made a connection object,
    counted as a connection and a failed handshake, and a qlog file named
    by the sender's DCID that stayed: files without end, one per datagram.
    Such a datagram is now counted as dropped, and leaves nothing."""
    q, qdir = _with_qlog_dir(qproxy_factory, backend_app, tmp_path)
    start = set(os.listdir(qdir))
    before = stats(q)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(50):
            # DCID and SCID of 8, no token, a payload that does not decrypt
            s.sendto(_initial(os.urandom(8), os.urandom(8)), ("127.0.0.1", q.port))
    deadline = time.monotonic() + 5 * SLOW
    while stats(q)["udp_dropped"]["invalid"] - before["udp_dropped"]["invalid"] < 50:
        assert time.monotonic() < deadline, stats(q)["udp_dropped"]
        time.sleep(0.05)
    after = stats(q)
    assert set(os.listdir(qdir)) == start
    assert after["connections"]["total"] == before["connections"]["total"]
    assert after["connections"]["handshakes_failed"] == \
        before["connections"]["handshakes_failed"]
    assert h3_get(q.url("/app/bytes/10")).status == 200


def test_key_update_from_the_client(qp, tmp_path):
    n = 300000
    p = subprocess.run([gtlsclient_binary(), "--exit-on-all-streams-close",
                        "--key-update=300ms", "--download=%s" % tmp_path,
                        "--timeout=15s", "127.0.0.1", str(qp.port),
                        "https://127.0.0.1:%d/app/slow/%d?ms=1500" % (qp.port, n)],
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("latin-1")
    assert "Initiate key update" in out
    # qproxy answered in the new key phase
    assert [l for l in out.splitlines() if " pkt rx " in l and "type=1RTT k=1" in l]
    saved = [f for f in os.listdir(tmp_path) if f.startswith(str(n))]
    assert saved, os.listdir(tmp_path)
    assert (tmp_path / saved[0]).read_bytes() == expected_body(n)


def test_keylog_file_matches_the_clients_secrets(qproxy_factory, backend_app,
                                                tmp_path):
    """keylog_file writes the secrets in NSS's format: the very lines that
    GnuTLS writes on gtlsclient's side (SSLKEYLOGFILE) for the same
    connection, so a capture can be decrypted with either; mode 0600 and a
    warning while it is on."""
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    keylog.chmod(0o644)                 # an existing file is narrowed
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        extra=[("keylog_file", str(keylog))]))
    assert "keylog_file is on" in q.log_text()
    assert keylog.stat().st_mode & 0o777 == 0o600
    client_log = tmp_path / "client-keys.log"
    env = dict(os.environ, SSLKEYLOGFILE=str(client_log))
    p = subprocess.run([gtlsclient_binary(), "--exit-on-all-streams-close",
                        "--download=%s" % tmp_path, "--timeout=15s", "-q",
                        "127.0.0.1", str(q.port),
                        "https://127.0.0.1:%d/app/bytes/100" % q.port],
                       capture_output=True, timeout=60, env=env)
    assert (tmp_path / "100").read_bytes() == expected_body(100), p
    theirs = [l.split() for l in client_log.read_text().splitlines()]
    randoms = {r for _, r, _ in theirs}
    assert len(randoms) == 1, theirs
    labels = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
              "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    assert labels <= {l for l, _, _ in theirs}, theirs
    deadline = time.monotonic() + 5 * SLOW
    while True:
        ours = [l.split() for l in keylog.read_text().splitlines()]
        mine = {(l, s) for l, r, s in ours if r in randoms}
        if {l for l, _ in mine} >= labels or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # every secret both sides logged for this connection is the same
    for label, _, secret in theirs:
        if label in labels:
            assert (label, secret) in mine, (label, ours)
    assert all(len(x) == 3 and len(x[1]) == 64 for x in ours), ours

    # reopened on SIGUSR1 (log rotation): a file put in its place that
    # others may read is narrowed too, as it was not before
    keylog.rename(tmp_path / "keys.log.1")
    keylog.write_text("")
    keylog.chmod(0o644)
    q.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5 * SLOW
    while keylog.stat().st_mode & 0o777 != 0o600:
        assert time.monotonic() < deadline, oct(keylog.stat().st_mode)
        time.sleep(0.05)


def test_alpn_h3_is_negotiated(qp, tmp_path):
    """RFC 9001 8.1: the server must select an application protocol.  A
    client that checks (h2load refuses a QUIC connection without one) sees
    h3; gtlsclient reports what was negotiated."""
    p = subprocess.run([gtlsclient_binary(), "--exit-on-all-streams-close",
                        "--timeout=10s", "--download=%s" % tmp_path, "127.0.0.1",
                        str(qp.port), "https://127.0.0.1:%d/app/bytes/10" % qp.port],
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("latin-1")
    assert "Negotiated ALPN is h3" in out, out[-2000:]



@pytest.mark.parametrize("alpn", ["", "h3-29", "h2"])
def test_client_without_h3_alpn_is_refused(qp, backend_app, alpn):
    """RFC 9001 8.1: a client that offers no ALPN at all, or none qproxy
    speaks, gets the TLS alert no_application_protocol (CRYPTO_ERROR 0x178)
    and its request reaches no backend."""
    start = backend_app.count
    r = h3raw(qp.port, [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % qp.port,
                        ":path: /app/bytes/10"], timeout=5, extra=["--alpn", alpn])
    assert "connection closed by peer (0x178)" in r.stderr, r
    assert backend_app.count == start
    ok = h3raw(qp.port, [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % qp.port,
                         ":path: /app/bytes/10"], timeout=5)
    assert ok.outcomes == ["status 200 body 10"], ok


@pytest.mark.parametrize("suite", ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"])
def test_cipher_suites_protect_both_directions(qp, tmp_path, suite):
    """Each TLS 1.3 cipher suite a QUIC client may pick carries a 1 MiB
    download and a 1 MiB upload intact.  qproxy protects AES-GCM packets and
    headers with wolfCrypt directly and ChaCha20-Poly1305 through ngtcp2's
    own path: a wrong key, nonce, tag or mask fails the transfer."""
    n = 1024 * KiB + 5
    ciphers = "--ciphers=NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+" + suite
    p = gtls_fetch(qp.port, ["/app/bytes/%d" % n], tmp_path / "get", timeout=60,
                   extra_args=[ciphers])
    assert "Negotiated cipher suite is %s" % suite in p.stderr + p.stdout, p.stderr[-2000:]
    assert p.statuses == [200], p.stderr[-2000:]
    assert file_sha256(tmp_path / "get" / str(n)) == expected_sha256(n)
    src = tmp_path / "body.bin"
    src.write_bytes(expected_body(n))
    p = gtls_fetch(qp.port, ["/app/upload"], tmp_path / "post", timeout=60,
                   extra_args=[ciphers, "-m", "POST", "-d", str(src)])
    assert p.statuses == [200], p.stderr[-2000:]
    j = json.loads((tmp_path / "post" / "upload").read_bytes())
    assert j["length"] == n and j["sha256"] == expected_sha256(n), j


@pytest.mark.parametrize("stray", ["01", "0100", "010000"])
def test_initial_message_cut_short_by_the_key_change_is_refused(qp, stray):
    """A message may not span a key change (RFC 8446 5.1): bytes after the
    ClientHello at the Initial level that begin another message (1 to 3,
    less than its header), then the Finished at the Handshake level, get
    CRYPTO_ERROR unexpected_message (0x10a). qproxy holds such a header
    back from wolfSSL until it is whole, so wolfSSL never saw them and
    took the Finished."""
    req = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % qp.port,
           ":path: /app/bytes/10"]
    r = h3raw(qp.port, req, timeout=5, extra=["--tls-after-hello", stray])
    assert r.outcomes == ["closed 0x10a"], r
    ok = h3raw(qp.port, req, timeout=5)
    assert ok.outcomes == ["status 200 body 10"], ok


@pytest.mark.parametrize("when", ["in-handshake", "at-handshake", "after-request"])
@pytest.mark.parametrize("message", ["04 00 00 01 00", "18 00 00 01 00"],
                         ids=["new_session_ticket", "key_update"])
def test_tls_messages_after_the_handshake_are_refused(qp, message, when):
    """A client has no TLS message to send after its Finished (RFC 9001 6:
    no KeyUpdate; tickets go only from server to client): one that sends a
    NewSessionTicket or a KeyUpdate right after the Finished in the same
    Handshake-level CRYPTO stream, in 1-RTT packets together with the
    Finished, or after a request, gets CRYPTO_ERROR unexpected_message
    (0x10a), and qproxy goes on serving. A ticket in a 1-RTT packet, and a
    KeyUpdate after the Finished, once made wolfSSL install keys again and
    the daemon abort on an ngtcp2 assertion."""
    req = [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % qp.port,
           ":path: /app/bytes/10"]
    extra = ["--tls-after", message]
    if when != "after-request":
        extra.append("--tls-" + when)
    r = h3raw(qp.port, req, timeout=5, extra=extra)
    assert "tls-after closed 0x10a" in r.stdout.splitlines(), r
    if when == "after-request":
        assert r.outcomes[0] == "status 200 body 10", r
    ok = h3raw(qp.port, req, timeout=5)
    assert ok.outcomes == ["status 200 body 10"], ok
    assert qp.proc.poll() is None, "qproxy exited"


def test_a_ticket_resumes_across_a_key_epoch(qproxy_factory, backend_app, tmp_path):
    """qproxy.conf(5): ticket keys are rotated every 12 hours (epochs of the
    wall clock), a ticket is good for 12 hours, as clients are told, and
    restarts keep them valid. Two bugs made that false. wolfSSL's defaults
    were left in place: each NewSessionTicket said its ticket lives 300 s,
    which clients obey (RFC 8446 4.6.1), and wolfSSL refused one older than
    500 s (found by helper-64). And a ticket of the last epoch's key was
    handed back to wolfSSL as WOLFSSL_TICKET_RET_CREATE, which its TLS 1.3
    code skips: every ticket died at 00:00 and 12:00 UTC (the first version
    of this test passed or failed with the time of day it ran at). Here
    qproxy and the client run with their wall clocks moved: the ticket is
    issued 2 minutes before an epoch ends, and used 1 minute later (the
    control), 5 minutes later (in the next epoch) and 11 hours later (near
    the end of its life); each time with early data. (One process, its
    clock stepped: one started anew for each would resume no ticket of
    the one before in its first 12 s.)"""
    lib = timeshift_library()
    secret = str(tmp_path / "s")
    epoch = 12 * 3600
    issued = epoch - 120 - int(time.time()) % epoch
    if issued < 60:
        issued += epoch
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server, secret),
                       start=False)
    step = preload_clock(q, str(tmp_path / "clock"), issued)
    q.start()

    def run(shift, path, *args):
        step(shift)
        before = stats(q)["quic"]["early_data_requests"]
        env = dict(os.environ, LD_PRELOAD=lib, TIMESHIFT=str(shift))
        p = subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                            "--download=%s" % tmp_path, "--timeout=10s"] + list(args) +
                           ["127.0.0.1", str(q.port), "https://127.0.0.1:%d%s" % (q.port, path)],
                           capture_output=True, timeout=60, env=env)
        quic = stats(q)["quic"]
        seen[shift] = (quic, p.stderr[-800:])
        return p, quic["early_data_requests"] - before

    seen = {}     # each run's quic counters and client's stderr, for a failure
    tp = tmp_path / "tp"
    got = {}
    # a ticket for each (a ticket resumes once), all issued at the time
    for later in (60, 300, 11 * 3600):
        sess = tmp_path / ("session-%d" % later)
        p, _ = run(issued, "/app/bytes/1", "--session-file=%s" % sess, "--tp-file=%s" % tp,
                   "--wait-for-ticket")
        assert sess.exists() and tp.exists(), "no session ticket came: %s" % p.stderr[-1500:]
    for later in (60, 300, 11 * 3600):
        sess = tmp_path / ("session-%d" % later)
        p, early = run(issued + later, "/app/bytes/%d" % later, "--session-file=%s" % sess,
                       "--tp-file=%s" % tp)
        body = tmp_path / str(later)
        # (gtlsclient, with transport parameters but no ticket left to
        # send, fails to send its request at all: ERR_CALLBACK_FAILURE)
        got[later] = (early, body.exists() and body.read_bytes() == expected_body(later))
    # (11 hours later, about one run in a hundred had its request in
    # 1-RTT, the ticket refused: wolfSSL's ticket age without its modulo,
    # see test_a_ticket_whose_obfuscated_age_passes_2_32_takes_early_data)
    assert got == {60: (1, True), 300: (1, True), 11 * 3600: (1, True)}, (got, seen)


def test_a_wall_clock_set_back_doubts_unknown_tickets(qproxy_factory, backend_app,
                                                     tmp_path):
    """wolfSSL checks a ticket's age by the wall clock: set back S seconds
    between a ClientHello and its replay, it takes the replay up to S + 11
    s after it, past the 12 s in which a process resumes no ticket it does
    not know was not taken (test_zero_rtt_survives_a_restart_after_twelve_
    seconds). A wall clock set back by more than a second is said in the
    log, and for S + 12 s no ticket resumes that the table does not have,
    not even the process's own."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")), start=False)
    step = preload_clock(q, str(tmp_path / "clock"), 100)
    q.start()
    step(97)        # 3 s back
    resume = _resumable(q, tmp_path)
    _gtls(q.port, "/app/bytes/4", tmp_path, *resume)
    assert (tmp_path / "4").read_bytes() == expected_body(4)
    st = stats(q)["quic"]
    assert (st["resumed_handshakes"], st["early_data_requests"],
            st["tickets_unsure"]) == (0, 0, 1), st
    assert "the wall clock went back 3 s" in open(q.log).read()


def test_a_ticket_whose_obfuscated_age_passes_2_32_takes_early_data(
        qproxy_factory, backend_app, tmp_path):
    """RFC 8446 4.2.11.1: a client sends its ticket's age plus the
    ticket's ticket_age_add, modulo 2^32. wolfSSL 5.7.2 took the age back
    out without the modulo, and refused the ticket (a full handshake, no
    early data) whenever the sum had passed 2^32: by chance, for one
    resumption in a hundred 11 hours after its ticket (the flake of
    test_a_ticket_resumes_across_a_key_epoch). qproxy's patch to wolfSSL
    (scripts/patches/wolfssl-ticket-age-mod.patch) takes the modulo. Here
    every ticket's ticket_age_add is 2^32 - 1 (agefill.so), so that any
    age passes: a ticket is used at once, with early data."""
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s")), start=False)
    preload_agefill(q, 0xffffffff)
    q.start()
    resume = _resumable(q, tmp_path)
    before = stats(q)["quic"]
    p = _gtls(q.port, "/app/bytes/5", tmp_path, *resume)
    assert (tmp_path / "5").read_bytes() == expected_body(5), p.stderr[-800:]
    after = stats(q)["quic"]
    assert after["resumed_handshakes"] - before["resumed_handshakes"] == 1, (before, after)
    assert after["early_data_requests"] - before["early_data_requests"] == 1, (before, after)


def test_a_keylog_file_that_cannot_be_written_is_not_warned_of_per_secret(
        qproxy_factory, backend_app, tmp_path):
    """A keylog_file whose disk is full (/dev/full here) wrote a warning
    for every secret it lost: four or five lines for each connection, as
    many as clients care to make, into an error log that is likely on the
    same full disk. qproxy.conf(5) has such lines held to one a second
    (log_level) and the access log's to one a minute; the connections are
    served either way."""
    err = tmp_path / "error.log"
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s"),
        extra=[("keylog_file", "/dev/full"), ("error_log", str(err))]))
    for i in range(5):
        assert h3_get(q.url("/app/bytes/%d" % (i + 1))).status == 200
    lost = [l for l in err.read_text().splitlines() if "key log" in l]
    assert 1 <= len(lost) <= 2, "%d lines:\n%s" % (len(lost), "\n".join(lost[:12]))


def _cpu_gcm_path():
    """The widest of gcm.c's paths that can run here, from what its CPUID
    check asks for as the kernel lists it: "avx512", "avx2" or None."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                if not {"aes", "pclmulqdq", "avx", "avx2", "vaes",
                        "vpclmulqdq"} <= flags:
                    return None
                if {"avx512f", "avx512bw", "avx512vl"} <= flags:
                    return "avx512"
                return "avx2"
    return None


def test_aes_gcm_vaes_picks_the_path_or_leaves_every_packet_to_wolfssl(
        qproxy_factory, backend_app, tmp_path):
    """qproxy.conf(5) aes_gcm_vaes: on (the default), the packets of a
    download are sealed and opened by gcm.c on a CPU with VAES and
    VPCLMULQDQ, on 512-bit registers with AVX-512, else on 256-bit ones
    (quic vaes_packets counts them; none on another CPU); a reload with
    avx2 takes the 256-bit path even with AVX-512, one with off leaves
    every packet to wolfSSL, and one with on takes them back. The log
    says which at the start and at each reload that changes it."""
    q = qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "s")))
    path = _cpu_gcm_path()
    said = {"avx512": "qproxy's own, VAES on 512-bit registers (AVX-512)",
            "avx2": "qproxy's own, VAES on 256-bit registers (AVX2)",
            "off": "wolfSSL's (aes_gcm_vaes off)",
            None: "wolfSSL's (this CPU has no VAES and VPCLMULQDQ)"}

    def logged():
        return [l.split("AES-GCM of QUIC packets: ", 1)[1]
                for l in q.log_text().splitlines()
                if "AES-GCM of QUIC packets: " in l]

    def fetch(setting):
        if setting is not None:
            glob = q.sections[0][1]
            glob[:] = [(k, v) for k, v in glob if k != "aes_gcm_vaes"] + [
                ("aes_gcm_vaes", setting)]
            with open(q.conf, "w") as f:
                f.write(render_config(q.sections))
            p = qproxyctl(q, "reload")
            assert p.returncode == 0, p.stderr
        before = stats(q)["quic"]["vaes_packets"]
        r = h3_get(q.url("/app/bytes/200000"))
        assert r.status == 200 and r.body == expected_body(200000), r
        return stats(q)["quic"]["vaes_packets"] - before

    got = [fetch(None)]
    assert logged() == [said[path]]
    got += [fetch("avx2"), fetch("off"), fetch("on")]
    if path == "avx512":
        assert got[0] >= 100 and got[1] >= 100 and got[2] == 0 and \
            got[3] >= 100, got
        assert logged() == [said["avx512"], said["avx2"], said["off"],
                            said["avx512"]]
    elif path == "avx2":
        assert got[0] >= 100 and got[1] >= 100 and got[2] == 0 and \
            got[3] >= 100, got
        assert logged() == [said["avx2"], said["off"], said["avx2"]]
    else:
        assert got == [0, 0, 0, 0], got
        assert logged() == [said[None], said["off"], said[None]]


def test_a_ticket_resumes_after_a_hello_retry_request(qproxy_factory, backend_app,
                                                      tmp_path):
    """A client resuming whose ClientHello has no key share qproxy takes
    gets a HelloRetryRequest and sends its ClientHello again, with the
    same ticket (RFC 8446 4.1.4). That is the same connection's, not a
    replay, and resumes. The ticket was counted as taken at the first
    ClientHello, and the second refused as a reuse: a whole handshake
    every time for such a client (one whose only key share is of a group
    qproxy lacks, as X448, or a post-quantum one alone). gtlsclient
    aborts on a HelloRetryRequest when it resumes (ngtcp2's client asserts
    on a 0-RTT key installed twice, test_zero_rtt_after_hello_retry_request),
    so h3raw, on wolfSSL, offers no key share at all. The control first:
    the same resumption with its key share, and gtlsclient's; then the
    resumed_handshakes row counts each."""
    from helpers import h3raw
    q = qproxy_factory(sections=_early_sections(backend_app.tcp_server,
                                                str(tmp_path / "s"), early="off"))
    assert stats(q)["quic"]["resumed_handshakes"] == 0
    session = _resumable(q, tmp_path)[0]
    p = _gtls(q.port, "/app/bytes/11", tmp_path, session, "--disable-early-data")
    assert p.returncode == 0 and (tmp_path / "11").read_bytes() == expected_body(11), p
    st = stats(q)["quic"]
    assert (st["resumed_handshakes"], st["tickets_reused"]) == (1, 0), st
    get = ["%s: %s" % kv for kv in ((":method", "GET"), (":scheme", "https"),
                                   (":authority", "localhost"), (":path", "/app/bytes/5"))]
    sess = str(tmp_path / "h3raw.session")
    # each keeps the ticket it got for the next: the first has none
    for n, extra, said, retries in ((1, [], "no", 0), (2, [], "yes", 0),
                                    (3, ["--no-key-shares"], "yes", 1)):
        r = h3raw(q.port, get, extra=["--session-file", sess] + extra)
        assert r.returncode == 0 and "resumed %s" % said in r.stdout, (n, r)
        assert r.outcomes == ["status 200 body 5"], (n, r)
        st = stats(q)["quic"]
        assert (st["hello_retries"], st["tickets_reused"]) == (retries, 0), (n, st)
    assert st["resumed_handshakes"] == 3, st


@pytest.mark.parametrize("kind", ["ping", "pings", "padding", "path-challenge", "max-streams",
                                  "data-blocked"])
def test_a_flood_of_frames_that_ask_nothing_costs_no_log_and_no_memory(qproxy_factory,
                                                                       backend_app, kind):
    """A client may send frames that cost qproxy a little each and ask for
    nothing it must keep: PING, PADDING, PATH_CHALLENGE (answered, with a
    PATH_RESPONSE ngtcp2 keeps a few of), MAX_STREAMS, DATA_BLOCKED. 3,000
    packets of them at 3,000 a second (then the client's close) write no
    line at log_level info, close nothing for a protocol error, and hold
    qproxy's QUIC memory where a request does (measured: 20,000 packets of 1,200 bytes took 0.2
    to 0.4 s of CPU, whatever the frames)."""
    q = qproxy_factory(sections=lambda p, c, k: [
        ("global", [("log_level", "info")]),
        ("listener main", [("address", "127.0.0.1:%d" % p),
                           ("certificate", c), ("private_key", k)]),
        ("backend app", [("server", backend_app.tcp_server)]),
        ("route app", [("path_prefix", "/app/"), ("backend", "app")])])
    logged = os.path.getsize(q.log)
    packets = 3000
    r = h3raw(q.port, [":method: GET", ":scheme: https", ":authority: 127.0.0.1:%d" % q.port,
                       ":path: /app/bytes/10"], timeout=10 * SLOW,
              extra=["--flood", kind, "--flood-packets", str(packets), "--flood-rate", "3000"])
    assert r.outcomes == ["status 200 body 10"], r
    m = re.search(r"flood sent (\d+) got (\d+)", r.stdout)
    assert m and int(m.group(1)) == packets, r
    if kind != "padding":
        assert int(m.group(2)) >= packets // 10, r     # read: acknowledged
    s = stats(q)
    assert s["limits"]["closed_protocol_errors"] == 0, s["limits"]
    assert s["udp"]["datagrams_received"] >= packets, s["udp"]
    assert s["buffers"]["quic_peak_bytes"] < 256 * 1024, s["buffers"]
    assert os.path.getsize(q.log) == logged, open(q.log).read()[logged:][-2000:]
