"""hangar.cli.safe.shown: text from elsewhere shows every character and does nothing
else (issue 14, item 7)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from hangar.cli.safe import Table, shown

LINK = "[link=http://x]a[/link]"
TITLE = "\x1b]0;title\x07"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own colours and bold


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(
        file=buffer, force_terminal=True, color_system="truecolor", emoji=False, width=300
    )
    return console, buffer


def rendered(console: Console, buffer: io.StringIO, thing: object) -> str:
    console.print(thing, highlight=False, soft_wrap=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("raw", "visible"),
    [
        (TITLE, "\\x1b]0;title\\x07"),
        ("\x1b[8mhidden", "\\x1b[8mhidden"),
        ("a\x00b\x7fc", "a\\x00b\\x7fc"),
        ("\x9b31m\x9d0;t\x9c", "\\x9b31m\\x9d0;t\\x9c"),  # C1: 8-bit CSI, OSC, ST
        ("line\nforged: ok\r", "line\\nforged: ok\\r"),
        ("tab\there", "tab\\there"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("\u2066x\u2069\u2028\ufeff", "\\u2066x\\u2069\\u2028\\ufeff"),
    ],
)
def test_controls_become_visible_escapes(raw: str, visible: str) -> None:
    assert shown(raw, markup=False) == visible


def test_ordinary_text_is_unchanged() -> None:
    for text in ("web-1", "/var/lib/hangar/vms/x", "Debian GNU/Linux 12 (bookworm)", "café 日本"):
        assert shown(text) == text
    assert shown(None) == "None" and shown(42) == "42"


def test_markup_is_escaped_and_printed_literally() -> None:
    console, buffer = terminal()
    text = rendered(console, buffer, f"state reason: {shown(LINK + TITLE)}")
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink
    assert SGR.sub("", text).strip() == "state reason: " + LINK + "\\x1b]0;title\\x07"


def test_without_shown_rich_and_the_terminal_would_obey_it() -> None:
    # What the fix is for: the same text printed as it was makes a hyperlink and a title.
    console, buffer = terminal()
    text = rendered(console, buffer, f"state reason: {LINK}{TITLE}")
    # (Rich drops the BEL, but the terminal still takes what follows as the title.)
    assert "\x1b]8;" in text and "\x1b]0;title" in text


def test_a_table_never_reads_markup_in_its_cells() -> None:
    console, buffer = terminal()
    table = Table()
    table.add_column("NAME")
    table.add_column("REASON")
    table.add_row("[bold]web[/bold]", LINK + TITLE)
    table.add_row("[/]", None)  # a lone closing tag would make Rich raise MarkupError
    text = SGR.sub("", rendered(console, buffer, table))
    assert "\x1b" not in text and "\x07" not in text
    assert "[bold]web[/bold]" in text and LINK in text and "\\x1b]0;title\\x07" in text
    assert "[/]" in text
