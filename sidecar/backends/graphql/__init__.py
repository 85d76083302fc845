"""The GraphQL capability: answers whose errors are data (`base`), the parsed-document
cache and local validation (`documents`), subscriptions over `graphql-transport-ws`
(`transport_ws`), and the backend on an http connection (`http`, imported by the registry
only when a graphql service is configured, so graphql-core and websockets load only then).
"""

from sidecar.backends.graphql.base import (
    GraphQLErrorInfo,
    GraphQLResult,
    Reconnected,
    SubscriptionEvent,
    load_variables,
)
from sidecar.backends.graphql.documents import PreparedOperation

__all__ = [
    "GraphQLErrorInfo",
    "GraphQLResult",
    "PreparedOperation",
    "Reconnected",
    "SubscriptionEvent",
    "load_variables",
]
