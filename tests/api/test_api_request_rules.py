"""The no-open-proxy rules as pure functions (`sidecar.backends.api.request`): each refusal
on its own, the URL built under the base URL, redirects, retryability."""

from __future__ import annotations

import pytest

from sidecar.backends.api.request import (
    ApiRequest,
    Upstream,
    check_headers,
    check_method,
    check_path,
    check_query,
    is_retryable,
    prepare,
    redirect_url,
    response_headers,
)
from sidecar.backends.api.trace import traceparent_for, valid_traceparent
from sidecar.errors import InvalidArgument

UPSTREAM = Upstream.parse("https://api.example/v2")


@pytest.mark.parametrize(
    "path",
    [
        "http://evil.example/x",
        "HTTPS://evil.example",
        "javascript:alert(1)",
        "//evil.example",
        "a/../../b",
        "..",
        ".",
        "a/./b",
        "%2e%2e/b",
        "%2E%2e",
        ".%2e/b",
        "a/%252e%252e/b",
        "a/..%2fb",
        "a/..%5cb",
        "a\\b",
        "a?b=1",
        "a#b",
        "a b",
        "a\tb",
        "a\r\nb",
        "a\x00",
        "a\x7f",
        "a/%zz",
        "a/%2",
    ],
)
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_path(path)
    assert caught.value.reason == "INVALID_REQUEST"
    assert caught.value.metadata["field"] == "path"


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("users/42", "https://api.example/v2/users/42"),
        ("/users/42", "https://api.example/v2/users/42"),
        ("", "https://api.example/v2/"),
        ("a/b%2Fc", "https://api.example/v2/a/b%2Fc"),
        ("files/report..pdf", "https://api.example/v2/files/report..pdf"),
        ("users/@me", "https://api.example/v2/users/@me"),
        ("x/100%25", "https://api.example/v2/x/100%25"),
        ("caf\u00e9", "https://api.example/v2/caf\u00e9"),
    ],
)
def test_relative_paths_go_under_the_base_url(path: str, url: str) -> None:
    assert prepare(ApiRequest("GET", path), UPSTREAM).url == url


def test_a_long_path_is_value_too_large() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_path("a" * 8193)
    assert caught.value.reason == "VALUE_TOO_LARGE"


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "Host",
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Anything",
        "Content-Length",
    ],
)
def test_hop_by_hop_framing_and_credential_headers_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="set by the sidecar"):
        check_headers([(name, "x")])


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "v\r\nX-B: 1"),
        ("X-A", "v\n"),
        ("X-A", "v\rx"),
        ("X-A", "v\0"),
        ("X A", "v"),
        ("", "v"),
    ],
)
def test_header_injection_is_refused(header: tuple[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        check_headers([header])


def test_header_bounds() -> None:
    with pytest.raises(InvalidArgument, match="at most 100 headers"):
        check_headers([("X-A", "v")] * 101)
    with pytest.raises(InvalidArgument) as caught:
        check_headers([("X-A", "v" * 8192)])
    assert caught.value.reason == "VALUE_TOO_LARGE"


def test_query_bounds() -> None:
    assert check_query([("a", "1 & b=2")]) == (("a", "1 & b=2"),)
    with pytest.raises(InvalidArgument):
        check_query([("", "1")])
    with pytest.raises(InvalidArgument):
        check_query([("a", "1")] * 101)
    with pytest.raises(InvalidArgument):
        check_query([("a", "x" * 16 * 1024)])


@pytest.mark.parametrize("method", ["CONNECT", "TRACE", "PROPFIND", "get\r\n"])
def test_other_methods_are_refused(method: str) -> None:
    with pytest.raises(InvalidArgument):
        check_method(method)


def test_an_empty_method_is_get_and_case_does_not_matter() -> None:
    assert (check_method(""), check_method("post")) == ("GET", "POST")


def test_caller_headers_replace_defaults_and_json_gets_a_content_type() -> None:
    prepared = prepare(
        ApiRequest("POST", "x", headers=[("x-team", "mine")], body=b"{}", json=True),
        UPSTREAM,
        default_headers=[("X-Team", "default"), ("X-Other", "o")],
        default_query=[("v", "1")],
    )
    assert prepared.headers == (
        ("X-Other", "o"),
        ("x-team", "mine"),
        ("Content-Type", "application/json"),
    )
    assert prepared.query == (("v", "1"),)


def test_a_body_over_the_bound_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        prepare(ApiRequest("POST", "x", body=b"12345"), UPSTREAM, max_body_bytes=4)
    assert caught.value.reason == "VALUE_TOO_LARGE"


@pytest.mark.parametrize(
    ("method", "headers", "retryable"),
    [
        ("GET", [], True),
        ("PUT", [], True),
        ("DELETE", [], True),
        ("POST", [], False),
        ("PATCH", [], False),
        ("POST", [("Idempotency-Key", "k")], True),
    ],
)
def test_retryable_requests(method: str, headers: list[tuple[str, str]], retryable: bool) -> None:
    assert is_retryable(prepare(ApiRequest(method, "x", headers=headers), UPSTREAM)) is retryable


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/v2/other", "https://api.example/v2/other"),
        ("other", "https://api.example/v2/other"),
        ("https://api.example/v2/x?page=2", "https://api.example/v2/x?page=2"),
    ],
)
def test_redirects_within_the_upstream(location: str, target: str) -> None:
    assert redirect_url(UPSTREAM, "https://api.example/v2/start", location) == target


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example/v2/x",
        "http://api.example/v2/x",
        "https://api.example:8443/v2/x",
        "//evil.example/v2/x",
        "/v1/x",
        "/v2/../admin",
        "https://api.example@evil.example/v2/x",
        "/v2/x\r\nSet-Cookie: a",
    ],
)
def test_redirects_off_the_upstream_are_refused(location: str) -> None:
    with pytest.raises(InvalidArgument):
        redirect_url(UPSTREAM, "https://api.example/v2/start", location)


def test_response_headers_drop_hop_by_hop_and_a_decoded_encoding() -> None:
    headers = [
        ("Content-Type", "text/plain"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "10"),
    ]
    assert response_headers(headers, decoded=True) == (("Content-Type", "text/plain"),)
    assert len(response_headers(headers, decoded=False)) == 3


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", True),
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", False),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", False),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", False),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX: 1", False),
        (None, False),
    ],
)
def test_a_valid_traceparent_is_kept_else_a_new_one_is_made(
    incoming: str | None, kept: bool
) -> None:
    sent = traceparent_for(incoming)
    assert (sent == incoming) is kept
    assert valid_traceparent(sent)
