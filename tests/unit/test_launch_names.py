"""The names a launch of N VMs gives them (TemplateService.launch_many). Pure."""

from __future__ import annotations

import pytest

from hangar.errors import InvalidInput
from hangar.services.templates.service import MAX_LAUNCH, many_names


def test_n_vms_are_name_1_to_name_n_and_one_is_name_itself() -> None:
    assert many_names("web", 3) == ["web-1", "web-2", "web-3"]
    assert many_names("web", 1) == ["web"]
    assert len(many_names("web", MAX_LAUNCH)) == MAX_LAUNCH


@pytest.mark.parametrize("count", [0, -1, MAX_LAUNCH + 1])
def test_a_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(InvalidInput, match="launch count"):
        many_names("web", count)


def test_a_suffix_that_makes_a_name_too_long_is_refused() -> None:
    assert many_names("a" * 61, 9)[-1] == "a" * 61 + "-9"
    with pytest.raises(InvalidInput, match="characters long"):
        many_names("a" * 61, 10)
