#!/usr/bin/python3
"""Drive a headless Chromium over the DevTools protocol (standard library only).

Chromium started with --remote-debugging-pipe reads protocol commands from
its file descriptor 3 and writes replies and events to its descriptor 4,
each message a JSON object ended by a NUL byte.  This module starts it
that way, attaches to its one page and offers what the tests need: go to a
URL and wait for the load, and evaluate a JavaScript expression (awaiting
a promise) to get its value back.

    with Chromium(force_quic="127.0.0.1:4433", spki=spki_hash(cert)) as c:
        c.navigate("https://127.0.0.1:4433/")
        proto = c.evaluate("performance.getEntries()[0].nextHopProtocol")

force_quic makes Chromium speak HTTP/3 to that origin at once (without it
Chromium would first need an Alt-Svc from a TCP server); spki lets it trust
a self-signed certificate by the SHA-256 of its public key.
"""

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time


def chromium_binary():
    """The chromium program, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def spki_hash(cert_pem_path):
    """base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    with open(cert_pem_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    h = hashes.Hash(hashes.SHA256())
    h.update(der)
    return base64.b64encode(h.finalize()).decode("ascii")


class CDPError(Exception):
    pass


class Chromium:
    def __init__(self, force_quic, spki, binary=None, timeout=30.0, extra_args=()):
        self.binary = binary or chromium_binary()
        if not self.binary:
            raise CDPError("chromium is not installed (make deps installs it)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="qproxy-chromium-")
        self.args = [
            self.binary, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-dev-shm-usage", "--remote-debugging-pipe",
            "--user-data-dir=" + self.profile,
            "--enable-quic", "--origin-to-force-quic-on=" + force_quic,
            "--ignore-certificate-errors-spki-list=" + spki,
        ] + list(extra_args) + ["about:blank"]
        self.proc = None
        self._next_id = 0
        self._buf = b""
        self._events = []
        self.session = None
        self.stderr_path = os.path.join(self.profile, "stderr.log")

    # -- process -------------------------------------------------------------

    def start(self):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():
            # the protocol's descriptors: 3 to read commands, 4 to write
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, close_fds=False,
                                         preexec_fn=child_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            if not pages:
                raise CDPError("chromium has no page: %r" % targets)
            r = self.call("Target.attachToTarget", targetId=pages[0]["targetId"],
                          flatten=True)
            self.session = r["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
        except Exception:
            self.close()
            raise
        return self

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._send({"id": self._new_id(), "method": "Browser.close"})
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for fd in ("_to_chrome", "_from_chrome"):
            if getattr(self, fd, None) is not None:
                os.close(getattr(self, fd))
                setattr(self, fd, None)
        shutil.rmtree(self.profile, ignore_errors=True)

    def stderr_tail(self, n=30):
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- protocol ------------------------------------------------------------

    def _new_id(self):
        self._next_id += 1
        return self._next_id

    def _send(self, msg):
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._to_chrome, data)
            data = data[n:]

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("chromium did not answer within %gs" % self.timeout)
            r, _, _ = select.select([self._from_chrome], [], [], left)
            if not r:
                continue
            chunk = os.read(self._from_chrome, 65536)
            if not chunk:
                raise CDPError("chromium closed its protocol pipe (exit %s); stderr:\n%s"
                               % (self.proc.poll(), self.stderr_tail()))
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, session=False, timeout=None, **params):
        """Send one command and return its result; events that arrive in
        the meantime are kept for wait_event()."""
        msg = {"id": self._new_id(), "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self._send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == msg["id"]:
                if "error" in m:
                    raise CDPError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self._events.append(m)

    def wait_event(self, method, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, m in enumerate(self._events):
                if m["method"] == method:
                    del self._events[i]
                    return m.get("params", {})
            self._events.append(self._read_message(deadline))

    # -- what the tests use ---------------------------------------------------

    def navigate(self, url):
        """Go to url and wait for its load event; returns Page.navigate's
        result (errorText is set when the navigation failed)."""
        self._events = [m for m in self._events if m["method"] != "Page.loadEventFired"]
        r = self.call("Page.navigate", session=True, url=url)
        if not r.get("errorText"):
            self.wait_event("Page.loadEventFired")
        return r

    def evaluate(self, expression, timeout=None):
        """The value of a JavaScript expression in the page (a promise is
        awaited); a thrown exception raises CDPError."""
        r = self.call("Runtime.evaluate", session=True, timeout=timeout,
                      expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise CDPError("JavaScript threw: %s" % text)
        return r["result"].get("value")
