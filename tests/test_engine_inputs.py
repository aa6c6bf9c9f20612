"""What users hand in: env values, env names, tags, methods and sources (local and git)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import git
import pytest

from sti.errors import InvalidBuildMethod, InvalidInput
from sti.model import BuildRequest, parse_env_options
from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import (
    SOURCE_FILES,
    image_env,
    image_files,
    image_has,
    image_id_or_none,
    image_tree,
    run_and_read,
    temporary_image,
    write_source,
)
from tests.engine_helpers import METHODS, build
from tests.images import ENV_PREPARE, RUN

TRICKY_ENV = {
    "FOO": "two words, \"double\" and 'single' quotes, unicode h\u00e9llo \u2713  ",
    "BAR": "$HOME ${HOME} $(id) `id` %PATH% back\\slash \\n \\",
    "BAZ": "line one\nline two\n\ttabbed\n",
}


# environment values


@METHODS
def test_env_values_arrive_byte_exact_in_prepare_and_image_config(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = build(
        docker_host, source, images["sti-fake-env"], app_tag, method=method, env=TRICKY_ENV
    )
    assert result.success is True, result.messages
    files = image_files(api, app_tag, "/sti-fake")
    for name, value in TRICKY_ENV.items():
        assert files[name] == value.encode(), name
    env = image_env(api, app_tag)
    for name, value in TRICKY_ENV.items():
        assert env[name] == value, name


@METHODS
def test_empty_env_value_is_set_and_empty(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    env = {"FOO": "", "BAR": "=", "BAZ": "a=b"}
    result, _ = build(docker_host, source, images["sti-fake-env"], app_tag, method=method, env=env)
    assert result.success is True, result.messages
    files = image_files(api, app_tag, "/sti-fake")
    assert (files["FOO"], files["BAR"], files["BAZ"]) == (b"", b"=", b"a=b")
    assert b"\nFOO=\n" in b"\n" + files["env"]
    config_env = image_env(api, app_tag)
    assert (config_env["FOO"], config_env["BAR"], config_env["BAZ"]) == ("", "=", "a=b")


@METHODS
def test_env_value_cannot_add_a_dockerfile_instruction(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    env = {
        "FOO": "x\nRUN touch /pwned",
        "BAR": 'x"\nRUN touch /pwned2\nENV Y="y',
        "BAZ": "x \\\nRUN touch /pwned3",
    }
    result, _ = build(docker_host, source, images["sti-fake-env"], app_tag, method=method, env=env)
    assert result.success is True, result.messages
    for marker in ("/pwned", "/pwned2", "/pwned3"):
        assert not image_has(api, app_tag, marker), marker
    files = image_files(api, app_tag, "/sti-fake")
    for name, value in env.items():
        assert files[name] == value.encode(), name
    assert "Y" not in image_env(api, app_tag)


OVERRIDE_METHODS = pytest.mark.parametrize(
    "method",
    ["build", "run"],
)


@OVERRIDE_METHODS
def test_env_overrides_a_variable_the_builder_image_sets(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    files = {"/usr/bin/prepare": ENV_PREPARE, "/usr/bin/run": RUN}
    lines = ["ENV FOO=from-image BAR=kept-from-image", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="env-in-image") as builder:
        result, _ = build(
            docker_host, source, builder, app_tag, method=method, env={"FOO": "from user"}
        )
    assert result.success is True, result.messages
    recorded = image_files(api, app_tag, "/sti-fake")
    assert recorded["BAR"] == b"kept-from-image"
    assert recorded["FOO"] == b"from user"
    assert image_env(api, app_tag)["FOO"] == "from user"


@OVERRIDE_METHODS
def test_env_overrides_path_of_the_builder_image(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    path = "/usr/local/bin:/usr/bin:/bin"
    result, _ = build(
        docker_host, source, images["sti-fake-env"], app_tag, method=method, env={"PATH": path}
    )
    assert result.success is True, result.messages
    assert f"PATH={path}" in image_files(api, app_tag, "/sti-fake")["env"].decode().splitlines()
    assert image_env(api, app_tag)["PATH"] == path


@pytest.mark.parametrize("name", ["1A", "A-B", "A B", "", "A=B", "A\nB", "\u00c9T\u00c9"])
def test_invalid_env_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="environment variable name"):
        BuildRequest(source="/src", build_image="img", tag="app", env={name: "1"})


def test_env_value_with_nul_byte_is_refused() -> None:
    with pytest.raises(InvalidInput, match="NUL"):
        BuildRequest(source="/src", build_image="img", tag="app", env={"A": "a\x00b"})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["A=1"], {"A": "1"}),
        (["A=1,B=2"], {"A": "1", "B": "2"}),
        (["A=1,2,B=3"], {"A": "1,2", "B": "3"}),
        (["A=1", "B=2"], {"A": "1", "B": "2"}),
        (["A=x=y"], {"A": "x=y"}),
        (["A="], {"A": ""}),
        (["A=1,", "B=,"], {"A": "1,", "B": ","}),
        (["A=1,b c=2"], {"A": "1,b c=2"}),
        (["A=1", "A=2"], {"A": "2"}),
        ([], {}),
    ],
)
def test_parse_env_options(options: list[str], expected: dict[str, str]) -> None:
    assert parse_env_options(options) == expected


@pytest.mark.parametrize("option", ["NOVALUE", "1A=2", "A-B=1", "=1", "A B=1", ",A=1"])
def test_parse_env_options_refuses_malformed_items(option: str) -> None:
    with pytest.raises(InvalidInput):
        parse_env_options([option])


# tags and methods


@pytest.mark.parametrize(
    "tag", ["Bad/Tag", "a b", "-x", "app\nx", "app\n", "app:", "app@sha256:" + "a" * 64, ""]
)
def test_invalid_tag_is_refused(tag: str) -> None:
    with pytest.raises(InvalidInput):
        BuildRequest(source="/src", build_image="img", tag=tag)


@pytest.mark.parametrize(
    "tag", ["app", "app:v1.0", "sti-test/app-1", "localhost:5000/team/app:latest", "a.b/c_d__e"]
)
def test_valid_tag_is_accepted(tag: str) -> None:
    assert BuildRequest(source="/src", build_image="img", tag=tag).tag == tag


@pytest.mark.parametrize("image", ["Bad/Image", "img\nRUN x", "-x"])
def test_invalid_builder_and_runtime_images_are_refused(image: str) -> None:
    with pytest.raises(InvalidInput):
        BuildRequest(source="/src", build_image=image, tag="app")
    with pytest.raises(InvalidInput):
        BuildRequest(source="/src", build_image="img", tag="app", runtime_image=image)


@pytest.mark.parametrize("method", ["docker", "", "Build", "commit"])
def test_unknown_method_is_refused(method: str) -> None:
    with pytest.raises(InvalidBuildMethod):
        BuildRequest(source="/src", build_image="img", tag="app", method=method)


def test_build_request_round_trips_through_json() -> None:
    request = BuildRequest(
        source="/src", build_image="img", tag="app", env={"A": "1"}, runtime_image="rt"
    )
    assert BuildRequest.from_json(request.to_json()) == request


# local sources


@METHODS
def test_symlinks_pointing_outside_the_source_arrive_as_symlinks(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = tmp_path / "src"
    write_source(source)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret outside the source\n")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "other-secret.txt").write_text("another secret\n")
    os.symlink(secret, source / "absolute-link")
    os.symlink("../secret.txt", source / "relative-link")
    os.symlink(outside_dir, source / "dir-link")
    os.symlink("index.html", source / "inside-link")

    result, _ = build(docker_host, str(source), images["sti-fake"], app_tag, method=method)
    assert result.success is True, result.messages
    tree = image_tree(api, app_tag, "/tmp/src")
    assert tree["absolute-link"].kind == "symlink"
    assert tree["absolute-link"].linkname == str(secret)
    assert tree["relative-link"].kind == "symlink"
    assert tree["relative-link"].linkname == "../secret.txt"
    assert tree["dir-link"].kind == "symlink"
    assert tree["dir-link"].linkname == str(outside_dir)
    assert tree["inside-link"].kind == "symlink"
    assert tree["inside-link"].linkname == "index.html"
    assert not any(name.startswith("dir-link/") for name in tree)
    assert all(b"secret" not in entry.content for entry in tree.values())
    assert tree["index.html"].content == SOURCE_FILES["index.html"]


@METHODS
def test_source_file_modes_are_kept(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = tmp_path / "src"
    write_source(source)
    script = source / "start.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (source / "index.html").chmod(0o600)
    result, _ = build(docker_host, str(source), images["sti-fake"], app_tag, method=method)
    assert result.success is True, result.messages
    tree = image_tree(api, app_tag, "/tmp/src")
    assert tree["start.sh"].mode & 0o777 == 0o755
    assert tree["index.html"].mode & 0o777 == 0o600


def test_nonexistent_local_directory_fails_with_invalid_input(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-dir"
    result, _ = build(docker_host, str(missing), images["sti-fake"], app_tag)
    assert result.success is False
    assert result.error_code == "InvalidInput"
    assert str(missing) in result.to_json()["error"]["message"]
    assert image_id_or_none(api, app_tag) is None


def test_source_that_is_not_a_directory_or_file_fails_with_invalid_input(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    result, _ = build(docker_host, str(fifo), images["sti-fake"], app_tag)
    assert result.success is False
    assert result.error_code == "InvalidInput"


def test_context_dir_builds_only_that_subdirectory(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, context_dir="nested")
    assert result.success is True, result.messages
    files = image_files(api, app_tag, "/sti-fake/src")
    assert files["notes.md"] == SOURCE_FILES["nested/notes.md"]
    assert files["deeper/data.txt"] == SOURCE_FILES["nested/deeper/data.txt"]
    assert "index.html" not in files


@pytest.mark.parametrize("context_dir", ["../", "/etc", "no-such-dir", "nested/../.."])
def test_bad_context_dir_fails_with_invalid_input(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, source: str, context_dir: str
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, context_dir=context_dir)
    assert result.success is False
    assert result.error_code == "InvalidInput"


# git sources


def _commit(repo: git.Repo, files: dict[str, bytes], message: str) -> str:
    actor = git.Actor("sti tests", "sti-tests@example.invalid")
    root = Path(repo.working_tree_dir or "")
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    repo.index.add(list(files))
    return repo.index.commit(message, author=actor, committer=actor).hexsha


@pytest.fixture
def git_repo(tmp_path: Path) -> Iterator[git.Repo]:
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    yield repo
    repo.close()


@METHODS
def test_git_source_builds_and_reports_commit(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    git_repo: git.Repo,
    method: str,
) -> None:
    sha = _commit(git_repo, SOURCE_FILES, "first")
    url = f"file://{git_repo.working_tree_dir}"
    result, lines = build(docker_host, url, images["sti-fake"], app_tag, method=method)
    assert result.success is True, result.messages
    assert any(sha in message for message in result.messages)
    assert any(sha in line for line in lines)
    files = run_and_read(api, app_tag, "/sti-fake/src")
    for relative, content in SOURCE_FILES.items():
        assert files[relative] == content
    assert not any(name == ".git" or name.startswith(".git/") for name in files)


@pytest.mark.parametrize("length", [40, 10])
def test_git_source_at_older_commit(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    git_repo: git.Repo,
    length: int,
) -> None:
    first = _commit(git_repo, {"index.html": b"version one\n"}, "first")
    _commit(git_repo, {"index.html": b"version two\n"}, "second")
    url = f"file://{git_repo.working_tree_dir}"
    result, _ = build(docker_host, url, images["sti-fake"], app_tag, ref=first[:length])
    assert result.success is True, result.messages
    assert any(first in message for message in result.messages)
    assert image_files(api, app_tag, "/sti-fake/src")["index.html"] == b"version one\n"


def test_git_source_at_branch(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    git_repo: git.Repo,
) -> None:
    _commit(git_repo, {"index.html": b"main\n"}, "on main")
    git_repo.git.checkout("-b", "feature")
    feature = _commit(git_repo, {"index.html": b"feature\n"}, "on feature")
    git_repo.git.checkout("main")
    url = f"file://{git_repo.working_tree_dir}"
    result, _ = build(docker_host, url, images["sti-fake"], app_tag, ref="feature")
    assert result.success is True, result.messages
    assert any(feature in message for message in result.messages)
    assert image_files(api, app_tag, "/sti-fake/src")["index.html"] == b"feature\n"


def test_git_source_that_does_not_exist_fails_with_source_fetch_failed(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url = f"file://{tmp_path}/no-such-repo"
    result, _ = build(docker_host, url, images["sti-fake"], app_tag)
    assert result.success is False
    assert result.error_code == "SourceFetchFailed"
    assert image_id_or_none(api, app_tag) is None


def test_ref_on_local_directory_is_invalid_input(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, source: str
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, ref="main")
    assert result.success is False
    assert result.error_code == "InvalidInput"


UNUSUAL_NAMES = {
    "with space.txt": b"space\n",
    "-leading-dash": b"dash\n",
    "h\u00e9llo \u2713.txt": "unicode \u2713\n".encode(),
    "new\nline": b"newline in name\n",
    "Dockerfile": b"FROM scratch\nRUN touch /pwned\n",
    ".dockerignore": b"*\n",
    ".hidden/.file": b"hidden\n",
    "a/b/c/d/e/f/g/deep.txt": b"deep\n",
}


@METHODS
def test_unusual_file_names_hardlinks_and_empty_dirs_arrive(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = tmp_path / "src"
    for relative, content in UNUSUAL_NAMES.items():
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    os.link(source / "with space.txt", source / "hardlink.txt")
    (source / "empty-dir").mkdir()
    result, _ = build(docker_host, str(source), images["sti-fake"], app_tag, method=method)
    assert result.success is True, result.messages
    assert not image_has(api, app_tag, "/pwned")
    tree = image_tree(api, app_tag, "/tmp/src")
    for relative, content in UNUSUAL_NAMES.items():
        assert tree[relative].content == content, relative
    assert tree["empty-dir"].kind == "dir"
    assert tree["hardlink.txt"].content == b"space\n"
    # each name a file, as through the queue (tests/hostile/test_archives.py)
    assert tree["hardlink.txt"].kind == tree["with space.txt"].kind == "file"
    # prepare saw them too (busybox cp -R copies them to /sti-fake/src)
    copied = image_files(api, app_tag, "/sti-fake/src")
    for relative, content in UNUSUAL_NAMES.items():
        assert copied[relative] == content, relative
    assert copied["hardlink.txt"] == b"space\n"


@METHODS
def test_empty_source_directory_builds(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    result, _ = build(docker_host, str(source), images["sti-fake"], app_tag, method=method)
    assert result.success is True, result.messages
    assert set(image_tree(api, app_tag, "/tmp/src")) == {""}
    assert "prepare-invoked" in image_files(api, app_tag, "/sti-fake")


def test_git_source_at_unknown_ref_fails_with_source_fetch_failed(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    git_repo: git.Repo,
) -> None:
    _commit(git_repo, SOURCE_FILES, "first")
    url = f"file://{git_repo.working_tree_dir}"
    result, _ = build(docker_host, url, images["sti-fake"], app_tag, ref="no-such-branch")
    assert result.success is False
    assert result.error_code == "SourceFetchFailed"
    assert image_id_or_none(api, app_tag) is None


def test_git_source_with_context_dir(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    git_repo: git.Repo,
) -> None:
    _commit(git_repo, SOURCE_FILES, "first")
    url = f"file://{git_repo.working_tree_dir}"
    result, _ = build(docker_host, url, images["sti-fake"], app_tag, context_dir="nested/deeper")
    assert result.success is True, result.messages
    assert set(image_files(api, app_tag, "/sti-fake/src")) == {"data.txt"}


def test_context_dir_symlink_leading_outside_fails_with_invalid_input(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    write_source(source)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", source / "escape")
    result, _ = build(docker_host, str(source), images["sti-fake"], app_tag, context_dir="escape")
    assert result.success is False
    assert result.error_code == "InvalidInput"
