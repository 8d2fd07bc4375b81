"""QUIC-LB (draft-ietf-quic-load-balancers-21) for qproxy's tests: what a
load balancer does with the connection IDs qproxy issues.

decode() takes a connection ID apart (server ID and nonce, in the clear or
through AES-128-ECB: one block, or the four-pass Feistel network), and
LoadBalancer is a UDP load balancer that sends each datagram to the server
its DCID names, or, for a DCID it cannot read (a client's first Initial),
to the next server in turn for each new client address. Written from the
draft for the tests; checked against its test vectors (test_cid.py)."""

import selectors
import socket
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class Config:
    def __init__(self, sid_len, nonce_len, config_id=0, key=None):
        self.sid_len, self.nonce_len = sid_len, nonce_len
        self.config_id, self.key = config_id, key
        self.plain_len = sid_len + nonce_len

    def cid_len(self):
        return 1 + self.plain_len

    def _aes(self, block, decrypt=False):
        c = Cipher(algorithms.AES(self.key), modes.ECB())
        op = c.decryptor() if decrypt else c.encryptor()
        return op.update(block) + op.finalize()

    def _pass(self, half_bytes, n, pass_no):
        block = bytes(half_bytes) + bytes(14 - len(half_bytes)) + bytes([self.plain_len, pass_no])
        return self._aes(block)[:n]

    def _split(self, data):
        n, half = self.plain_len, (self.plain_len + 1) // 2
        left, right = bytearray(data[:half]), bytearray(data[n // 2:n // 2 + half])
        if n % 2:
            left[-1] &= 0xf0
            right[0] &= 0x0f
        return left, right

    def _join(self, left, right):
        n = self.plain_len
        out = bytearray(left)
        if n % 2:
            out[-1] |= right[0]
            out += right[1:]
        else:
            out += right
        return bytes(out[:n])

    def _xor(self, a, b, clear):
        r = bytearray(x ^ y for x, y in zip(a, b))
        if self.plain_len % 2:
            if clear == "left":
                r[-1] &= 0xf0
            else:
                r[0] &= 0x0f
        return r

    def encode(self, sid, nonce):
        """The connection ID of sid and nonce, as a server makes it."""
        plain = bytes(sid) + bytes(nonce)
        first = bytes([self.config_id << 5 | self.plain_len])
        if self.key is None:
            return first + plain
        if self.plain_len == 16:
            return first + self._aes(plain)
        half = (self.plain_len + 1) // 2
        left, right = self._split(plain)
        right = self._xor(right, self._pass(left, half, 1), "right")
        left = self._xor(left, self._pass(right, half, 2), "left")
        right = self._xor(right, self._pass(left, half, 3), "right")
        left = self._xor(left, self._pass(right, half, 4), "left")
        return first + self._join(left, right)

    def decode(self, cid):
        """(server ID, nonce) of a connection ID of this configuration, or
        None for another length or configuration ID (qproxy writes the
        length into the first octet, as the draft's test vectors do)."""
        if (len(cid) != self.cid_len() or cid[0] >> 5 != self.config_id or
                cid[0] & 0x1f != self.plain_len):
            return None
        body = bytes(cid[1:])
        if self.key is None:
            plain = body
        elif self.plain_len == 16:
            plain = self._aes(body, decrypt=True)
        else:
            half = (self.plain_len + 1) // 2
            left, right = self._split(body)
            left = self._xor(left, self._pass(right, half, 4), "left")
            right = self._xor(right, self._pass(left, half, 3), "right")
            left = self._xor(left, self._pass(right, half, 2), "left")
            right = self._xor(right, self._pass(left, half, 1), "right")
            plain = self._join(left, right)
        return plain[:self.sid_len], plain[self.sid_len:]


def dcid_of(datagram, short_len):
    """The Destination Connection ID of a QUIC datagram's first packet."""
    if not datagram:
        return None
    if datagram[0] & 0x80:
        if len(datagram) < 6:
            return None
        n = datagram[5]
        return bytes(datagram[6:6 + n])
    return bytes(datagram[1:1 + short_len])


class LoadBalancer:
    """Listens on 127.0.0.1:port and sends each client datagram on to one
    of servers {server_id: port}, from a socket of its own per client
    address and server (each server sees one peer per client address);
    what a server sends back goes to the client from the listening
    socket. Counts in routed_by_cid and routed_by_address."""

    def __init__(self, cfg, servers):
        self.cfg, self.servers = cfg, dict(servers)
        self.order = list(self.servers)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.upstream = {}          # (client, sid) -> socket
        self.by_address = {}        # client -> sid chosen for it
        self.routed_by_cid = self.routed_by_address = 0
        self.unknown_sid = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join(5)
        for s in self.upstream.values():
            s.close()
        self.sock.close()

    def _route(self, client, data):
        dcid = dcid_of(data, self.cfg.cid_len())
        got = self.cfg.decode(dcid) if dcid is not None else None
        if got is not None:
            if got[0] in self.servers:
                self.routed_by_cid += 1
                return got[0]
            self.unknown_sid += 1
        self.routed_by_address += 1
        if client not in self.by_address:
            self.by_address[client] = self.order[len(self.by_address) % len(self.order)]
        return self.by_address[client]

    def _run(self):
        while not self._stop:
            for key, _ in self.sel.select(0.1):
                if key.data is None:
                    data, client = self.sock.recvfrom(65535)
                    sid = self._route(client, data)
                    up = self.upstream.get((client, sid))
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self.upstream[(client, sid)] = up
                        self.sel.register(up, selectors.EVENT_READ, client)
                    up.sendto(data, ("127.0.0.1", self.servers[sid]))
                else:
                    data = key.fileobj.recv(65535)
                    self.sock.sendto(data, key.data)
