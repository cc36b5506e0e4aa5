"""Typed, validated reading of TOML tables.

Every config error must name the file, the key (as a dotted path such as
``connectors[1].links[0].port``) and what was expected, so an operator can fix it
without reading code.  `Table` wraps one TOML table and records which keys were read,
so unknown keys (usually typos) are reported too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

T = TypeVar("T")
_MISSING: Any = object()


class ConfigError(ValueError):
    """A config file is wrong; the message says where and what was expected."""


class Table:
    def __init__(self, data: dict[str, Any], file: Path, prefix: str = "") -> None:
        self.data = data
        self.file = file
        self.prefix = prefix
        self._read: set[str] = set()

    def where(self, key: str | None = None) -> str:
        dotted = ".".join(p for p in (self.prefix, key) if p)
        return f"{self.file}: {dotted or '(top level)'}"

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], expected: str) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, f"missing; expected {expected}")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"got {value!r}; expected {expected}")
        if not isinstance(value, kinds):
            raise self.error(key, f"got {value!r}; expected {expected}")
        return value

    def has(self, key: str) -> bool:
        return key in self.data

    def str(self, key: str, default: Any = _MISSING, choices: Sequence[str] | None = None) -> Any:
        expected = f"one of {', '.join(choices)}" if choices else "a string"
        value = self._get(key, default, (str,), expected)
        if choices and value is not default and value not in choices:
            raise self.error(key, f"got {value!r}; expected {expected}")
        return value

    def int(self, key: str, default: Any = _MISSING, lo: int | None = None, hi: int | None = None) -> Any:
        expected = "an integer" + (f" from {lo}" if lo is not None else "") + (f" to {hi}" if hi is not None else "")
        value = self._get(key, default, (int,), expected)
        if value is not default and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.error(key, f"got {value!r}; expected {expected}")
        return value

    def float(self, key: str, default: Any = _MISSING, lo: float = 0.0) -> Any:
        expected = f"a number of seconds >= {lo}"
        value = self._get(key, default, (int, float), expected)
        if value is not default and value < lo:
            raise self.error(key, f"got {value!r}; expected {expected}")
        return float(value) if value is not None else None

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, (bool,), "true or false")

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default, (list,), "a list of strings")
        if value is not default and not all(isinstance(v, str) for v in value):
            raise self.error(key, f"got {value!r}; expected a list of strings")
        return value

    def path(self, key: str, base: Path, default: Any = _MISSING) -> Any:
        value = self.str(key, default)
        if not isinstance(value, str):
            return value
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p)

    def table(self, key: str, required: bool = False) -> Table:
        value = self._get(key, _MISSING if required else {}, (dict,), "a table")
        return Table(value, self.file, f"{self.prefix}.{key}" if self.prefix else key)

    def tables(self, key: str, required: bool = False) -> Iterator[Table]:
        value = self._get(key, _MISSING if required else [], (list,), "an array of tables ([[...]])")
        for i, item in enumerate(value):
            where = f"{self.prefix}.{key}[{i}]" if self.prefix else f"{key}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{self.file}: {where}: expected a table")
            yield Table(item, self.file, where)

    def raw(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        return self.data.get(key, default)

    def done(self) -> None:
        """Refuse keys nobody read: they are almost always typos."""
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(unknown[0], f"unknown key; expected one of: {known}")
