"""SqlService: validates requests, picks the SQL integration by target, converts values, and
runs the `SqlBackend` through the target's resilience pipeline. No retry, breaker or SQL
knowledge lives here.

- Query and the opening of a QueryStream are idempotent (retried on transient failures);
  Execute and Transaction are retried only when the call carries an idempotency key.
- The caller's deadline is handed to the backend, which makes it the statement timeout.
- QueryStream opens its cursor through the pipeline, then streams outside it; whatever ends
  the stream (the last row, an error, the client cancelling, a reader that took no message
  for `stream_idle_timeout`), the cursor and its transaction are closed in `finally`, and
  cancellation is re-raised, never swallowed. It writes with `context.write`, so each
  write can be timed: flow control holds a write as long as the reader does not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc
from sidecar.backends.sql import IsolationLevel, Row, RowStream, Statement
from sidecar.backends.sql.base import result_too_large
from sidecar.errors import Aborted
from sidecar.resilience import ExecutionTimeout, run_with_timeout
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import Context, call_deadline, call_through, invalid, resolve
from sidecar.servicers._sql_values import columns_to_proto, parameters_from_proto, rows_to_proto

__all__ = ["SqlServicer"]

_MAX_SQL_BYTES = 1024 * 1024
_MAX_PARAMETERS = 32_767  # asyncpg's (and the wire protocol's signed int16) limit
_MAX_STATEMENTS = 1_000
_MAX_BATCH_SIZE = 10_000
# A stream message stays well under the server's message limit, ...
_MAX_STREAM_MESSAGE_BYTES = 1024 * 1024
# ... and every answer leaves room for its envelope under that limit.
_ENVELOPE_BYTES = 16 * 1024

_ISOLATION = {
    sql_pb2.ISOLATION_LEVEL_UNSPECIFIED: IsolationLevel.DEFAULT,
    sql_pb2.ISOLATION_LEVEL_READ_COMMITTED: IsolationLevel.READ_COMMITTED,
    sql_pb2.ISOLATION_LEVEL_REPEATABLE_READ: IsolationLevel.REPEATABLE_READ,
    sql_pb2.ISOLATION_LEVEL_SERIALIZABLE: IsolationLevel.SERIALIZABLE,
}


class SqlServicer(sql_pb2_grpc.SqlServiceServicer):
    """Serve SqlService over the configured SQL integrations."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int) -> None:
        """`max_message_bytes` is the server's largest response message; no answer and no
        stream message is built larger (RESOURCE_EXHAUSTED, RESULT_TOO_LARGE instead)."""
        self._integrations = integrations
        self._max_result_bytes = max_message_bytes - min(_ENVELOPE_BYTES, max_message_bytes // 4)
        self._max_stream_message_bytes = min(_MAX_STREAM_MESSAGE_BYTES, self._max_result_bytes)

    def _target(self, target: str) -> Integration[Any]:
        return resolve(self._integrations, "sql", target)

    async def Query(self, request: sql_pb2.QueryRequest, context: Context) -> sql_pb2.QueryResponse:
        sql = self._target(request.target)
        statement = _statement(request.sql, request.parameters, "")
        max_rows: int = sql.settings.max_rows_per_query
        max_bytes = self._max_result_bytes
        deadline = call_deadline(context, self._integrations.clock)
        result = await call_through(
            sql,
            context,
            lambda: sql.backend.query(
                statement, max_rows=max_rows, deadline=deadline, max_bytes=max_bytes
            ),
            deadline=deadline,
        )
        return sql_pb2.QueryResponse(
            columns=columns_to_proto(result.columns),
            rows=rows_to_proto(result.rows),
            command_tag=result.command_tag,
        )

    async def QueryStream(  # type: ignore[override]  # write-style streaming handler
        self, request: sql_pb2.QueryStreamRequest, context: Context
    ) -> None:
        sql = self._target(request.target)
        statement = _statement(request.sql, request.parameters, "")
        if not 0 <= request.batch_size <= _MAX_BATCH_SIZE:
            raise invalid("batch_size", f"must be between 0 and {_MAX_BATCH_SIZE}")
        batch_size: int = request.batch_size or sql.settings.stream_batch_size
        deadline = call_deadline(context, self._integrations.clock)
        stream: RowStream = await call_through(
            sql,
            context,
            lambda: sql.backend.stream(statement, batch_size=batch_size, deadline=deadline),
            deadline=deadline,
        )
        idle_timeout: float = sql.settings.stream_idle_timeout
        try:
            rows = await stream.fetch()
            messages = self._messages(rows, columns_to_proto(stream.columns))  # even if empty
            while messages:
                for message in messages:
                    await self._write(context, message, idle_timeout)
                rows = await stream.fetch()
                messages = self._messages(rows) if rows else []
        finally:
            # Shielded: a cancelled call still closes its cursor and transaction at once.
            await asyncio.shield(stream.close())

    async def Execute(
        self, request: sql_pb2.ExecuteRequest, context: Context
    ) -> sql_pb2.ExecuteResponse:
        sql = self._target(request.target)
        statement = _statement(request.sql, request.parameters, "")
        deadline = call_deadline(context, self._integrations.clock)
        result = await call_through(
            sql,
            context,
            lambda: sql.backend.execute(statement, deadline=deadline),
            idempotent=False,
            deadline=deadline,
        )
        return sql_pb2.ExecuteResponse(
            command_tag=result.command_tag, rows_affected=result.rows_affected
        )

    async def Transaction(
        self, request: sql_pb2.TransactionRequest, context: Context
    ) -> sql_pb2.TransactionResponse:
        sql = self._target(request.target)
        if not request.statements:
            raise invalid("statements", "must not be empty")
        if len(request.statements) > _MAX_STATEMENTS:
            raise invalid("statements", f"at most {_MAX_STATEMENTS} statements per transaction")
        statements = [
            _statement(item.sql, item.parameters, f"statements[{i}].")
            for i, item in enumerate(request.statements)
        ]
        isolation = _ISOLATION.get(request.isolation_level)
        if isolation is None:
            raise invalid("isolation_level", "unknown isolation level")
        max_rows: int = sql.settings.max_rows_per_query
        read_only = request.read_only
        max_bytes = self._max_result_bytes
        deadline = call_deadline(context, self._integrations.clock)
        results = await call_through(
            sql,
            context,
            lambda: sql.backend.transaction(
                statements,
                isolation=isolation,
                read_only=read_only,
                max_rows=max_rows,
                deadline=deadline,
                max_bytes=max_bytes,
            ),
            idempotent=False,
            deadline=deadline,
        )
        return sql_pb2.TransactionResponse(
            results=[
                sql_pb2.StatementResult(
                    command_tag=result.command_tag,
                    rows_affected=result.rows_affected,
                    columns=columns_to_proto(result.columns),
                    rows=rows_to_proto(result.rows),
                )
                for result in results
            ]
        )

    async def _write(
        self, context: Context, message: sql_pb2.QueryStreamResponse, idle_timeout: float
    ) -> None:
        """Send one message, waiting at most `idle_timeout` for the reader to take it."""
        try:
            await run_with_timeout(
                lambda: context.write(message),
                idle_timeout,
                self._integrations.clock,
                caller_deadline=False,
            )
        except ExecutionTimeout:
            raise Aborted(
                f"the reader took no message for {idle_timeout:g}s: the stream ended and its "
                "transaction was rolled back",
                reason="STREAM_IDLE_TIMEOUT",
                metadata={"idle_timeout_seconds": f"{idle_timeout:g}"},
            ) from None

    def _messages(
        self, rows: Sequence[Row], columns: Sequence[sql_pb2.Column] = ()
    ) -> list[sql_pb2.QueryStreamResponse]:
        """One message for `rows` (the first carries `columns`), or several when one would
        be larger than a stream message should be; a single row may take a whole message.

        Raises:
            ResourceExhausted: a single row is too large to send (RESULT_TOO_LARGE).
        """
        message = sql_pb2.QueryStreamResponse(columns=columns, rows=rows_to_proto(rows))
        size = message.ByteSize()
        if size <= self._max_stream_message_bytes:
            return [message]
        if len(rows) <= 1:
            if size > self._max_result_bytes:
                raise result_too_large(self._max_result_bytes)
            return [message]
        half = len(rows) // 2
        return [*self._messages(rows[:half], columns), *self._messages(rows[half:])]


def _statement(sql: str, parameters: Sequence[common_pb2.Value], prefix: str) -> Statement:
    if not sql.strip():
        raise invalid(f"{prefix}sql", "must not be empty")
    if len(sql) > _MAX_SQL_BYTES and len(sql.encode()) > _MAX_SQL_BYTES:
        raise invalid(f"{prefix}sql", f"must be at most {_MAX_SQL_BYTES} bytes")
    if len(parameters) > _MAX_PARAMETERS:
        raise invalid(f"{prefix}parameters", f"at most {_MAX_PARAMETERS} parameters")
    return Statement(sql, parameters_from_proto(parameters, f"{prefix}parameters"))
