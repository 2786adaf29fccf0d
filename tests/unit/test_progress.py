"""qemu-img's progress meter, and the runner that streams it and stops on cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hangar.runner import SubprocessRunner
from hangar.services.progress import span
from hangar.services.qemu.img import ProgressParser, convert
from tests.support.recording_runner import ScriptedRunner


def test_the_meter_reports_the_latest_whole_percent_across_split_chunks() -> None:
    seen: list[float] = []
    parser = ProgressParser(seen.append)
    parser.feed("    (0.00/100%)\r    (0.5")
    parser.feed("0/100%)\r    (1.01/100%)\r    (1.99/100%)\r")
    parser.feed("    (57.3/1")
    parser.feed("00%)\r    (100.00/100%)\r\n")
    assert seen == [0.0, 1.99, 100.0]  # the newest reading of each chunk


def test_convert_asks_for_the_meter_only_when_someone_listens() -> None:
    runner = ScriptedRunner()
    convert(runner, Path("a"), "raw", Path("b"), "qcow2")
    seen: list[float] = []
    convert(runner, Path("a"), "raw", Path("b"), "qcow2", progress=seen.append)
    assert "-q" in runner.calls[0] and "-p" not in runner.calls[0]
    assert "-p" in runner.calls[1] and "-q" not in runner.calls[1]


def test_span_maps_a_step_onto_its_share_of_the_whole() -> None:
    calls: list[tuple[str, float | None]] = []

    def report(message: str = "", *, percent: float | None = None, nbytes: int | None = None):  # type: ignore[no-untyped-def]
        calls.append((message, percent))

    step = span(report, "copying", 10, 90)
    step(0)
    step(50)
    step(150)
    assert calls == [("copying", 10.0), ("copying", 50.0), ("copying", 90.0)]


def test_streamed_output_arrives_before_the_command_ends() -> None:
    chunks: list[tuple[float, str]] = []
    start = time.monotonic()
    result = SubprocessRunner().run(
        ["sh", "-c", "printf 'a\\r'; sleep 0.5; printf 'b\\r'"],
        on_output=lambda text: chunks.append((time.monotonic() - start, text)),
    )
    assert result.stdout == "a\rb\r" and result.returncode == 0
    assert chunks[0][1] == "a\r" and chunks[0][0] < 0.4


def test_a_listener_that_raises_kills_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "finished"

    def cancel(_: str) -> None:
        raise KeyboardInterrupt  # stands in for OperationCancelled

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        SubprocessRunner().run(["sh", "-c", f"echo go; sleep 3; touch {marker}"], on_output=cancel)
    assert time.monotonic() - start < 2
    time.sleep(0.1)
    assert not marker.exists()


def test_streamed_failures_and_timeouts_raise_with_stderr() -> None:
    from hangar.errors import HostCommandFailed

    with pytest.raises(HostCommandFailed, match="boom"):
        SubprocessRunner().run(["sh", "-c", "echo boom >&2; exit 3"], on_output=lambda _: None)
    with pytest.raises(HostCommandFailed, match="timed out"):
        SubprocessRunner().run(["sleep", "5"], timeout=0.3, on_output=lambda _: None)
