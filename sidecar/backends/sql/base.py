"""The SQL capability: domain values and results, the `SqlBackend` protocol, and the
statement checks. The table that turns a SQLSTATE into a domain error,
`error_for_sqlstate`, lives with the connections (`sidecar.connections.sqlstate`), which
map their client library's errors with it; it is re-exported here.

Values are plain Python objects, the same for every backend:

    None, bool, int, float, Decimal (numeric), str (text), bytes (bytea), date,
    datetime (aware = timestamptz, naive = timestamp), timedelta, Interval, UUID,
    Json (json / jsonb text), and lists of those (arrays)

A backend binds parameters, never splices them into the SQL text, and returns rows as
sequences of such values in column order. It raises only `sidecar.errors` types: a database
error carries its SQLSTATE in `metadata["sqlstate"]` (see `error_for_sqlstate`).

Usage:

    deadline = Deadline.after(2.5, SYSTEM_CLOCK)
    result = await backend.query(Statement("SELECT $1::int8 AS n", (41,)), max_rows=1000,
                                 deadline=deadline)
    result.columns            # (Column(name="n", type="int8"),)
    result.rows[0][0]         # 41
    stream = await backend.stream(Statement("SELECT * FROM big"), batch_size=500, deadline=None)
    try:
        while batch := await stream.fetch():
            send(batch)
    finally:
        await stream.close()

`deadline` is the caller's (None: none). The backend turns the time left, capped by its request
timeout, into the database's statement timeout, a little shorter, so the database's own error
reaches the caller before the caller gives up; each statement of a transaction and each batch
of a stream gets what is left when it starts.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeAlias
from uuid import UUID

from sidecar.connections.sql_timeouts import statement_timeout_ms
from sidecar.connections.sqlstate import error_for_sqlstate
from sidecar.errors import InvalidArgument, ResourceExhausted
from sidecar.resilience import Deadline

__all__ = [
    "Column",
    "Interval",
    "IsolationLevel",
    "Json",
    "ResultBudget",
    "ResultSet",
    "Row",
    "RowStream",
    "SqlBackend",
    "SqlValue",
    "Statement",
    "check_statement",
    "check_statements",
    "error_for_sqlstate",
    "result_size",
    "result_too_large",
    "rows_affected",
    "statement_timeout_ms",
    "time_left",
    "too_many_rows",
]


@dataclass(frozen=True, slots=True)
class Interval:
    """A SQL interval with its calendar parts kept apart ("1 mon" is not "30 days")."""

    months: int = 0
    days: int = 0
    microseconds: int = 0


@dataclass(frozen=True, slots=True)
class Json:
    """A JSON document as text (json / jsonb); kept apart from `str` so it binds as JSON."""

    text: str


SqlValue: TypeAlias = (
    bool
    | int
    | float
    | Decimal
    | str
    | bytes
    | date
    | datetime
    | timedelta
    | Interval
    | UUID
    | Json
    | list["SqlValue"]
    | None
)
"""One SQL value (see the module docstring); other database types arrive as text."""

Row: TypeAlias = Sequence[SqlValue]
"""One result row, one value per column."""


@dataclass(frozen=True, slots=True)
class Column:
    """One result column: its name and its database type name (`int8`, `text[]`, ...)."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and the parameters bound to its placeholders, in order."""

    sql: str
    parameters: tuple[SqlValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ResultSet:
    """What one statement produced.

    Attributes:
        columns: the result columns (empty for a command that returns no rows).
        rows: the rows, in order.
        command_tag: PostgreSQL-style tag, such as `SELECT 2` or `INSERT 0 1`.
        rows_affected: rows inserted, updated, deleted, merged, selected or copied.
    """

    columns: tuple[Column, ...]
    rows: Sequence[Row]
    command_tag: str
    rows_affected: int


class IsolationLevel(enum.Enum):
    """Transaction isolation; DEFAULT is the database's own default."""

    DEFAULT = "DEFAULT"
    READ_COMMITTED = "READ COMMITTED"
    REPEATABLE_READ = "REPEATABLE READ"
    SERIALIZABLE = "SERIALIZABLE"


class RowStream(Protocol):
    """An open server-side cursor. Whoever opens it must `close` it, in a `finally`."""

    @property
    def columns(self) -> tuple[Column, ...]:
        """The result columns, known as soon as the stream is open."""
        ...

    async def fetch(self) -> Sequence[Row]:
        """The next batch of at most `batch_size` rows; empty once every row was read.

        The batch that ends the result already commits and frees the connection.
        """
        ...

    async def close(self) -> None:
        """Abandon the cursor (rolling its transaction back) unless it ended; idempotent.

        Safe to call from a cancelled task: it finishes the clean-up before returning.
        """
        ...


class SqlBackend(Protocol):
    """A SQL database behind a connection pool.

    Every method raises `sidecar.errors` types only: `Unavailable` for a lost or refused
    connection, `ResourceExhausted(reason="POOL_EXHAUSTED")` when no connection frees up in
    time, `DeadlineExceeded` past the timeout, and the error of `error_for_sqlstate` for
    anything the database refused.
    """

    @property
    def read_only(self) -> bool:
        """Whether the database session refuses every write on this target."""
        ...

    async def query(
        self,
        statement: Statement,
        *,
        max_rows: int,
        deadline: Deadline | None,
        max_bytes: int | None = None,
    ) -> ResultSet:
        """Run one statement and return all its rows.

        Raises:
            ResourceExhausted: more than `max_rows` rows (reason TOO_MANY_ROWS); no more than
                `max_rows + 1` rows are ever held in memory. A result larger than
                `max_bytes` when sent (see `result_size`; None: unbounded) has reason
                RESULT_TOO_LARGE.
        """
        ...

    async def execute(self, statement: Statement, *, deadline: Deadline | None) -> ResultSet:
        """Run one statement for its effect; the result carries no rows."""
        ...

    async def stream(
        self, statement: Statement, *, batch_size: int, deadline: Deadline | None
    ) -> RowStream:
        """Open a server-side cursor over one statement's rows, fetched `batch_size` at a time.

        `deadline` bounds opening the cursor and each batch fetch; the caller bounds the stream.
        """
        ...

    async def transaction(
        self,
        statements: Sequence[Statement],
        *,
        isolation: IsolationLevel,
        read_only: bool,
        max_rows: int,
        deadline: Deadline | None,
        max_bytes: int | None = None,
    ) -> list[ResultSet]:
        """Run `statements` in order in one transaction and commit; any error rolls back all.

        A failing statement's error carries `metadata["statement_index"]`. A statement that
        ends the transaction itself fails the call with `FailedPrecondition`. Results that
        together exceed `max_bytes` (see `query`) roll back before COMMIT.
        """
        ...

    async def ping(self) -> None:
        """Return if the database answers, else raise `Unavailable`."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


# -- helpers shared by the backends ------------------------------------------------------------

_COUNTED = frozenset({"INSERT", "UPDATE", "DELETE", "SELECT", "MERGE", "MOVE", "FETCH", "COPY"})


def rows_affected(command_tag: str) -> int:
    """The row count at the end of a command tag (`UPDATE 3` -> 3), 0 for other commands."""
    parts = command_tag.split()
    if len(parts) >= 2 and parts[0] in _COUNTED and parts[-1].isdigit():
        return int(parts[-1])
    return 0


def time_left(deadline: Deadline | None, cap: float) -> float:
    """Seconds a statement may run: what the deadline leaves, at most `cap`."""
    if deadline is None:
        return cap
    left = deadline.remaining()
    return cap if left is None or left > cap else left


def too_many_rows(max_rows: int) -> ResourceExhausted:
    """The error of a Query whose result is longer than `max_rows`."""
    return ResourceExhausted(
        f"the query returned more than {max_rows} rows; use QueryStream or a LIMIT",
        reason="TOO_MANY_ROWS",
        metadata={"max_rows": str(max_rows)},
    )


async def acquire_within(
    slots: asyncio.Semaphore | asyncio.Lock, wait: float, why: str, metadata: Mapping[str, str]
) -> None:
    """Take a slot within `wait` seconds, or answer POOL_EXHAUSTED saying `why` none came."""
    try:
        await asyncio.wait_for(slots.acquire(), wait)
    except TimeoutError:
        raise ResourceExhausted(
            f"{why} within {wait:g}s", reason="POOL_EXHAUSTED", metadata=dict(metadata)
        ) from None


def result_too_large(max_bytes: int) -> ResourceExhausted:
    """The error of an answer that would not fit in one message of `max_bytes`."""
    return ResourceExhausted(
        f"the answer would take more than {max_bytes} bytes, the most one message may "
        "carry; select fewer or smaller values, or use QueryStream",
        reason="RESULT_TOO_LARGE",
        metadata={"max_bytes": str(max_bytes)},
    )


class ResultBudget:
    """The bytes an answer may take when sent, counted result by result as they arrive.

    A Transaction counts each statement's result before the next one runs, and so before
    COMMIT: an answer that could not be sent rolls back instead of committing unseen.
    """

    __slots__ = ("_used", "max_bytes")

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self._used = 0

    def charge(self, result: ResultSet) -> None:
        """Count `result` in.

        Raises:
            ResourceExhausted: the answer so far exceeds `max_bytes` (RESULT_TOO_LARGE).
        """
        if self.max_bytes is None:
            return
        self._used += result_size(result)
        if self._used > self.max_bytes:
            raise result_too_large(self.max_bytes)


def result_size(result: ResultSet) -> int:
    """An upper bound of the bytes `result` takes in a response message.

    It follows the protobuf encoding of `integration.v1` (each value a `Value` field of a
    `Row`, with its tag and length) closely enough to be cheap and never to fall short.
    """
    size = _delimited(len(result.command_tag)) + _MAX_VARINT_FIELD
    for column in result.columns:
        size += _delimited(_text_field(column.name) + _text_field(column.type))
    for row in result.rows:
        size += _delimited(_row_size(row))
    return _delimited(size)


_MAX_VARINT_FIELD = 11  # a tag and a 64-bit varint (negative numbers take all ten bytes)
# A Timestamp or Duration inside its field: seconds and nanos, negative ones ten bytes each.
_TIME_FIELD = 24


def _varint_size(number: int) -> int:
    return max(1, (number.bit_length() + 6) // 7) if number >= 0 else 10


def _delimited(size: int) -> int:
    """A length-delimited field with a payload of `size` bytes: tag, length, payload."""
    return 1 + _varint_size(size) + size


def _text_field(text: str) -> int:
    return _delimited(len(text) if text.isascii() else len(text.encode()))


def _row_size(row: Row) -> int:
    """Bytes of one `Row` message; the hot loop of `result_size`, hence written out."""
    size = 0
    for value in row:
        sizer = _SIZERS.get(type(value))
        value_size = _value_size(value) if sizer is None else sizer(value)
        size += value_size + (2 if value_size < 0x80 else 1 + _varint_size(value_size))
    return size


def _value_size(value: object) -> int:
    """Bytes of one `Value` message (its one field) for a domain value."""
    sizer = _SIZERS.get(type(value))
    if sizer is not None:
        return sizer(value)
    if isinstance(value, list | tuple):  # a composite row travels as a list too
        return _list_size(value)
    if isinstance(value, UUID):
        return _delimited(36)
    return _text_field(str(value))  # other types travel as their text


def _list_size(values: Sequence[object]) -> int:
    return _delimited(sum(_delimited(_value_size(item)) for item in values))


_SIZERS: dict[type, Callable[[Any], int]] = {
    type(None): lambda _: 2,
    bool: lambda _: 2,
    int: lambda v: 1 + _varint_size(v),
    float: lambda _: 9,
    Decimal: lambda v: _delimited(len(format(v, "f"))),
    str: _text_field,
    bytes: lambda v: _delimited(len(v)),
    datetime: lambda _: _TIME_FIELD,
    timedelta: lambda _: _TIME_FIELD,
    date: lambda _: _delimited(10),
    UUID: lambda _: _delimited(36),
    Json: lambda v: _text_field(v.text),
    Interval: lambda _: _delimited(3 * _MAX_VARINT_FIELD),
    list: _list_size,
}


# -- the statement check -----------------------------------------------------------------------

# Statements a caller may not run, by their leading keyword: the backend owns the transaction
# (a COMMIT AND CHAIN would end a READ ONLY transaction and start one without its snapshot)
# and resets the session after every call (DISCARD ALL / DEALLOCATE ALL would also drop the
# driver's own prepared statements).
_TRANSACTION_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK"})
_SESSION_CONTROL = frozenset({"DISCARD", "DEALLOCATE"})
_WORD = re.compile(r"[^\W\d][\w$]*")
_SPACE = frozenset(" \t\n\r\f\v")


def check_statement(
    statement: Statement, *, nested_comments: bool, metadata: Mapping[str, str] | None = None
) -> None:
    """Refuse what must never reach the database, before it does.

    - A NUL character in the SQL or in a text parameter (PostgreSQL cannot carry it and
      answers with a protocol error).
    - Transaction control (BEGIN, START, COMMIT, END, ABORT, ROLLBACK other than ROLLBACK TO
      a savepoint, PREPARE TRANSACTION) and session control (DISCARD, DEALLOCATE), read from
      the statement's leading keywords after comments and empty statements.
      `nested_comments` follows the dialect: PostgreSQL nests `/* */`, SQLite does not.

    Raises:
        InvalidArgument: reason INVALID_REQUEST for a NUL, STATEMENT_NOT_ALLOWED for the rest.
    """
    extra = dict(metadata or {})
    if "\x00" in statement.sql:
        raise InvalidArgument(
            "the SQL contains a NUL character",
            reason="INVALID_REQUEST",
            metadata={**extra, "field": "sql"},
        )
    for index, value in enumerate(statement.parameters):
        if _holds_nul(value):
            raise InvalidArgument(
                f"parameters[{index}] contains a NUL character, which SQL text cannot hold",
                reason="INVALID_REQUEST",
                metadata={**extra, "field": f"parameters[{index}]"},
            )
    words = leading_words(statement.sql, 3, nested_comments=nested_comments)
    refusal = _refusal(words)
    if refusal is not None:
        raise InvalidArgument(
            f"{' '.join(words)} is not allowed: {refusal}",
            reason="STATEMENT_NOT_ALLOWED",
            metadata={**extra, "field": "sql"},
        )


def check_statements(statements: Sequence[Statement], *, nested_comments: bool) -> None:
    """`check_statement` for each statement of a transaction, naming the one refused."""
    for index, statement in enumerate(statements):
        check_statement(
            statement,
            nested_comments=nested_comments,
            metadata={"statement_index": str(index)},
        )


def leading_words(sql: str, count: int, *, nested_comments: bool) -> list[str]:
    """The first `count` keywords of `sql`, upper-cased, skipping whitespace, `--` and `/* */`
    comments, and empty statements before the first. Stops early at anything that is not a
    word (a quoted identifier, a literal, punctuation)."""
    words: list[str] = []
    position = 0
    while len(words) < count:
        position = _skip_blanks(sql, position, nested_comments, semicolons=not words)
        match = _WORD.match(sql, position)
        if match is None:
            break
        words.append(match.group().upper())
        position = match.end()
    return words


def _skip_blanks(sql: str, position: int, nested_comments: bool, *, semicolons: bool) -> int:
    """The position of the first character that is not whitespace, a comment, or (before
    the first word) a `;`. An unterminated comment runs to the end, as in both dialects."""
    end = len(sql)
    while position < end:
        char = sql[position]
        if char in _SPACE or (semicolons and char == ";"):
            position += 1
        elif sql.startswith("--", position):
            newline = sql.find("\n", position)
            position = end if newline < 0 else newline + 1
        elif sql.startswith("/*", position):
            position = _comment_end(sql, position, nested_comments)
        else:
            break
    return position


def _comment_end(sql: str, position: int, nested: bool) -> int:
    """The position just after the `/* */` comment that starts at `position`."""
    depth = 0
    end = len(sql)
    while position < end:
        if sql.startswith("/*", position) and (nested or depth == 0):
            depth += 1
            position += 2
        elif sql.startswith("*/", position):
            depth -= 1
            position += 2
            if depth == 0:
                return position
        else:
            position += 1
    return end


def _refusal(words: Sequence[str]) -> str | None:
    """Why a statement starting with `words` is refused, or None."""
    first = words[0] if words else ""
    if first == "ROLLBACK" and "TO" in words[1:3]:
        return None  # ROLLBACK [WORK | TRANSACTION] TO SAVEPOINT: savepoints are fine
    if first in _TRANSACTION_CONTROL or words[:2] == ["PREPARE", "TRANSACTION"]:
        return "the sidecar runs each call's transaction itself; use Transaction (and savepoints)"
    if first in _SESSION_CONTROL:
        return "the sidecar resets the session after every call itself"
    return None


def _holds_nul(value: SqlValue) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Json):
        return "\x00" in value.text
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False
