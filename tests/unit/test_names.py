"""One place validates names that become paths (hangar/names.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.names import check_member, check_name, check_project, child, member

BAD_NAMES = ["", "/etc", "../lib", "a/b", "..", ".hidden", "UPPER", "a" * 64, "-a", "a b", "a\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_could_leave_its_folder_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_name(name, what="image name")


@pytest.mark.parametrize("filename", ["../disk", "/etc/shadow", "a/b", ".x", "", "a\x00"])
def test_a_member_must_be_a_plain_file_name(filename: str) -> None:
    with pytest.raises(InvalidInput):
        check_member(filename)


def test_child_and_member_stay_in_their_folder(tmp_path: Path) -> None:
    assert child(tmp_path, "web-1", what="image name") == tmp_path / "web-1"
    assert member(tmp_path, "disk-0a.qcow2") == tmp_path / "disk-0a.qcow2"


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "evil")
    os.symlink("/etc/shadow", tmp_path / "disk.qcow2")
    with pytest.raises(InvalidInput, match="symbolic link"):
        child(tmp_path, "evil", what="image name")
    with pytest.raises(InvalidInput, match="symbolic link"):
        member(tmp_path, "disk.qcow2")


@pytest.mark.parametrize("name", ["alpha\n", "Alpha", "1abc", "a/b", ""])
def test_a_project_name_is_checked_whole(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_project(name)
