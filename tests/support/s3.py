"""S3 through moto: an HTTP server on loopback (real sockets), a proxy in front of it that
can break a connection midway, and helpers to make buckets."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

__all__ = ["CuttingProxy", "HoldingProxy", "MotoServer", "client_for", "make_bucket"]


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


class _Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``port``: each connection's bytes go up through
    :meth:`_up` and down through :meth:`_down`, one thread each."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        self._pass(src, dst)

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        self._pass(src, dst)

    @staticmethod
    def _pass(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(64 << 10):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)


class CuttingProxy(_Proxy):
    """Once :meth:`cut_after` is armed, the connection that carries the next ``n`` bytes back
    to the client is dropped right there (a real reset in the middle of a response), then
    the proxy passes everything again."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._budget: int | None = None
        self.cuts = 0
        super().__init__(port)

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._budget = n

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(64 << 10):
                with self._lock:
                    budget = self._budget
                    if budget is not None and len(data) >= budget:
                        self._budget = None
                        self.cuts += 1
                        dst.sendall(data[:budget])
                        raise ConnectionResetError("cut by the test proxy")
                    if budget is not None:
                        self._budget = budget - len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)


class HoldingProxy(_Proxy):
    """Can hold requests: once :meth:`hold` is armed with a pattern, a request whose request
    line (``PUT /bucket/key HTTP/1.1``) starts with ``PUT`` and contains it waits, unsent,
    until :meth:`release`.  ``held`` is set when one is waiting."""

    def __init__(self, port: int) -> None:
        self._pattern: bytes | None = None
        self.held = threading.Event()
        self._release = threading.Event()
        super().__init__(port)

    def hold(self, pattern: str) -> None:
        self.held.clear()
        self._release.clear()
        self._pattern = pattern.encode()

    def release(self) -> None:
        self._pattern = None
        self._release.set()

    def close(self) -> None:
        self.release()
        super().close()

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(64 << 10):
                line = data.split(b"\r\n", 1)[0]
                pattern = self._pattern
                if pattern is not None and line.startswith(b"PUT ") and pattern in line:
                    self.held.set()
                    self._release.wait(120)
                    if _gone(src):
                        return  # its sender was killed meanwhile: the request never lands
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)


def _gone(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (nothing more to read, ever)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


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
