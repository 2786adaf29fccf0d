"""Others' text reaches the administrator's terminal literally (issue 14, item 7), through
the real CLI and a real hangard: an audit entry's path (anyone who can send a request
writes one, a refused or unauthenticated one too) and a project's description, holding
Rich markup and a window-title escape sequence. FORCE_COLOR makes Rich write as it would
to a terminal."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from hangar.client.client import ApiError
from tests.support.daemon import Daemon

pytestmark = [pytest.mark.e2e]

EVIL = "[link=http://x]a[/link]\x1b]0;title\x07"
LITERAL = "[link=http://x]a[/link]\\x1b]0;title\\x07"
TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "400", "TERM": "xterm-256color"}
SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own bold and colours


def _literal(printed: str) -> str:
    plain = SGR.sub("", printed)
    assert "\x1b" not in plain and "\x07" not in plain, repr(printed)
    return plain


def test_audit_shows_a_hostile_request_path_literally(daemon: Daemon) -> None:
    # No '/' in it, so the path still matches the route (and is recorded as it).
    evil = "[link=x]a\x1b]0;title\x07"
    with daemon.client() as client, pytest.raises(ApiError):
        client.request("POST", "/1.0/vms/" + urllib.parse.quote(evil, safe="") + "/start")
    audit = daemon.cli("audit", "--limit", "20", env=TERMINAL)
    assert audit.code == 0, audit.stderr
    assert "[link=x]a\\x1b]0;title\\x07" in _literal(audit.stdout), audit.stdout


def test_project_description_shows_literally(daemon: Daemon) -> None:
    made = daemon.cli("project", "create", "evil-text", "--description", EVIL)
    assert made.code == 0, made.stderr
    try:
        for args in (("project", "list"), ("project", "show", "evil-text")):
            shown = daemon.cli(*args, env=TERMINAL)
            assert shown.code == 0, shown.stderr
            assert LITERAL in _literal(shown.stdout), shown.stdout
    finally:
        daemon.cli("project", "delete", "evil-text")
