"""The public surface of `sidecar.transform` is pinned: changing it is a deliberate act."""

from __future__ import annotations

import sidecar.transform


def test_package_exports_exactly_the_public_api() -> None:
    assert sorted(sidecar.transform.__all__) == sorted(
        [
            "MAX_VIOLATIONS",
            "WORKERS",
            "Output",
            "Report",
            "TransformInfo",
            "Transforms",
            "Violation",
            "build_transforms",
        ]
    )
    for name in sidecar.transform.__all__:
        assert getattr(sidecar.transform, name) is not None
