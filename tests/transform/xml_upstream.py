"""A real HTTP/1.1 upstream that speaks XML, for HttpService's transforms, in a thread of its
own on 127.0.0.1 and a free port.

Routes (any method):
  /orders/<id>   200, an XML order (attributes, repeated items, a namespaced note)
  /broken        200, text that is not XML
  /missing       404, an HTML page
  /echo          200, the request body back with the request's Content-Type

`requests` counts every request received, and `bodies` keeps each request's body.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ORDER_XML", "XmlUpstream"]

ORDER_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<order id="{id}" xmlns:erp="urn:erp">\n'
    b'  <item sku="a-1">2</item>\n'
    b'  <item sku="b-2">1</item>\n'
    b'  <erp:note lang="en">leave at the door</erp:note>\n'
    b"</order>\n"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests += 1
            self.server.bodies.append(body)
        content_type, status = "application/xml", 200
        if self.path.startswith("/orders/"):
            answer = ORDER_XML.replace(b"{id}", self.path.rsplit("/", 1)[1].encode())
        elif self.path == "/broken":
            answer, content_type = b"<order><unclosed></order>", "text/plain"
        elif self.path == "/missing":
            answer, content_type, status = b"<html><p>gone</html>", "text/html", 404
        else:
            answer = body
            content_type = self.headers.get("Content-Type", "application/octet-stream")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bodies: list[bytes] = []


class XmlUpstream:
    """Serve until `stop`."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def bodies(self) -> list[bytes]:
        return self._server.bodies

    def start(self) -> XmlUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
