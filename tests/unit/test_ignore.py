"""What a source directory leaves out: git metadata always (decided without parsing a pattern
when the source has none of its own), its .stiignore and --exclude patterns, for a walk that
does not enter what it leaves out."""

from __future__ import annotations

from pathlib import Path

import pathspec
import pytest

from sti.errors import InvalidInput
from sti.ignore import IGNORE_FILE, ignore_matcher, in_git_metadata

PATHS = [
    ".git/",
    ".git/config",
    ".git/objects/ab/cdef",
    "a/.git/",
    "a/b/.git/HEAD",
    ".git",  # a file (a worktree's or submodule's pointer) is kept
    "a/.git",
    ".gitignore",
    ".github/workflows/ci.yml",
    "x.git/",
    "a/x.git/y",
    ".git-keep/",
    "src/.gitkeep",
    "app.py",
    "my.git/config",
]


@pytest.mark.parametrize("path", PATHS)
def test_git_metadata_is_what_the_pattern_dot_git_matches(path: str) -> None:
    assert in_git_metadata(path) == pathspec.GitIgnoreSpec.from_lines([".git/"]).match_file(path)


@pytest.mark.parametrize("content", ["", "\n\n", "# only comments\n#another\n", "   \n"])
def test_an_ignore_file_without_patterns_leaves_out_git_metadata_only(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / IGNORE_FILE).write_text(content)
    skip = ignore_matcher(tmp_path)
    assert [path for path in PATHS if skip(path)] == [p for p in PATHS if in_git_metadata(p)]


def test_a_pattern_file_too_large_or_a_pattern_too_long_is_refused(tmp_path: Path) -> None:
    (tmp_path / IGNORE_FILE).write_text("*.log\n" * 200_000)
    with pytest.raises(InvalidInput, match="larger than"):
        ignore_matcher(tmp_path)
    (tmp_path / IGNORE_FILE).unlink()
    with pytest.raises(InvalidInput, match="--exclude: a pattern longer than"):
        ignore_matcher(tmp_path, ["x" * 5000])


def test_patterns_of_the_source_and_of_exclude_are_applied(tmp_path: Path) -> None:
    (tmp_path / IGNORE_FILE).write_text("# build output\n*.log\n  #not-a-comment\n")
    skip = ignore_matcher(tmp_path, ["secrets/"])
    assert skip("debug.log")
    assert skip("secrets/")  # a walk does not enter it
    assert skip("a/.git/")
    assert skip("  #not-a-comment")
    assert not skip("app.py")


def test_an_s2iignore_applies_next_to_the_stiignore(tmp_path: Path) -> None:
    (tmp_path / IGNORE_FILE).write_text("*.log\n")
    (tmp_path / ".s2iignore").write_text("tmp/\n!keep.log\n")
    skip = ignore_matcher(tmp_path)
    assert skip("debug.log") and skip("tmp/")
    assert not skip("keep.log")  # its negation comes after the .stiignore's pattern
    assert not skip("app.py")
    (tmp_path / ".s2iignore").write_text("*.tmp\n" * 200_000)
    with pytest.raises(InvalidInput, match=r"\.s2iignore is larger than"):
        ignore_matcher(tmp_path)


def test_an_s2iignore_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("app.py\n")
    (tmp_path / ".s2iignore").symlink_to(tmp_path / "elsewhere")
    assert not ignore_matcher(tmp_path)("app.py")
