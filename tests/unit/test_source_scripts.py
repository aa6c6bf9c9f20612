"""The s2i scripts a source brings in .s2i/bin, found by name: executable regular files, no
links, and not what the source's ignore rules leave out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sti.errors import InvalidInput
from sti.ignore import ignore_matcher
from sti.model import BuildRequest
from sti.source_scripts import source_scripts


def _script(root: Path, name: str, mode: int = 0o755) -> Path:
    path = root / ".s2i" / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_the_scripts_a_source_has_are_found_in_s2i_order(tmp_path: Path) -> None:
    assert source_scripts(tmp_path) == ()
    _script(tmp_path, "run")
    _script(tmp_path, "assemble")
    _script(tmp_path, "README")  # not a script s2i knows
    assert source_scripts(tmp_path) == ("assemble", "run")


def test_what_the_ignore_rules_leave_out_is_not_a_script_of_the_build(tmp_path: Path) -> None:
    _script(tmp_path, "assemble")
    _script(tmp_path, "run")
    assert source_scripts(tmp_path, ignore_matcher(tmp_path, [".s2i/bin/run"])) == ("assemble",)
    assert source_scripts(tmp_path, ignore_matcher(tmp_path, [".s2i/"])) == ()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: _script(root, "assemble", 0o644), r"\.s2i/bin/assemble .* not executable"),
        (
            lambda root: (
                (root / ".s2i" / "bin").mkdir(parents=True)
                or (root / ".s2i" / "bin" / "run").symlink_to("/bin/sh")
            ),
            r"\.s2i/bin/run in the source is a symbolic link",
        ),
        (
            lambda root: (root / ".s2i").mkdir() or (root / ".s2i" / "bin").symlink_to("/usr/bin"),
            r"\.s2i/bin in the source is a symbolic link",
        ),
        (
            lambda root: (root / ".s2i").symlink_to("/etc"),
            r"\.s2i in the source is a symbolic link",
        ),
        (
            lambda root: (
                (root / ".s2i" / "bin").mkdir(parents=True)
                or os.mkfifo(root / ".s2i" / "bin" / "assemble")
            ),
            r"\.s2i/bin/assemble in the source is not a regular file",
        ),
    ],
)
def test_a_script_that_is_not_an_executable_file_is_refused(
    tmp_path: Path, make: object, message: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InvalidInput, match=message):
        source_scripts(tmp_path)


def test_a_request_names_only_scripts_s2i_knows_once() -> None:
    with pytest.raises(InvalidInput, match="source script 'prepare' is not one of"):
        BuildRequest("/s", "i", "t", source_scripts=("prepare",))
    with pytest.raises(InvalidInput, match="name one twice"):
        BuildRequest("/s", "i", "t", source_scripts=("run", "run"))
    with pytest.raises(InvalidInput, match="source_scripts must be a list of strings"):
        BuildRequest("/s", "i", "t", source_scripts="assemble")  # type: ignore[arg-type]
