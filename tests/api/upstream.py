"""A real HTTP/1.1 upstream for the api tests, in a thread of its own (it serves any event
loop, or a sidecar in another process), on 127.0.0.1 and a free port.

Routes (any method unless said):
  /echo/...            200, JSON of the request: method, path, query, headers, body (text)
  /status/<code>       that status; `Retry-After: <retry_after>` on 429 and 503
  /script/<key>        the next answer scripted with `script(key, [(status, headers), ...])`
                       (the last one repeats), counted per key in `hits[key]`
  /token               OAuth2 token endpoint: form client_credentials, Basic client auth
                       `client:secret`; answers `tok-<n>` with `expires_in`, counted
  /protected/...       200 with the bearer token in a valid-tokens set, else 401
  /sse?n=<count>       text/event-stream of <count> events `event: tick`, `data: <i>`
  /big?size=<bytes>    <bytes> of body, streamed in 64 KiB writes (nothing kept in memory)
  /redirect?to=<url>   302 to <url>
  /gzip                a gzip-encoded JSON body
  /slow?seconds=<s>    200 after <s> seconds
  /cut                 a body that breaks off halfway (the connection closes)

`requests` counts every request received (the tests of refused requests assert it stays 0),
and `log` keeps (method, path with query, headers, body) of each.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Upstream"]

_CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        server = self.server
        with server.lock:
            server.requests += 1
            server.log.append((self.command, self.path, dict(self.headers.items()), body))
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path.startswith("/echo"):
            answer = {
                "method": self.command,
                "path": path,
                "query": parts.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(errors="replace"),
            }
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            headers = {"Retry-After": server.retry_after} if status in (429, 503) else {}
            self._send(status, b'{"message": "as asked"}', headers)
        elif path.startswith("/script/"):
            key = path.split("/")[2]
            with server.lock:
                steps = server.scripts.get(key, [(200, {})])
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                server.hits[key] = server.hits.get(key, 0) + 1
            self._send(step[0], f"answer {step[0]}".encode(), step[1])
        elif path == "/token":
            self._token(body)
        elif path.startswith("/protected"):
            given = self.headers.get("Authorization", "")
            with server.lock:
                valid = (
                    server.accept_tokens and given.removeprefix("Bearer ") in server.valid_tokens
                )
            if valid:
                self._send(200, json.dumps({"token": given}).encode())
            else:
                self._send(401, b'{"error": "invalid_token"}')
        elif path == "/sse":
            self._sse(int(query.get("n", ["3"])[0]))
        elif path == "/big":
            self._big(int(query["size"][0]))
        elif path.rstrip("/") == "/redirect":
            self._send(302, b"", {"Location": query["to"][0]})
        elif path == "/cut":
            self._cut()
        elif path == "/slow":
            time.sleep(float(query["seconds"][0]))
            self._send(200, b"late")
        elif path == "/gzip":
            data = gzip.compress(json.dumps({"zipped": True}).encode())
            self._send(200, data, {"Content-Encoding": "gzip"})
        else:
            self._send(404, b"no such route")

    def _sse(self, count: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index in range(count):
            event = f"event: tick\ndata: {index}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _cut(self) -> None:
        """Promise twice the bytes sent, then hang up."""
        self.send_response(200)
        self.send_header("Content-Length", str(2 * _CHUNK))
        self.end_headers()
        self.wfile.write(b"x" * _CHUNK)
        self.wfile.flush()
        self.close_connection = True

    def _big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"x" * _CHUNK
        sent = 0
        try:
            while sent < size:
                piece = block[: min(_CHUNK, size - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:  # the client closed the connection mid-body
            with self.server.lock:
                self.server.aborted_downloads += 1

    def _token(self, body: bytes) -> None:
        server = self.server
        with server.lock:
            server.token_requests += 1
            number = server.token_requests
        time.sleep(server.token_delay)
        form = parse_qs(body.decode())
        expected = "Basic " + base64.b64encode(b"client:secret").decode()
        if (
            form.get("grant_type") != ["client_credentials"]
            or self.headers.get("Authorization") != expected
        ):
            self._send(401, b'{"error": "invalid_client"}')
            return
        token = f"tok-{number}"
        with server.lock:
            server.valid_tokens.add(token)
            server.scopes.append(form.get("scope", [""])[0])
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": server.expires_in}
        self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.log: list[tuple[str, str, dict[str, str], bytes]] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.hits: dict[str, int] = {}
        self.retry_after = "1"
        self.token_requests = 0
        self.token_delay = 0.0
        self.expires_in = 3600
        self.valid_tokens: set[str] = set()
        self.accept_tokens = True
        self.aborted_downloads = 0
        self.scopes: list[str] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients closing kept-alive connections is normal here."""


class Upstream:
    """The server; `start()` then `url`, `stop()` at the end."""

    def __init__(self) -> None:
        self.server = _Server()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def requests(self) -> int:
        return self.server.requests

    def script(self, key: str, steps: list[tuple[int, dict[str, str]]]) -> None:
        with self.server.lock:
            self.server.scripts[key] = list(steps)

    def hits(self, key: str) -> int:
        return self.server.hits.get(key, 0)

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # python tests/api/upstream.py: serve until killed (bench, RSS)
    import sys

    upstream = Upstream().start()
    sys.stdout.write(upstream.url + "\n")
    sys.stdout.flush()
    threading.Event().wait()
