"""Fetching a remote catalog image without letting a message point the worker anywhere it likes.

The rules, checked at every hop (the first request and each redirect):

- scheme ``https`` (``http`` only for hosts listed in the test-only ``fetch_allow_http_hosts``);
  no ``user:password@`` in the URL;
- the host is on ``LOOKSTREAM_FETCH_ALLOWED_HOSTS`` (exact names, or ``*.example.com`` for any
  subdomain); an empty list disables remote fetching altogether;
- the host is resolved once, every address it resolves to must be public: private, loopback,
  link-local (cloud metadata 169.254.169.254 included), multicast, reserved, CGNAT and unspecified
  addresses are refused (loopback only with the test-only ``fetch_allow_loopback``);
- the connection goes to the address that was checked, never through a second DNS lookup, so a
  DNS-rebinding answer cannot swap in an internal address between the check and the connect.
  TLS still verifies the certificate against the host name (SNI + hostname check);
- redirects are followed by hand, at most ``fetch_max_redirects``;
- the response must be 200, ``Content-Type: image/*``, not content-encoded, at most
  ``max_image_bytes`` (by Content-Length and while streaming), all within ``fetch_timeout_s`` in total,
  wall-clock over connect, TLS, headers and body (a watchdog closes the socket at the deadline);
- the body must start with a JPEG, PNG or WebP signature.

Policy refusals and permanent answers (4xx) raise ``PoisonError`` (the input is bad: dead letter at once).
Network trouble with an allowed host (timeouts, refused connections, resets, 5xx, 408/429) raises
``FetchUnavailable``, a ``TransientError``: the runtime retries the item ``item_attempts`` times and then
dead-letters it, so one dead image server can neither block a partition nor fill the DLQ on a blip.

Stdlib only (socket, ssl, http.client).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from workers.runtime.errors import PoisonError, TransientError
from workers.runtime.settings import Settings

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
_METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class FetchUnavailable(TransientError):
    """An allowed image host could not be reached or answered with a transient error: worth retrying."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case, no trailing dot; IPv6 literals without brackets
    port: int
    path: str  # path + query, as sent on the request line

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return h if self.port == default else f"{h}:{self.port}"


def signature_format(data: bytes) -> str | None:
    """'JPEG', 'PNG' or 'WEBP' from the first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def s3_to_https(uri: str, s: Settings) -> str:
    """``s3://bucket/key`` -> ``<fetch_s3_endpoint>/bucket/key`` (path style, public or proxy-signed objects)."""
    if not s.fetch_s3_endpoint:
        raise PoisonError(
            f"image uri {uri[:200]!r}: s3:// images are not enabled in this deployment "
            "(set LOOKSTREAM_FETCH_S3_ENDPOINT); send the image inline, by https:// or as file://",
            category="image_fetch")
    parts = urlsplit(uri)
    if not parts.netloc or not parts.path.strip("/"):
        raise PoisonError(f"image uri {uri[:200]!r}: s3:// needs a bucket and a key", category="image_fetch")
    return f"{s.fetch_s3_endpoint.rstrip('/')}/{parts.netloc}{parts.path}"


def fetch_image(uri: str, s: Settings) -> bytes:
    """The bytes of a remote image, under every rule in the module docstring."""
    if not s.fetch_allowed_hosts:
        raise PoisonError(
            f"image uri {uri[:200]!r}: remote image fetching is disabled in this deployment "
            "(LOOKSTREAM_FETCH_ALLOWED_HOSTS is empty); send the image inline or as file:// under LOOKSTREAM_IMAGE_ROOT",
            category="image_fetch")
    if uri.startswith("s3://"):
        uri = s3_to_https(uri, s)
    deadline = time.monotonic() + s.fetch_timeout_s
    url = uri
    for hop in range(s.fetch_max_redirects + 1):
        target = check_url(url, s)
        ip = resolve_and_check(target, s, deadline)
        status, location, body = _get(target, ip, s, deadline)
        if status in _REDIRECTS:
            if not location:
                raise PoisonError(f"redirect {status} from {target.host} without a Location", category="image_fetch")
            url = urljoin(url, location)
            continue
        return body  # type: ignore[return-value]
    raise PoisonError(f"image uri {uri[:200]!r}: more than {s.fetch_max_redirects} redirects", category="image_fetch")


# ---------------------------------------------------------------------- policy
def check_url(url: str, s: Settings) -> Target:
    """Scheme, credentials, host allow-list. Raises PoisonError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise PoisonError(f"image uri {url[:200]!r} is malformed: {e}", category="image_fetch") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise PoisonError(f"image uri {url[:200]!r} has no host", category="image_fetch")
    if parts.username is not None or parts.password is not None:
        raise PoisonError(f"image uri for {host} carries credentials; refused", category="image_fetch")
    if scheme == "http":
        if host not in {h.rstrip(".").lower() for h in s.fetch_allow_http_hosts}:
            raise PoisonError(f"image uri {url[:200]!r}: plain http is not allowed, use https", category="image_fetch")
    elif scheme != "https":
        raise PoisonError(f"image uri {url[:200]!r}: scheme {scheme!r} is not allowed (https only)",
                          category="image_fetch")
    if not host_allowed(host, s.fetch_allowed_hosts):
        raise PoisonError(f"image host {host!r} is not on the allow-list (LOOKSTREAM_FETCH_ALLOWED_HOSTS)",
                          category="image_fetch")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(ord(c) <= 32 or ord(c) == 127 for c in path):  # no request-line / header injection
        raise PoisonError(f"image uri for {host} has whitespace or control characters in its path",
                          category="image_fetch")
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def host_allowed(host: str, allowed: list[str]) -> bool:
    for a in allowed:
        a = a.strip().rstrip(".").lower()
        if not a:
            continue
        if a.startswith("*."):
            if host.endswith(a[1:]) and host != a[2:]:
                return True
        elif host == a:
            return True
    return False


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> str | None:
    """Why a connection to this address is refused, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_refusal(ip.ipv4_mapped, allow_loopback)
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            return address_refusal(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), allow_loopback)
    if ip in _METADATA_IPS:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if not ip.is_global:
        return "a non-public address"
    return None


def resolve_and_check(target: Target, s: Settings, deadline: float) -> str:
    """Resolve once; every address must be allowed. Returns the address to connect to."""
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addrs = [literal]
    else:
        if time.monotonic() >= deadline:
            raise FetchUnavailable(f"fetching from {target.host}: time limit of {s.fetch_timeout_s:g} s reached")
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise FetchUnavailable(f"cannot resolve image host {target.host!r}: {e}") from None
        addrs = []
        for info in infos:
            a = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if a not in addrs:
                addrs.append(a)
        if not addrs:
            raise FetchUnavailable(f"image host {target.host!r} resolved to no address")
    for a in addrs:  # one bad answer condemns the host: mixed answers are how rebinding attacks look
        why = address_refusal(a, s.fetch_allow_loopback)
        if why:
            raise PoisonError(f"image host {target.host!r} resolves to {a}, {why}; refused", category="image_fetch")
    return str(addrs[0])


# ---------------------------------------------------------------------- transport
class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a given address, whatever the Host header says."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip
        self.raw_sock: socket.socket | None = None
        self.aborted = False

    def connect(self):
        self.sock = self.raw_sock = socket.create_connection((self._ip, self.port), self.timeout)
        if self.aborted:  # the deadline passed while connecting
            self.abort()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def abort(self) -> None:
        """Wall-clock deadline: unblock whatever read is waiting (TLS handshake, headers, body)."""
        self.aborted = True
        if self.raw_sock is not None:
            try:
                self.raw_sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, ip, timeout)
        self._ctx = context

    def connect(self):
        super().connect()
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self.host)


def _ssl_context(s: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=s.fetch_ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _remaining(deadline: float, s: Settings, host: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchUnavailable(f"fetching from {host}: time limit of {s.fetch_timeout_s:g} s reached")
    return left


def _get(t: Target, ip: str, s: Settings, deadline: float) -> tuple[int, str | None, bytes | None]:
    """One request. Returns (status, Location, body); body only for a 200 that passed every check."""
    timeout = _remaining(deadline, s, t.host)
    if t.scheme == "https":
        conn: _PinnedHTTP = _PinnedHTTPS(t.host, t.port, ip, timeout, _ssl_context(s))
    else:
        conn = _PinnedHTTP(t.host, t.port, ip, timeout)
    # Socket timeouts bound each read, not the sum: a server trickling header bytes would reset them.
    watchdog = threading.Timer(timeout, conn.abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.putrequest("GET", t.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", t.host_header)
        conn.putheader("User-Agent", "lookstream-image-fetch/1")
        conn.putheader("Accept", "image/jpeg, image/png, image/webp, image/*;q=0.5")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        sock = conn.sock  # getresponse() may drop conn.sock ('Connection: close'); the response still reads it
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            return resp.status, resp.getheader("Location"), None
        if resp.status != 200:
            msg = f"image host {t.host} answered HTTP {resp.status} {resp.reason}"
            if resp.status >= 500 or resp.status in (408, 425, 429):
                raise FetchUnavailable(msg)
            raise PoisonError(msg, category="image_fetch")
        ctype = (resp.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if not ctype.startswith("image/"):
            raise PoisonError(f"image host {t.host} sent Content-Type {ctype or 'none'!r}, not image/*",
                              category="bad_image")
        encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise PoisonError(f"image host {t.host} sent Content-Encoding {encoding!r}; only identity is accepted",
                              category="bad_image")
        limit = s.max_image_bytes
        declared = resp.getheader("Content-Length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise PoisonError(f"image host {t.host} sent a malformed Content-Length {declared[:40]!r}",
                                  category="bad_image") from None
            if n > limit:
                raise PoisonError(f"image at {t.host} is {n} bytes (Content-Length), over the {limit}-byte limit",
                                  category="bad_image")
        chunks, total = [], 0
        while True:
            sock.settimeout(_remaining(deadline, s, t.host))
            chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise PoisonError(f"image at {t.host} is over the {limit}-byte limit (stopped reading at {total})",
                                  category="bad_image")
            chunks.append(chunk)
            _remaining(deadline, s, t.host)
        if conn.aborted:  # the watchdog cut the body short
            raise FetchUnavailable(f"fetching from {t.host}: time limit of {s.fetch_timeout_s:g} s reached")
        body = b"".join(chunks)
        if not body:
            raise PoisonError(f"image at {t.host} is empty (0 bytes)", category="bad_image")
        if signature_format(body) is None:
            raise PoisonError(f"image at {t.host} ({ctype}) does not start with a JPEG, PNG or WebP signature",
                              category="bad_image")
        return 200, None, body
    except (PoisonError, FetchUnavailable):
        if conn.aborted:
            raise FetchUnavailable(f"fetching from {t.host}: time limit of {s.fetch_timeout_s:g} s reached") from None
        raise
    except ssl.SSLCertVerificationError as e:
        raise PoisonError(f"image host {t.host}: TLS certificate not valid: {e.verify_message}",
                          category="image_fetch") from None
    except (socket.timeout, TimeoutError):
        raise FetchUnavailable(f"fetching from {t.host}: timed out (limit {s.fetch_timeout_s:g} s)") from None
    except (OSError, http.client.HTTPException) as e:
        if conn.aborted:
            raise FetchUnavailable(f"fetching from {t.host}: time limit of {s.fetch_timeout_s:g} s reached") from None
        raise FetchUnavailable(f"fetching from {t.host}: {type(e).__name__}: {e}") from None
    finally:
        watchdog.cancel()
        conn.close()
