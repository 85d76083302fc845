"""XML to JSON as documented: attributes `@_`, repeated elements as lists, text beside
attributes or children under `#text`, namespaces kept or stripped."""

from __future__ import annotations

import pytest
from transform.helpers import transforms_from, xml_to_json

from sidecar.errors import InvalidArgument


async def test_attributes_repeated_elements_and_text() -> None:
    xml = (
        '<order id="7" status="open">'
        "<item sku='a'>2</item><item sku='b'>1</item><item sku='c'/>"
        "<customer><name>Ada</name></customer><empty/>"
        "</order>"
    )
    assert await xml_to_json(xml) == {
        "order": {
            "@_id": "7",
            "@_status": "open",
            "item": [
                {"@_sku": "a", "#text": "2"},
                {"@_sku": "b", "#text": "1"},
                {"@_sku": "c"},
            ],
            "customer": {"name": "Ada"},
            "empty": "",
        }
    }


async def test_mixed_text_is_trimmed_and_joined_under_text() -> None:
    xml = "<p>\n  Hello <b>bold</b> and <i>italic</i>   world!\n</p>"
    assert await xml_to_json(xml) == {
        "p": {"b": "bold", "i": "italic", "#text": "Hello and world!"}
    }


async def test_text_split_by_entities_and_cdata_stays_one_value() -> None:
    xml = "<note>fish &amp; chips &#169; <![CDATA[<raw> & more]]></note>"
    assert await xml_to_json(xml) == {"note": "fish & chips © <raw> & more"}


async def test_values_stay_strings_and_order_of_siblings_is_kept() -> None:
    assert await xml_to_json("<r><n>007</n><b>true</b><n>8</n></r>") == {
        "r": {"n": ["007", "8"], "b": "true"}
    }


async def test_namespaces_are_kept_as_written_by_default() -> None:
    xml = (
        '<soap:Envelope xmlns:soap="urn:soap" xmlns="urn:default">'
        '<soap:Body><Order soap:id="1">x</Order></soap:Body></soap:Envelope>'
    )
    assert await xml_to_json(xml) == {
        "soap:Envelope": {
            "@_xmlns:soap": "urn:soap",
            "@_xmlns": "urn:default",
            "soap:Body": {"Order": {"@_soap:id": "1", "#text": "x"}},
        }
    }


async def test_namespaces_stripped_by_option() -> None:
    config = """
transforms:
  soap:
    steps:
      - xml_to_json: {namespaces: strip}
"""
    xml = (
        '<s:Envelope xmlns:s="urn:soap">'
        '<s:Body s:id="1"><a:x xmlns:a="urn:a"/></s:Body></s:Envelope>'
    )
    assert await xml_to_json(xml, config, "soap") == {"Envelope": {"Body": {"@_id": "1", "x": ""}}}


async def test_always_list_makes_a_single_element_a_list() -> None:
    config = """
transforms:
  orders:
    steps:
      - xml_to_json: {always_list: [item, order]}
"""
    assert await xml_to_json("<order><item>1</item></order>", config, "orders") == {
        "order": [{"item": ["1"]}]
    }
    assert await xml_to_json("<order><item>1</item><item>2</item></order>", config, "orders") == {
        "order": [{"item": ["1", "2"]}]
    }


async def test_comments_and_processing_instructions_are_dropped() -> None:
    xml = '<?xml version="1.0"?><!-- hi --><r><?pi x?><a>1</a><!-- there --></r>'
    assert await xml_to_json(xml) == {"r": {"a": "1"}}


async def test_other_encodings_are_read() -> None:
    xml = '<?xml version="1.0" encoding="ISO-8859-1"?><r>caf\xe9</r>'.encode("latin-1")
    assert await xml_to_json(xml) == {"r": "café"}


@pytest.mark.parametrize(
    "xml",
    [b"", b"not xml", b"<a><b></a>", b"<a/><b/>", b"\xff\xfe\x00<", b"<a>&undefined;</a>"],
)
async def test_malformed_xml_is_transform_failed(xml: bytes) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from().transform("xml_to_json", xml)
    assert caught.value.reason == "TRANSFORM_FAILED"
    assert caught.value.metadata["transform"] == "xml_to_json"


async def test_a_content_type_that_is_not_xml_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from().transform("xml_to_json", b"<a/>", "application/json")
    assert (caught.value.reason, caught.value.metadata["field"]) == (
        "INVALID_REQUEST",
        "content_type",
    )
    for fitting in ("text/xml", "application/xml; charset=utf-8", "application/atom+xml"):
        await transforms_from().transform("xml_to_json", b"<a/>", fitting)
