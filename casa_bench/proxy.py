"""A byte-counting TCP relay on 127.0.0.1, for the one untimed pass that measures wire bytes.

Only used while counting, never while timing: a Python relay would slow the reads it measures.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit

__all__ = ["CountingProxy"]


class CountingProxy:
    """Relay ``127.0.0.1:<port>`` to ``upstream`` (``http://host:port``); count bytes each way."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._parts = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
        self.down = 0   # server -> client (what the reader receives)
        self.up = 0     # client -> server
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listen = socket.socket()
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(64)
        self.port = self._listen.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return urlunsplit((self._parts.scheme or "http", f"127.0.0.1:{self.port}", "", "", ""))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(1 << 20):
                with self._lock:  # count before forwarding: the reader may return at once
                    if direction == "down":
                        self.down += len(data)
                    else:
                        self.up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self._listen.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
        except OSError:
            pass
        self._listen.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
