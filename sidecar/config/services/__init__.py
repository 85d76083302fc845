"""The `services:` section: one model per service type, joined in the `ServiceConfig` union.

To add a service type `<type>`:

1. Create `services/<type>.py` with a model subclassing `ServiceBase` (see `base.py`) that
   declares `type: Literal["<type>"] = Field(default="<type>", description="Service type.")`.
2. Here, add ONE import line, `from .<type> import <Model>` (imports are kept sorted, as
   `ruff check --fix` orders them), and ONE line `    <Model>,` at the end of the marked
   `ServiceModel` union below.

The loader, its error messages (`expected one of: ...`), `SERVICE_TYPES` and
`Config.default_service` pick the new type up from there. Keep one import and one union entry
per line: several types are added in parallel, and one-line additions merge trivially.
"""

from __future__ import annotations

from typing import Annotated, Union, get_args

from .._by_type import ByType
from .ai import AIAliasServiceConfig, AIModelServiceConfig
from .api import ApiServiceConfig
from .base import ServiceBase
from .cache import CacheServiceConfig
from .cloud import CloudServiceConfig
from .graphql import GraphQLServiceConfig
from .objectstore import ObjectStoreServiceConfig
from .pubsub import PubSubServiceConfig
from .queue import QueueServiceConfig
from .redis import RedisConnectionSettings, RedisEndpoint
from .sql import SqlServiceConfig
from .websocket import WebSocketServiceConfig

__all__ = [
    "SERVICE_TYPES",
    "AIAliasServiceConfig",
    "AIModelServiceConfig",
    "ApiServiceConfig",
    "CacheServiceConfig",
    "CloudServiceConfig",
    "GraphQLServiceConfig",
    "ObjectStoreServiceConfig",
    "PubSubServiceConfig",
    "QueueServiceConfig",
    "RedisConnectionSettings",
    "RedisEndpoint",
    "ServiceBase",
    "ServiceConfig",
    "ServiceModel",
    "SqlServiceConfig",
    "WebSocketServiceConfig",
    "default_services",
    "service_types",
]

# ==== SERVICE TYPES: one model per line, each followed by a comma; add new ones at the end ====
# (`Union[...]`, not `A | B`: ruff format would join a `|` chain onto one line.)
ServiceModel = Union[  # noqa: UP007
    CacheServiceConfig,
    PubSubServiceConfig,
    SqlServiceConfig,
    AIModelServiceConfig,
    AIAliasServiceConfig,
    CloudServiceConfig,
    ObjectStoreServiceConfig,
    ApiServiceConfig,
    GraphQLServiceConfig,
    WebSocketServiceConfig,
    QueueServiceConfig,
]
"""Every service model, in the order error messages list their types."""
# ==== end of SERVICE TYPES ==================================================================

ServiceConfig = Annotated[ServiceModel, ByType(ServiceModel)]
"""Any service; the `type` key picks the model, and only that model is built (`ByType`)."""


def service_types(union: object) -> tuple[str, ...]:
    """The `type` tag of every model in a union of service models, checking each is well formed.

    Args:
        union: a union of service models, such as `ServiceModel`.

    Returns:
        The tags, in the union's order.

    Raises:
        TypeError: a model does not subclass `ServiceBase`, has no single-value `type`
            literal, or reuses another model's `type`.
    """
    types: list[str] = []
    for model in get_args(union) or (union,):
        if not (isinstance(model, type) and issubclass(model, ServiceBase)):
            raise TypeError(f"service model {model!r} must subclass ServiceBase")
        field = model.model_fields.get("type")
        tags = get_args(field.annotation) if field is not None else ()
        if len(tags) != 1 or not isinstance(tags[0], str):
            raise TypeError(
                f"service model {model.__name__} must declare "
                "type: Literal['<type>'] = Field(default='<type>', ...)"
            )
        if tags[0] in types:
            raise TypeError(f"service type {tags[0]!r} is declared by two models")
        types.append(tags[0])
    return tuple(types)


SERVICE_TYPES: tuple[str, ...] = service_types(ServiceModel)
"""Every supported service `type`, in declaration order."""


def default_services() -> dict[str, ServiceConfig]:
    """The services of a config without a `services:` section.

    Returns:
        An in-memory cache named `cache`, an in-memory pubsub named `pubsub`, and `sql`, an
        in-memory SQLite database (private to the process, gone when it exits), so that
        SqlService answers on a bare machine, and `echo`, the echo AI provider (not a model:
        it streams the last user message back), so that AIService does too, and `objects`, a
        local-folder object store in a private temporary folder, and `queue`, an in-memory
        work queue. Other service
        types are not added here: they usually need settings (an address, credentials) that
        have no sensible default.
    """
    return {
        "cache": CacheServiceConfig(),
        "pubsub": PubSubServiceConfig(),
        "sql": SqlServiceConfig(),
        "echo": AIModelServiceConfig(provider="echo"),
        "objects": ObjectStoreServiceConfig(),
        "queue": QueueServiceConfig(),
    }
