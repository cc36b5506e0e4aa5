"""The BIN table: which country issued a card, by the longest matching prefix of its number.

Format (one entry a line, ``#`` starts a comment, blank lines ignored)::

    # prefix,country
    400000,US
    41111111,KH

A prefix is 1-8 digits, a country an ISO 3166-1 alpha-2 code. The switch ships a small
example (config/bin-countries.csv); a real deployment loads its scheme's or processor's table.
"""

from __future__ import annotations

from pathlib import Path

from switch.domain.customer import ISO3166_ALPHA2


class BinTableError(ValueError):
    """A line of the BIN table is wrong; the message names the file and line."""


class BinTable:
    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries
        self._lengths = sorted({len(p) for p in entries}, reverse=True)

    def __len__(self) -> int:
        return len(self._entries)

    def country(self, pan: str) -> str | None:
        for n in self._lengths:
            found = self._entries.get(pan[:n])
            if found is not None:
                return found
        return None


def load_bin_table(path: Path) -> BinTable:
    entries: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise BinTableError(f"{path}: cannot read the BIN table: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        prefix, _, country = (part.strip() for part in text.partition(","))
        if not (prefix.isascii() and prefix.isdigit() and 1 <= len(prefix) <= 8):
            raise BinTableError(f"{path}:{number}: expected a prefix of 1 to 8 digits, got {prefix!r}")
        if country not in ISO3166_ALPHA2:
            raise BinTableError(f"{path}:{number}: expected an ISO 3166-1 alpha-2 country, got {country!r}")
        entries[prefix] = country
    return BinTable(entries)
