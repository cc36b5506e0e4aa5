"""Structured logging set-up: JSON lines in production, a readable console on a terminal.

Every component logs through ``structlog.get_logger(...)`` with an event name and
key/value pairs; card data should already be masked (see `switch.iso.masking`) before it
reaches a log call. Because log calls also carry strings from outside (request ids,
field names, order ids, hello names, bank fields), rendering masks every card number
`switch.domain.cardcheck.card_numbers` finds in any key or value, whatever its type
(`redact_card_numbers`), and never raises: a log call must not be able to break the
request that made it (a lone surrogate in a request id, an object whose ``__str__``
fails).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any, Literal

import orjson
import structlog

from switch.domain.cardcheck import SCAN_MIN_DIGITS, card_numbers, may_hold_card_number, redact_pans

LogFormat = Literal["auto", "json", "console"]
_NATIVE = (bool, type(None), datetime.date, datetime.time, uuid.UUID)
_MAX_DEPTH = 16
_SMALLEST_SCANNED = 10 ** (SCAN_MIN_DIGITS - 1)


def configure(
    fmt: LogFormat = "auto", stream: IO[str] | None = None, level: str = "info",
    call_soon: Callable[[Callable[[], None]], object] | None = None,
) -> LineWriter:
    """Configure structlog once for the whole process.

    JSON lines are rendered with orjson and loggers are cached on first use: at a few
    log events per payment, logging is otherwise the largest CPU cost on the reactor.
    With ``call_soon`` (the reactor's ``callLater(0, f)``), lines are written once per
    reactor turn (`LineWriter`); `LineWriter.close` writes what is left.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    writer = LineWriter(stream, call_soon)
    structlog.configure(
        processors=processors(fmt, colors=stream.isatty()),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    return writer


class LineWriter:
    """Writes rendered lines to a stream; lines logged on the configuring (reactor) thread wait for the
    end of the reactor's turn and go out in one write.

    Why: each write and flush is a system call that gives up the GIL, and on a busy switch the journal
    writer takes it meanwhile, so a line written at once cost the reactor about 47 µs a request. A line
    waits at most one turn of the reactor; a process killed outright loses at most that turn's lines
    (the journal, not the log, is the record of payments). Lines from other threads, and every line
    once `close` ran or without ``call_soon``, are written at once, after any that wait.
    """

    def __init__(self, stream: IO[str], call_soon: Callable[[Callable[[], None]], object] | None) -> None:
        self._stream = stream
        self._call_soon = call_soon
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._waiting: list[str] = []

    def msg(self, message: str) -> None:
        with self._lock:
            self._waiting.append(message)
            if self._call_soon is not None and threading.get_ident() == self._thread:
                if len(self._waiting) == 1:
                    self._call_soon(self.flush)
                return
            self._write()

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg

    def flush(self) -> None:
        with self._lock:
            self._write()

    def close(self) -> None:
        """Write what waits; from now on every line is written at once (the reactor has stopped)."""
        with self._lock:
            self._call_soon = None
            self._write()

    def _write(self) -> None:  # under _lock
        if not self._waiting:
            return
        text = "\n".join(self._waiting) + "\n"
        self._waiting.clear()
        self._stream.write(text)
        self._stream.flush()


def failed(logger: Any, event: str, failure: Any) -> None:
    """A background task's Twisted ``Failure`` as one error line: its message and where it came from.
    (structlog's loggers have no ``failure`` method, unlike Twisted's.)"""
    logger.error(event, error=failure.getErrorMessage(), traceback=failure.getTraceback())


def processors(fmt: Literal["json", "console"], colors: bool = False) -> list[structlog.typing.Processor]:
    """The processor chain `configure` installs, ending in the renderer for ``fmt``."""
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _SafeRenderer(renderer),
    ]


def redact_card_numbers(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every key and value with a card number in it masked (first six, last four).

    Numbers become strings when masked (a masked number is no JSON number); values of
    types the renderer does not know are turned into text first, so nothing escapes
    the scan through ``str()`` at render time.
    """
    return {_redact_key(key): _redact(value, 0) for key, value in event.items()}


def _redact_key(key: Any) -> Any:
    if isinstance(key, str):
        return redact_pans(key) if may_hold_card_number(key) else key
    return _redact(key, _MAX_DEPTH)


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_pans(value) if may_hold_card_number(value) else value
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, int | float):
        if -_SMALLEST_SCANNED < value < _SMALLEST_SCANNED:
            return value
        text = str(value)
        masked = redact_pans(text)
        return value if masked is text else masked
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {_redact_key(key): _redact(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_redact(item, depth + 1) for item in value]
    return redact_pans(_text(value))


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class _SafeRenderer:
    """Wraps the renderer: every event becomes one writable line with card numbers masked.

    The rendered line is checked first with the scan `redact_card_numbers` masks by: every
    key and value is in the line whole (between quotes, or a number), so a card number the
    event holds is one the line holds. Only a line that holds one is rendered again from a
    masked copy of the event; a line whose long digit runs all fail Luhn (an order id with
    a timestamp in it) is rendered once. Whatever the renderer fails on still becomes a line.
    """

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        text = self._render(logger, method, dict(event))  # a copy: the console renderer pops keys
        if next(card_numbers(text), None) is not None:
            text = self._render(logger, method, redact_card_numbers(logger, method, event))
        # A lone surrogate cannot be written to a UTF-8 stream: escape it instead.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def _render(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        try:
            rendered = self._renderer(logger, method, event)
            return rendered if isinstance(rendered, str) else _text(rendered)
        except Exception as e:
            fields = {_text(key): _text(value) for key, value in event.items()}
            return json.dumps({**fields, "log_render_error": type(e).__name__}, ensure_ascii=True)


def _json(event: dict[str, Any], **_: Any) -> str:
    try:
        return orjson.dumps(event, default=_text, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # lone surrogates, integers beyond 64 bits: the standard library escapes them
        return json.dumps(event, default=_text, ensure_ascii=True)
