"""kiln's HTTP listener: binds a port, accepts connections for one ``HttpApp`` and closes
gracefully.

Binding and serving are two steps so that a port already in use is found before the models
load, and no connection is accepted before the server can answer it::

    listener = HttpListener(app, limits=ConnectionLimits(), ssl=None)
    addresses = listener.bind("127.0.0.1", 8000)   # OSError when the port is taken
    await listener.start()
    ...
    await listener.close(timeout_s=30)
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl

from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.http_server import ConnectionLimits, HttpConnection

#: Connections the kernel may queue before they are accepted.
BACKLOG = 2048


class HttpListener:
    """Serves one ``HttpApp`` with kiln's ``HttpConnection`` (see the module docstring)."""

    def __init__(self, app: HttpApp, *, limits: ConnectionLimits,
                 ssl: _ssl.SSLContext | None = None) -> None:
        self.app = app
        self.limits = limits
        self.ssl = ssl
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []

    def bind(self, host: str, port: int) -> list[tuple[str, int]]:
        """Bind (without listening yet) every address ``host`` resolves to; returns the
        bound (host, port) pairs. Raises ``OSError`` when an address is in use."""
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        bound: list[tuple[str, int]] = []
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # NOTE: a port of 0 binds each family to its own free port; bind them to
                # the first one's, as one listener should have one port.
                sock.bind((address[0], bound[0][1] if bound and port == 0 else address[1],
                           *address[2:]))
            except OSError:
                sock.close()
                self._close_sockets()
                raise
            self._sockets.append(sock)
            bound.append(sock.getsockname()[:2])
        return bound

    async def start(self) -> None:
        """Listen on the bound sockets and serve connections."""
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            sock.setblocking(False)
            self._servers.append(await loop.create_server(
                lambda: HttpConnection(self.app, self, self.limits), sock=sock,
                backlog=BACKLOG, ssl=self.ssl))

    async def close(self, timeout_s: float) -> None:
        """Stop accepting, let every connection finish the request it is answering (for at
        most ``timeout_s``), then close them all."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.shutdown()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
        for connection in list(self.connections):
            connection.abort()
        self._servers.clear()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
