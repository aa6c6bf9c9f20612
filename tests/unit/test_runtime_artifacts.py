"""--runtime-artifact SRC[:DEST] and the assemble-input-files label, as s2i documents them."""

from __future__ import annotations

import pytest

from sti.errors import InvalidInput
from sti.runtime_artifacts import (
    RuntimeArtifact,
    parse_assemble_input_files,
    parse_runtime_artifact,
)


@pytest.mark.parametrize(
    ("given", "source", "destination"),
    [
        ("/tmp/app.war", "/tmp/app.war", ""),
        ("/tmp/app.war:.", "/tmp/app.war", ""),
        ("/tmp/app.war:app/dist", "/tmp/app.war", "app/dist"),
        ("/tmp/app-0.1.war:app.war", "/tmp/app-0.1.war", "app.war"),
        ("/opt/data/", "/opt/data", ""),
        ("/opt/data:./lib/", "/opt/data", "lib"),
    ],
)
def test_what_s2i_accepts(given: str, source: str, destination: str) -> None:
    assert parse_runtime_artifact(given) == RuntimeArtifact(source, destination)


@pytest.mark.parametrize(
    "given",
    [
        "/opt/data/*.jar",  # s2i: wildcards are not supported
        "relative/path",
        "/",
        "/a/../etc",
        "/a//b",
        "/a:/absolute",
        "/a:../up",
        "/a:lib/../../up",
        "/a:b:c",
        "/a\n:b",
        "/a\0",
        "/" + "x" * 2000,
    ],
)
def test_what_could_leave_its_place_or_is_ambiguous_is_refused(given: str) -> None:
    with pytest.raises(InvalidInput):
        parse_runtime_artifact(given)


def test_the_label_separates_mappings_with_semicolons() -> None:
    found = parse_assemble_input_files("/tmp/app.war:app; /opt/data", "label")
    assert found == [RuntimeArtifact("/tmp/app.war", "app"), RuntimeArtifact("/opt/data", "")]
    with pytest.raises(InvalidInput, match="at most 64"):
        parse_assemble_input_files(";".join(["/a"] * 65), "label")
