#!/usr/bin/python3
"""A tiny web application to put behind qproxy in the README demo.

    python3 scripts/demo-backend.py --listen 127.0.0.1:8080

  /           a short page saying the request came through a proxy
  /bytes/N    N bytes (text/plain, a repeating alphabet), N <= 100 MiB
  /headers    the request line and headers exactly as received, as text

Standard library only; HTTP/1.1 with keep-alive.
"""

import argparse
import html
import http.server
import socketserver
import sys

MAX_BYTES = 100 * 1024 * 1024
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qproxy-demo-backend/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-backend: %s %s\n" % (self.address_string(), fmt % args))

    def send_body(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def page(self):
        via = self.headers.get("Via")
        xff = self.headers.get("X-Forwarded-For")
        proto = self.headers.get("X-Forwarded-Proto")
        if via or xff:
            verdict = ("This request was proxied: Via: %s, X-Forwarded-For: %s, "
                       "X-Forwarded-Proto: %s." % (via or "-", xff or "-", proto or "-"))
        else:
            verdict = "This request reached the backend directly (no Via header)."
        body = ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
                "<title>qproxy demo</title></head><body>\n"
                "<h1>Hello from the qproxy demo backend</h1>\n"
                "<p>%s</p>\n"
                "<p>The client asked for <code>%s</code> on host <code>%s</code>.</p>\n"
                "<p>Try <a href=\"/headers\">/headers</a> or "
                "<a href=\"/bytes/1000\">/bytes/1000</a>.</p>\n"
                "</body></html>\n"
                % (html.escape(verdict), html.escape(self.path),
                   html.escape(self.headers.get("Host", "-"))))
        self.send_body(200, "text/html; charset=utf-8", body.encode())

    def bytes_(self, arg):
        if not arg.isdigit() or int(arg) > MAX_BYTES:
            return self.send_body(400, "text/plain", b"usage: /bytes/N with N <= 104857600\n")
        n = int(arg)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = ALPHABET * (65536 // len(ALPHABET) + 1)
        block = block[:len(block) - len(block) % len(ALPHABET)]
        left = n
        while left > 0:
            piece = block[:min(left, len(block))]
            self.wfile.write(piece)
            left -= len(piece)

    def headers_(self):
        lines = [self.requestline] + ["%s: %s" % (k, v) for k, v in self.headers.items()]
        self.send_body(200, "text/plain; charset=utf-8", ("\n".join(lines) + "\n").encode())

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            return self.page()
        if path.startswith("/bytes/"):
            return self.bytes_(path[len("/bytes/"):])
        if path == "/headers":
            return self.headers_()
        self.send_body(404, "text/plain", b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        # Drain a body with Content-Length so keep-alive stays in sync.
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got:
                break
            n -= len(got)
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        self.do_GET()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description="qproxy demo backend")
    ap.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="address to listen on (default 127.0.0.1:8080)")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    if not port.isdigit():
        ap.error("--listen wants HOST:PORT")
    srv = Server((host.strip("[]") or "127.0.0.1", int(port)), Handler)
    print("demo backend listening on http://%s:%d/" % srv.server_address[:2], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
