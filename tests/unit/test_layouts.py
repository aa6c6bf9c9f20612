"""The two builder-image layouts as strategies: where each puts a build's inputs, whether a
BuildKit stage can run its save-artifacts, whether scripts from a source or URL apply. (How each
hands its artifacts over is tested on the engine: tests/test_s2i*.py, tests/test_engine_*.py.)"""

from __future__ import annotations

import pytest

from sti.errors import InvalidInput
from sti_worker.engine.layouts import (
    DESTINATION_LABEL,
    ORIGINAL_LAYOUT,
    S2I_LAYOUT,
    layout_of,
)
from sti_worker.engine.protocol import ORIGINAL, S2I_DEFAULT, s2i_scripts_at

LABELLED = {"Labels": {DESTINATION_LABEL: "/opt/app-root"}}


def test_each_scripts_layout_names_its_strategy() -> None:
    assert layout_of(ORIGINAL) is ORIGINAL_LAYOUT
    assert layout_of(S2I_DEFAULT) is S2I_LAYOUT
    assert layout_of(s2i_scripts_at("/opt/s2i")) is S2I_LAYOUT


def test_an_original_image_takes_its_inputs_in_tmp_and_no_destination() -> None:
    assert ORIGINAL_LAYOUT.destination("acme/sti", LABELLED, None) == "/tmp"
    with pytest.raises(InvalidInput, match="--destination applies to s2i builder images"):
        ORIGINAL_LAYOUT.destination("acme/sti", {}, "/opt")


@pytest.mark.parametrize(
    ("config", "given", "where"),
    [
        ({}, None, "/tmp"),
        ({"Labels": None}, None, "/tmp"),
        (LABELLED, None, "/opt/app-root"),
        (LABELLED, "/srv", "/srv"),
    ],
)
def test_an_s2i_image_takes_them_where_it_is_told(
    config: dict[str, object], given: str | None, where: str
) -> None:
    assert S2I_LAYOUT.destination("acme/s2i", config, given) == where


@pytest.mark.parametrize("label", ["relative", "/opt/../etc", "/opt/$HOME", "/opt\nRUN x"])
def test_a_destination_label_that_is_not_a_plain_directory_is_refused(label: str) -> None:
    with pytest.raises(InvalidInput, match=f"the {DESTINATION_LABEL} label of acme/s2i"):
        S2I_LAYOUT.destination("acme/s2i", {"Labels": {DESTINATION_LABEL: label}}, None)


def test_only_an_original_image_saves_artifacts_in_a_build_stage_and_only_if_it_can() -> None:
    assert ORIGINAL_LAYOUT.saves_in_build_stage(artifacts_dir_empty=True)
    assert not ORIGINAL_LAYOUT.saves_in_build_stage(artifacts_dir_empty=False)
    assert not S2I_LAYOUT.saves_in_build_stage(artifacts_dir_empty=True)  # a tar on stdout


def test_only_an_s2i_image_takes_scripts_from_a_source_or_url() -> None:
    assert S2I_LAYOUT.takes_brought_scripts and not ORIGINAL_LAYOUT.takes_brought_scripts
