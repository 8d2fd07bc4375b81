"""QUIC v1 Initial packets written by hand (RFC 9000 17.2.2, RFC 9001 5),
for tests that send a server what no real client would: a ClientHello of
any declared length, with any legacy_session_id or extensions. Only the
client's side of the Initial level: packets out, and the server's
Initial packets read back for their frames."""

import hashlib
import hmac
import os
import socket
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")


def varint(n):
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack("!H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack("!I", 0x80000000 | n)
    return struct.pack("!Q", 0xc000000000000000 | n)


def read_varint(b, i):
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3f
    for k in range(1, n):
        v = v << 8 | b[i + k]
    return v, i + n


def _expand_label(secret, label, length):
    """HKDF-Expand-Label with an empty context (RFC 8446 7.1), SHA-256."""
    full = b"tls13 " + label
    info = struct.pack("!H", length) + bytes([len(full)]) + full + b"\x00"
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


class Keys:
    """One direction's Initial keys, from the client's first DCID."""

    def __init__(self, dcid, server):
        initial = hmac.new(INITIAL_SALT_V1, dcid, hashlib.sha256).digest()
        secret = _expand_label(initial, b"server in" if server else b"client in", 32)
        self.aead = AESGCM(_expand_label(secret, b"quic key", 16))
        self.iv = _expand_label(secret, b"quic iv", 12)
        self.hp = _expand_label(secret, b"quic hp", 16)

    def nonce(self, pn):
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big")))

    def mask(self, sample):
        enc = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        return enc.update(sample) + enc.finalize()


def client_hello(scid, server_name=b"localhost", session_id=b"", transport_params=True,
                 declared=None, alpn=b"\x02h3"):
    """A TLS 1.3 ClientHello as QUIC clients send it (x25519, AES-128-GCM,
    ALPN h3); declared: the length its header announces instead of its
    own; alpn: the protocol name list (its length-prefixed entries)."""
    def ext(kind, body):
        return struct.pack("!HH", kind, len(body)) + body

    def param(kind, value):
        return varint(kind) + varint(len(value)) + value

    share = X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = b"\x00" + struct.pack("!H", len(server_name)) + server_name
    exts = ext(0, struct.pack("!H", len(name)) + name)
    exts += ext(10, b"\x00\x02\x00\x1d")                   # groups: x25519
    exts += ext(13, b"\x00\x04\x04\x03\x08\x04")           # signature schemes
    exts += ext(43, b"\x02\x03\x04")                       # TLS 1.3
    exts += ext(51, struct.pack("!H", 36) + b"\x00\x1d\x00\x20" + share)
    exts += ext(16, struct.pack("!H", len(alpn)) + alpn)
    if transport_params:
        exts += ext(0x39, param(0x0f, scid) + param(0x04, varint(1 << 20)) +
                    param(0x08, varint(100)) + param(0x09, varint(100)) +
                    param(0x05, varint(1 << 18)) + param(0x06, varint(1 << 18)) +
                    param(0x07, varint(1 << 18)))
    body = (b"\x03\x03" + os.urandom(32) + bytes([len(session_id)]) + session_id +
            b"\x00\x02\x13\x01\x01\x00" + struct.pack("!H", len(exts)) + exts)
    n = len(body) if declared is None else declared
    return b"\x01" + n.to_bytes(3, "big") + body


def crypto_frame(offset, data):
    return b"\x06" + varint(offset) + varint(len(data)) + data


class Client:
    """A client's Initial packets to host:port over one UDP socket."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect((host, port))
        self.dcid = os.urandom(8)
        self.scid = os.urandom(8)
        self.tx = Keys(self.dcid, server=False)
        self.rx = Keys(self.dcid, server=True)
        self.pn = 0

    def close(self):
        self.sock.close()

    def send_initial(self, payload):
        """One Initial packet in a datagram padded to 1200 bytes."""
        head = (bytes([0xc3]) + struct.pack("!I", 1) + bytes([len(self.dcid)]) + self.dcid +
                bytes([len(self.scid)]) + self.scid + b"\x00")
        pad = 1200 - (len(head) + 2 + 4 + len(payload) + 16)
        if pad > 0:
            payload += b"\x00" * pad
        self.sock.send(_seal(self.tx, head, 2, self.pn, 4, payload))
        self.pn += 1

    def send_crypto(self, data, offset=0, chunk=1100):
        """data as the Initial CRYPTO stream from offset, chunk bytes a packet."""
        for off in range(0, len(data), chunk):
            self.send_initial(crypto_frame(offset + off, data[off:off + chunk]))

    def receive(self, timeout):
        """The frames of the server's Initial packets until it is quiet for
        timeout seconds: a list of tuples, ("CONNECTION_CLOSE", code)
        among them."""
        out = []
        self.sock.settimeout(timeout)
        while True:
            try:
                d = self.sock.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                return out
            out += self._initial_frames(d)

    def _initial_frames(self, d):
        if not _is_initial(d):
            return []                       # not an Initial first
        return _frames(_open(self.rx, d).plain)


def _is_initial(d):
    return len(d) > 5 and d[0] & 0x80 and (d[0] >> 4) & 3 == 0


class _Opened:
    """The first packet of a datagram, an Initial, unprotected: its header
    up to the Length field (first byte as sent, unmasked), the Length
    field's size, packet number and its size, plaintext, and where the
    packet ends in the datagram."""

    def __init__(self, head, lsize, pn, pnlen, plain, end):
        self.head, self.lsize, self.pn, self.pnlen = head, lsize, pn, pnlen
        self.plain, self.end = plain, end


def _open(keys, d):
    i = 5
    i += 1 + d[i]
    i += 1 + d[i]
    tlen, i = read_varint(d, i)
    i += tlen
    lstart = i
    length, i = read_varint(d, i)
    pkt = bytearray(d[:i + length])
    mask = keys.mask(bytes(pkt[i + 4:i + 20]))
    pkt[0] ^= mask[0] & 0x0f
    pnlen = (pkt[0] & 3) + 1
    for k in range(pnlen):
        pkt[i + k] ^= mask[1 + k]
    pn = int.from_bytes(pkt[i:i + pnlen], "big")
    plain = keys.aead.decrypt(keys.nonce(pn), bytes(pkt[i + pnlen:]),
                              bytes(pkt[:i + pnlen]))
    return _Opened(bytes(pkt[:lstart]), i - lstart, pn, pnlen, plain, i + length)


def _seal(keys, head, lsize, pn, pnlen, payload):
    """An Initial packet: head (up to its Length field, first byte
    unprotected, its packet number length bits pnlen - 1), a Length field
    of lsize bytes, the packet number, payload sealed, header protected."""
    n = pnlen + len(payload) + 16
    length = {1: lambda: bytes([n]), 2: lambda: struct.pack("!H", 0x4000 | n),
              4: lambda: struct.pack("!I", 0x80000000 | n)}[lsize]()
    pnb = (pn & ((1 << 8 * pnlen) - 1)).to_bytes(pnlen, "big")
    hdr = head + length + pnb
    pkt = bytearray(hdr + keys.aead.encrypt(keys.nonce(pn), payload, hdr))
    at = len(head) + lsize
    mask = keys.mask(bytes(pkt[at + 4:at + 20]))
    pkt[0] ^= mask[0] & 0x0f
    for k in range(pnlen):
        pkt[at + k] ^= mask[1 + k]
    return bytes(pkt)


def rewrite_client_initial(d, edit):
    """A client's datagram d with its first packet, an Initial of the
    client's first flight (keys from its Destination Connection ID),
    opened, its CRYPTO frames given to edit as a list of (offset, data) and
    sealed again with the list edit returns (None: d unchanged), padded
    back to its size (a packet with less padding than the edit adds
    grows). d itself when it is no Initial or holds frames other than
    CRYPTO, PADDING and PING. For a relay (relay.Faults' rewrite) that
    sends a server what a real client sends, changed in one detail."""
    if not _is_initial(d) or d[1:5] != b"\x00\x00\x00\x01":
        return d
    keys = Keys(d[6:6 + d[5]], server=False)
    o = _open(keys, d)
    frames = _frames(o.plain)
    if any(f[0] not in ("CRYPTO", "PING") for f in frames):
        return d
    crypto = edit([(f[1], f[2]) for f in frames if f[0] == "CRYPTO"])
    if crypto is None:
        return d
    payload = b"".join(crypto_frame(off, data) for off, data in crypto)
    if any(f[0] == "PING" for f in frames):
        payload += b"\x01"
    payload += b"\x00" * (len(o.plain) - len(payload))
    return _seal(keys, o.head, o.lsize, o.pn, o.pnlen, payload) + d[o.end:]


def _frames(p):
    out, i = [], 0
    while i < len(p):
        kind = p[i]
        i += 1
        if kind == 0:
            continue
        if kind == 1:
            out.append(("PING",))
        elif kind in (2, 3):
            largest, i = read_varint(p, i)
            _, i = read_varint(p, i)                # ACK Delay
            ranges, i = read_varint(p, i)
            _, i = read_varint(p, i)                # First ACK Range
            for _ in range(2 * ranges + (3 if kind == 3 else 0)):
                _, i = read_varint(p, i)
            out.append(("ACK", largest))
        elif kind == 6:
            off, i = read_varint(p, i)
            n, i = read_varint(p, i)
            out.append(("CRYPTO", off, bytes(p[i:i + n])))
            i += n
        elif kind in (0x1c, 0x1d):
            code, i = read_varint(p, i)
            if kind == 0x1c:
                _, i = read_varint(p, i)
            n, i = read_varint(p, i)
            out.append(("CONNECTION_CLOSE", code))
            i += n
        else:
            out.append(("?", kind))
            break
    return out
