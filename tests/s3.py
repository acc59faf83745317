"""An S3 server for tests: moto's server mode on 127.0.0.1, and a TCP proxy in front of it
that can drop connections mid-request.

The server is real HTTP on a real socket, so the code under test goes through pyarrow's
AWS SDK exactly as against AWS (signing, multipart uploads, retries); only the endpoint
comes from AWS_ENDPOINT_URL. moto keeps its state per process, so one server serves the
session and each test resets it and gets an empty bucket.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "seqmodels-test"


@dataclass
class S3:
    """The bucket a test writes to, and a boto3 client that bypasses any proxy (the
    independent view of what the bucket holds)."""

    endpoint: str
    bucket: str = BUCKET

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    @property
    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def put(self, key: str, content: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=content)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def point_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The standard AWS variables for `endpoint`, and nothing from the machine's own AWS
    setup (profiles, a real region, the EC2 metadata service) leaking in."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # An empty file, not /dev/null: aiobotocore (DVC's s3 remote) refuses a config file it
    # cannot stat as a regular file ("The specified config file (/dev/null) could not be found").
    empty = Path(tempfile.gettempdir()) / "seqmodels-tests-empty-aws-config"
    empty.touch()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """An empty bucket on a freshly reset moto, with the environment pointing at it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    point_at(monkeypatch, moto_endpoint)
    store = S3(moto_endpoint)
    store.client.create_bucket(Bucket=store.bucket)
    return store


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`. Disarmed it forwards everything; armed
    with `arm(n)`, it forwards the first n bytes of each request and then closes the client's
    connection with a reset, on every connection until disarmed, so retries fail as well: a
    network that keeps dying mid-upload. A request ends where the server starts replying
    (HTTP/1.1 without pipelining), so small requests below n still pass."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.limit: int | None = None
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="dropping-proxy").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, after_bytes: int) -> None:
        self.limit = after_bytes

    def disarm(self) -> None:
        self.limit = None

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            state = {"sent": 0}  # bytes of the current request forwarded so far
            threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, state), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: dict[str, int]) -> None:
        while data := self._recv(client):
            limit = self.limit
            if limit is not None and state["sent"] + len(data) > limit:
                with contextlib.suppress(OSError):
                    upstream.sendall(data[: max(limit - state["sent"], 0)])
                self.dropped += 1
                self._cut(client, upstream, reset=True)
                return
            state["sent"] += len(data)
            try:
                upstream.sendall(data)
            except OSError:
                break
        self._cut(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, state: dict[str, int]) -> None:
        while data := self._recv(upstream):
            state["sent"] = 0  # the server answers: the next bytes from the client are a new request
            try:
                client.sendall(data)
            except OSError:
                break
        self._cut(client, upstream)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(1 << 16)
        except OSError:
            return b""

    def _cut(self, client: socket.socket, upstream: socket.socket, reset: bool = False) -> None:
        """Close both sides (shutdown first: it wakes the other pump's blocked recv). With
        `reset` the client's side goes first, with SO_LINGER 0: it sees a connection reset,
        as when a network path dies, not an orderly end of the reply."""
        if reset:
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._open.discard(sock)


@pytest.fixture
def dropping_proxy(s3: S3, monkeypatch: pytest.MonkeyPatch) -> Iterator[DroppingProxy]:
    """A proxy in front of the test's moto, disarmed, with AWS_ENDPOINT_URL pointing at it."""
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = DroppingProxy((host, int(port)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
