"""The REST capability (`type: api`, served by HttpService): the no-open-proxy request
rules (`request`, pure), the credentials of a service (`auth`: static kinds and the OAuth2
client-credentials token cache) and the backend on an http connection (`http`, imported by
the registry only when an api service is configured, since it imports `httpx2`).
"""

from sidecar.backends.api.request import (
    ApiRequest,
    PreparedRequest,
    Upstream,
    is_retryable,
    prepare,
)

__all__ = ["ApiRequest", "PreparedRequest", "Upstream", "is_retryable", "prepare"]
