"""Wording configuration errors: one line naming the file, the key and what was expected.

Every config error names the file, the key (as a dotted path such as
``connectors[1].links[0].port``) and what was expected, so an operator can fix it without
reading code.  What a key expects is worded here from its annotation in
`switch.ops.schema` by `expectation`; the README's configuration reference uses the same
function, so an error and the documentation say the same thing.
"""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A config file is wrong; the message says where and what was expected."""


class Expect:
    """Schema annotation: how to word what a key expects, where its type alone says too little."""

    def __init__(self, text: str) -> None:
        self.text = text


class Unit:
    """Schema annotation: the unit of a number, named in errors and in the reference."""

    def __init__(self, name: str) -> None:
        self.name = name


class Shown:
    """Schema annotation: how the reference shows a default that is computed (a ``None`` that means something)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dotted(loc: Sequence[str | int]) -> str:
    """``("connectors", 1, "saf", "max_attempts")`` -> ``connectors[1].saf.max_attempts``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def at(file: Path, loc: Sequence[str | int], message: str) -> ConfigError:
    """The error for the key at ``loc`` of ``file``."""
    return ConfigError(f"{file}: {dotted(loc) or '(top level)'}: {message}")


def unwrap(annotation: Any, metadata: Sequence[Any] = ()) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``None`` from a type, collecting the metadata (constraints, markers) on the way."""
    meta = list(metadata)
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *more = get_args(annotation)
            meta += more
        elif _is_union(annotation) and type(None) in get_args(annotation):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]
        else:
            break
    for m in list(meta):
        if isinstance(m, FieldInfo):
            meta += m.metadata
    return annotation, meta


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _literal(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _bounds(meta: list[Any]) -> str:
    lo = next((f">= {m.ge}" for m in meta if isinstance(m, Ge)), None) or next(
        (f"> {m.gt}" for m in meta if isinstance(m, Gt)), None)
    hi = next((f"<= {m.le}" for m in meta if isinstance(m, Le)), None) or next(
        (f"< {m.lt}" for m in meta if isinstance(m, Lt)), None)
    return " and ".join(b for b in (lo, hi) if b)


def expectation(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """What a key of this type expects, in words: ``an integer from 1 to 65535``, ``one of 2b, 4b``..."""
    annotation, meta = unwrap(annotation, metadata)
    told = [m.text for m in meta if isinstance(m, Expect)]
    if told:
        return told[0]
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(_literal(v) for v in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        ge = next((m.ge for m in meta if isinstance(m, Ge)), None)
        le = next((m.le for m in meta if isinstance(m, Le)), None)
        if ge is not None and le is not None:
            return f"an integer from {ge} to {le}"
        return "an integer" + (f" >= {ge}" if ge is not None else "")
    if annotation is float:
        unit = next((f" of {m.name}" for m in meta if isinstance(m, Unit)), "")
        bounds = _bounds(meta)
        return f"a number{unit}" + (f" {bounds}" if bounds else "")
    if annotation is str:
        least = next((m.min_length for m in meta if isinstance(m, MinLen)), 0)
        return "a non-empty string" if least == 1 else "a string"
    if origin is list:
        item, item_meta = unwrap(get_args(annotation)[0])
        least = next((m.min_length for m in meta if isinstance(m, MinLen)), 0)
        kind = "a non-empty list" if least else "a list"
        if isinstance(item, type) and issubclass(item, BaseModel):
            return f"{kind} of tables"
        if get_origin(item) is Literal or any(isinstance(m, Expect) for m in item_meta):
            return f"{kind}, each {expectation(item, item_meta)}"
        return f"{kind} of strings"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a table"
    return str(annotation)


def _step(annotation: Any, meta: list[Any], part: str | int) -> tuple[Any, list[Any], type[BaseModel] | None]:
    """Follow one part of an error location: into a model's field, a list's item, a dict's value or a union's tag."""
    annotation, meta = unwrap(annotation, meta)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return (field.annotation, list(field.metadata), annotation) if field else (None, [], annotation)
    origin = get_origin(annotation)
    if origin is list:
        return get_args(annotation)[0], [], None
    if origin is dict:
        return get_args(annotation)[1], [], None
    if _is_union(annotation):
        for member in get_args(annotation):
            if any(getattr(m, "tag", None) == part for m in get_args(member)[1:]):
                return member, meta, None
    return None, [], None


def describe(file: Path, schema: type[BaseModel], error: ValidationError) -> ConfigError:
    """The first of pydantic's errors as one line; an unknown key comes first, since a typo explains the rest."""
    errors = sorted(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    annotation: Any = schema
    meta: list[Any] = []
    holder: type[BaseModel] | None = None
    path: list[str | int] = []
    for part in first["loc"]:
        if not (_is_union(unwrap(annotation, meta)[0]) and isinstance(part, str)):
            path.append(part)  # a string under a union names the member (tag), not a key
        annotation, meta, holder = _step(annotation, meta, part)
    kind = first["type"]
    if kind == "extra_forbidden" and holder is not None:
        close = difflib.get_close_matches(str(first["loc"][-1]), list(holder.model_fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        message = f"unknown key; {hint}expected one of: {', '.join(holder.model_fields)}"
    elif kind == "missing":
        message = f"missing; expected {expectation(annotation, meta)}"
    elif kind == "value_error":
        message = str(first["ctx"]["error"])
    else:
        message = f"got {first['input']!r}; expected {expectation(annotation, meta)}"
    return at(file, path, message)

