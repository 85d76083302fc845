"""The config's list of backends with reliable topics agrees with the backends' specs."""

from __future__ import annotations

from sidecar.backends.registry import registered_backends, spec_for
from sidecar.config.services.pubsub import RELIABLE_BACKENDS


def test_reliable_backends_are_exactly_the_specs_with_the_reliable_feature() -> None:
    registered = {backend for kind, backend in registered_backends() if kind == "pubsub"}
    with_feature = {b for b in registered if "reliable" in spec_for("pubsub", b).features}
    assert with_feature == RELIABLE_BACKENDS & registered
