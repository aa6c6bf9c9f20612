"""A work dir is removed whatever a source put in it: thousands of levels deep (Python's rmtree
recurses per level), read-only directories, links to what is not the build's."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from sti_worker.engine.trees import remove_tree


def _deep(root: Path, levels: int) -> None:
    """Made through directory descriptors: the whole path is far beyond PATH_MAX."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = below
        with open(os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as leaf:
            leaf.write("deep\n")
    finally:
        os.close(fd)


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "work"
    _deep(root, sys.getrecursionlimit() + 500)
    with pytest.raises((RecursionError, OSError)):
        shutil.rmtree(root)  # what cleanup used before
    remove_tree(root)
    assert not root.exists()


def test_links_are_removed_not_followed_and_read_only_directories_emptied(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the build's\n")
    root = tmp_path / "work"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "file").write_text("x")
    (root / "link-to-dir").symlink_to(outside)
    (root / "link-to-file").symlink_to(outside / "keep.txt")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(root / "fifo")
    (root / "locked").chmod(0o500)
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "not the build's\n"


def test_a_missing_tree_or_a_file_is_fine(tmp_path: Path) -> None:
    remove_tree(tmp_path / "never-made")
    (tmp_path / "a-file").write_text("x")
    remove_tree(tmp_path / "a-file")
    assert not (tmp_path / "a-file").exists()
