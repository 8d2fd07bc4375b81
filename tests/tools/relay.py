#!/usr/bin/python3
"""A seeded UDP fault relay for qproxy's tests (standard library only).

The relay listens on LHOST:LPORT (default 127.0.0.1, port 0 = any free port)
and forwards every datagram to the target (qproxy) at THOST:TPORT.  For each
client source address it keeps a separate upstream socket, so qproxy sees one
peer per client; datagrams qproxy sends to that socket go back to the client
from the listening socket.  Faults are configured per direction:

  c2s   client -> qproxy        s2c   qproxy -> client

and every random decision comes from random.Random objects seeded from
``seed`` (one per direction, so a direction's fault pattern does not depend
on what the other direction does).

As a module (pytest)::

    from relay import Relay, Faults
    with Relay(qp.port, seed=1, c2s=Faults(drop=0.3), s2c=Faults(drop=0.3)) as r:
        h3_get("https://127.0.0.1:%d/app/bytes/1024" % r.port)
        print(r.stats())

The relay runs a selector loop in a background (daemon) thread; start() /
stop() (or the context manager) control it.  Methods called from other
threads (blackhole(), rebind(), ...) are thread safe.

Standalone::

    python3 relay.py --target 4433 --listen 5544 --seed 7 --drop 0.3 \\
        --delay-s2c 50 --corrupt 0.02 --rebind-every 1.5 --rebind-mode address

Faults (class Faults, one per direction):

  drop          probability of dropping a datagram
  drop_indices  datagram indices to drop, counted from 1 per client address
                and direction (datagram 1 of c2s is the client's first
                Initial): an iterable of ints, a range, or a string such as
                "2-7,9"
  delay_ms      fixed one-way delay (a timer heap; order is kept)
  jitter_ms     extra uniform random delay in [0, jitter_ms]; order is still
                kept unless reorder=True
  reorder       let jittered datagrams overtake each other
  corrupt       probability of replacing one random byte among the first
                corrupt_span (50) bytes with a different value
  blackhole     [(t0, t1), ...]: drop everything between t0 and t1 seconds
                after start()
  rate          a bottleneck link, bytes per second per client (0: none):
                each datagram leaves once the ones before it have; one that
                would wait more than queue_ms (100) in its queue is dropped
  rewrite       a function (data, index) -> data given each datagram to be
                forwarded, before any corruption: what it returns goes on
                (quicinitial.rewrite_client_initial opens a client's first
                Initial for it)

Relay-wide:

  blackhole(on, direction="both"), blackhole_for(seconds): drop everything
      (both directions by default) until switched off / for a while
  rebind_every=N (seconds, or a (lo, hi) tuple for a seeded random interval
      per rebind; or later, rebind_from_now(N)), rebind_after_s2c=[B1, B2,
      ...] (a rebind each time the bytes received from qproxy, all clients
      together, pass one of these counts: at a set point of a transfer
      however slowly it runs, where a clock's rebind may come after its
      end) and rebind(mode=None): switch every client's upstream
      socket to a new one, bound to a new local port (mode "port") or to the
      next loopback address 127.0.0.2, 127.0.0.3, ... (mode "address"), so
      qproxy sees the client's address change mid-connection: from then on
      the client's datagrams leave from the new socket.  What qproxy still
      sends to an old socket reaches the client as long as that socket is
      kept: rebind_keep_old=None (the default) keeps old sockets until
      stop(), as the interop runner's rebinding NAT does (it delivers
      everything the server sends to the client); a number closes each old
      socket that many seconds after its rebind (0: at once, a NAT that
      forgot the old mapping, so the server must hear from the client on
      the new address before it can reach it again).
  pass_ecn: forward the IP TOS byte (ECN bits) of each datagram (read with
      IP_RECVTOS) on the datagram it sends onwards (default on).

Inspection:

  stats()     counters per direction: datagrams, bytes (received by the
              relay), forwarded, forwarded_bytes, dropped, blackholed (part
              of dropped), corrupted, rewritten, send_errors; plus rebinds
              and clients
  records     a list of Record(direction, length, first_byte, tos, time,
              due, client, upstream, fate, index), one per datagram the
              relay received; first_byte is as received (before any
              corruption), tos is the IP TOS byte the datagram arrived
              with (tos & 3 is the ECN codepoint: 2 = ECT(0), 1 = ECT(1),
              3 = CE), time is seconds since start(), due is when it was
              (or will be) sent onwards (None if dropped), fate is
              "forwarded", "corrupted" (forwarded with one byte changed),
              "dropped" or "blackholed"
  client_of(dcid): the client whose first Initial carried that Destination
              Connection ID (hex), so a client's datagrams can be found
              in records by the ID its own qlog names
  connections_from(client): how many connections that address began
              (Source Connection IDs of its long-header datagrams)
  amplification(before, client=None): bytes qproxy sent vs bytes of the
              client delivered to qproxy before a moment (anti-amplification)
"""

import argparse
import collections
import heapq
import json
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time

IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_TOS = getattr(socket, "IP_TOS", 1)

C2S = "c2s"
S2C = "s2c"
DIRECTIONS = (C2S, S2C)

MAX_DATAGRAM = 65535
ANC_SIZE = socket.CMSG_SPACE(4) * 4

Record = collections.namedtuple(
    "Record", "direction length first_byte tos time due client upstream fate index")


def long_header_ids(data):
    """(Destination, Source) Connection IDs of a QUIC long-header packet
    (RFC 9000 17.2: flags, version, DCID length, DCID, SCID length, SCID),
    hex; None for anything else."""
    if len(data) < 7 or not data[0] & 0x80:
        return None
    n = data[5]
    if len(data) < 7 + n or len(data) < 7 + n + data[6 + n]:
        return None
    return data[6:6 + n].hex(), data[7 + n:7 + n + data[6 + n]].hex()


def parse_indices(spec):
    """"2-7,9" / range / iterable of ints / callable -> a predicate on int."""
    if spec is None:
        return lambda i: False
    if callable(spec):
        return spec
    if isinstance(spec, str):
        out = set()
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            else:
                out.add(int(part))
        spec = out
    s = frozenset(int(i) for i in spec)
    return s.__contains__


class Faults:
    """The faults of one direction.  Attributes may be changed while the
    relay runs (each is read once per datagram)."""

    def __init__(self, drop=0.0, drop_indices=None, delay_ms=0.0, jitter_ms=0.0,
                 reorder=False, corrupt=0.0, corrupt_span=50, blackhole=(),
                 rate=0, queue_ms=100.0, rewrite=None):
        self.rewrite = rewrite
        self.rate = float(rate)
        self.queue_ms = float(queue_ms)
        self.drop = float(drop)
        self.drop_indices = drop_indices
        self.delay_ms = float(delay_ms)
        self.jitter_ms = float(jitter_ms)
        self.reorder = bool(reorder)
        self.corrupt = float(corrupt)
        self.corrupt_span = int(corrupt_span)
        self.blackhole = list(blackhole or ())

    @property
    def drop_indices(self):
        return self._drop_indices_spec

    @drop_indices.setter
    def drop_indices(self, spec):
        self._drop_indices_spec = spec
        self._drop_index = parse_indices(spec)

    def __repr__(self):
        return ("Faults(drop=%g, drop_indices=%r, delay_ms=%g, jitter_ms=%g, reorder=%s, "
                "corrupt=%g, blackhole=%r)" % (self.drop, self._drop_indices_spec,
                                               self.delay_ms, self.jitter_ms, self.reorder,
                                               self.corrupt, self.blackhole))


def _new_counters():
    return {"datagrams": 0, "bytes": 0, "forwarded": 0, "forwarded_bytes": 0,
            "dropped": 0, "blackholed": 0, "corrupted": 0, "rewritten": 0,
            "send_errors": 0}


class _Session:
    """One client source address and its upstream socket(s)."""

    def __init__(self, client):
        self.client = client
        self.sock = None            # the current upstream socket
        self.local = None           # its local address
        self.history = []           # every upstream local address, in order
        self.old = []               # (sock, close_at) kept after a rebind
        self.count = {C2S: 0, S2C: 0}
        self.dcid = None            # of its first long-header datagram, hex
        self.scids = set()          # of its long-header datagrams: connections
        self.last_due = {C2S: 0.0, S2C: 0.0}
        self.link_free = {C2S: 0.0, S2C: 0.0}   # Faults.rate: the link free again


class Relay:
    def __init__(self, target_port, listen_port=0, *, seed=0, c2s=None, s2c=None,
                 target_host="127.0.0.1", listen_host="127.0.0.1", upstream_host="127.0.0.1",
                 rebind_every=None, rebind_mode="port", rebind_keep_old=None,
                 rebind_after_s2c=(),
                 pass_ecn=True, record=True, sockbuf=4 << 20):
        self.target = (target_host, int(target_port))
        self.listen_addr = (listen_host, int(listen_port))
        self.upstream_host = upstream_host
        self.seed = seed
        self.faults = {C2S: c2s if c2s is not None else Faults(),
                       S2C: s2c if s2c is not None else Faults()}
        self.rng = {d: random.Random("%s/%s" % (seed, d)) for d in DIRECTIONS}
        self.rebind_rng = random.Random("%s/rebind" % (seed,))
        if rebind_mode not in ("port", "address"):
            raise ValueError("rebind_mode must be 'port' or 'address'")
        self.rebind_every = rebind_every
        self._rebind_after = sorted(int(b) for b in rebind_after_s2c)
        self.rebind_mode = rebind_mode
        self.rebind_keep_old = None if rebind_keep_old is None else float(rebind_keep_old)
        self.pass_ecn = pass_ecn
        self.record = record
        self.sockbuf = sockbuf

        self.counters = {d: _new_counters() for d in DIRECTIONS}
        self.records = []
        self.rebinds = 0                # rebind rounds
        self.rebind_log = []            # (time, client, old local, new local)
        self.sessions = {}              # client addr -> _Session
        self._by_fd = {}
        self._manual_blackhole = {C2S: False, S2C: False}
        self._blackhole_until = {C2S: None, S2C: None}
        self._next_host = 2             # 127.0.0.<n> for rebind "address"
        self._heap = []
        self._seq = 0
        self._pending = {C2S: 0, S2C: 0}
        self._cmds = collections.deque()
        self._lock = threading.RLock()
        self._thread = None
        self._stopping = False
        self._error = None
        self.t0 = None
        self.sel = None
        self.sock = None

    # ------------------------------------------------------------------
    # Life cycle

    @property
    def port(self):
        return self.sock.getsockname()[1]

    @property
    def address(self):
        return self.sock.getsockname()

    @property
    def c2s(self):
        return self.faults[C2S]

    @property
    def s2c(self):
        return self.faults[S2C]

    def url(self, path, host="127.0.0.1"):
        return "https://%s:%d%s" % (host, self.port, path)

    def start(self):
        self.sel = selectors.DefaultSelector()
        self.sock = self._udp_socket((self.listen_addr[0], self.listen_addr[1]))
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.t0 = time.monotonic()
        if self.rebind_every:
            self._schedule(self._next_rebind_interval(), ("rebind", None))
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(10)
        self._thread = None
        for s in list(self.sessions.values()):
            for sk in [s.sock] + [o for o, _ in s.old]:
                if sk is not None:
                    try:
                        self.sel.unregister(sk)
                    except (KeyError, ValueError):
                        pass
                    sk.close()
        self.sel.close()
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._error is not None:
            raise RuntimeError("relay thread failed: %r" % (self._error,))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def now(self):
        """Seconds since start()."""
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------
    # Controls (thread safe)

    def blackhole(self, on=True, direction="both"):
        """Drop everything (in one or both directions) until switched off."""
        for d in self._dirs(direction):
            self._manual_blackhole[d] = bool(on)
            if not on:
                self._blackhole_until[d] = None

    def blackhole_for(self, seconds, direction="both"):
        """Drop everything for `seconds` from now."""
        until = self.now() + seconds
        for d in self._dirs(direction):
            self._blackhole_until[d] = until

    def blackholed(self, direction=C2S):
        d = direction
        t = self.now()
        if self._manual_blackhole[d]:
            return True
        u = self._blackhole_until[d]
        if u is not None and t < u:
            return True
        for a, b in self.faults[d].blackhole:
            if a <= t < b:
                return True
        return False

    def rebind(self, mode=None, client=None):
        """Give every client (or one) a new upstream socket now; returns the
        list of (client, old local address, new local address)."""
        return self._call(lambda: self._rebind(mode or self.rebind_mode, client))

    def rebind_from_now(self, every):
        """Rebind as rebind_every=every does, the first time one interval
        from now: for a NAT that rebinds once the handshakes are done (a
        server may drop what a client sends from a new address before, RFC
        9000 9, and ngtcp2 does)."""
        def start():
            running = bool(self.rebind_every)
            self.rebind_every = every
            if not running:
                self._schedule(self._next_rebind_interval(), ("rebind", None))
        self._call(start)

    # ------------------------------------------------------------------
    # Inspection

    def stats(self):
        with self._lock:
            out = {d: dict(self.counters[d]) for d in DIRECTIONS}
        out["rebinds"] = self.rebinds
        out["clients"] = len(self.sessions)
        return out

    def clients(self):
        """{client address: [upstream local addresses used, in order]}"""
        with self._lock:
            return {c: list(s.history) for c, s in self.sessions.items()}

    def client_of(self, dcid):
        """The client address whose first long-header datagram (its first
        Initial) carried the Destination Connection ID `dcid` (hex), or
        None."""
        with self._lock:
            for c, s in self.sessions.items():
                if s.dcid == dcid.lower():
                    return c
        return None

    def connections_from(self, client):
        """How many QUIC connections the client address began: Source
        Connection IDs of its long-header datagrams (a port the system
        gave two clients in turn has two)."""
        with self._lock:
            s = self.sessions.get(client)
            return len(s.scids) if s is not None else 0

    def records_of(self, direction=None, client=None):
        with self._lock:
            recs = list(self.records)
        return [r for r in recs if (direction is None or r.direction == direction)
                and (client is None or r.client == client)]

    def ecn_counts(self, direction=S2C):
        """{ECN codepoint: datagrams} of the datagrams received in direction."""
        out = collections.Counter()
        for r in self.records_of(direction):
            out[r.tos & 3] += 1
        return dict(out)

    def moment_of(self, direction, index, client=None):
        """When datagram `index` (1-based, per client) of direction arrived
        at the relay, or None."""
        for r in self.records_of(direction, client):
            if r.index == index:
                return r.time
        return None

    def amplification(self, before=None, client=None):
        return amplification(self.records_of(client=client), before)

    # ------------------------------------------------------------------
    # Internals

    @staticmethod
    def _dirs(direction):
        if direction in ("both", None):
            return DIRECTIONS
        if direction not in DIRECTIONS:
            raise ValueError("direction must be c2s, s2c or both")
        return (direction,)

    def _udp_socket(self, addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, self.sockbuf)
            except OSError:
                pass
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        s.bind(addr)
        s.setblocking(False)
        return s

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _call(self, fn):
        """Run fn in the loop thread (at once if this is it); return its value."""
        if self._thread is None or threading.current_thread() is self._thread:
            with self._lock:
                return fn()
        done = threading.Event()
        box = {}

        def run():
            try:
                box["v"] = fn()
            except BaseException as e:     # reported to the caller
                box["e"] = e
            done.set()
        self._cmds.append(run)
        self._wake()
        if not done.wait(10):
            raise TimeoutError("relay loop did not run the command")
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def _schedule(self, delay, item):
        self._seq += 1
        heapq.heappush(self._heap, (self.now() + delay, self._seq, item))

    def _next_rebind_interval(self):
        e = self.rebind_every
        if isinstance(e, (tuple, list)):
            return self.rebind_rng.uniform(float(e[0]), float(e[1]))
        return float(e)

    def _session(self, client):
        s = self.sessions.get(client)
        if s is None:
            s = _Session(client)
            self._attach(s, self._new_upstream(s, "first"))
            self.sessions[client] = s
        return s

    def _new_upstream(self, session, mode):
        if mode == "address":
            # the next loopback address (all of 127/8 is local on Linux)
            n = self._next_host
            self._next_host = n + 1 if n < 254 else 2
            host = "127.0.0.%d" % n
        elif mode == "port" and session.local is not None:
            host = session.local[0]
        else:
            host = self.upstream_host
        return self._udp_socket((host, 0))

    def _attach(self, session, sock):
        session.sock = sock
        session.local = sock.getsockname()
        session.history.append(session.local)
        self._by_fd[sock.fileno()] = session
        self.sel.register(sock, selectors.EVENT_READ, session)

    def _rebind(self, mode, client=None):
        done = []
        for s in list(self.sessions.values()):
            if client is not None and s.client != client:
                continue
            old, old_local = s.sock, s.local
            self._attach(s, self._new_upstream(s, mode))
            if self.rebind_keep_old is None:
                s.old.append((old, None))
            elif self.rebind_keep_old > 0:
                s.old.append((old, self.now() + self.rebind_keep_old))
                self._schedule(self.rebind_keep_old, ("close", (s, old)))
            else:
                self._close_upstream(s, old)
            self.rebind_log.append((self.now(), s.client, old_local, s.local))
            done.append((s.client, old_local, s.local))
        self.rebinds += 1
        return done

    def _close_upstream(self, session, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        self._by_fd.pop(sock.fileno(), None)
        session.old = [(o, t) for o, t in session.old if o is not sock]
        sock.close()

    def _run(self):
        try:
            self._loop()
        except BaseException as e:          # noqa: BLE001 - reported by stop()
            self._error = e
            import traceback
            traceback.print_exc()

    def _loop(self):
        while not self._stopping:
            timeout = 0.2
            if self._heap:
                timeout = max(0.0, min(timeout, self._heap[0][0] - self.now()))
            for key, _ in self.sel.select(timeout):
                if key.data == "wake":
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                elif key.data is None:
                    self._drain(key.fileobj, C2S, None)
                else:
                    self._drain(key.fileobj, S2C, key.data)
            while self._cmds:
                fn = self._cmds.popleft()
                with self._lock:
                    fn()
            now = self.now()
            while self._heap and self._heap[0][0] <= now:
                _, _, item = heapq.heappop(self._heap)
                self._timer(item)

    def _timer(self, item):
        kind, arg = item
        if kind == "send":
            self._send(*arg)
        elif kind == "rebind":
            with self._lock:
                self._rebind(self.rebind_mode)
            self._schedule(self._next_rebind_interval(), ("rebind", None))
        elif kind == "rebind_once":
            with self._lock:
                self._rebind(self.rebind_mode)
        elif kind == "close":
            s, sk = arg
            if sk.fileno() != -1:
                with self._lock:
                    self._close_upstream(s, sk)

    def _drain(self, sock, direction, session):
        for _ in range(256):
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # e.g. ECONNREFUSED reported for an earlier send; go on
                continue
            tos = 0
            for level, typ, cdata in anc:
                if level == socket.IPPROTO_IP and typ in (IP_TOS, IP_RECVTOS) and cdata:
                    tos = cdata[0]
            with self._lock:
                if direction == C2S:
                    self._datagram(C2S, self._session(addr), data, tos, sock)
                else:
                    if addr != self.target:
                        continue        # not from qproxy: ignore
                    self._datagram(S2C, session, data, tos, sock)

    def _datagram(self, d, session, data, tos, rx_sock):
        f = self.faults[d]
        rng = self.rng[d]
        c = self.counters[d]
        t = self.now()
        session.count[d] += 1
        index = session.count[d]
        ids = long_header_ids(data) if d == C2S else None
        if ids is not None:
            if session.dcid is None:
                session.dcid = ids[0]
            session.scids.add(ids[1])
        c["datagrams"] += 1
        c["bytes"] += len(data)
        while d == S2C and self._rebind_after and c["bytes"] >= self._rebind_after[0]:
            # at the next turn of the loop, not while this socket drains
            self._rebind_after.pop(0)
            self._schedule(0, ("rebind_once", None))
        # a fixed number of draws per datagram keeps a direction's pattern
        # independent of which faults are on
        r_drop = rng.random()
        r_corrupt = rng.random()
        r_jitter = rng.random()
        upstream = session.local if d == C2S else rx_sock.getsockname()
        first_byte = data[0] if data else None      # as received, before any corruption
        fate = "forwarded"
        due = None
        if self.blackholed(d):
            fate = "blackholed"
        elif f._drop_index(index) or r_drop < f.drop:
            fate = "dropped"
        queued = 0.0
        if fate == "forwarded" and f.rate > 0:
            start = max(t, session.link_free[d])
            if start - t > f.queue_ms / 1000.0:
                fate = "dropped"            # the bottleneck's queue is full
            else:
                session.link_free[d] = start + len(data) / f.rate
                queued = session.link_free[d] - t
        if fate != "forwarded":
            c["dropped"] += 1
            if fate == "blackholed":
                c["blackholed"] += 1
        else:
            if f.rewrite is not None:
                new = f.rewrite(data, index)
                if new != data:
                    data = new
                    c["rewritten"] += 1
            if r_corrupt < f.corrupt and data:
                span = min(len(data), f.corrupt_span)
                pos = rng.randrange(span)
                b = bytearray(data)
                b[pos] ^= rng.randrange(1, 256)
                data = bytes(b)
                fate = "corrupted"
                c["corrupted"] += 1
            delay = f.delay_ms / 1000.0 + queued
            if f.jitter_ms:
                delay += r_jitter * f.jitter_ms / 1000.0
            due = t + delay
            if not f.reorder:
                due = max(due, session.last_due[d])
                session.last_due[d] = due
            if due <= t and self._pending[d] == 0:
                self._send(d, session, data, tos)
            else:
                self._pending[d] += 1
                self._seq += 1
                heapq.heappush(self._heap, (due, self._seq,
                                            ("send", (d, session, data, tos, True))))
        if self.record:
            self.records.append(Record(d, len(data), first_byte, tos, t, due,
                                       session.client, upstream, fate, index))

    def _send(self, d, session, data, tos, queued=False):
        if queued:
            self._pending[d] -= 1
        c = self.counters[d]
        if d == C2S:
            sock, dest = session.sock, self.target
        else:
            sock, dest = self.sock, session.client
        anc = []
        if self.pass_ecn and tos:
            anc = [(socket.IPPROTO_IP, IP_TOS, struct.pack("i", tos))]
        try:
            sock.sendmsg([data], anc, 0, dest)
        except OSError:
            c["send_errors"] += 1
            return
        c["forwarded"] += 1
        c["forwarded_bytes"] += len(data)


def amplification(records, before=None):
    """Bytes qproxy sent (received by the relay from qproxy) and bytes of the
    client's datagrams delivered to qproxy (forwarded or corrupted, by their
    due time), both before the moment `before` (seconds since the relay's
    start; None = everything).  Returns a dict with "sent_by_qproxy",
    "received_from_client" and "ratio" (None when nothing was received).
    RFC 9000 8.1: before address validation qproxy may send at most 3x."""
    sent = 0
    received = 0
    for r in records:
        if r.direction == S2C:
            if before is None or r.time < before:
                sent += r.length
        elif r.fate in ("forwarded", "corrupted"):
            if before is None or r.due <= before:
                received += r.length
    return {"sent_by_qproxy": sent, "received_from_client": received,
            "ratio": (sent / received) if received else None}


# ----------------------------------------------------------------------
# Command line


def _hostport(text, default_host="127.0.0.1"):
    if ":" in text:
        h, p = text.rsplit(":", 1)
        return h or default_host, int(p)
    return default_host, int(text)


def main(argv=None):
    p = argparse.ArgumentParser(description="Seeded UDP fault relay (client <-> qproxy).")
    p.add_argument("--target", required=True, help="qproxy's [HOST:]PORT")
    p.add_argument("--listen", default="0", help="[HOST:]PORT to listen on (0: any)")
    p.add_argument("--seed", default="0")
    for d, what in (("", "both directions"), ("-c2s", "client -> qproxy"),
                    ("-s2c", "qproxy -> client")):
        p.add_argument("--drop" + d, type=float, help="drop probability, " + what)
        p.add_argument("--drop-index" + d, help="1-based indices to drop, e.g. 2-7,9, " + what)
        p.add_argument("--delay" + d, type=float, help="one-way delay in ms, " + what)
        p.add_argument("--jitter" + d, type=float, help="extra random delay in ms, " + what)
        p.add_argument("--corrupt" + d, type=float, help="corruption probability, " + what)
        p.add_argument("--blackhole" + d, action="append", default=[], metavar="T0:T1",
                       help="drop everything between T0 and T1 s after start, " + what)
    p.add_argument("--reorder", action="store_true", help="let jittered datagrams reorder")
    p.add_argument("--rebind-every", help="seconds between rebinds, or LO:HI")
    p.add_argument("--rebind-mode", choices=("port", "address"), default="port")
    p.add_argument("--rebind-keep-old", type=float, default=None,
                   help="close an old upstream socket this many seconds after its "
                        "rebind (default: keep it until exit)")
    p.add_argument("--no-ecn", action="store_true", help="do not forward the TOS byte")
    p.add_argument("--duration", type=float, help="exit after this many seconds")
    p.add_argument("--stats-interval", type=float, default=0,
                   help="print counters every N seconds")
    a = p.parse_args(argv)

    def faults(suffix):
        key = suffix.replace("-", "_")

        def pick(name):
            v = getattr(a, name + key)
            return v if v is not None else getattr(a, name)
        bh = []
        for spec in getattr(a, "blackhole" + key) + a.blackhole:
            t0, t1 = spec.split(":")
            bh.append((float(t0), float(t1)))
        return Faults(drop=pick("drop") or 0.0, drop_indices=pick("drop_index"),
                      delay_ms=pick("delay") or 0.0, jitter_ms=pick("jitter") or 0.0,
                      reorder=a.reorder, corrupt=pick("corrupt") or 0.0, blackhole=bh)

    rebind_every = None
    if a.rebind_every:
        if ":" in a.rebind_every:
            lo, hi = a.rebind_every.split(":")
            rebind_every = (float(lo), float(hi))
        else:
            rebind_every = float(a.rebind_every)
    thost, tport = _hostport(a.target)
    lhost, lport = _hostport(a.listen)
    r = Relay(tport, lport, seed=a.seed, target_host=thost, listen_host=lhost,
              c2s=faults("-c2s"), s2c=faults("-s2c"), rebind_every=rebind_every,
              rebind_mode=a.rebind_mode, rebind_keep_old=a.rebind_keep_old,
              pass_ecn=not a.no_ecn, record=False)
    r.start()
    print("relay listening on %s:%d -> %s:%d seed=%s" % (r.address[0], r.address[1],
                                                          thost, tport, a.seed), flush=True)
    print("c2s: %r\ns2c: %r" % (r.c2s, r.s2c), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + a.duration if a.duration else None
    next_print = time.monotonic() + a.stats_interval if a.stats_interval else None
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if next_print is not None and now >= next_print:
            print(json.dumps(r.stats()), flush=True)
            next_print = now + a.stats_interval
        stop.wait(0.2)
    r.stop()
    print(json.dumps(r.stats(), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
