"""A small real HTTP/1.1 server for the http connection's tests, in a thread of its own (so
it serves whatever event loop, or none, the test runs): keep-alive, optional TLS with a
required client certificate, and a count of the TCP connections it accepted.

    server = HttpServer().start()               # or HttpServer(ssl_context=...)
    server.port, server.accepted
    server.stop()

Routes: GET .../health -> 200 "ok"; GET /status/<code> -> that status (with Retry-After: 7
on 429 and 503); GET /headers -> the request's headers as JSON; anything else -> 404. Every
path asked for is kept in `paths`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HttpServer", "server_context"]


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context; with `client_ca`, clients must present a certificate it
    signed (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        status, body, headers = 404, b"no such route", {}
        if self.path.split("?")[0].endswith("/health"):
            status, body = 200, b"ok"
        elif self.path == "/headers":
            status, body = 200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        elif self.path.startswith("/status/"):
            status, body = int(self.path.rsplit("/", 1)[1]), b'{"message": "as asked"}'
            if status in (429, 503):
                headers["Retry-After"] = "7"
        self.server.paths.append(self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.accepted = 0
        self.paths: list[str] = []

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        if self.context is None:
            super().finish_request(request, client_address)
            return
        try:  # the handshake runs in this connection's thread, not in the accept loop
            wrapped = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            with contextlib.suppress(OSError):
                wrapped.shutdown(socket.SHUT_RDWR)
            wrapped.close()


class HttpServer:
    """Serve on 127.0.0.1 and a free port until `stop`."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = _Server(ssl_context)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def accepted(self) -> int:
        """TCP connections accepted so far."""
        return self._server.accepted

    @property
    def paths(self) -> list[str]:
        return self._server.paths

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
