"""workers/media/fetch.py against a local HTTP server on 127.0.0.1: the only address these tests ever connect to.

The server is reachable only through the test-only settings (plain http for 127.0.0.1, loopback allowed).
Every connection the fetcher opens goes through a guard that fails the test for any address other than
127.0.0.1, so a refused redirect target is proven never to have been contacted.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from support.image_server import PNG, Handler

from contracts.models import ImageRef
from workers.media import fetch
from workers.runtime.errors import PoisonError
from workers.media.fetch import FetchUnavailable, address_refusal, fetch_image, host_allowed, signature_format
from workers.media.images import image_bytes
from workers.runtime.settings import Settings


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server):
    Handler.seen.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch):
    """Fail loudly if the fetcher tries to connect anywhere but 127.0.0.1."""
    real = socket.create_connection
    attempts = []

    def guarded(address, *a, **kw):
        attempts.append(address[0])
        assert address[0] == "127.0.0.1", f"fetcher tried to connect to {address}"
        return real(address, *a, **kw)

    monkeypatch.setattr(fetch.socket, "create_connection", guarded)
    return attempts


def settings(**kw) -> Settings:
    base = dict(fetch_allowed_hosts=["127.0.0.1"], fetch_allow_http_hosts=["127.0.0.1"], fetch_allow_loopback=True,
                fetch_timeout_s=3.0, max_image_bytes=4096)
    return Settings(**{**base, **kw})


# ---------------------------------------------------------------------- tests
def test_good_image_is_fetched(base, only_loopback):
    assert fetch_image(f"{base}/good.png", settings()) == PNG
    assert fetch_image(f"{base}/good-charset.png?v=1", settings()) == PNG
    assert only_loopback == ["127.0.0.1", "127.0.0.1"]


def test_image_bytes_uses_the_fetcher(base):
    ref = ImageRef.model_construct(uri=f"{base}/good.png", data=None)  # contracts allow only https; tests use http
    assert image_bytes(ref, settings()) == PNG


def test_remote_fetching_disabled_by_default(only_loopback):
    s = Settings()
    assert s.fetch_allowed_hosts == []
    with pytest.raises(PoisonError, match="remote image fetching is disabled.*LOOKSTREAM_FETCH_ALLOWED_HOSTS"):
        image_bytes(ImageRef(uri="https://images.example.com/a.jpg"), s)
    with pytest.raises(PoisonError, match="s3:// images are not enabled"):
        image_bytes(ImageRef(uri="s3://bucket/a.jpg"), Settings(fetch_allowed_hosts=["images.example.com"]))
    assert only_loopback == []


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_FETCH_ALLOWED_HOSTS", "cdn.example.com, *.img.example.net")
    s = Settings()
    assert s.fetch_allowed_hosts == ["cdn.example.com", "*.img.example.net"]
    assert host_allowed("a.img.example.net", s.fetch_allowed_hosts)
    assert not host_allowed("img.example.net", s.fetch_allowed_hosts)
    assert not host_allowed("evilimg.example.net", s.fetch_allowed_hosts)
    assert not host_allowed("cdn.example.com.evil.org", s.fetch_allowed_hosts)


def test_host_not_on_allow_list_is_refused(base, only_loopback):
    with pytest.raises(PoisonError, match="not on the allow-list") as e:
        fetch_image(f"{base}/good.png", settings(fetch_allowed_hosts=["cdn.example.com"]))
    assert e.value.category == "image_fetch"
    assert only_loopback == []


def test_plain_http_needs_the_test_flag(base, only_loopback):
    with pytest.raises(PoisonError, match="plain http is not allowed"):
        fetch_image(f"{base}/good.png", settings(fetch_allow_http_hosts=[]))
    with pytest.raises(PoisonError, match="scheme 'ftp'"):
        fetch_image("ftp://127.0.0.1/x.png", settings())
    with pytest.raises(PoisonError, match="credentials"):
        fetch_image(base.replace("//", "//user:pw@") + "/good.png", settings())
    assert only_loopback == []


def test_loopback_refused_without_the_test_flag(base, only_loopback):
    with pytest.raises(PoisonError, match="127.0.0.1, a loopback address"):
        fetch_image(f"{base}/good.png", settings(fetch_allow_loopback=False))
    # by name too: the resolved address is what counts
    with pytest.raises(PoisonError, match="loopback address"):
        fetch_image("http://localhost:1/x.png", settings(fetch_allowed_hosts=["localhost"],
                                                          fetch_allow_http_hosts=["localhost"],
                                                          fetch_allow_loopback=False))
    assert only_loopback == []


@pytest.mark.parametrize("path, why", [
    ("/to-metadata", "169.254.169.254, a cloud metadata address"),
    ("/to-private", "10.0.0.1, a private address"),
    ("/to-unlisted", "'evil.example' is not on the allow-list"),
    ("/to-ftp", "scheme 'ftp'"),
])
def test_redirects_are_rechecked_at_every_hop(base, only_loopback, path, why):
    # the targets are on the allow-list and may use http: only the address check stands in the way
    targets = ["127.0.0.1", "169.254.169.254", "10.0.0.1"]
    s = settings(fetch_allowed_hosts=targets, fetch_allow_http_hosts=targets)
    with pytest.raises(PoisonError, match=why):
        fetch_image(base + path, s)
    assert only_loopback == ["127.0.0.1"]  # the redirect target was never contacted


def test_redirect_to_loopback_refused_when_loopback_not_allowed(base, only_loopback, monkeypatch):
    # the first hop is allowed by name (resolved -> a public address, served by the test server through the
    # pinned connection), the redirect points at 127.0.0.1: refused before any connection.
    real_gai = socket.getaddrinfo

    def gai(host, port, *a, **kw):
        if host == "images.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        assert host == "127.0.0.1", host
        return real_gai(host, port, *a, **kw)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", gai)
    pinned = []
    monkeypatch.setattr(fetch._PinnedHTTP, "connect", lambda self: (pinned.append(self._ip),
                                                                    setattr(self, "_ip", "127.0.0.1"),
                                                                    _real_connect(self))[-1])
    port = int(base.rsplit(":", 1)[1])
    hosts = ["images.example.com", "127.0.0.1"]
    s = settings(fetch_allowed_hosts=hosts, fetch_allow_http_hosts=hosts, fetch_allow_loopback=False)
    Handler.routes["/to-loopback"] = lambda h: h.redirect(f"http://127.0.0.1:{port}/good.png")
    with pytest.raises(PoisonError, match="127.0.0.1, a loopback address"):
        fetch_image(f"http://images.example.com:{port}/to-loopback", s)
    assert pinned == ["93.184.216.34"] and only_loopback == ["127.0.0.1"]
    assert Handler.seen == [("/to-loopback", f"images.example.com:{port}")]


_real_connect = fetch._PinnedHTTP.connect


def test_connects_to_the_checked_address_with_one_lookup(base, only_loopback, monkeypatch):
    """DNS rebinding: the name is resolved once; the connection uses that answer, the Host header the name."""
    port = int(base.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "10.0.0.5"])  # a second lookup would get the private address
    calls = []
    real_gai = socket.getaddrinfo

    def gai(host, p, *a, **kw):
        if host != "rebind.example.com":  # socket.create_connection's own numeric lookup of the pinned address
            assert host == "127.0.0.1", host
            return real_gai(host, p, *a, **kw)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), p))]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", gai)
    hosts = ["rebind.example.com"]
    s = settings(fetch_allowed_hosts=hosts, fetch_allow_http_hosts=hosts)
    assert fetch_image(f"http://rebind.example.com:{port}/good.png", s) == PNG
    assert calls == ["rebind.example.com"]
    assert Handler.seen == [("/good.png", f"rebind.example.com:{port}")]
    assert only_loopback == ["127.0.0.1"]


def test_mixed_dns_answers_are_refused(monkeypatch, only_loopback):
    def gai(host, p, *a, **kw):
        assert host == "cdn.example.com", host
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", p)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.1", p))]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", gai)
    with pytest.raises(PoisonError, match="192.168.1.1, a private address"):
        fetch_image("https://cdn.example.com/a.png", Settings(fetch_allowed_hosts=["cdn.example.com"]))
    assert only_loopback == []


def test_redirects_are_followed_up_to_the_limit(base):
    assert fetch_image(f"{base}/hop0", settings()) == PNG  # 3 redirects: allowed
    with pytest.raises(PoisonError, match="more than 2 redirects"):
        fetch_image(f"{base}/hop0", settings(fetch_max_redirects=2))


def test_redirect_loop_is_capped(base):
    with pytest.raises(PoisonError, match="more than 3 redirects"):
        fetch_image(f"{base}/loop", settings())
    assert len(Handler.seen) == 4


@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked", "/big-no-length"])
def test_oversized_body_is_refused(base, path):
    with pytest.raises(PoisonError, match="over the 4096-byte limit") as e:
        fetch_image(base + path, settings())
    assert e.value.category == "bad_image"


@pytest.mark.parametrize("path, why", [
    ("/html", "Content-Type 'text/html', not image/\\*"),
    ("/html-as-image", "does not start with a JPEG, PNG or WebP signature"),
    ("/svg", "does not start with a JPEG, PNG or WebP signature"),
    ("/gzip", "Content-Encoding 'gzip'"),
    ("/403", "HTTP 403"),
    ("/missing.png", "HTTP 404"),
])
def test_wrong_content_is_refused(base, path, why):
    with pytest.raises(PoisonError, match=why):
        fetch_image(base + path, settings())


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_slow_server_hits_the_time_limit(base, path):
    # both answers would complete (and be a valid PNG) if the client waited: the error IS the limit.
    # /drip sends each byte well within the limit, so only a limit on the whole fetch refuses it.
    with pytest.raises(FetchUnavailable, match="time limit|timed out"):
        fetch_image(base + path, settings(fetch_timeout_s=0.8))


def test_time_limit_is_wall_clock_over_headers_too(base):
    # each header byte arrives well within a socket timeout; only a wall-clock deadline stops it
    t0 = time.monotonic()
    with pytest.raises(FetchUnavailable, match="time limit"):
        fetch_image(base + "/drip-headers", settings(fetch_timeout_s=0.8))
    assert time.monotonic() - t0 < 5.0  # the trickle would take 10 s; before the watchdog it ran to the end


def test_outages_are_retryable_not_poison(base):
    with pytest.raises(FetchUnavailable, match="HTTP 500"):
        fetch_image(f"{base}/500", settings())
    with pytest.raises(FetchUnavailable, match="ConnectionRefusedError"):
        fetch_image(f"{base}/to-https-refused", settings())  # redirect to https://127.0.0.1:1: nothing listens
    assert not issubclass(FetchUnavailable, PoisonError)  # the runtime retries it item_attempts times


def test_address_policy():
    import ipaddress

    bad = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "169.254.1.1", "100.64.0.1",
           "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1", "fd00:ec2::254",
           "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "ff02::1", "::"]
    for a in bad:
        assert address_refusal(ipaddress.ip_address(a), allow_loopback=False), a
    for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]:
        assert address_refusal(ipaddress.ip_address(a), allow_loopback=False) is None, a
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allow_loopback=True)


def test_signatures():
    assert signature_format(PNG) == "PNG"
    assert signature_format(b"\xff\xd8\xff\xe0rest") == "JPEG"
    assert signature_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"
    assert signature_format(b"RIFF\0\0\0\0AVI ") is None
    assert signature_format(b"GIF89a") is None
    assert signature_format(b"") is None


def test_file_uri_fifo_is_refused_not_read(tmp_path):
    """file:// stays local and under image_root; a FIFO there would block the worker's read forever."""
    import os

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(PoisonError, match="not a regular file"):
        image_bytes(ImageRef(uri=f"file://{tmp_path}/pipe.jpg"), Settings(image_root=tmp_path))
