"""An S3-compatible server on loopback for the tests: moto's, in a thread of the test process.

moto checks no signature, so a bucket is made with a plain PUT; objects are written with
obstore, as an application would. The credentials are fake but treated as secrets: the tests
check they never show in a log or a repr.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import obstore
from moto.server import ThreadedMotoServer
from obstore.store import S3Store

ACCESS_KEY = "AKIAMULTIRESPTEST"
SECRET_KEY = "s3cr3t-multiresp-never-logged"  # looked for in logs and reprs
REGION = "us-east-1"


class S3Server:
    """A running moto server: its endpoint, and stores on fresh buckets."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def bucket(self) -> str:
        """A new, empty bucket's name (a valid DNS name, as S3 wants)."""
        name = f"bucket-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.endpoint}/{name}").raise_for_status()
        return name

    def put_raw(self, bucket: str, key: str, data: bytes = b"") -> None:
        """Write an object under ``key`` exactly (``a/../b``, ``folder/``), which obstore
        would normalise and an HTTP client would resolve."""
        url = httpx.URL(self.endpoint).copy_with(
            raw_path=f"/{bucket}/{quote(key, safe='/').replace('.', '%2E')}".encode("ascii")
        )
        httpx.put(url, content=data).raise_for_status()

    def store(self, bucket: str | None = None, **options: object) -> S3Store:
        """An obstore store on ``bucket`` (a new one when None), as users build one."""
        return S3Store(
            bucket or self.bucket(),
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region=REGION,
            client_options={"allow_http": True},
            **options,  # type: ignore[arg-type]
        )


def put(store: S3Store, objects: dict[str, bytes]) -> None:
    """Write ``objects`` (key -> content) to ``store``."""
    for key, data in objects.items():
        obstore.put(store, key, data)


@contextmanager
def running() -> Iterator[S3Server]:
    """A moto S3 server on a free loopback port, for the duration of the block."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
