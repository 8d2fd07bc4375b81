"""Connection IDs a load balancer can route (cid_server_id, QUIC-LB): each
one qproxy gives a client names the server, in the clear or under the key
the load balancer shares. gtlsclient shows the IDs it is given, and
tests/tools/quiclb.py decodes them as a load balancer would; a load
balancer made with it keeps a client that moves to new addresses on the
server of its connection."""

import os
import re
import signal
import subprocess

import pycurl
import pytest

from helpers import (SLOW, expected_body, expected_sha256, gtlsclient_binary, h3_get,
                     render_config)
import quicinitial  # tests/tools, on sys.path by conftest.py
from quiclb import Config, LoadBalancer
from relay import Relay
from test_ops import qproxyctl, stats
from test_transport import _exchange, _sections

KEY = "8f95f09245765f80256934e50c66207f"


def _key_file(tmp_path, text=KEY + "\n", mode=0o600):
    path = tmp_path / "lb.key"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def _lb_proxy(qproxy_factory, backend_app, tmp_path, extra, retry="never"):
    """An instance with tmp_path's secret_file: instances behind one load
    balancer share it, so that one's stateless reset for a connection of
    another's ends it, as RFC 9000 10.3 has it."""
    return qproxy_factory(sections=lambda port, c, k: _sections(
        c, k, port, backend_app.tcp_server, str(tmp_path / "secret"), retry=retry,
        extra=[("shutdown_timeout", "5s")] + list(extra)))


def test_quiclb_tool_matches_the_drafts_vectors():
    """The tests' decoder against draft-ietf-quic-load-balancers-21's test
    vectors (the last is listed with config ID 3, but its first octet, 0x12,
    says 0) and its worked example of four passes."""
    key = bytes.fromhex(KEY)
    vectors = [
        (0, "c4605e", "4504cc4f", None, "07c4605e4504cc4f"),
        (0, "ed793a", "ee080dbf", key, "0720b1d07b359d3c"),
        (1, "ed793a51d49b8f5fab65", "ee080dbf48", key, "2fcc381bc74cb4fbad2823a3d1f8fed2"),
        (2, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", key,
         "504dd2d05a7b0de9b2b9907afb5ecf8cc3"),
        (0, "ed793a51d49b8f5fab", "ee080dbf48c0d1e55d", key,
         "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc"),
        (0, "31441a", "9c69c275", bytes.fromhex("fdf726a9893ec05c0632d3956680baf0"),
         "0767947d29be054a"),
    ]
    for cr, sid, nonce, k, cid in vectors:
        sid, nonce, cid = bytes.fromhex(sid), bytes.fromhex(nonce), bytes.fromhex(cid)
        cfg = Config(len(sid), len(nonce), cr, k)
        assert cfg.encode(sid, nonce) == cid
        assert cfg.decode(cid) == (sid, nonce)


_SCID = re.compile(r" pkt rx .* scid=0x([0-9a-f]+) .*type=(Initial|Handshake|Retry)")
_NEW_CID = re.compile(r" frm rx .* NEW_CONNECTION_ID\(0x18\) seq=\d+ cid=0x([0-9a-f]+)")


def _server_cids(q, tmp_path):
    """The connection IDs qproxy gave gtlsclient: the SCID of its long
    header packets and those of its NEW_CONNECTION_ID frames. The response
    must come whole, on packets with IDs of that length."""
    dl = tmp_path / "dl"
    dl.mkdir(exist_ok=True)
    p = subprocess.run([gtlsclient_binary(), "--exit-on-all-streams-close", "--timeout=5s",
                        "--download=%s" % dl, "127.0.0.1", str(q.port),
                        "https://127.0.0.1:%d/app/bytes/10" % q.port],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert (dl / "10").read_bytes() == expected_body(10)
    (dl / "10").unlink()
    cids, retries = set(), 0
    for line in p.stdout.splitlines() + p.stderr.splitlines():
        m = _SCID.search(line) or _NEW_CID.search(line)
        if m:
            cids.add(bytes.fromhex(m.group(1)))
            retries += m.re is _SCID and m.group(2) == "Retry"
    return cids, retries


@pytest.mark.parametrize("sid,nonce,keyed,retry", [
    ("a1b2c3", None, True, "always"),        # 3 + 13: one AES block; a Retry's too
    ("a1b2c3", "6", True, "never"),          # 3 + 6: four passes, odd length
    ("a1b2c3d4e5f60718293a", "8", True, "never"),   # 10 + 8: the ID past the first half
    ("0102", "6", False, "never"),           # in the clear
])
def test_connection_ids_name_the_server(qproxy_factory, backend_app, tmp_path, sid, nonce,
                                        keyed, retry):
    extra = [("cid_server_id", sid), ("cid_config_id", "2")]
    if nonce:
        extra.append(("cid_nonce_length", nonce))
    if keyed:
        extra.append(("cid_key_file", _key_file(tmp_path)))
    q = _lb_proxy(qproxy_factory, backend_app, tmp_path, extra, retry=retry)
    sid_b = bytes.fromhex(sid)
    nonce_len = int(nonce) if nonce else 16 - len(sid_b)
    cfg = Config(len(sid_b), nonce_len, 2, bytes.fromhex(KEY) if keyed else None)
    cids, retries = _server_cids(q, tmp_path)
    assert retries == (1 if retry == "always" else 0)
    # the Retry's, the one of the handshake, and 6 more (active_connection_id_limit 7)
    assert len(cids) >= 7 + retries, cids
    nonces = set()
    for cid in cids:
        assert len(cid) == cfg.cid_len(), cid.hex()
        assert cid[0] == (2 << 5) | (len(sid_b) + nonce_len), cid.hex()
        got = cfg.decode(cid)
        assert got is not None and got[0] == sid_b, cid.hex()
        nonces.add(got[1])
    assert len(nonces) == len(cids)
    # libcurl too, whose short headers carry them
    assert h3_get(q.url("/app/bytes/1000")).body == expected_body(1000)
    if not keyed:
        assert "cid_key_file" in q.log_text()      # warned: the server ID is in the clear


@pytest.mark.parametrize("lb_ids", [True, False])
def test_a_load_balancer_keeps_a_moving_client_on_its_server(qproxy_factory, backend_app,
                                                             tmp_path, lb_ids):
    """Two qproxy instances behind a load balancer that sends a datagram to
    the server its DCID names, and a client's first Initials (whose DCID it
    chose itself) to the next server in turn for each new client address.
    libcurl downloads while a relay moves it to a new address now and then:
    with QUIC-LB IDs the download ends on the server it began on; with
    random IDs the load balancer sends the moved client to the other one,
    whose stateless reset (the two share secret_file) ends the download."""
    key = _key_file(tmp_path)
    servers = {}
    for sid in (b"\x01", b"\x02"):
        extra = [("cid_server_id", sid.hex()), ("cid_key_file", key)] if lb_ids else []
        servers[sid] = _lb_proxy(qproxy_factory, backend_app, tmp_path, extra)
    cfg = Config(1, 15, 0, bytes.fromhex(KEY))
    n = 4 * 1024 * 1024
    with LoadBalancer(cfg, {sid: q.port for sid, q in servers.items()}) as lb, \
            Relay(lb.port, seed=8, rebind_every=(1.0, 2.0), rebind_mode="address") as r:
        try:
            resp = h3_get(r.url("/app/slow/%d?ms=4000" % n), timeout=30 * SLOW)
            error = None
        except pycurl.error as e:
            error = e
        rebinds = r.rebinds
    first, other = servers[b"\x01"], servers[b"\x02"]
    if lb_ids:
        assert rebinds >= 2, rebinds
        assert error is None, error
        assert resp.status == 200 and resp.sha256 == expected_sha256(n)
        assert lb.routed_by_cid > 100 and lb.unknown_sid == 0, lb.routed_by_cid
        assert stats(first)["connections"]["handshakes_completed"] == 2    # + the probe
        assert stats(other)["quic"]["stateless_resets_sent"] == 0
    else:
        # (a random ID may now and then look like one of the load
        # balancer's: no count of those is asserted)
        assert error is not None
        assert stats(other)["quic"]["stateless_resets_sent"] >= 1


def test_connection_id_keys_take_effect_at_restart(qproxy_factory, backend_app, tmp_path):
    """A reload keeps the connection IDs of the start, as a connection's
    packets carry no length of their ID, and says so when the file asks for
    others: another server ID, or a new key in the same key file. The file
    is compared with what the start took, not with the last reload."""
    key = _key_file(tmp_path)
    q = _lb_proxy(qproxy_factory, backend_app, tmp_path,
                  [("cid_server_id", "0a"), ("cid_key_file", key)])
    warning = ("cid_server_id, cid_nonce_length, cid_config_id and cid_key_file changes "
               "take effect at restart")

    def reload(sid):
        glob = q.sections[0][1]
        glob[:] = [(k, sid if k == "cid_server_id" else v) for k, v in glob]
        with open(q.conf, "w") as f:
            f.write(render_config(q.sections))
        p = qproxyctl(q, "reload")
        assert p.returncode == 0, p.stderr
        return q.log_text().count(warning)

    assert reload("0a") == 0
    _key_file(tmp_path, "00" * 16 + "\n")           # a new key, same file
    assert reload("0a") == 1
    _key_file(tmp_path)
    assert reload("0b") == 2
    assert reload("0b") == 3                        # still not what runs
    assert reload("0a") == 3                        # back to it
    cids, _ = _server_cids(q, tmp_path)
    cfg = Config(1, 15, 0, bytes.fromhex(KEY))
    assert cids and all(cfg.decode(c)[0] == b"\x0a" for c in cids), cids


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "in-the-clear"])
def test_workers_with_server_ids(qproxy_factory, backend_app, tmp_path, keyed):
    """workers with cid_server_id: each connection ID still names the
    server, and the byte after the server ID names the worker that made
    it (one worker for all of a connection's), which the kernel steers by.
    New connections go to both workers and are served, and a client that
    moves to new addresses keeps its connection, on its worker, with no
    stateless reset. Steered by the first byte, which QUIC-LB gives the
    same to every ID, every packet after the handshakes went to one
    worker."""
    from test_workers import _worker_stats
    extra = [("cid_server_id", "a1b2c3"), ("workers", "2")]
    if keyed:
        extra.append(("cid_key_file", _key_file(tmp_path)))
    q = _lb_proxy(qproxy_factory, backend_app, tmp_path, extra)
    cfg = Config(3, 13, 0, bytes.fromhex(KEY) if keyed else None)
    for _ in range(3):
        cids, _ = _server_cids(q, tmp_path)
        assert len(cids) >= 7, cids
        for cid in cids:
            got = cfg.decode(cid)
            assert got is not None and got[0] == bytes.fromhex("a1b2c3"), cid.hex()
        assert len({cid[4] % 2 for cid in cids}) == 1, [c.hex() for c in cids]
    for i in range(20):
        assert h3_get(q.url("/app/bytes/%d" % (100 + i))).body == expected_body(100 + i)
    served = [_worker_stats(q, w)["connections"]["handshakes_completed"] for w in (0, 1)]
    assert min(served) > 0, served
    n = 2 * 1024 * 1024
    with Relay(q.port, seed=8, rebind_every=(0.5, 1.0), rebind_mode="address") as r:
        resp = h3_get(r.url("/app/slow/%d?ms=3000" % n), timeout=30 * SLOW)
        rebinds = r.rebinds
    assert rebinds >= 2, rebinds
    assert resp.status == 200 and resp.sha256 == expected_sha256(n)
    assert stats(q)["quic"]["stateless_resets_sent"] == 0, (
        [c.hex() for c in cids],
        [l for l in q.log_text().splitlines() if "stateless reset" in l])


def test_workers_with_a_long_server_id_and_a_first_flight_of_two_datagrams(
        qproxy_factory, backend_app, tmp_path):
    """With a server ID of 12 bytes the byte that names the worker is the
    14th of a connection ID, past the end of a client's first DCID of 8
    bytes (the least RFC 9000 allows). With no SCID, that byte of a long
    header was one of the packet number's, which header protection makes
    differ from packet to packet: a ClientHello in two Initials (a long
    one, as post-quantum key shares make) went to either worker, and when
    to both, neither had it whole and no ServerHello came. The kernel now
    steers a long header whose DCID is that short by the DCID's first
    byte: every client gets its ServerHello."""
    q = _lb_proxy(qproxy_factory, backend_app, tmp_path,
                  [("cid_server_id", "a1b2c3d4e5f60718293a4b5c"), ("workers", "2"),
                   ("cid_key_file", _key_file(tmp_path))])
    clients = []
    try:
        for _ in range(8):
            c = quicinitial.Client(q.port)
            c.scid = b""
            c.send_crypto(quicinitial.client_hello(b"", server_name=b"x" * 1200),
                          chunk=1000)
            assert c.pn == 2
            clients.append(c)
        answered = [any(f[0] == "CRYPTO" for f in c.receive(0.25 * SLOW)) for c in clients]
        assert all(answered), answered
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("new_sid", ["0a0b0c", "0a0b"], ids=["same-length", "shorter"])
def test_a_worker_started_again_keeps_the_connection_ids_of_the_start(
        qproxy_factory, backend_app, tmp_path, new_sid):
    """After a reload that asks for another server ID (warned: it takes
    effect at restart), a worker that dies and is started again makes the
    IDs of the start, as the others do: it took the reloaded configuration's
    server ID, which sends its connections to another server, and with
    another length named its worker at a byte the kernel does not steer by."""
    from helpers import wait_until
    from test_workers import _worker_pids
    q = _lb_proxy(qproxy_factory, backend_app, tmp_path,
                  [("cid_server_id", "a1b2c3"), ("workers", "2"),
                   ("cid_key_file", _key_file(tmp_path))])
    glob = q.sections[0][1]
    glob[:] = [(k, new_sid if k == "cid_server_id" else v) for k, v in glob]
    with open(q.conf, "w") as f:
        f.write(render_config(q.sections))
    assert qproxyctl(q, "reload").returncode == 0
    assert "take effect at restart" in q.log_text()
    for pid in _worker_pids(q):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in _worker_pids(q) and
                   stats(q)["workers"]["answered"] == 2, "the worker started again", 10)
    cfg = Config(3, 13, 0, bytes.fromhex(KEY))
    for _ in range(4):
        cids, _ = _server_cids(q, tmp_path)
        assert cids
        for cid in cids:
            got = cfg.decode(cid)
            assert got is not None and got[0] == bytes.fromhex("a1b2c3"), cid.hex()


_NEW_CID_TOKEN = re.compile(r" frm rx .* NEW_CONNECTION_ID\(0x18\) seq=\d+ cid=0x([0-9a-f]+) "
                            r".*stateless_reset_token=0x([0-9a-f]+)")


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "in-the-clear"])
def test_no_stateless_reset_for_another_servers_connection_ids(qproxy_factory, backend_app,
                                                              tmp_path, keyed):
    """Instances behind one load balancer share secret_file, so each would
    compute the stateless reset token of the others' connection IDs. A
    short header packet with a connection ID of server 01, sent to server
    02 (its own address, or a load balancer that routes it there), was
    answered with a stateless reset carrying the very token server 01 gave
    its client for that ID: whoever sees a client's packets could end its
    connection with it (RFC 9000 21.11, the stateless reset oracle). An ID
    naming another server is not this one's to reset; one naming this
    server still is."""
    extra = [("cid_key_file", _key_file(tmp_path))] if keyed else []
    one, two = (_lb_proxy(qproxy_factory, backend_app, tmp_path,
                          [("cid_server_id", sid)] + extra) for sid in ("01", "02"))
    cfg = Config(1, 15, 0, bytes.fromhex(KEY) if keyed else None)
    dl = tmp_path / "dl"
    dl.mkdir()
    p = subprocess.run([gtlsclient_binary(), "--exit-on-all-streams-close", "--timeout=5s",
                        "--download=%s" % dl, "127.0.0.1", str(one.port),
                        "https://127.0.0.1:%d/app/bytes/10" % one.port],
                       capture_output=True, text=True, timeout=30 * SLOW)
    tokens = {bytes.fromhex(m.group(1)): bytes.fromhex(m.group(2))
              for m in map(_NEW_CID_TOKEN.search, p.stdout.splitlines() +
                           p.stderr.splitlines()) if m}
    assert len(tokens) >= 6, tokens
    for cid, token in list(tokens.items())[:3]:
        assert cfg.decode(cid)[0] == b"\x01"
        reply = _exchange(two.port, bytes([0x40]) + cid + os.urandom(60), 0.5)
        assert reply is None, "server 02 gave server 01's token away: %s" % (
            "the client's own" if reply[-16:] == token else "another")
    assert stats(two)["quic"]["stateless_resets_sent"] == 0
    # its own IDs, of connections it no longer has, it resets
    own = cfg.encode(b"\x02", os.urandom(15))
    reply = _exchange(two.port, bytes([0x40]) + own + os.urandom(60))
    assert reply is not None and len(reply) >= 21
    assert stats(two)["quic"]["stateless_resets_sent"] == 1
