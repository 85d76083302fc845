"""Helpers of the transform tests: transforms built from YAML, and running one."""

from __future__ import annotations

import json
from typing import Any

from sidecar.config import parse_config
from sidecar.transform import Transforms, build_transforms


def transforms_from(yaml_text: str = "") -> Transforms:
    """The transforms a config with these sections builds (as the server does at start-up)."""
    return build_transforms(parse_config(yaml_text))


async def xml_to_json(xml: bytes | str, yaml_text: str = "", name: str = "xml_to_json") -> Any:
    """The JSON value `name` makes of `xml`."""
    data = xml.encode() if isinstance(xml, str) else xml
    output = await transforms_from(yaml_text).transform(name, data, "application/xml")
    assert output.content_type == "application/json"
    return json.loads(output.data)
