#!/usr/bin/python3
"""Captures what real HTTP/3 clients send, as fuzz_udp inputs.

Runs build/qproxy on a throwaway configuration (key, certificate and
secret made in a temporary directory), puts a recording UDP relay in front
of it, and runs ngtcp2's gtlsclient, build/tests/h3raw and a headless
Chromium (three times: it cuts its ClientHello into CRYPTO frames at
random) through the relay. Each client's datagrams to the server become one input of OP_RAW_A
operations (with an OP_PUMP after each), written to corpus/fuzz_udp/ as
capture-<client>-<n>.

On replay only the first datagram, the client's Initial, means anything to
the server: the keys of everything after it depend on randomness of the
original run. What these inputs reach is the Initial path (ClientHello in
wolfSSL, transport parameters, version negotiation) plus the handling of
undecryptable packets for a known connection.

Usage: python3 tests/fuzz/capture_udp.py   (after "make tests")
"""

import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
QPROXY = os.path.join(ROOT, "build", "qproxy")
H3RAW = os.path.join(ROOT, "build", "tests", "h3raw")
OUT = os.path.join(HERE, "corpus", "fuzz_udp")
OP_PUMP, OP_RAW_A = 1, 6
MAX_DATAGRAMS = 12


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Relays one client at a time to the target, recording its datagrams."""

    def __init__(self, target):
        self.target = ("127.0.0.1", target)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = None
        self.client = None
        self.datagrams = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def reset(self):
        if self.up is not None:
            self.up.close()
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.client = None
        self.datagrams = []

    def run(self):
        while not self.stop:
            sel = selectors.DefaultSelector()
            sel.register(self.sock, selectors.EVENT_READ)
            if self.up is not None:
                sel.register(self.up, selectors.EVENT_READ)
            for key, _ in sel.select(0.05):
                s = key.fileobj
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                if s is self.sock:
                    self.client = addr
                    self.datagrams.append(data)
                    self.up.sendto(data, self.target)
                elif self.client is not None:
                    self.sock.sendto(data, self.client)
            sel.close()


def field(b):
    if len(b) < 255:
        return bytes([len(b)]) + b
    return b"\xff" + len(b).to_bytes(2, "big") + b


def save(name, datagrams):
    data = b"".join(bytes([OP_RAW_A]) + field(d) + bytes([OP_PUMP]) +
                    field(b"") for d in datagrams[:MAX_DATAGRAMS])
    with open(os.path.join(OUT, "capture-" + name), "wb") as f:
        f.write(data)
    print("capture-%s: %d datagrams" % (name, min(len(datagrams),
                                                   MAX_DATAGRAMS)))


def main():
    for prog in (QPROXY, H3RAW):
        if not os.access(prog, os.X_OK):
            sys.exit("%s is missing: run make tests first" % prog)
    tmp = tempfile.mkdtemp(prefix="capture_udp.")
    qp = None
    try:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "1", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        port = free_port()
        conf = os.path.join(tmp, "qproxy.conf")
        with open(conf, "w") as f:
            f.write("[global]\ncontrol_socket = %s/ctl\nsecret_file = %s/secret"
                    "\nlog_level = error\n[listener a]\naddress = 127.0.0.1:%d\n"
                    "certificate = %s\nprivate_key = %s\nretry = never\n"
                    "[backend app]\nserver = 127.0.0.1:9\n"
                    "[route all]\nbackend = app\n"
                    % (tmp, tmp, port, cert, key))
        qp = subprocess.Popen([QPROXY, "-c", conf])
        time.sleep(0.5)
        rec = Recorder(port)
        runs = [
            ("gtlsclient-get", ["gtlsclient", "--exit-on-all-streams-close",
                                "--timeout=3s", "127.0.0.1", "PORT",
                                "https://localhost/"]),
            ("gtlsclient-post", ["gtlsclient", "--exit-on-all-streams-close",
                                 "--timeout=3s", "-d", conf, "127.0.0.1",
                                 "PORT", "https://localhost/upload"]),
            ("h3raw-get", [H3RAW, "-t", "3", "-H", ":method: GET",
                           "-H", ":scheme: https", "-H", ":authority: a",
                           "-H", ":path: /", "127.0.0.1", "PORT"]),
            ("h3raw-bad", [H3RAW, "-t", "3", "-H", ":method: GET",
                           "-H", ":path: /", "-H", "x-a: a\\r\\nb",
                           "127.0.0.1", "PORT"]),
        ]
        chromium = shutil.which("chromium")
        if chromium:
            spki = subprocess.run(
                "openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform der"
                " | openssl dgst -sha256 -binary | base64" % cert, shell=True,
                check=True, capture_output=True, text=True).stdout.strip()
            for i in range(1, 4):
                runs.append(("chromium-get-%d" % i, [
                    chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--user-data-dir=%s/chromium-%d" % (tmp, i), "--enable-quic",
                    "--origin-to-force-quic-on=127.0.0.1:PORT",
                    "--ignore-certificate-errors-spki-list=" + spki,
                    "--dump-dom", "https://127.0.0.1:PORT/"]))
        else:
            print("chromium is not installed: no capture of it")
        for name, cmd in runs:
            rec.reset()
            cmd = [a.replace("PORT", str(rec.port)) for a in cmd]
            subprocess.run(cmd, capture_output=True, timeout=20)
            time.sleep(0.2)
            save(name, list(rec.datagrams))
        rec.stop = True
    finally:
        if qp is not None:
            qp.terminate()
            qp.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
