"""Structured logging set-up: JSON lines in production, a readable console on a terminal.

Every component logs through ``structlog.get_logger(...)`` with an event name and
key/value pairs; card data must already be masked (see `switch.masking`) before it
reaches a log call.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure(fmt: LogFormat = "auto", stream: IO[str] | None = None, level: str = "info") -> None:
    """Configure structlog once for the whole process."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
