"""Who may call what: the client certificate's identity against `server.tls.allowed_identities`,
and each caller (`server.auth.callers`, known by its bearer token or its certificate) against
the services, methods and targets it was granted. Deny by default once callers are set.

Health checks are never checked (probes must get through). Reflection is a permission of
its own (`services: [reflection]`): it lists every service the sidecar serves, which is the
map a caller limited to one service has no need of.

The service and method part is decided here, per call, from tables built once per method at
registration; the target part is decided where servicers resolve a target
(`sidecar.runtime.permissions.permit_target`), from the targets set here. Refusals are
PERMISSION_DENIED with reason PERMISSION_DENIED and the policy (the caller's name,
`default` for a caller no policy names, or `server.tls.allowed_identities`) in ErrorInfo.

The check wraps each method handler inside the inbound layer (`InboundLayer`): it runs after
the bearer token was verified, and its errors are mapped and logged like any other.

Usage:

    permissions = Permissions.from_config(config.server)
    registrar = permissions.registrar(inbound.registrar(server)) if permissions else ...
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import grpc

from sidecar.config.server import CallerConfig, GrantConfig, ServerConfig
from sidecar.errors import PermissionDenied, Unauthenticated
from sidecar.interceptors._handlers import Handler, as_writer, behavior_of
from sidecar.observability.call_context import current_call
from sidecar.runtime.permissions import PERMISSION_DENIED, TargetRestriction, restrict_targets

__all__ = ["Permissions", "PolicyError"]

_UNCHECKED_PREFIXES = ("/grpc.health.v1.Health/",)
_PACKAGE = "integration.v1"
_REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")
_ANY = "*"
_DEFAULT_POLICY = "default"
_IDENTITY_POLICY = "server.tls.allowed_identities"
_SAN_KEY = "x509_subject_alternative_name"
Context = grpc.aio.ServicerContext[Any, Any]
# caller name -> the targets it may name in one method (None: any); absent: may not call it.
MethodTable = dict[str, frozenset[str] | None]


class PolicyError(ValueError):
    """A grant names a service or method the sidecar's contract does not have."""


@dataclass(frozen=True)
class _Grant:
    services: frozenset[str] | None  # full service names; None: every service
    methods: frozenset[str] | None
    targets: frozenset[str] | None

    def targets_for(self, service: str, method: str) -> frozenset[str] | bool | None:
        """This grant's targets for `service`/`method`; False when it does not cover it."""
        if self.services is not None and service not in self.services:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.targets


class Permissions:
    """The permission check of every method but health.

    Args:
        callers: `server.auth.callers` (empty: no per-caller policy).
        allowed_identities: `server.tls.allowed_identities` (empty: any client certificate).

    Raises:
        PolicyError: a grant names an unknown service or method (the message names its path).
    """

    def __init__(
        self, callers: Mapping[str, CallerConfig], allowed_identities: Sequence[str] = ()
    ) -> None:
        contract = _contract()
        self._grants = {
            name: [
                _compile(grant, f"server.auth.callers.{name}.allow[{i}]", contract)
                for i, grant in enumerate(caller.allow)
            ]
            for name, caller in callers.items()
        }
        # Looked up only after the inbound layer verified the token in constant time, so a
        # dict lookup leaks nothing a caller without a valid token could learn.
        self._by_token = {
            c.token.get_secret_value(): name for name, c in callers.items() if c.token
        }
        self._by_identity = _IdentityMatcher(
            (c.identity, name) for name, c in callers.items() if c.identity
        )
        self._gate = (
            _IdentityMatcher((i, _IDENTITY_POLICY) for i in allowed_identities)
            if allowed_identities
            else None
        )
        self._policies_on = bool(callers)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    @classmethod
    def from_config(cls, server: ServerConfig) -> Permissions | None:
        """The check `server` configures, or None when it configures none."""
        identities = server.tls.allowed_identities if server.tls is not None else ()
        if not server.auth.callers and not identities:
            return None
        return cls(server.auth.callers, identities)

    def registrar(self, inner: Any) -> _Registrar:
        """A stand-in for `inner` (a server or the inbound layer's registrar) that checks
        every method registered through it."""
        return _Registrar(inner, self)

    def wrap(self, handler: Handler, method: str) -> Handler:
        """`handler` of `method` (`/pkg.Service/Method`) checked before it runs; health
        handlers come back as they are; the same handler always gets the same wrapper."""
        if method.startswith(_UNCHECKED_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def method_table(self, method: str) -> MethodTable:
        """Which callers may call `method`, and which targets each may name in it."""
        service, _, name = method.lstrip("/").rpartition("/")
        table: MethodTable = {}
        for caller, grants in self._grants.items():
            covered = [g.targets_for(service, name) for g in grants]
            covered = [t for t in covered if t is not False]
            if not covered:
                continue
            if any(t is None for t in covered):
                table[caller] = None
            else:
                table[caller] = frozenset().union(*(t for t in covered if isinstance(t, frozenset)))
        return table

    def _wrap(self, handler: Handler, method: str) -> Handler:
        table = self.method_table(method) if self._policies_on else None
        check = self._check
        inner = as_writer(behavior_of(handler))

        async def checked(request: Any, context: Context) -> Any:
            check(context, method, table)
            return await inner(request, context)

        factory: Callable[..., Handler] = _FACTORIES[
            (handler.request_streaming, handler.response_streaming)
        ]
        return factory(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _check(self, context: Context, method: str, table: MethodTable | None) -> None:
        identities: list[str] | None = None
        if self._gate is not None:
            identities = _peer_identities(context)
            if not identities:
                raise Unauthenticated("a client certificate is required", reason="UNAUTHENTICATED")
            if self._gate.match(identities) is None:
                raise PermissionDenied(
                    "the client certificate's identity is not allowed",
                    reason=PERMISSION_DENIED,
                    metadata={"policy": _IDENTITY_POLICY},
                )
        if table is None:
            return
        caller = self._caller(context, identities)
        if caller is None:
            raise _denied(_DEFAULT_POLICY, method, "no caller policy names this caller")
        if caller not in table:
            raise _denied(caller, method, f"caller {caller!r} may not call {method}")
        targets = table[caller]
        restrict_targets(None if targets is None else TargetRestriction(caller, targets))

    def _caller(self, context: Context, identities: list[str] | None) -> str | None:
        call = current_call()
        metadata = call.metadata if call is not None else context.invocation_metadata() or ()
        for key, value in metadata:
            if key == "authorization" and isinstance(value, str):
                caller = self._by_token.get(value.partition(" ")[2].strip())
                if caller is not None:
                    return caller
                break
        if not self._by_identity:
            return None
        return self._by_identity.match(
            identities if identities is not None else _peer_identities(context)
        )


class _IdentityMatcher:
    """Certificate identities to names: exact SANs, and prefixes for entries ending in `*`."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._exact: dict[str, str] = {}
        self._prefixes: list[tuple[str, str]] = []
        for identity, name in entries:
            if identity.endswith("*"):
                self._prefixes.append((identity[:-1], name))
            else:
                self._exact.setdefault(identity, name)

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def match(self, identities: Iterable[str]) -> str | None:
        for identity in identities:
            name = self._exact.get(identity)
            if name is not None:
                return name
            for prefix, name in self._prefixes:
                if identity.startswith(prefix):
                    return name
        return None


def _peer_identities(context: Context) -> list[str]:
    """The subject alternative names of the client certificate (none without one)."""
    values = context.auth_context().get(_SAN_KEY, ())
    return [value.decode("utf-8", "replace") for value in values]


def _denied(policy: str, method: str, why: str) -> PermissionDenied:
    return PermissionDenied(
        f"permission denied: {why}",
        reason=PERMISSION_DENIED,
        metadata={"policy": policy, "method": method},
    )


def _compile(grant: GrantConfig, path: str, contract: Mapping[str, frozenset[str]]) -> _Grant:
    services: frozenset[str] | None = None
    if _ANY not in grant.services:
        names: set[str] = set()
        for name in grant.services:
            full = _REFLECTION if name == "reflection" else (_full_name(name),)
            if any(service not in contract for service in full):
                raise PolicyError(f"{path}.services: unknown service {name!r}")
            names.update(full)
        services = frozenset(names)
    methods = None if _ANY in grant.methods else frozenset(grant.methods)
    if methods is not None:
        known = frozenset().union(*(contract[s] for s in (services or contract)))
        unknown = sorted(methods - known)
        if unknown:
            raise PolicyError(f"{path}.methods: no such method in those services: {unknown}")
    targets = None if _ANY in grant.targets else frozenset(grant.targets)
    return _Grant(services, methods, targets)


def _full_name(service: str) -> str:
    return service if "." in service else f"{_PACKAGE}.{service}"


@cache
def _contract() -> dict[str, frozenset[str]]:
    """Every service of the sidecar's contract (and reflection's), with its methods."""
    from grpc_reflection.v1alpha import reflection_pb2

    import generated.integration.v1 as package

    modules = [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.endswith("_pb2")
    ]
    services = {
        service.full_name: frozenset(method.name for method in service.methods)
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    reflection_methods = frozenset(
        m.name for m in reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].methods
    )
    return {**services, **dict.fromkeys(_REFLECTION, reflection_methods)}


_FACTORIES: dict[tuple[bool, bool], Callable[..., Handler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class _Registrar:
    """What `add_*Servicer_to_server` needs of a server, checking what is registered."""

    def __init__(self, inner: Any, permissions: Permissions) -> None:
        self._inner = inner
        self._permissions = permissions

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._inner.add_generic_rpc_handlers(
            tuple(_CheckedGenericHandler(handler, self._permissions) for handler in handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        self._inner.add_registered_method_handlers(
            service_name,
            {
                name: self._permissions.wrap(handler, f"/{service_name}/{name}")
                for name, handler in method_handlers.items()
            },
        )


class _CheckedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose handlers come back checked (wrapped once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, permissions: Permissions) -> None:
        self._inner = inner
        self._permissions = permissions

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._permissions.wrap(handler, handler_call_details.method)
