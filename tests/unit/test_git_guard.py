"""git sources judge every address they lead to: a redirect is not followed, and each
submodule URL (as git resolves it) is checked before anything is fetched from it. Real git,
real HTTP servers on 127.0.0.1 (allowed) and 127.0.0.2 (not), no Docker."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import git
import pytest

from sti.errors import InvalidInput, SourceFetchFailed
from sti_worker.engine.archives import ExtractLimits
from sti_worker.engine.sources import SourcePolicy, Sources
from tests.unit.http_servers import Server

POLICY = SourcePolicy(
    allow_file_urls=True,
    allow_internal_urls=False,
    allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
)


@pytest.fixture
def internal() -> Iterator[Server]:
    server = Server("127.0.0.2")
    yield server
    server.close()


@pytest.fixture
def allowed() -> Iterator[Server]:
    server = Server("127.0.0.1")
    yield server
    server.close()


def _fetch(url: str, workdir: Path) -> Path:
    workdir.mkdir()
    return Path(Sources(POLICY).fetch(url, workdir, lambda line: None).path)


def test_a_git_redirect_to_an_internal_address_is_not_followed(
    allowed: Server, internal: Server, tmp_path: Path
) -> None:
    with pytest.raises(SourceFetchFailed):
        _fetch(f"{allowed.url}/to.git?{internal.url}/repo.git", tmp_path / "w")
    assert allowed.requests  # git asked, was redirected ...
    assert internal.requests == []  # ... and did not follow


def _repo_with_submodule(root: Path, submodule_url: str) -> Path:
    repo = git.Repo.init(root, initial_branch="main")
    (root / "app.txt").write_text("app\n")
    (root / ".gitmodules").write_text(f'[submodule "lib"]\n\tpath = lib\n\turl = {submodule_url}\n')
    repo.index.add(["app.txt", ".gitmodules"])
    repo.git.update_index("--add", "--cacheinfo", f"160000,{'a' * 40},lib")
    repo.index.commit("with a submodule")
    return root


@pytest.mark.parametrize(
    "url", ["http://127.0.0.2:{port}/lib.git", "http://127.0.0.1:1@127.0.0.2:{port}/lib.git"]
)
def test_a_submodule_on_an_internal_address_is_refused_before_it_is_fetched(
    internal: Server, tmp_path: Path, url: str
) -> None:
    port = internal.url.rsplit(":", 1)[1]
    source = _repo_with_submodule(tmp_path / "repo", url.format(port=port))
    with pytest.raises(InvalidInput, match=r"127\.0\.0\.2"):
        _fetch(f"file://{source}", tmp_path / "w")
    assert internal.requests == []


def test_a_relative_submodule_url_is_judged_as_git_resolves_it(
    internal: Server, tmp_path: Path
) -> None:
    """Relative to the superproject's URL: here a file:// one, so a local path, allowed."""
    lib = git.Repo.init(tmp_path / "lib", initial_branch="main")
    (tmp_path / "lib" / "lib.txt").write_text("lib\n")
    lib.index.add(["lib.txt"])
    lib.index.commit("lib")
    source = _repo_with_submodule(tmp_path / "repo", "../lib")
    repo = git.Repo(source)
    repo.git.update_index("--cacheinfo", f"160000,{lib.head.commit.hexsha},lib")
    repo.index.commit("pin lib")
    fetched = _fetch(f"file://{source}", tmp_path / "w")
    assert (fetched / "lib" / "lib.txt").read_text() == "lib\n"


def _repo_of(root: Path, files: dict[str, bytes]) -> Path:
    repo = git.Repo.init(root, initial_branch="main")
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    repo.index.add(list(files))
    repo.index.commit("files")
    return root


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (ExtractLimits(max_files=20), "more than 20 files"),
        (ExtractLimits(max_total_bytes=10_000), "more than 10000 bytes"),
    ],
)
def test_a_repository_is_held_to_the_source_limits(
    tmp_path: Path, limits: ExtractLimits, message: str
) -> None:
    source = _repo_of(tmp_path / "repo", {f"d/f{n}": b"x" * 1000 for n in range(30)})
    (tmp_path / "w").mkdir()
    policy = replace(POLICY, limits=limits)
    with pytest.raises(InvalidInput, match=message):
        Sources(policy).fetch(f"file://{source}", tmp_path / "w", lambda line: None)
    small = _repo_of(tmp_path / "small", {"a.txt": b"x"})
    (tmp_path / "w2").mkdir()
    Sources(policy).fetch(f"file://{small}", tmp_path / "w2", lambda line: None)
