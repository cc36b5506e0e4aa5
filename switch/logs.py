"""Structured logging set-up: JSON lines in production, a readable console on a terminal.

Every component logs through ``structlog.get_logger(...)`` with an event name and
key/value pairs; card data must already be masked (see `switch.masking`) before it
reaches a log call.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Literal

import orjson
import structlog

LogFormat = Literal["auto", "json", "console"]


def configure(fmt: LogFormat = "auto", stream: IO[str] | None = None, level: str = "info") -> None:
    """Configure structlog once for the whole process.

    JSON lines are rendered with orjson and loggers are cached on first use: at a few
    log events per payment, logging is otherwise the largest CPU cost on the reactor.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
        factory: Any = structlog.PrintLoggerFactory(stream)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=_json))
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _json(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()
