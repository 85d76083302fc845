"""Pure conversions and validation, by name: XML -> JSON (defusedxml), JSON <-> Protobuf
(descriptor sets, `json_format`), JSON Schema draft 2020-12, and chains of them. No
upstream and no resilience pipeline: the work runs on a few worker threads, within limits
of size, depth and time (see `sidecar.config.transform` for the configuration).

    transforms = build_transforms(config)                     # once, at start-up
    output = await transforms.transform("orders-xml", body, "application/xml")
    report = await transforms.validate("order", document)     # every violation, as data
    await transforms.check("order", payload, field="payload")  # SCHEMA_VIOLATION unless valid
"""

from ._runner import WORKERS
from ._schema import MAX_VIOLATIONS, Report, Violation
from .registry import Output, TransformInfo, Transforms, build_transforms

__all__ = [
    "MAX_VIOLATIONS",
    "WORKERS",
    "Output",
    "Report",
    "TransformInfo",
    "Transforms",
    "Violation",
    "build_transforms",
]
