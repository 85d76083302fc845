"""GraphQL documents: parsing, validation against an introspected schema, and the bounded
LRU of parsed documents keyed by the SHA-256 of their text (the specification's query
cache).

Parsing and validating is CPU work for graphql-core, so it is kept off the event loop:
validation always runs in a worker thread (about 1.4 ms even for a small query, measured
with graphql-core 3.3), parsing does for documents larger than `OFF_LOOP_BYTES` (a small
one parses in about 0.15 ms, less than the thread hop costs). A cached document skips both
(its validation result is kept with it, per schema): about 1 us.

    cache = DocumentCache(max_entries=1000, max_tokens=10_000)
    prepared = await cache.prepare(text, operation_name, schema)    # InvalidArgument if bad
    prepared.kind                                                   # "query", "mutation" ...
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sidecar.errors import InvalidArgument

if TYPE_CHECKING:
    from graphql import DocumentNode, GraphQLSchema

__all__ = ["OFF_LOOP_BYTES", "DocumentCache", "PreparedOperation"]

OFF_LOOP_BYTES: Final = 8 * 1024
"""Documents larger than this are parsed in a worker thread (validation always is)."""
_MAX_LISTED: Final = 20
"""graphql-core messages quoted in one refusal at most."""


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """A parsed (and, with a schema, valid) document and the operation a call runs."""

    text: str
    operation_name: str | None
    kind: str
    """"query", "mutation" or "subscription"."""


@dataclass(slots=True)
class _Entry:
    document: DocumentNode
    operations: dict[str | None, str]
    """Operation name (None for an anonymous one) -> its kind."""
    validated_for: GraphQLSchema | None = None
    problems: tuple[str, ...] = ()


class DocumentCache:
    """Parsed documents, least recently used out first, at most `max_entries`."""

    def __init__(self, *, max_entries: int, max_tokens: int) -> None:
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def prepare(
        self, text: str, operation_name: str | None, schema: GraphQLSchema | None
    ) -> PreparedOperation:
        """The operation `operation_name` of `text`, parsed (cached) and, with `schema`,
        validated against it.

        Raises:
            InvalidArgument: the document does not parse, does not validate (the message
                lists graphql-core's messages), or has no such operation (INVALID_REQUEST).
        """
        key = hashlib.sha256(text.encode()).digest()
        entry = self._entries.get(key)
        off_loop = len(text) > OFF_LOOP_BYTES
        if entry is None:
            self.misses += 1
            entry = await asyncio.to_thread(self._parse, text) if off_loop else self._parse(text)
            self._remember(key, entry)
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        if schema is not None and entry.validated_for is not schema:
            problems = await asyncio.to_thread(_validate, schema, entry.document)
            entry.validated_for, entry.problems = schema, problems
        if entry.problems:
            raise _refused("the document does not validate against the schema", entry.problems)
        return PreparedOperation(text, operation_name, _kind(entry, operation_name))

    def _remember(self, key: bytes, entry: _Entry) -> None:
        self._entries[key] = entry
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _parse(self, text: str) -> _Entry:
        from graphql import GraphQLError, OperationDefinitionNode, parse

        try:
            document = parse(text, no_location=False, max_tokens=self._max_tokens)
        except GraphQLError as exc:
            raise _refused("the document does not parse", (exc.message,)) from None
        operations = {
            (node.name.value if node.name is not None else None): node.operation.value
            for node in document.definitions
            if isinstance(node, OperationDefinitionNode)
        }
        if not operations:
            raise _refused("the document has no operation", ())
        return _Entry(document, operations)


def _validate(schema: GraphQLSchema, document: DocumentNode) -> tuple[str, ...]:
    from graphql import validate

    return tuple(error.message for error in validate(schema, document, max_errors=_MAX_LISTED))


def _kind(entry: _Entry, operation_name: str | None) -> str:
    operations = entry.operations
    if operation_name:
        kind = operations.get(operation_name)
        if kind is None:
            known = ", ".join(sorted(name for name in operations if name)) or "none named"
            raise InvalidArgument(
                f"operation_name: the document has no operation {operation_name!r} ({known})",
                reason="INVALID_REQUEST",
                metadata={"field": "operation_name"},
            )
        return kind
    if len(operations) > 1:
        raise InvalidArgument(
            "operation_name: the document holds several operations: name one",
            reason="INVALID_REQUEST",
            metadata={"field": "operation_name"},
        )
    return next(iter(operations.values()))


def _refused(what: str, messages: tuple[str, ...]) -> InvalidArgument:
    """The refusal of a document: the message quotes graphql-core's messages (cut to the
    status's length limit), and ErrorInfo metadata lists each as `problem_1`, `problem_2`,
    ... (as many as fit its size limit), with their count in `problems`."""
    listed = "; ".join(messages[:_MAX_LISTED])
    metadata = {"field": "query", "problems": str(len(messages))}
    metadata.update({f"problem_{i}": text for i, text in enumerate(messages[:_MAX_LISTED], 1)})
    return InvalidArgument(
        f"query: {what}: {listed}" if listed else f"query: {what}",
        reason="INVALID_REQUEST",
        metadata=metadata,
    )
