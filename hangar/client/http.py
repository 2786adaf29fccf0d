"""httpx, without its own command line.

httpx imports its command line at import (httpx._main: click, rich.progress,
pygments): ~40 ms of every start of hangar's CLI on this machine, and hangar never runs
it. A None entry in sys.modules makes that one import fail, which httpx catches (it
then leaves its command line out). Import httpx from here.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

__all__ = ["httpx"]
