"""The CLI's wording of an error's suggested next step (hangar.cli.suggest), and the
action travelling with an error: from the error to its JSON, and back in the client."""

from __future__ import annotations

import pytest

from hangar.cli import suggest
from hangar.client.api_error import ApiError
from hangar.errors import Conflict, HangarError, NextStep, QuotaExceeded

# One example per step: the details it reads, and the command line the CLI prints.
EXPECTED: dict[NextStep, tuple[dict[str, object], list[str]]] = {
    NextStep.STOP_VM: ({"vm": "web-1"}, ["try: hangar stop web-1"]),
    NextStep.SHOW_VM: ({"vm": "web-1"}, ["try: hangar info web-1"]),
    NextStep.FORCE: ({}, ["try: hangar delete web-1 --force"]),
    NextStep.FORCE_OR_SNAPSHOT: (
        {"vm": "web-1", "memory": True},
        [
            "try: hangar delete web-1 --force",
            "or keep it first: hangar snapshot create web-1 NAME --memory",
        ],
    ),
    NextStep.DETACH_VOLUME: (
        {"volume": "data", "vm": "web-1"},
        ["try: hangar volume detach data web-1"],
    ),
    NextStep.LIST_VMS: ({"project": "alpha"}, ["try: hangar --project alpha list"]),
    NextStep.LIST_VOLUMES: ({}, ["try: hangar volume list"]),
    NextStep.LIST_NETWORKS: (
        {"project": "alpha"},
        ["try: hangar --project alpha network list"],
    ),
    NextStep.LIST_SNAPSHOTS: ({"vm": "web-1"}, ["try: hangar snapshot list web-1"]),
    NextStep.LIST_IMAGES: ({}, ["try: hangar image list"]),
    NextStep.LIST_FORWARDS: ({}, ["try: hangar forward list"]),
    NextStep.LIST_FIREWALL: ({}, ["try: hangar firewall list"]),
    NextStep.LIST_PROJECTS: ({}, ["try: hangar project list"]),
    NextStep.LIST_TOKENS: ({}, ["try: hangar token list"]),
    NextStep.LIST_POOLS: ({}, ["try: hangar storage pool list"]),
    NextStep.BUILD_IMAGE: ({"image": "debian-12"}, ["try: hangar image build debian-12"]),
    NextStep.DELETE_IMAGE: ({"image": "tpl"}, ["try: hangar image delete tpl"]),
    NextStep.IMPORT_IMAGE: ({}, ["try: hangar image import FILE"]),
    NextStep.CREATE_TOKEN: (
        {},
        ["an admin runs: hangar token create --project P --role viewer|operator|admin"],
    ),
    NextStep.RAISE_QUOTA: (
        {"project": "alpha", "limit": "max_disk"},
        ["a host administrator runs: hangar project set alpha max-disk=..."],
    ),
    NextStep.SET_UPLINKS: (
        {"project": "alpha"},
        ["a host administrator runs: hangar project uplinks alpha IFACE..."],
    ),
    NextStep.DELETE_PROJECT: (
        {"project": "alpha"},
        ["a host administrator runs: hangar project delete alpha"],
    ),
}


@pytest.mark.parametrize("step", list(NextStep))
def test_the_cli_words_every_step(step: NextStep) -> None:
    # A step added to hangar.errors without its CLI wording fails here.
    details, lines = EXPECTED[step]
    assert suggest.commands(step, details, ["delete", "web-1"]) == lines


def test_unknown_steps_and_missing_parameters_show_no_line() -> None:
    # A newer hangard's step, or details without what a step needs: the hint alone.
    assert suggest.commands("rebalance-cluster", {"vm": "web"}) == []
    assert suggest.commands("stop-vm", {}) == []
    assert suggest.commands("", {}) == []


def test_names_are_quoted_for_a_shell() -> None:
    assert suggest.commands("stop-vm", {"vm": "a b"}) == ["try: hangar stop 'a b'"]
    assert suggest.commands("force", {}, ["snapshot", "restore", "web", "it's"]) == [
        "try: hangar snapshot restore web 'it'\"'\"'s' --force"
    ]


def test_rendered_lines_are_safe_for_the_terminal() -> None:
    evil = "[link=http://x]a[/link]\x1b]0;title\x07"
    (line,) = suggest.render("stop-vm", {"vm": evil})
    assert "\x1b" not in line and "\x07" not in line
    assert "\\x1b" in line and "\\[link=http://x]" in line  # visible, and not Rich markup


def test_the_error_json_carries_the_action_and_the_client_keeps_it() -> None:
    error = Conflict(
        "volume 'data' is in use by VM 'web'",
        hint="detach it from VM 'web' first",
        details={"volume": "data", "vm": "web"},
        action=NextStep.DETACH_VOLUME,
    )
    body = error.to_dict()
    assert body["action"] == "detach-volume" and body["details"]["vm"] == "web"
    rebuilt = ApiError(409, body)
    assert (rebuilt.action, rebuilt.details, rebuilt.hint) == (
        "detach-volume",
        {"volume": "data", "vm": "web"},
        "detach it from VM 'web' first",
    )


def test_no_action_is_null_in_json_and_empty_in_the_client() -> None:
    assert HangarError("boom").to_dict()["action"] is None
    assert ApiError(500, HangarError("boom").to_dict()).action == ""
    # An older hangard sends no action at all; a newer one may send one this CLI
    # does not know, which the client keeps as it is.
    assert ApiError(404, {"error": "not-found", "message": "m"}).action == ""
    assert ApiError(409, {"error": "conflict", "action": "new-thing"}).action == "new-thing"


def test_a_quota_error_names_its_limit_for_the_cli() -> None:
    error = QuotaExceeded(
        "over", hint="ask", details={"project": "p", "limit": "max_instances"},
        action=NextStep.RAISE_QUOTA,
    )  # fmt: skip
    (line,) = suggest.commands(error.action, error.details)
    assert line.endswith("hangar project set p max-instances=...")
