"""S3 through moto: an HTTP server on loopback (real sockets) and helpers to make buckets."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

__all__ = ["MotoServer", "client_for", "make_bucket"]


class MotoServer:
    """moto's S3 server on 127.0.0.1; can be stopped and started again on the same port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: ThreadedMotoServer | None = None

    def start(self) -> MotoServer:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def client_for(region: str, endpoint_url: str | None = None) -> Any:
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}
        ),
    )


def make_bucket(client: Any, name: str, region: str, *, lock: bool = False) -> None:
    args: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if lock:
        args["ObjectLockEnabledForBucket"] = True
    client.create_bucket(**args)
