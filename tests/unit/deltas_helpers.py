"""Helpers for the delta upload tests: a source tree with a bit of everything, edits of every
kind, and the tree the worker streams into a build for an uploaded source."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sti.blobstore import BlobStore
from sti.tarstreams import stream_tar
from sti_submit.manifests import ManifestCache
from sti_submit.upload import SourceUpload, Uploaded
from sti_worker.engine.sources import SourcePolicy
from sti_worker.uploads import streamer

# what one member of the streamed tree is: kind, mode, mtime, content or link target
Member = tuple[str, int, int, bytes]


def make_tree(root: Path) -> Path:
    """A source of files, directories, links and a .git, with whole-second times, of its own."""
    root.mkdir(parents=True)
    (root / f"{uuid.uuid4()}.txt").write_text("id\n")  # not the fingerprint of another test
    (root / "app.py").write_text("print('app')\n")
    (root / "run.sh").write_text("#!/bin/sh\nexec python app.py\n")
    (root / "run.sh").chmod(0o755)
    (root / "lib" / "deep").mkdir(parents=True)
    (root / "lib" / "util.py").write_text("def util(): pass\n" * 500)
    (root / "lib" / "deep" / "leaf.txt").write_text("leaf\n")
    (root / "old").mkdir()
    (root / "old" / "a.txt").write_text("a\n")
    (root / "old" / "sub").mkdir()
    (root / "old" / "sub" / "b.txt").write_text("b\n")
    (root / "emptied").mkdir()
    (root / "emptied" / "one.txt").write_text("one\n")
    (root / "to-file").mkdir()
    (root / "to-file" / "inner.txt").write_text("inner\n")
    (root / "to-dir").write_text("a file first\n")
    (root / "static").mkdir()
    (root / "static" / "big.css").write_text("body { margin: 0 }\n" * 4000)
    os.symlink("app.py", root / "link")
    os.symlink("lib", root / "dirlink")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    settle(root)
    return root


def edit_everything(root: Path) -> None:
    """Changed, added, removed and renamed files, a changed mode, links changed and replaced,
    new and removed directories, an emptied one, a directory that became a file and a file that
    became a directory; .git changes too (and is never sent)."""
    edit_removing_nothing(root)
    (root / "lib" / "deep" / "leaf.txt").rename(root / "lib" / "deep" / "renamed.txt")
    shutil.rmtree(root / "old")
    (root / "emptied" / "one.txt").unlink()
    settle(root)


def edit_removing_nothing(root: Path) -> None:
    """Every edit but removals: what is below a directory that becomes a file goes with it."""
    (root / "app.py").write_text("print('app, edited')\n")
    (root / "run.sh").chmod(0o700)
    (root / "added.txt").write_text("new\n")
    (root / "fresh" / "nested").mkdir(parents=True)
    (root / "fresh" / "nested" / "n.txt").write_text("n\n")
    shutil.rmtree(root / "to-file")
    (root / "to-file").write_text("now a file\n")
    (root / "to-dir").unlink()
    (root / "to-dir").mkdir()
    (root / "to-dir" / "x.txt").write_text("x\n")
    (root / "lib").chmod(0o700)
    (root / "link").unlink()
    os.symlink("run.sh", root / "link")
    (root / "dirlink").unlink()
    (root / "dirlink").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    settle(root)


def settle(root: Path) -> None:
    """Whole-second times on every entry (as a tar keeps them), the same on every run."""
    for current, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(current, name), (1_700_000_000, 1_700_000_000), follow_symlinks=False)


def submit(store: BlobStore, root: Path, cache: ManifestCache | None, **kw: object) -> Uploaded:
    """What sti-submit does with a directory: its reference, then its bytes."""
    upload = SourceUpload(store, root, history=cache, **kw)  # type: ignore[arg-type]
    upload.open()
    return upload.send()


def streamed_tree(
    store: BlobStore,
    source: str,
    context_dir: str | None = None,
    policy: SourcePolicy | None = None,
) -> dict[str, Member]:
    """The tree the worker streams into a build for an uploaded source, member by member."""
    part = streamer(lambda: store)(source, context_dir, policy or SourcePolicy())
    data = b"".join(stream_tar([part]))
    return tree_of(data)


def tree_of(data: bytes) -> dict[str, Member]:
    found: dict[str, Member] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in _members(tar):
            content = b""
            if member.isreg():
                extracted = tar.extractfile(member)
                assert extracted is not None
                content = extracted.read()
            elif member.issym() or member.islnk():
                content = member.linkname.encode()
            kind = "d" if member.isdir() else "l" if member.issym() else "f"
            assert member.name not in found, f"{member.name} appears twice"
            found[member.name.rstrip("/")] = (kind, member.mode, int(member.mtime), content)
    return found


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    yield from tar
