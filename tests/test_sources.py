"""What SOURCE can be (git refs and subdirectories, uploaded directories, archives, URLs, single
files) and how every hostile source is refused."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import docker
import git
import pytest
import redis

from sti import keys
from sti.blobstore import BlobStore
from sti.errors import InvalidInput
from sti.model import BuildRequest, Result
from sti_submit.client import StiClient
from sti_submit.upload import zstd_frames
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build
from sti_worker.engine.sources import SourcePolicy, Sources, check_git_url
from tests.dockertools import image_tree, run_and_read
from tests.queue_helpers import json_result, make_source, sti_submit
from tests.services import Worker

# in-process, as sti-submit --local: the machine's own file:// git URLs are allowed
FILE_URLS_ALLOWED = SourcePolicy(allow_file_urls=True)


def build_here(
    docker_host: DockerHost, request: BuildRequest, policy: SourcePolicy = FILE_URLS_ALLOWED
) -> Result:
    lines: list[str] = []
    return run_build(docker_host, request, lines.append, "test", sources=Sources(policy))


# git


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    """main: v1 (tagged v1), then v2 with a nested web/ app; branch feature: f1."""
    made = git.Repo.init(tmp_path / "repo", initial_branch="main")
    root = Path(made.working_tree_dir or "")
    (root / "version.txt").write_text("v1\n")
    made.index.add(["version.txt"])
    made.index.commit("v1")
    made.create_tag("v1")
    (root / "version.txt").write_text("v2\n")
    (root / "web").mkdir()
    (root / "web" / "index.html").write_text("<h1>web</h1>\n")
    made.index.add(["version.txt", "web/index.html"])
    made.index.commit("v2")
    made.create_head("feature").checkout()
    (root / "version.txt").write_text("f1\n")
    made.index.add(["version.txt"])
    made.index.commit("f1")
    made.heads.main.checkout()
    return made


@pytest.mark.parametrize(
    ("ref", "expected"), [(None, "v2\n"), ("v1", "v1\n"), ("feature", "f1\n"), ("commit", "v1\n")]
)
def test_git_ref_selects_branch_tag_or_commit_and_the_result_names_the_commit(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    repo: git.Repo,
    ref: str | None,
    expected: str,
) -> None:
    if ref == "commit":
        ref = repo.tags["v1"].commit.hexsha
    url = f"file://{repo.working_tree_dir}"
    result = build_here(docker_host, BuildRequest(url, images["sti-fake"], app_tag, ref=ref))
    assert result.success, result.messages
    resolved = repo.commit(ref or "main").hexsha
    assert result.revision == resolved
    assert result.to_json()["revision"] == resolved
    files = run_and_read(api, app_tag, "/sti-fake/src")
    assert files["version.txt"] == expected.encode()
    assert ".git" not in {name.split("/")[0] for name in files}


def test_a_repository_whose_stiignore_is_built_to_backtrack_builds_in_seconds(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, repo: git.Repo
) -> None:
    """The worker reads a git source's .stiignore: a submitter writes both it and the names."""
    root = Path(repo.working_tree_dir or "")
    (root / ".stiignore").write_text("*a" * 30 + "*b\n")
    (root / ("a" * 200)).write_text("kept\n")
    repo.index.add([".stiignore", "a" * 200])
    repo.index.commit("hostile patterns")
    started = time.monotonic()
    result = build_here(docker_host, BuildRequest(f"file://{root}", images["sti-fake"], app_tag))
    assert result.success, result.messages
    assert time.monotonic() - started < 30


def test_git_context_dir_builds_only_that_subdirectory(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    repo: git.Repo,
) -> None:
    url = f"file://{repo.working_tree_dir}"
    request = BuildRequest(url, images["sti-fake"], app_tag, context_dir="web")
    assert build_here(docker_host, request).success
    assert set(run_and_read(api, app_tag, "/sti-fake/src")) - {""} == {"index.html"}


@pytest.mark.parametrize("ignore", [False, True])
def test_git_submodules_are_fetched_unless_ignored(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    repo: git.Repo,
    tmp_path: Path,
    ignore: bool,
) -> None:
    library = git.Repo.init(tmp_path / "lib", initial_branch="main")
    (tmp_path / "lib" / "lib.txt").write_text("library\n")
    library.index.add(["lib.txt"])
    library.index.commit("lib")
    repo.git.execute(
        [
            "git",
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            f"file://{tmp_path / 'lib'}",
            "lib",
        ]
    )
    repo.index.commit("add lib")
    url = f"file://{repo.working_tree_dir}"
    request = BuildRequest(url, images["sti-fake"], app_tag, ignore_submodules=ignore)
    assert build_here(docker_host, request).success
    files = run_and_read(api, app_tag, "/sti-fake/src")
    assert ("lib/lib.txt" in files) is not ignore


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch /tmp/pwned",
        "-oProxyCommand=touch /tmp/pwned",
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "ssh://-oProxyCommand=touch%20/tmp/pwned/repo",
        "file:///etc",
    ],
)
def test_git_urls_that_could_run_commands_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_git_url(url, SourcePolicy(allow_file_urls=False))


@pytest.mark.parametrize("ref", ["--upload-pack=x", "-b", "a..b", "a b", "x\ny"])
def test_refs_that_could_be_read_as_options_are_refused(
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    repo: git.Repo,
    ref: str,
) -> None:
    url = f"file://{repo.working_tree_dir}"
    result = build_here(docker_host, BuildRequest(url, images["sti-fake"], app_tag, ref=ref))
    assert result.error_code == "InvalidInput"


def test_file_urls_are_refused_unless_the_worker_allows_them(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, repo: git.Repo
) -> None:
    url = f"file://{repo.working_tree_dir}"
    request = BuildRequest(url, images["sti-fake"], app_tag)
    result = build_here(docker_host, request, SourcePolicy(allow_file_urls=False))
    assert result.error_code == "InvalidInput"
    assert "STI_ALLOW_FILE_URLS" in (result.error or {})["message"]


# uploaded directories


def test_uploaded_directory_honours_stiignore_and_exclude(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path)
    (source / ".stiignore").write_text("*.log\nnode_modules/\n")
    (source / "debug.log").write_text("noise\n")
    (source / "node_modules").mkdir()
    (source / "node_modules" / "big.js").write_text("x\n")
    (source / "secret.env").write_text("TOKEN=1\n")
    (source / "link").symlink_to("/etc/passwd")
    done = sti_submit(
        "build",
        str(source),
        images["sti-fake"],
        app_tag,
        "--exclude",
        "secret.*",
        "--broker",
        broker_url,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json_result(done)["success"]
    files = run_and_read(api, app_tag, "/sti-fake/src")
    assert {"index.html", "static/style.css", ".stiignore"} <= set(files)
    link = image_tree(api, app_tag, "/tmp/src")["link"]
    assert (link.kind, link.linkname) == ("symlink", "/etc/passwd")  # kept, never followed
    assert not {"debug.log", "node_modules", "secret.env"} & {name.split("/")[0] for name in files}


def test_a_pattern_built_to_backtrack_neither_hangs_the_client_nor_the_worker(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    """As a regular expression, *a*a*...*b against a long name of a's takes hours."""
    source = make_source(tmp_path)
    (source / ("a" * 200)).write_text("kept\n")
    (source / ".stiignore").write_text("*a" * 30 + "*b\n")
    started = time.monotonic()
    done = sti_submit(
        "build",
        str(source),
        images["sti-fake"],
        app_tag,
        "--exclude",
        "*a" * 30 + "*c",
        "--broker",
        broker_url,
        "--json",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json_result(done)["success"]
    assert time.monotonic() - started < 30


def test_submitting_the_same_content_again_uploads_nothing(
    images: dict[str, str], worker: Worker, client: StiClient, app_tag: str, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    said: list[str] = []

    def request() -> BuildRequest:
        return BuildRequest(str(source), images["sti-fake"], app_tag)

    first = client.wait(client.submit_build(request(), say=said.append))
    second = client.wait(client.submit_build(request(), say=said.append))
    assert first.success and second.success
    assert said[0].startswith("Uploaded ")
    assert said[1].startswith("Already uploaded: ")
    assert said[0].rsplit(" ", 1)[1] == said[1].rsplit(" ", 1)[1]  # the same digest


def test_upload_above_the_cap_is_refused_with_exit_2(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    (source / "blob.bin").write_bytes(os.urandom(300_000))
    env = dict(os.environ, STI_UPLOAD_MAX_BYTES="100000")
    done = sti_submit(
        "build", str(source), images["sti-fake"], app_tag, "--broker", broker_url, env=env
    )
    assert done.returncode == 2
    assert "STI_UPLOAD_MAX_BYTES" in done.stderr


def test_worker_refuses_an_upload_whose_content_does_not_match_its_digest(
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
) -> None:
    said: list[str] = []
    source = make_source(tmp_path)
    (source / "unique.txt").write_text(str(tmp_path))
    client.wait(
        client.submit_build(BuildRequest(str(source), images["sti-fake"], app_tag), say=said.append)
    )
    digest = said[0].rsplit(" ", 1)[1]
    store = redis.Redis.from_url(broker_url)
    chunks = store.hget(keys.blob_meta(digest), "name")  # the upload that stored it
    assert chunks
    store.set(keys.blob_chunk(chunks.decode(), 0), b"tampered")
    store.close()
    tampered = BuildRequest(f"sti+upload://{digest}/dir", images["sti-fake"], app_tag)
    result = client.wait(client.submit_build(tampered))
    assert result.error_code in ("SourceFetchFailed", "InvalidInput")


# archives, URLs and single files


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "pack"), [("app.tar.gz", _tar_gz), ("app.zip", _zip)])
def test_local_archive_is_extracted_into_tmp_src(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    name: str,
    pack: object,
) -> None:
    archive = tmp_path / name
    archive.write_bytes(pack({"index.html": b"<h1>a</h1>", "css/site.css": b"h1{}"}))  # type: ignore[operator]
    result = build_here(docker_host, BuildRequest(str(archive), images["sti-fake"], app_tag))
    assert result.success, result.messages
    assert {"index.html", "css/site.css"} <= set(run_and_read(api, app_tag, "/sti-fake/src"))


def test_single_file_is_delivered_as_tmp_src_name_through_the_queue(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    app_tag: str,
    tmp_path: Path,
) -> None:
    binary = tmp_path / "app.war"
    binary.write_bytes(b"PK-not-really-a-war")
    result = client.wait(
        client.submit_build(BuildRequest(str(binary), images["sti-fake"], app_tag))
    )
    assert result.success, result.messages
    assert run_and_read(api, app_tag, "/sti-fake/src") == {"app.war": b"PK-not-really-a-war"}


def test_archive_url_is_fetched_by_the_worker(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    app_tag: str,
    http_server: tuple[str, Path],
) -> None:
    base, root = http_server
    (root / "app.tgz").write_bytes(_tar_gz({"index.html": b"<h1>from url</h1>"}))
    request = BuildRequest(f"{base}/app.tgz?token=abc", images["sti-fake"], app_tag)
    result = client.wait(client.submit_build(request))
    assert result.success, result.messages
    assert run_and_read(api, app_tag, "/sti-fake/src") == {"index.html": b"<h1>from url</h1>"}


def test_archive_url_above_the_download_cap_is_refused(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, http_server: tuple[str, Path]
) -> None:
    base, root = http_server
    (root / "big.tar.gz").write_bytes(_tar_gz({"blob": os.urandom(200_000)}))
    request = BuildRequest(f"{base}/big.tar.gz", images["sti-fake"], app_tag)
    result = build_here(docker_host, request, SourcePolicy(download_max_bytes=50_000))
    assert result.error_code == "InvalidInput"
    assert "STI_DOWNLOAD_MAX_BYTES" in (result.error or {})["message"]


def test_missing_archive_url_fails_with_source_fetch_failed(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, http_server: tuple[str, Path]
) -> None:
    base, _ = http_server
    result = build_here(
        docker_host, BuildRequest(f"{base}/none.tar.gz", images["sti-fake"], app_tag)
    )
    assert result.error_code == "SourceFetchFailed"


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs.txt", "a/../../escape.txt"])
def test_hostile_archive_through_the_queue_fails_and_leaves_nothing(
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    app_tag: str,
    tmp_path: Path,
    entry: str,
) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as writing:
        info = tarfile.TarInfo(entry)
        info.size = 4
        writing.addfile(info, io.BytesIO(b"evil"))
    result = client.wait(
        client.submit_build(BuildRequest(str(archive), images["sti-fake"], app_tag))
    )
    assert result.error_code == "InvalidInput"
    assert entry in (result.error or {})["message"] or "outside" in (result.error or {})["message"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/app.tar.gz", "https://localhost/repo.git"])
def test_a_worker_refuses_urls_of_internal_addresses_by_default(url: str) -> None:
    from sti_worker.engine.sources import check_url_host

    with pytest.raises(InvalidInput, match="STI_ALLOW_INTERNAL_URLS"):
        check_url_host(url, SourcePolicy(allow_internal_urls=False))


# uploads go straight into the build, through the same checks


def _put_blob(broker_url: str, data: bytes) -> str:
    client = redis.Redis.from_url(broker_url)
    try:
        digest, _ = BlobStore(client, expires_s=600, max_bytes=10**6).put([data])
    finally:
        client.close()
    return digest


def _packed(members: list[tuple[tarfile.TarInfo, bytes | None]], *, gzip: bool = False) -> bytes:
    """A packed directory as sti-submit uploads it (zstd frames), or as an older one did."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue() if gzip else b"".join(zstd_frames([buffer.getvalue()]))


def _member(name: str, link: str | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        return info, None
    info.size = 4
    return info, b"data"


@pytest.mark.parametrize(
    ("members", "context_dir", "message"),
    [
        ([_member("src", "/etc")], None, "source root 'src' is a link"),
        (
            [_member("src/web", "/etc"), _member("src/x")],
            "web",
            "--context-dir 'src/web' is a link",
        ),
        ([_member("src/x")], "web", "--context-dir 'web' is not a directory"),
        ([_member("src/l", "/"), _member("src/l/etc/passwd")], None, "through a link"),
    ],
    ids=["root-is-a-link", "context-dir-is-a-link", "no-context-dir", "through-a-link"],
)
def test_an_upload_leading_out_of_its_root_is_refused(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    broker_url: str,
    app_tag: str,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    context_dir: str | None,
    message: str,
) -> None:
    digest = _put_blob(broker_url, _packed(members))
    request = BuildRequest(
        f"sti+upload://{digest}/dir", images["sti-fake"], app_tag, context_dir=context_dir
    )
    result = client.wait(client.submit_build(request))
    assert result.error_code == "InvalidInput"
    assert message in (result.error or {})["message"]
    assert not api.images(name=app_tag)


def test_a_directory_an_older_sti_submit_packed_as_tar_gz_still_builds(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    broker_url: str,
    app_tag: str,
) -> None:
    directory = tarfile.TarInfo("src")
    directory.type, directory.mode = tarfile.DIRTYPE, 0o755
    digest = _put_blob(broker_url, _packed([(directory, None), _member("src/x")], gzip=True))
    request = BuildRequest(f"sti+upload://{digest}/dir", images["sti-fake"], app_tag)
    result = client.wait(client.submit_build(request))
    assert result.success, result.messages
    assert set(image_tree(api, app_tag, "/tmp/src")) - {""} == {"x"}


@pytest.mark.parametrize("method", ["build", "run"])
def test_an_uploaded_directory_builds_only_its_context_dir(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = make_source(tmp_path)
    (source / "web").mkdir()
    (source / "web" / "page.html").write_text("<p>web</p>\n")
    done = sti_submit(
        "build",
        str(source),
        images["sti-fake"],
        app_tag,
        "--context-dir",
        "./web/",
        "-m",
        method,
        "--broker",
        broker_url,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert set(image_tree(api, app_tag, "/tmp/src")) - {""} == {"page.html"}
