"""The fingerprint of a source directory: what decides that a resubmitted source is unchanged
and need not be packed or uploaded again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from sti_submit.upload import fingerprint, pack_directory


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "lib" / "deep").mkdir(parents=True)
    (root / "lib" / "deep" / "c.py").write_text("c = 3\n")
    (root / "lib" / "b.py").write_text("b = 2\n")
    (root / "a.py").write_text("a = 1\n")
    (root / "café.txt").write_text("crème\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "logs").mkdir()
    (root / "logs" / "today.log").write_text("started\n")
    (root / ".stiignore").write_text("logs/\n*.tmp\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s\n")
    (root / "linked-dir").symlink_to(outside)
    (root / "linked-file").symlink_to("a.py")
    (root / "dangling").symlink_to("nowhere")
    return root


def _as_walked(root: Path, exclude: tuple[str, ...] = ()) -> str:
    """The digest as it was first defined, with os.walk: it must not change, or every source
    stored before looks changed and is uploaded again."""
    from sti.ignore import ignore_matcher

    hasher = hashlib.sha256(f"sti-pack/4\0{root.name}\0".encode())
    skip = ignore_matcher(root, exclude)
    for current, dirnames, filenames in os.walk(root):
        relative = Path(current).relative_to(root).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        dirnames[:] = sorted(d for d in dirnames if not skip(f"{prefix}{d}/"))
        for name in sorted(filenames) + dirnames:
            if name in filenames and skip(f"{prefix}{name}"):
                continue
            path = Path(current, name)
            info = path.lstat()
            link = os.readlink(path) if path.is_symlink() else ""
            entry = f"{prefix}{name}\0{info.st_mode}\0{info.st_size}\0{info.st_mtime_ns}\0{link}\0"
            hasher.update(entry.encode())
    return hasher.hexdigest()


@pytest.mark.parametrize("exclude", [(), ("lib/deep/",), ("*.py",)])
def test_the_digest_is_the_one_sources_were_stored_under(
    tree: Path, exclude: tuple[str, ...]
) -> None:
    assert fingerprint(tree, exclude).value == _as_walked(tree, exclude)


def test_what_packing_reads_changes_it(tree: Path) -> None:
    before = fingerprint(tree).value
    later = time.time() + 5
    os.utime(tree / "lib" / "deep" / "c.py", (later, later))
    assert fingerprint(tree).value != before
    touched = fingerprint(tree).value
    (tree / "lib" / "deep" / "new").mkdir()
    assert fingerprint(tree).value != touched
    grown = fingerprint(tree).value
    (tree / "a.py").chmod(0o600)
    assert fingerprint(tree).value != grown
    moded = fingerprint(tree).value
    (tree / "linked-file").unlink()
    (tree / "linked-file").symlink_to("lib/b.py")
    assert fingerprint(tree).value != moded


def test_what_packing_leaves_out_does_not(tree: Path) -> None:
    before = fingerprint(tree, ("*.bak",)).value
    (tree / "logs" / "today.log").write_text("more and more\n")
    (tree / "scratch.tmp").write_text("x\n")
    (tree / "old.bak").write_text("y\n")
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    (tree / "linked-dir" / "secret").write_text("a link is packed as a link, never followed\n")
    assert fingerprint(tree, ("*.bak",)).value == before


def test_it_bounds_what_packing_uploads(tree: Path) -> None:
    (tree / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    long_name = tree / ("n" * 200)
    long_name.mkdir()
    (long_name / ("f" * 200)).write_bytes(os.urandom(1000))
    packed = sum(len(chunk) for chunk in pack_directory(tree))
    assert packed <= fingerprint(tree).packed_bytes_at_most


def test_a_single_file_is_fingerprinted_by_its_own_metadata(tree: Path) -> None:
    found = fingerprint(tree / "a.py")
    assert found.packed_bytes_at_most == len("a = 1\n")
    (tree / "a.py").write_text("a = 10\n")
    assert fingerprint(tree / "a.py").value != found.value
