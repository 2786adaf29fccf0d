"""Sizes as people write them ("256M", "2G", "1.5GiB") and as hangar stores them (bytes)."""

from __future__ import annotations

import re

from hangar.errors import InvalidInput

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse a size with an optional binary unit (K, M, G, T; "MiB" and "MB" alike) into bytes.

    Raises :class:`InvalidInput` naming ``what`` when the text is not a size.
    """
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"{what} must not be negative, got {text}")
        return text
    match = _SIZE.match(text)
    if not match:
        raise InvalidInput(
            f"{what} '{text}' is not a size",
            hint="write a number with an optional unit, e.g. 256M, 2G or 1.5G",
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(size: int) -> str:
    """Format bytes the way parse_size reads them: exact where a unit divides the size
    ("256M", "1536M"), else one decimal of the largest unit ("23.5G")."""
    units = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))
    for i, (unit, factor) in enumerate(units):
        if size < factor:
            continue
        for exact_unit, exact_factor in units[i:]:
            if size % exact_factor == 0 and size // exact_factor < 10000:
                return f"{size // exact_factor}{exact_unit}"
        return f"{size / factor:.1f}{unit}"
    return f"{size}B"
