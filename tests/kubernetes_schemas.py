"""Kubernetes schema validation for the tests in tests/kubernetes/: the oldest and newest
versions tested.

1.29 is the first version with native sidecars (init containers with `restartPolicy: Always`)
on by default; the newest is whatever `kubernetes-validate` ships schemas for.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate

__all__ = ["KUBERNETES_VERSIONS", "validate_object"]

KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def validate_object(document: dict[str, Any]) -> None:
    """Validate one object strictly (unknown fields are errors) against every tested version.

    Raises:
        AssertionError: naming the version, the field and the problem.
    """
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = document.get("metadata", {}).get("name")
            raise AssertionError(
                f"{document.get('kind')} {name} is invalid in Kubernetes {version}: "
                f"{exc.message} at {list(exc.path)}"
            ) from exc
