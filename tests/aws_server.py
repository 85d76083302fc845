"""moto in server mode for tests: a real HTTP(S) server speaking the AWS protocols, started
in this process on a free port, reached by aiobotocore over a real connection.

`MotoServer` runs moto's WSGI application (what `moto_server` and `ThreadedMotoServer`
run) on a threaded werkzeug server, optionally with TLS (and client certificates), behind a
thin middleware that logs every request's operation and can answer the next calls of one
operation with an error AWS would send (a 503, a throttle), so tests can count what a client
really sent:

    server = MotoServer().start()
    server.fail_next("sts:GetCallerIdentity", status=400, code="Throttling")
    ...                                   # the client's call fails once, with Throttling
    assert server.calls("sts:GetCallerIdentity") == 1
    server.stop()

`aws_address` is a session fixture: the (host, port) of a plain-HTTP server. moto's state is
per process, shared by every server here; tests use their own resource names.
"""

from __future__ import annotations

import io
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import pytest

__all__ = [
    "FAKE_KEY",
    "FAKE_SECRET",
    "MotoServer",
    "aws_address",
    "moto_server",
]

FAKE_KEY = "AKIAMOTOTESTKEY00001"
FAKE_SECRET = "moto-test-secret"
"""Static credentials moto accepts (it does not check signatures)."""

_SCOPE = re.compile(r"Credential=([^/]+)/[0-9]{8}/[^/]+/([^/]+)/aws4_request")


@dataclass
class _Fault:
    operation: str
    remaining: int
    status: int
    code: str
    message: str
    retry_after: str | None


class _Middleware:
    """Logs each request as `service:Operation` and answers injected faults."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.log: list[str] = []
        self.keys: list[str] = []
        """The access key id each logged request was signed with."""
        self.faults: list[_Fault] = []

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        operation = self._operation(environ)
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        with self.lock:
            self.log.append(operation)
            self.keys.append(scope.group(1) if scope else "")
            fault = next(
                (f for f in self.faults if f.operation == operation and f.remaining > 0), None
            )
            if fault is not None:
                fault.remaining -= 1
        if fault is None:
            return self.app(environ, start_response)
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))]
        if fault.retry_after is not None:
            headers.append(("Retry-After", fault.retry_after))
        reason = {400: "Bad Request", 429: "Too Many Requests", 503: "Service Unavailable"}
        start_response(f"{fault.status} {reason.get(fault.status, 'Error')}", headers)
        return [body]

    @staticmethod
    def _operation(environ: dict[str, Any]) -> str:
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(2) if scope else "?"
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return f"{service}:{target.rsplit('.', 1)[-1]}"
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            action = parse_qs(body.decode("utf-8", "replace")).get("Action")
            if action:
                return f"{service}:{action[0]}"
        return f"{service}:{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '/')}"


class MotoServer:
    """moto on 127.0.0.1 and a free port, in a thread of this process.

    Args:
        ssl_context: serve HTTPS with this server context (require client certificates
            by setting its `verify_mode`). Default: plain HTTP.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._middleware: _Middleware | None = None

    def start(self) -> MotoServer:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self._middleware = _Middleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1",
            0,
            self._middleware,
            threaded=True,
            request_handler=MotoRequestHandler,
            ssl_context=self.ssl_context,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def middleware(self) -> _Middleware:
        assert self._middleware is not None, "start() first"
        return self._middleware

    def calls(self, operation: str | None = None) -> int:
        """How many requests reached the server (of `operation`, `service:Operation`)."""
        with self.middleware.lock:
            return sum(1 for logged in self.middleware.log if operation in (None, logged))

    def log(self) -> list[str]:
        """Every request so far, as `service:Operation` (`s3:PUT /bucket/key` for REST)."""
        with self.middleware.lock:
            return list(self.middleware.log)

    def signed_with(self) -> list[str]:
        """The access key id of every request so far, in the order of `log()`."""
        with self.middleware.lock:
            return list(self.middleware.keys)

    def fail_next(
        self,
        operation: str,
        *,
        status: int,
        code: str,
        count: int = 1,
        message: str = "injected by the test",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` requests of `operation` (`sts:GetCallerIdentity`) with
        an AWS error in the query-protocol form (STS, SQS, IAM ...)."""
        with self.middleware.lock:
            self.middleware.faults.append(
                _Fault(operation, count, status, code, message, retry_after)
            )

    def clear_faults(self) -> None:
        with self.middleware.lock:
            self.middleware.faults.clear()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A plain-HTTP moto server for the whole session."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_address(moto_server: MotoServer) -> tuple[str, int]:
    """The (host, port) of the session's moto server."""
    return (moto_server.host, moto_server.port)
