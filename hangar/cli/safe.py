"""Text from elsewhere, made safe to show a person.

Names, paths, descriptions, state reasons (guest serial lines), agent hostnames and OS
names, audit entries and error messages come from the API, and many of them from a
guest or another project's user. Printed as they are, Rich turns ``[link=...]`` into a
hyperlink and ``[conceal]`` into hidden text, and the terminal obeys escape sequences
(``ESC ] 0 ; title BEL`` renames the window, ``ESC [ 8 m`` hides what follows, CSI
cursor moves overwrite earlier lines). So every such value goes through :func:`shown`
before it reaches the terminal: controls become visible escapes and Rich markup is
escaped. Only ``hangar logs``, ``console``, ``exec`` and ``shell`` pass a guest's output
through untouched: that is the guest's own terminal stream, which the user asked for.

Table is Rich's Table whose cells all go through :func:`shown` (Rich reads markup in
cells); the CLI uses it for every table.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape
from rich.table import Table as RichTable

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI, 0x9d an OSC, to terminals in
# 8-bit mode), and the Unicode characters that move or hide text without drawing
# anything: bidirectional overrides and isolates (text displayed in another order than
# it reads, "Trojan Source"), line and paragraph separators, and the BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: Any, *, markup: bool = True) -> str:
    """``value`` as text that shows every character it has and does nothing else.

    Controls and invisible formatting characters become ``\\x1b``-style escapes (a
    newline too: a value is one line, so it cannot forge the lines after it). With
    ``markup`` (the default, for Rich's ``print``, tables and progress bars), Rich
    markup is escaped as well; ``markup=False`` is for ``click.echo`` and plain writes.
    """
    text = _UNSAFE.sub(_visible, str(value))
    return escape(text) if markup else text


class Table(RichTable):
    """A Rich table whose cells are data, never markup: every cell goes through
    :func:`shown`."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        cells = [None if cell is None else shown(cell) for cell in renderables]
        super().add_row(*cells, **kwargs)
