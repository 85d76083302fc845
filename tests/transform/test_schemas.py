"""JSON Schema validation (draft 2020-12): every violation with its JSON path, valid input
passed on unchanged, schemas checked when the configuration loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transform.helpers import transforms_from

from sidecar.config import ConfigError
from sidecar.errors import FailedPrecondition, InvalidArgument, NotFound
from sidecar.transform import MAX_VIOLATIONS

SCHEMAS = """
schemas:
  order:
    schema:
      $id: https://schemas.example/order
      type: object
      required: [id, lines, customer]
      additionalProperties: false
      properties:
        id: {type: string, pattern: "^o-[0-9]+$"}
        lines:
          type: array
          minItems: 1
          items: {$ref: https://schemas.example/line}
        customer:
          type: object
          required: [email]
          properties:
            email: {type: string, format: email}
  line:
    schema:
      $id: https://schemas.example/line
      type: object
      required: [sku, quantity]
      properties:
        sku: {type: string}
        quantity: {type: integer, minimum: 1}
  xml-line:
    schema:
      type: object
      required: [line]
      properties: {line: {$ref: https://schemas.example/line}}
  strict-email:
    formats: true
    schema: {type: string, format: email}
  dangling:
    schema: {$ref: "https://elsewhere.example/schema.json"}
transforms:
  orders-xml:
    steps: [xml_to_json, "validate:xml-line"]
"""


async def test_every_failing_path_is_listed() -> None:
    document = {
        "id": "x-1",
        "lines": [{"sku": "a", "quantity": 0}, {"quantity": "2"}, {"sku": 3, "quantity": 1}],
        "customer": {},
        "colour": "red",
    }
    report = await transforms_from(SCHEMAS).validate("order", json.dumps(document).encode())
    assert not report.valid and not report.truncated
    found = {(v.path, v.keyword) for v in report.violations}
    assert found == {
        ("$.id", "pattern"),
        ("$.lines[0].quantity", "minimum"),
        ("$.lines[1]", "required"),
        ("$.lines[1].quantity", "type"),
        ("$.lines[2].sku", "type"),
        ("$.customer", "required"),
        ("$", "additionalProperties"),
    }
    required = next(v for v in report.violations if v.path == "$.lines[1]")
    assert required.message == "'sku' is a required property"
    assert required.schema_path == "/properties/lines/items/required"


async def test_valid_input_passes_unchanged() -> None:
    data = b'{ "sku" : "a",\n  "quantity": 1, "extra": [1.50, "\\u00e9"] }'
    transforms = transforms_from(SCHEMAS)
    assert (await transforms.validate("line", data)).valid
    output = await transforms.transform("validate:line", data, "application/json")
    assert (output.data, output.content_type) == (data, "application/json")


async def test_a_failing_validate_step_is_schema_violation_with_paths() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from(SCHEMAS).transform(
            "orders-xml", b"<line><quantity>2</quantity></line>"
        )
    error = caught.value
    assert error.reason == "SCHEMA_VIOLATION"
    # XML text is a string: both the missing sku and the wrong type are reported.
    assert error.metadata["violations"] == "2"
    assert error.metadata["paths"] == "$.line $.line.quantity"
    assert error.metadata["schema"] == "xml-line"
    assert error.message.startswith("does not match schema 'xml-line' (2 violations)")


async def test_violations_are_capped() -> None:
    lines = [{"sku": "a", "quantity": 0}] * (MAX_VIOLATIONS + 50)
    document = {"id": "o-1", "lines": lines, "customer": {"email": "a@b.example"}}
    report = await transforms_from(SCHEMAS).validate("order", json.dumps(document).encode())
    assert report.truncated and len(report.violations) == MAX_VIOLATIONS


async def test_format_is_an_annotation_unless_asked_for() -> None:
    transforms = transforms_from(SCHEMAS)
    document = json.dumps(
        {"id": "o-1", "lines": [{"sku": "a", "quantity": 1}], "customer": {"email": "not an email"}}
    ).encode()
    assert (await transforms.validate("order", document)).valid
    report = await transforms.validate("strict-email", b'"not an email"')
    assert [v.keyword for v in report.violations] == ["format"]


async def test_a_ref_to_an_unconfigured_schema_is_never_fetched() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await transforms_from(SCHEMAS).validate("dangling", b"{}")
    assert caught.value.reason == "TRANSFORM_FAILED"


@pytest.mark.parametrize("data", [b"{", b"NaN", b'{"a": Infinity}', b"\xff\xfe\xfa", b""])
async def test_input_that_is_not_json_is_transform_failed(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from(SCHEMAS).validate("line", data)
    assert caught.value.reason == "TRANSFORM_FAILED"


async def test_unknown_names_are_not_found() -> None:
    transforms = transforms_from(SCHEMAS)
    with pytest.raises(NotFound):
        await transforms.validate("nope", b"{}")
    with pytest.raises(NotFound):
        await transforms.transform("validate:nope", b"{}")


async def test_a_schema_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"type": "array", "maxItems": 1}')
    transforms = transforms_from(f"schemas:\n  short:\n    file: {tmp_path / 's.json'}\n")
    assert (await transforms.validate("short", b"[1]")).valid
    assert not (await transforms.validate("short", b"[1, 2]")).valid


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("schemas:\n  s: {schema: {type: 12}}\n", "schemas.s: not a valid draft 2020-12"),
        ("schemas:\n  s: {}\n", "schemas.s: set exactly one of schema or file"),
        ("schemas:\n  s: {file: /nonexistent.json}\n", "schemas.s.file"),
        (
            "transforms:\n  t: {steps: ['validate:missing']}\n",
            "transforms.t.steps[0].validate: 'missing' is not a schema",
        ),
        (
            "transforms:\n  t: {steps: [json_to_xml]}\n",
            "transforms.t.steps[0]: unknown step 'json_to_xml'",
        ),
        (
            "transforms:\n  t: {steps: [{xml_to_json: {}, validate: s}]}\n",
            "transforms.t.steps[0]: a step is exactly one of",
        ),
        (
            "schemas:\n  s: {schema: {}}\ntransforms:\n  t: {steps: ['validate:s', xml_to_json]}\n",
            "transforms.t: step 1 reads xml but the step before writes json",
        ),
        ("transforms:\n  xml_to_json: {steps: [xml_to_json]}\n", "is a built-in transform"),
        ("transforms:\n  t: {steps: []}\n", "transforms.t.steps"),
        ("transforms:\n  t: {steps: [xml_to_json], max_depth: 101}\n", "max_depth"),
        ("transforms:\n  t: {steps: [xml_to_json], timeout: 2m}\n", "timeout"),
        (
            "services:\n  up: {type: api, base_url: 'http://x.example', "
            "response_transform: nope}\n",
            "services.up.response_transform: 'nope' is not a transform",
        ),
    ],
)
def test_bad_configuration_fails_at_load(config: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        transforms_from(config)
    assert problem in str(caught.value)
