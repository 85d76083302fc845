"""Hostile XML is refused with INVALID_ARGUMENT before anything is expanded or fetched: a
billion-laughs document, external entities, a DTD that fetches a URL. A local HTTP server
stands for the URLs and counts the connections it accepts (none may come); the process's
resident memory is measured around each refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_server import HttpServer
from transform.conftest import rss_bytes
from transform.helpers import transforms_from

from sidecar.errors import InvalidArgument

_MIB = 1024 * 1024

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

QUADRATIC_BLOWUP = (
    b'<!DOCTYPE r [<!ENTITY a "' + b"x" * 50_000 + b'">]><r>' + b"&a;" * 20_000 + b"</r>"
)


@pytest.fixture
def listener() -> Iterator[HttpServer]:
    """A real HTTP server the hostile documents point at."""
    server = HttpServer().start()
    try:
        yield server
    finally:
        server.stop()


def _hostile(port: int) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{port}"
    return {
        "billion laughs": BILLION_LAUGHS,
        "quadratic blowup": QUADRATIC_BLOWUP,
        "external entity (file)": (
            b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
        ),
        "external entity (url)": (
            f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/entity">]><r>&x;</r>'.encode()
        ),
        "external DTD": f'<!DOCTYPE r SYSTEM "{url}/evil.dtd"><r/>'.encode(),
        "public external DTD": (
            f'<!DOCTYPE r PUBLIC "-//EVIL//DTD//EN" "{url}/public.dtd"><r/>'.encode()
        ),
        "parameter entity": (
            f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/param.dtd"> %p;]><r/>'.encode()
        ),
        "xinclude": (
            f'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{url}/inc"/></r>'
        ).encode(),
    }


@pytest.mark.parametrize(
    "case",
    [
        "billion laughs",
        "quadratic blowup",
        "external entity (file)",
        "external entity (url)",
        "external DTD",
        "public external DTD",
        "parameter entity",
    ],
)
async def test_hostile_xml_is_refused_without_network_or_memory(
    case: str, listener: HttpServer
) -> None:
    document = _hostile(listener.port)[case]
    transforms = transforms_from()
    before = rss_bytes()
    with pytest.raises(InvalidArgument) as caught:
        await transforms.transform("xml_to_json", document, "application/xml")
    grown = rss_bytes() - before
    assert caught.value.reason == "TRANSFORM_FAILED"
    assert "refused" in caught.value.message
    assert listener.accepted == 0 and listener.paths == []
    assert grown < 20 * _MIB, f"{case}: resident memory grew by {grown / _MIB:.1f} MiB"


async def test_xinclude_is_not_followed(listener: HttpServer) -> None:
    """XInclude is not processed: the include element is data, and nothing is fetched."""
    output = await transforms_from().transform(
        "xml_to_json", _hostile(listener.port)["xinclude"], "application/xml"
    )
    assert b"xi:include" in output.data
    assert listener.accepted == 0


async def test_even_a_harmless_doctype_is_refused() -> None:
    """Every DTD is refused: the simplest rule that leaves nothing to expand or fetch."""
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from().transform("xml_to_json", b"<!DOCTYPE r><r/>")
    assert caught.value.message == "XML with a DTD is refused"
