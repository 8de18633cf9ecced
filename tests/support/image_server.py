"""The image server of the fetcher tests (tests/unit/test_fetch.py): one handler on 127.0.0.1 with a route per case
(good images, wrong types, oversize, slow and dripping bodies, redirects to places the fetcher must refuse)."""

from __future__ import annotations

import io
import time
from http.server import BaseHTTPRequestHandler

from PIL import Image


def _png(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
BIG = b"\x89PNG\r\n\x1a\n" + b"\0" * 5000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict = {}
    seen: list = []

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.seen.append((self.path, self.headers.get("Host")))
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self._send(404, b"nope", "text/plain")
            return
        route(self)

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, where, status=302):
        self.send_response(status)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()


def route(path):
    def deco(fn):
        Handler.routes[path] = fn
        return fn
    return deco


@route("/good.png")
def _good(h):
    h._send(200, PNG, "image/png")


@route("/good-charset.png")
def _good_ct(h):
    h._send(200, PNG, "image/png; charset=binary")


@route("/html")
def _html(h):
    h._send(200, b"<html><body>hi</body></html>", "text/html")


@route("/html-as-image")
def _html_img(h):
    h._send(200, b"<html><body>hi</body></html>", "image/jpeg")


@route("/svg")
def _svg(h):
    h._send(200, b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")


@route("/big-declared")
def _big(h):
    h._send(200, BIG, "image/png")


@route("/big-chunked")
def _chunked(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i in range(0, len(BIG), 1000):
        part = BIG[i : i + 1000]
        h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    h.wfile.write(b"0\r\n\r\n")


@route("/big-no-length")
def _nolength(h):  # HTTP/1.0 style: no length, body until close
    h.close_connection = True
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(BIG)


@route("/slow")
def _slow(h):
    time.sleep(2.5)
    h._send(200, PNG, "image/png")


@route("/drip")
def _drip(h):  # a valid header, then a body that trickles in slower than the total limit allows
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", str(len(PNG)))
    h.end_headers()
    for i in range(0, len(PNG)):
        h.wfile.write(PNG[i : i + 1])
        h.wfile.flush()
        time.sleep(0.1)


@route("/drip-headers")
def _drip_headers(h):  # the status line and headers themselves trickle in, a byte every 0.25 s (10 s in all)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Pad: " + b"p" * 8 + b"\r\n\r\n"
    for b in head:
        try:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
        except OSError:
            return
        time.sleep(0.25)
    h.close_connection = True


@route("/gzip")
def _gzip(h):
    h._send(200, PNG, "image/png", extra=[("Content-Encoding", "gzip")])


@route("/500")
def _500(h):
    h._send(500, b"oops", "text/plain")


@route("/403")
def _403(h):
    h._send(403, b"forbidden", "text/plain")


for _i in range(3):
    Handler.routes[f"/hop{_i}"] = (lambda n: lambda h: h.redirect(f"/hop{n + 1}"))(_i)
Handler.routes["/hop3"] = _good
Handler.routes["/loop"] = lambda h: h.redirect("/loop")
Handler.routes["/to-metadata"] = lambda h: h.redirect("http://169.254.169.254/latest/meta-data/iam/")
Handler.routes["/to-private"] = lambda h: h.redirect("http://10.0.0.1/admin.png")
Handler.routes["/to-unlisted"] = lambda h: h.redirect("https://evil.example/x.png")
Handler.routes["/to-ftp"] = lambda h: h.redirect("ftp://127.0.0.1/x.png")
Handler.routes["/to-https-refused"] = lambda h: h.redirect("https://127.0.0.1:1/x.png")
