"""The no-open-proxy rules: what a caller's request may say, and the URL it goes to.

Pure functions over plain data (no HTTP library, no I/O), so every refusal is tested on its
own. A request names a method, a path *relative to the upstream's base URL*, headers, query
parameters and a body; the upstream itself is fixed by the target's configuration. A
request is refused (INVALID_ARGUMENT, reason INVALID_REQUEST, metadata `field`) before
anything is sent when it could reach anything else or smuggle anything in:

- an absolute URL, a scheme (`http:`, `javascript:`), a network path (`//host`), a `?` or
  `#` (query parameters travel in `query`), a backslash, a space or a control character;
- a `.` or `..` segment, literal or percent-encoded (`%2e%2e`, `.%2E`, `%252e%252e`, and
  `..%2f` inside a segment): upstreams and proxies normalise them, which would climb out of
  the base URL's path;
- a malformed percent escape;
- a header whose name is not an RFC 9110 token, or whose name or value holds CR, LF or NUL
  (header injection); a hop-by-hop header (Connection, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-*), Host or Content-Length (the sidecar frames the
  request); the caller's own Authorization (the target's `auth` supplies credentials);
- a method other than GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS;
- sizes over the bounds below (reason VALUE_TOO_LARGE).

The joined URL is then checked again against the base URL (same scheme, host and port; path
under the base path), and a redirect is followed only to a URL that passes the same check.

    upstream = Upstream.parse("https://billing.internal/api/v2")
    prepared = prepare(request, upstream)          # raises InvalidArgument
    prepared.url   -> "https://billing.internal/api/v2/invoices/42"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urljoin, urlsplit

from sidecar.errors import InvalidArgument

__all__ = [
    "FORBIDDEN_REQUEST_HEADERS",
    "HOP_BY_HOP",
    "IDEMPOTENT_METHODS",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_PATH_BYTES",
    "MAX_QUERY_BYTES",
    "MAX_QUERY_PARAMETERS",
    "METHODS",
    "ApiRequest",
    "PreparedRequest",
    "Upstream",
    "check_headers",
    "check_method",
    "check_path",
    "check_query",
    "is_retryable",
    "prepare",
    "redirect_url",
    "response_headers",
]

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods a retry cannot make do something twice (RFC 9110 section 9.2.2)."""
MAX_PATH_BYTES: Final = 8 * 1024
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 8 * 1024
"""One header's name and value together."""
MAX_QUERY_PARAMETERS: Final = 100
MAX_QUERY_BYTES: Final = 16 * 1024
"""All query parameters' names and values together."""

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection, not the message (RFC 9110 section 7.6.1)."""
FORBIDDEN_REQUEST_HEADERS: Final = HOP_BY_HOP | {"host", "content-length", "authorization"}
IDEMPOTENCY_KEY: Final = "idempotency-key"

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_PATH_CHARACTERS: Final = re.compile(r"[\x00-\x20\x7f\\?#]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DECODE_ROUNDS: Final = 3
"""Percent-decoding rounds checked for dot segments (`%252e` is `%2e` after one)."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A caller's request, as the servicer received it."""

    method: str
    path: str
    headers: Sequence[tuple[str, str]] = ()
    query: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    json: bool = False
    """`body` is JSON text (sent as application/json unless a Content-Type is given)."""


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A checked request: the absolute URL on the upstream, and what to send."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    body: bytes | None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A base URL split into what every request URL must keep."""

    scheme: str
    netloc: str
    path: str
    """The base path, ending in `/`."""

    @classmethod
    def parse(cls, base_url: str) -> Upstream:
        parts = urlsplit(base_url)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(parts.scheme.lower(), parts.netloc.lower(), path)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"

    def contains(self, url: str) -> bool:
        """Whether `url` is on this upstream: same scheme, host and port, path under the
        base path, no query-less tricks (checked on the parsed URL, not the text)."""
        parts = urlsplit(url)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return (
            parts.scheme.lower() == self.scheme
            and parts.netloc.lower() == self.netloc
            and path.startswith(self.path)
            and not _has_dot_segment(parts.path)
        )


def _refuse(field: str, message: str, reason: str = "INVALID_REQUEST") -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", reason=reason, metadata={"field": field})


def check_method(method: str) -> str:
    """The method in upper case; empty is GET."""
    upper = method.upper() or "GET"
    if upper not in METHODS:
        raise _refuse("method", f"must be one of {', '.join(sorted(METHODS))}")
    return upper


def _has_dot_segment(path: str) -> bool:
    """Whether any segment is `.` or `..`, also after percent-decoding (several rounds, and
    splitting decoded `/` and `\\`)."""
    text = path
    for _ in range(_DECODE_ROUNDS + 1):
        for segment in re.split(r"[/\\]", text):
            if segment in (".", ".."):
                return True
        decoded = unquote(text)
        if decoded == text:
            return False
        text = decoded
    return "%" in text  # still encoded after every round: refuse rather than guess


def check_path(path: str) -> str:
    """The path without leading slashes, once it is known to stay under the base URL."""
    if len(path) > MAX_PATH_BYTES and len(path.encode()) > MAX_PATH_BYTES:
        raise _refuse("path", f"must be at most {MAX_PATH_BYTES} bytes", "VALUE_TOO_LARGE")
    if path.startswith("//") or "://" in path or _SCHEME.match(path):
        raise _refuse("path", "must be relative to the upstream's base URL (no scheme or host)")
    if _BAD_PATH_CHARACTERS.search(path):
        raise _refuse(
            "path",
            "may not hold '?', '#', '\\\\', spaces or control characters (use query for "
            "query parameters)",
        )
    if _BAD_ESCAPE.search(path):
        raise _refuse("path", "holds a malformed percent escape")
    if _has_dot_segment(path):
        raise _refuse("path", "may not hold '.' or '..' segments (also percent-encoded)")
    return path.lstrip("/")


def _no_breaks(text: str) -> bool:
    return "\r" not in text and "\n" not in text and "\0" not in text


def check_headers(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The caller's headers, once each is a well-formed one the caller may set."""
    if len(headers) > MAX_HEADERS:
        raise _refuse("headers", f"at most {MAX_HEADERS} headers", "VALUE_TOO_LARGE")
    for index, (name, value) in enumerate(headers):
        field = f"headers[{index}]"
        if not _TOKEN.fullmatch(name):
            raise _refuse(field, f"{name[:64]!r} is not an HTTP header name")
        if not _no_breaks(value):
            raise _refuse(field, "a header value may not hold CR, LF or NUL")
        if len(name) + len(value) > MAX_HEADER_BYTES:
            raise _refuse(field, f"must be at most {MAX_HEADER_BYTES} bytes", "VALUE_TOO_LARGE")
        lowered = name.lower()
        if lowered in FORBIDDEN_REQUEST_HEADERS or lowered.startswith("proxy-"):
            raise _refuse(
                field,
                f"{name} is set by the sidecar (hop-by-hop, framing or credentials), "
                "not by callers",
            )
    return tuple(headers)


def check_query(query: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The caller's query parameters, within their bounds (values are percent-encoded when
    sent, so any text is safe)."""
    if len(query) > MAX_QUERY_PARAMETERS:
        raise _refuse("query", f"at most {MAX_QUERY_PARAMETERS} parameters", "VALUE_TOO_LARGE")
    total = 0
    for index, (name, value) in enumerate(query):
        if not name:
            raise _refuse(f"query[{index}]", "a query parameter needs a name")
        total += len(name) + len(value)
    if total > MAX_QUERY_BYTES:
        raise _refuse("query", f"must be at most {MAX_QUERY_BYTES} bytes", "VALUE_TOO_LARGE")
    return tuple(query)


def prepare(
    request: ApiRequest,
    upstream: Upstream,
    *,
    default_headers: Sequence[tuple[str, str]] = (),
    default_query: Sequence[tuple[str, str]] = (),
    max_body_bytes: int | None = None,
) -> PreparedRequest:
    """Check a caller's request and build what goes to the upstream.

    The target's default headers come first and a caller's header of the same name
    replaces them; default query parameters come before the caller's.

    Raises:
        InvalidArgument: the request could leave the upstream or breaks a bound.
    """
    method = check_method(request.method)
    path = check_path(request.path)
    headers = check_headers(request.headers)
    query = check_query(request.query)
    body = request.body
    if max_body_bytes is not None and body is not None and len(body) > max_body_bytes:
        raise _refuse("body", f"must be at most {max_body_bytes} bytes", "VALUE_TOO_LARGE")
    url = upstream.base + path
    if not upstream.contains(url):  # belt and braces: the parsed URL, not the text
        raise _refuse("path", "must stay under the upstream's base URL")
    given = {name.lower() for name, _ in headers}
    merged = [(name, value) for name, value in default_headers if name.lower() not in given]
    merged.extend(headers)
    if request.json and "content-type" not in given:
        merged.append(("Content-Type", "application/json"))
    return PreparedRequest(method, url, tuple(merged), (*default_query, *query), body)


def is_retryable(prepared: PreparedRequest) -> bool:
    """Whether sending the request twice is safe: an idempotent method, or an
    Idempotency-Key header (the upstream then answers a repeat without doing it again)."""
    return prepared.method in IDEMPOTENT_METHODS or prepared.header(IDEMPOTENCY_KEY) is not None


def redirect_url(upstream: Upstream, current: str, location: str) -> str:
    """Where a redirect's `Location` leads, if it stays on the upstream.

    Raises:
        InvalidArgument: it leads to another scheme, host, port or outside the base path.
    """
    if not _no_breaks(location) or _BAD_ESCAPE.search(location):
        raise _refuse("redirect", "the upstream sent a malformed Location")
    target = urljoin(current, location)
    if not upstream.contains(target):
        host = urlsplit(target).netloc or "?"
        raise InvalidArgument(
            f"redirect: the upstream redirected to {host[:200]}, outside its base URL; "
            "not followed",
            reason="INVALID_REQUEST",
            metadata={"field": "redirect", "location_host": host[:200]},
        )
    return target.split("#", 1)[0]


def response_headers(
    headers: Sequence[tuple[str, str]], *, decoded: bool
) -> tuple[tuple[str, str], ...]:
    """Response headers a caller sees: hop-by-hop ones dropped, and, when the body was
    decoded from its Content-Encoding, that encoding and its Content-Length too."""
    dropped = HOP_BY_HOP | ({"content-encoding", "content-length"} if decoded else set())
    return tuple((name, value) for name, value in headers if name.lower() not in dropped)
