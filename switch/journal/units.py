"""Writer units as data: what a caller asks the journal's writer to run, in a form another process can run.

The writer may run in a process of its own (`switch.journal.process`), so a unit cannot be a closure over
the caller's objects: it is a module-level function and its arguments, pickled on the way. `Call` is
that pair; the thread writer simply calls it. What many units share and seldom changes (the fee
schedule, each version of the risk rules) is not sent with every unit: the journal hands it to the
writer once (`share`), and a unit names it by key and finds it on the writer's connection
(`Db.shared`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

FEES = "fees"
"""The journal's fee schedule (`switch.domain.fees.FeeSchedule`), shared once at start."""


class Call(Generic[T]):
    """``fn(db, *args, **kwargs)``, to run later on the writer's connection; picklable when ``fn`` is a
    module-level function (or a class's static method) and its arguments are plain data."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self, db: Any) -> T:
        return self.fn(db, *self.args, **self.kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_call, (self.fn, self.args, self.kwargs))

    def __repr__(self) -> str:
        return f"Call({getattr(self.fn, '__qualname__', self.fn)!r})"


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call[Any]:
    return Call(fn, *args, **kwargs)


def shared(db: Any, key: Hashable) -> Any:
    """What the journal shared with the writer under ``key`` (`GroupCommitWriter.share`)."""
    try:
        return db.shared[key]
    except KeyError:
        raise LookupError(f"nothing was shared with the journal's writer under {key!r}") from None
