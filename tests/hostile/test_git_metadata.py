"""Git metadata is never part of a source, whatever the patterns: tried as a user who keeps
.gitignore with `!.git*` (and so every other negation spelling), with --exclude and .stiignore,
a nested repository, a worktree's or submodule's .git file, a case variant, for every way a
source reaches a build: the laptop's packer and its fingerprint, the worker's directory sources
(a --local directory, a clone, an extracted archive), the worker's re-tar of an uploaded
directory or archive, --context-dir into .git (spelled, or through a link). The .git of
.git/config (CI tokens in http.extraheader) never reaches /tmp/src."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import docker
import git
import pytest
import zstandard

from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti.tarstreams import stream_tar
from sti.upload_refs import PACKED_DIR_PREFIX
from sti_submit.upload import fingerprint, pack_directory
from sti_worker.engine.archives import (
    ExtractLimits,
    extract_tar_stream,
    extract_zip,
    retar_tar_stream,
)
from sti_worker.engine.methods import PrepareSpec
from sti_worker.engine.protocol import Scripts
from sti_worker.engine.source_images import SourceOrigin
from sti_worker.engine.sources import FetchedSource, SourcePolicy, Sources
from tests.dockertools import image_files
from tests.queue_helpers import json_result, sti_submit
from tests.services import Worker

TOKEN = "AUTHORIZATION: basic c2VjcmV0LXRva2Vu"
GIT_CONFIG = f'[http "https://git.example/"]\n\textraheader = {TOKEN}\n'

# every file of the source: its git metadata (a repository, a nested one, a worktree's .git
# file, a case variant that is the repository on a case-insensitive disk) and what is kept
METADATA = {
    ".git/config": GIT_CONFIG,
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/objects/ab/cdef": "blob\n",
    "vendor/lib/.git/config": GIT_CONFIG,
    "worktree/.git": "gitdir: ../.git/worktrees/worktree\n",
    ".GIT/config": GIT_CONFIG,
    "deep/er/.Git/config": GIT_CONFIG,
}
KEPT = {
    "app.py": "print('hello')\n",
    ".gitignore": "*.log\n",
    ".gitmodules": '[submodule "lib"]\n',
    ".github/workflows/ci.yml": "on: push\n",
    "vendor/lib/lib.py": "x = 1\n",
    "worktree/main.py": "y = 2\n",
    "bare.git/config": "[core]\n\tbare = true\n",  # a bare repository kept as content, by name
    "deep/er/notes.txt": "kept\n",
}
KEPT_NAMES = {
    *KEPT,
    ".github",
    ".github/workflows",
    "vendor",
    "vendor/lib",
    "worktree",
    "bare.git",
    "deep",
    "deep/er",
}

# every way to say "keep it" that a gitignore reader could take to mean .git
NEGATIONS = [
    "!.git",
    "!.git/",
    "!/.git",
    "!/.git/",
    "!**/.git",
    "!**/.git/",
    "!**/.git/**",
    "!.git/**",
    "!.git/config",
    "!.git*",
    "!.*",
    "!*/",
    "!*",
    "!**",
    "!/**",
    "!**/config",
    "!.GIT",
    "!.[g]it",
    "!.git?",
    "![.]git",
]


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _write(tmp_path / "app", {**METADATA, **KEPT})


def _names(tar_bytes: bytes, prefix: str) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = {member.name.rstrip("/") for member in tar.getmembers()}
    return {name.removeprefix(f"{prefix}/") for name in names} - {prefix}


def _packed(root: Path, exclude: Iterable[str] = ()) -> set[str]:
    """What sti-submit uploads of a directory."""
    packed = b"".join(pack_directory(root, exclude))
    tar = zstandard.ZstdDecompressor().decompressobj().decompress(packed)
    return _names(tar, PACKED_DIR_PREFIX)


def _worker_part(root: Path, exclude: Iterable[str] = ()) -> set[str]:
    """What the worker (and --local) puts into the build of a directory source."""
    part = Sources().part(FetchedSource(str(root), exclude=tuple(exclude)))
    return _names(b"".join(stream_tar([part])), "src")


def _with_ignore_file(root: Path, name: str, pattern: str) -> Path:
    (root / name).write_text(f"*.log\n{pattern}\n")
    return root


def _names_without(names: set[str], *ignore_files: str) -> set[str]:
    return names - set(ignore_files)


@pytest.mark.parametrize("pattern", NEGATIONS)
@pytest.mark.parametrize("where", [".stiignore", ".s2iignore", "--exclude"])
def test_no_negation_brings_git_metadata_into_an_upload_or_a_directory_build(
    source: Path, pattern: str, where: str
) -> None:
    exclude = [".git/", pattern] if where == "--exclude" else []
    if where != "--exclude":
        _with_ignore_file(source, where, pattern)
    for read in (_packed, _worker_part):
        assert _names_without(read(source, exclude), where) == KEPT_NAMES, (read, pattern)


@pytest.mark.parametrize("pattern", ["!.git*", "!**", "!*/"])
def test_a_change_in_git_metadata_changes_no_fingerprint_and_a_kept_file_does(
    source: Path, pattern: str
) -> None:
    """The fingerprint is of what packing reads: .git is left out of both, so a commit (or a
    fetch) does not make an unchanged source look changed, nor upload its metadata."""
    _with_ignore_file(source, ".stiignore", pattern)
    before = fingerprint(source).value
    (source / ".git" / "config").write_text(GIT_CONFIG + "\t# rotated\n")
    (source / ".git" / "objects" / "cd").mkdir()
    (source / ".git" / "objects" / "cd" / "ef01").write_text("new object\n")
    (source / "worktree" / ".git").write_text("gitdir: elsewhere\n")
    (source / "vendor" / "lib" / ".git" / "FETCH_HEAD").write_text("abc\n")
    assert fingerprint(source).value == before
    (source / ".gitignore").write_text("*.tmp\n")
    assert fingerprint(source).value != before


def test_a_source_that_is_a_git_directory_is_refused(source: Path, tmp_path: Path) -> None:
    """However SOURCE reaches it: a link named otherwise (--local resolved it and refused, the
    upload packed .git/config), or a directory inside it."""
    (tmp_path / "link").symlink_to(source / ".git")
    (source / ".git" / "objects" / "pack").mkdir()
    spellings = [
        source / ".git",
        source / ".GIT",
        tmp_path / "link",
        source / ".git" / "objects",
        source / "vendor" / "lib" / ".git" / ".." / ".git",
        source / "vendor" / ".." / ".git" / "objects" / "pack",
    ]
    for spelling in spellings:
        with pytest.raises(InvalidInput, match="is git metadata"):
            fingerprint(spelling)
        with pytest.raises(InvalidInput, match="is git metadata"):
            _worker_part(spelling)


@pytest.mark.parametrize(
    "context_dir", [".git", ".git/", "./.git", ".git/modules/lib", "vendor/lib/.git", ".GIT"]
)
def test_a_context_dir_in_git_metadata_is_refused(context_dir: str) -> None:
    with pytest.raises(InvalidInput, match="is git metadata, never part of a source"):
        BuildRequest("app", "builder", "app", context_dir=context_dir)


@pytest.mark.parametrize("target", [".git", ".git/modules", "vendor/lib/.git"])
def test_a_context_dir_that_links_into_git_metadata_is_refused(
    source: Path, tmp_path: Path, target: str
) -> None:
    (source / ".git" / "modules").mkdir()
    (source / "app").symlink_to(target)
    sources = Sources(SourcePolicy(allow_local_paths=True))
    with pytest.raises(InvalidInput, match="git metadata"):
        fetched = sources.fetch(str(source), tmp_path, lambda _: None, context_dir="app")
        _worker_part(Path(fetched.path))


def _tar(files: dict[str, str], top: str = "") -> bytes:
    """A .tar.gz as tar czf makes one: each directory's entry before its files."""
    directories = {str(parent) for name in files for parent in Path(name).parents} - {"."}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(directories):
            info = tarfile.TarInfo(f"{top}{name}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _retarred(archive: bytes, kind: str, **options: str) -> set[str]:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        retar_tar_stream(io.BytesIO(archive), kind, ExtractLimits(), tar, **options)  # type: ignore[arg-type]
    return _names(out.getvalue(), "src")


def test_an_uploaded_archive_or_packed_directory_with_git_metadata_streams_without_it() -> None:
    """An archive streams into the build as it is (tar czf of a checkout holds its .git), and
    so would a directory packed by an older sti-submit that let a negation bring .git back."""
    files = {**METADATA, **KEPT}
    assert _retarred(_tar(files), "tar.gz") == KEPT_NAMES
    packed = _tar(files, top=f"{PACKED_DIR_PREFIX}/")
    assert _retarred(packed, "tar.gz", root=PACKED_DIR_PREFIX) == KEPT_NAMES
    selected = _retarred(_tar(files), "tar.gz", context_dir="vendor")
    assert selected == {"lib", "lib/lib.py"}


def test_an_archive_whose_context_dir_is_git_metadata_gives_nothing_of_it() -> None:
    """Spelled, --context-dir .git is refused before; an archive's .git stays out even so."""
    assert _retarred(_tar({**METADATA, **KEPT}), "tar.gz", context_dir=".git") == set()


def _hard_linked_into_git(target: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = GIT_CONFIG.encode()
        info = tarfile.TarInfo(target)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("innocent.txt")
        link.type, link.linkname = tarfile.LNKTYPE, target
        tar.addfile(link)
    return buffer.getvalue()


@pytest.mark.parametrize("target", [".git/config", "vendor/.GIT/config", "worktree/.git"])
def test_a_hard_link_to_git_metadata_in_an_archive_is_refused(tmp_path: Path, target: str) -> None:
    """Streamed, the file it names is left out; extracted (a downloaded archive), it would be
    a second name for .git/config, which the worker packs as a file of its own."""
    archive = _hard_linked_into_git(target)
    refusal = rf"hard link to '{re.escape(target)}', git metadata"
    with pytest.raises(InvalidInput, match=refusal):
        _retarred(archive, "tar")
    with pytest.raises(InvalidInput, match=refusal):
        extract_tar_stream(io.BytesIO(archive), tmp_path, "tar", ExtractLimits())
    assert not (tmp_path / "innocent.txt").exists()


def test_a_source_image_copied_while_git_metadata_went_in_is_not_reused() -> None:
    """A source image is named by the upload's digest: one copied by a worker whose re-tar
    kept an archive's .git (tar czf of a checkout, submitted again unchanged) would still be
    started from, .git/config and all. The copy's format is part of the name."""
    scripts = Scripts("sti", "/usr/bin/prepare", "/usr/bin/run", "/usr/bin/save-artifacts")
    spec = PrepareSpec("builder", (), (), {}, "a" * 32, scripts)
    origin = SourceOrigin("sti+upload://archive/sha256:" + "0" * 64 + "/app.tar.gz", None, ())
    described = {
        "format": "sti-source/1",  # the copies made before git metadata was left out
        "upload": origin.upload,
        "context_dir": None,
        "exclude": [],
        "base": "builder",
        "owner": None,
        "root": "/tmp",
        "scripts": [],
    }
    before = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    assert origin.key(spec) != before


def test_an_extracted_archive_builds_without_its_git_metadata(tmp_path: Path) -> None:
    """A downloaded archive, or an uploaded one too large to stream, is extracted and read as
    a directory: tar and zip alike."""
    files = {**METADATA, **KEPT}
    from_tar = tmp_path / "from-tar"
    from_tar.mkdir()
    extract_tar_stream(io.BytesIO(_tar(files)), from_tar, "tar.gz", ExtractLimits())
    assert _worker_part(from_tar) == KEPT_NAMES
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    from_zip = tmp_path / "from-zip"
    from_zip.mkdir()
    extract_zip(archive, from_zip, ExtractLimits())
    assert _worker_part(from_zip) == KEPT_NAMES


def _commit_all(repo: git.Repo, message: str) -> None:
    repo.git.add(A=True)
    repo.git.commit(m=message, env={**_GIT_IDENTITY})


_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "a",
    "GIT_AUTHOR_EMAIL": "a@example.com",
    "GIT_COMMITTER_NAME": "a",
    "GIT_COMMITTER_EMAIL": "a@example.com",
}


def test_a_clone_builds_without_its_git_metadata_or_its_submodules(tmp_path: Path) -> None:
    """The worker's clone has a .git, and a submodule's checkout a .git file; a .stiignore in
    the repository with `!.*` keeps neither."""
    library = git.Repo.init(tmp_path / "library")
    _write(Path(library.working_dir), {"lib.py": "x = 1\n"})
    _commit_all(library, "library")
    app = git.Repo.init(tmp_path / "app")
    _write(Path(app.working_dir), {"app.py": "print(1)\n", ".stiignore": "!.*\n!**\n"})
    app.git.execute(
        ["git", "-c", "protocol.file.allow=always", "submodule", "add", library.working_dir, "lib"]
    )
    _commit_all(app, "app")
    sources = Sources(SourcePolicy(allow_file_urls=True))
    workdir = tmp_path / "work"
    workdir.mkdir()
    fetched = sources.fetch(f"file://{app.working_dir}", workdir, lambda _: None)
    assert (Path(fetched.path) / ".git").is_dir()
    assert (Path(fetched.path) / "lib" / ".git").is_file()
    assert _worker_part(Path(fetched.path)) == {
        "app.py",
        ".stiignore",
        ".gitmodules",
        "lib",
        "lib/lib.py",
    }


def test_an_uploaded_checkout_with_negations_has_no_git_in_the_image(
    worker: Worker,
    broker_url: str,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    source: Path,
) -> None:
    """Through the queue, as a user keeping .gitignore would: sti-fake copies /tmp/src into the
    image at /sti-fake/src."""
    _with_ignore_file(source, ".stiignore", "!.git*\n!**")
    args = ["build", str(source), images["sti-fake"], app_tag, "--broker", broker_url, "--json"]
    done = sti_submit(*args, "--exclude", "!.git/", "--exclude", "!/.GIT/")
    assert json_result(done)["success"] is True, done.stdout + done.stderr
    copied = image_files(api, app_tag, "/sti-fake/src")
    assert set(copied) == {*KEPT, ".stiignore"}, sorted(copied)
    assert not [name for name, data in copied.items() if TOKEN.encode() in data]
