"""Structured JSON logs on stderr: one object per line, fields passed through `extra`.

Access lines (logger `sidecar.access`, one per call) are written in batches: a line
written and flushed per call cost ~60 µs of CPU per call under load, more than the rest of
the call's own work. They leave at least every `flush_interval` (1 s), when 64 KiB are
waiting, and before any other record, so the order of lines is kept and every other line
(start-up, warnings, errors) appears at once. A process killed with SIGKILL loses at most
the last interval's access lines; a normal exit flushes them.

Secrets never reach a line: every line is redacted as a whole, after formatting (so the
message, the `extra` fields and a traceback alike), of the configured secret values
(`redact`: the server registers every secret-bearing setting at start-up) and of what looks
like a credential wherever it came from: `Authorization: Bearer ...`, `password=...`,
`"api_key": "..."`, and the password of `scheme://user:password@host`. A line that holds
none of the patterns' keywords costs one lowercase copy and a few substring checks (under
1 µs); only a line with one runs the regular expression.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TextIO

from sidecar.observability.call_context import current_call

__all__ = [
    "ACCESS_LOGGER",
    "MIN_REDACTED_LENGTH",
    "REDACTED",
    "BatchingHandler",
    "JsonFormatter",
    "configure_logging",
    "forget",
    "redact",
    "redact_line",
]

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
ACCESS_LOGGER = "sidecar.access"
REDACTED = "[REDACTED]"
MIN_REDACTED_LENGTH = 4
"""Configured secrets shorter than this are left to the patterns: replacing every `abc` in
every line would garble the logs and hide nothing an attacker could not guess."""

# Names whose value is a credential, as a key (`password=`, `"token":`) or a header.
_KEYWORDS = (
    "authorization",
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "cookie",
)
_CREDENTIAL = re.compile(
    r"(?P<key>(?i:" + "|".join(re.escape(k) for k in _KEYWORDS) + r"))"
    # `: `, `=`, `":"`, `': '`, `\":\"` (quotes escaped inside a JSON string) and a scheme
    r"""(?P<sep>\\?["']?\s*[:=]\s*\\?["']?\s*(?:(?i:bearer|basic|token|digest)\s+)?)"""
    r"""(?P<value>[^\s"'\\&,;}]+)"""
    # The password of scheme://user:password@host.
    r"""|(?P<userinfo>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@"']*:)(?P<password>[^@\s/"']+)(?=@)"""
)
# Substrings of every keyword above (and of a URL): a line with none of them cannot match,
# and skips the regular expression (~20 µs on a typical line; the checks cost under 1 µs).
_STEMS = ("author", "passw", "pwd", "secret", "token", "key", "cookie")
_registered: Counter[str] = Counter()  # by how many owners (servers) registered each
_secrets: list[str] = []  # longest first: a secret that contains another is replaced whole


def redact(secrets: Iterable[str]) -> tuple[str, ...]:
    """Add `secrets` (values of secret-bearing settings) to what no line may show; returns
    what was added, for `forget` once its owner has stopped."""
    added: list[str] = []
    for secret in secrets:
        if len(secret) >= MIN_REDACTED_LENGTH:
            # As it is, and as it reads inside a JSON string (quotes, backslashes, non-ASCII).
            added += dict.fromkeys((secret, json.dumps(secret)[1:-1]))
    _registered.update(added)
    _secrets[:] = sorted(_registered, key=len, reverse=True)
    return tuple(added)


def forget(secrets: Iterable[str]) -> None:
    """Undo one `redact` (another owner that registered the same value keeps it)."""
    _registered.subtract(secrets)
    for secret in [secret for secret, owners in _registered.items() if owners <= 0]:
        del _registered[secret]
    _secrets[:] = sorted(_registered, key=len, reverse=True)


def redact_line(line: str) -> str:
    """`line` without any registered secret or anything that looks like a credential."""
    for secret in _secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    if _may_hold_credentials(line):
        line = _CREDENTIAL.sub(_mask, line)
    return line


def _may_hold_credentials(line: str) -> bool:
    lowered = line.lower()
    for stem in _STEMS:
        if stem in lowered:
            return True
    return "://" in line


def _mask(match: re.Match[str]) -> str:
    if match.group("userinfo") is not None:
        return match.group("userinfo") + REDACTED
    return match.group("key") + match.group("sep") + REDACTED


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object; `extra=` fields become top-level keys."""

    def __init__(self) -> None:
        super().__init__()
        # One encoder for every record: json.dumps with options builds a new one per call.
        self._encode = json.JSONEncoder(default=str, separators=(",", ":")).encode
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                entry[key] = value
        # Every line written during an RPC names it, whichever library wrote it.
        call = current_call()
        if call is not None:
            entry.setdefault("request_id", call.request_id)
            if call.trace_id:
                entry.setdefault("trace_id", call.trace_id)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_line(self._encode(entry))

    def _timestamp(self, record: logging.LogRecord) -> str:
        # The formatted second is reused: strftime per record costs more than the rest.
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"


class BatchingHandler(logging.Handler):
    """Writes formatted lines to `stream`: records of `batched` loggers in batches (see the
    module docstring), every other record at once, after whatever is waiting.

    Args:
        stream: where lines go.
        batched: names of the loggers whose lines may wait.
        flush_interval: the longest a waiting line waits, in seconds.
        max_waiting: characters waiting that make the next line flush at once.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        batched: frozenset[str] = frozenset({ACCESS_LOGGER}),
        flush_interval: float = 1.0,
        max_waiting: int = 64 * 1024,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._batched = batched
        self._max_waiting = max_waiting
        self._waiting: list[str] = []
        self._waiting_size = 0
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_interval,), name="log-flush", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            self._waiting.append(line)
            self._waiting_size += len(line)
            if record.name not in self._batched or self._waiting_size >= self._max_waiting:
                self._write_waiting()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_waiting()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()

    def _write_waiting(self) -> None:
        """Write what waits (the caller holds the handler's lock)."""
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        self._waiting_size = 0
        self._stream.write(text)
        self._stream.flush()

    def _flush_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # a closed or broken stream must not kill the thread noisily
                return


def configure_logging(level: str = "info") -> None:
    """Route every log record of the process to stderr as one JSON line.

    `sidecar.*` loggers write from `level` up; third-party libraries (asyncpg, grpc, httpx,
    ...) from warning up, since httpx alone logs every request at info. Python warnings and
    uncaught exceptions become records too, so no traceback reaches stderr as raw lines.
    gRPC's C core writes its own lines (errors only, by default) past Python's logging.
    """
    # Records need no thread or process names (the lines carry neither): the logging
    # HOWTO's switches for skipping them, about 1 µs per record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    threshold = logging.getLevelName(level.upper())
    root.setLevel(max(threshold, logging.WARNING))
    sidecar = logging.getLogger("sidecar")
    for old in sidecar.handlers:  # from an earlier call that gave `sidecar` its own
        old.close()
    sidecar.handlers.clear()
    sidecar.setLevel(threshold)
    sidecar.propagate = True
    logging.captureWarnings(True)
    _log_uncaught_exceptions(sidecar)


def _log_uncaught_exceptions(log: logging.Logger) -> None:
    """Uncaught exceptions, in the main thread or any other, go to `log` as records."""

    def main_thread(
        kind: type[BaseException], exc: BaseException, traceback: TracebackType | None
    ) -> None:
        log.critical("uncaught exception", exc_info=(kind, exc, traceback))

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # ends the thread quietly, as by default
            return
        log.critical(
            "uncaught exception in a thread",
            exc_info=args.exc_value,
            extra={"thread_name": args.thread.name if args.thread else None},
        )

    sys.excepthook = main_thread
    threading.excepthook = other_thread
