"""What a source directory leaves out: git metadata always (decided without parsing a pattern
when the source has none of its own; no pattern brings it back: tests/hostile/test_git_metadata),
its .stiignore and --exclude patterns, for a walk that does not enter what it leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sti.errors import InvalidInput
from sti.ignore import IGNORE_FILE, ignore_matcher, in_git_metadata

# path -> whether it is git metadata: a .git directory or file at any depth, in any case
PATHS = {
    ".git/": True,
    ".git/config": True,
    ".git/objects/ab/cdef": True,
    "a/.git/": True,
    "a/b/.git/HEAD": True,
    ".git": True,  # a file: the pointer of a worktree or a submodule
    "a/.git": True,
    ".GIT/config": True,
    "a/.Git": True,
    ".gitignore": False,
    ".gitmodules": False,
    ".github/workflows/ci.yml": False,
    "x.git/": False,  # a bare repository someone keeps in the source: its content, by name
    "a/x.git/y": False,
    ".git-keep/": False,
    "src/.gitkeep": False,
    "app.py": False,
    "my.git/config": False,
    "a.git": False,
    ".git.d/x": False,
}


@pytest.mark.parametrize(("path", "expected"), PATHS.items())
def test_git_metadata_is_any_entry_named_dot_git(path: str, expected: bool) -> None:
    assert in_git_metadata(path) is expected


@pytest.mark.parametrize("content", ["", "\n\n", "# only comments\n#another\n", "   \n"])
def test_an_ignore_file_without_patterns_leaves_out_git_metadata_only(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / IGNORE_FILE).write_text(content)
    skip = ignore_matcher(tmp_path)
    assert [path for path in PATHS if skip(path)] == [p for p, git in PATHS.items() if git]


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
