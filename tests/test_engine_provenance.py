"""Output images say where they came from, as s2i's labels and OCI's do, on every path: both
methods on BuildKit and in the sandbox's container, git sources and directories, extended
builds; the builder's own labels are kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import git
import pytest

from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import TRACKER, temporary_image
from tests.engine_helpers import build
from tests.images import PREPARE, RUN

pytestmark = pytest.mark.docker

S2I = "io.openshift.s2i"
OCI = "org.opencontainers.image"


@pytest.fixture
def labelled_builder(api: docker.APIClient) -> Iterator[str]:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
    lines = ['LABEL io.k8s.display-name="Builder" vendor=acme', 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="labelled") as tag:
        yield tag


def _repository(tmp_path: Path) -> tuple[str, str]:
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    (tmp_path / "repo" / "app.txt").write_text("hello\n")
    repo.index.add(["app.txt"])
    actor = git.Actor("Ada Lovelace", "ada@example.org")
    message = "Add the app\n\nWith a body that labels leave out.\n"
    sha = repo.index.commit(message, author=actor, committer=actor).hexsha
    repo.close()
    return f"file://{tmp_path / 'repo'}", sha


def _labels(api: docker.APIClient, tag: str) -> dict[str, str]:
    return dict(api.inspect_image(tag)["Config"]["Labels"] or {})


@pytest.mark.parametrize(
    ("engine", "method"), [("buildkit", "build"), ("sandboxed", "build"), ("sandboxed", "run")]
)
def test_a_git_build_is_labelled_with_its_commit_and_builder(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    labelled_builder: str,
    app_tag: str,
    tmp_path: Path,
    method: str,
    engine: str,
) -> None:
    host: DockerHost = request.getfixturevalue(
        "buildkit_host" if engine == "buildkit" else "docker_host"
    )
    url, sha = _repository(tmp_path)
    before = time.time()
    result, _ = build(
        host,
        url,
        labelled_builder,
        app_tag,
        method=method,
        ref="main",
        labels={"vendor": "me", "team": "web"},
        description="The app",
    )
    assert result.success, result.messages
    labels = _labels(api, app_tag)
    builder_id = api.inspect_image(labelled_builder)["Id"]
    assert {name: value for name, value in labels.items() if "created" not in name} == {
        f"{S2I}.build.image": labelled_builder,
        f"{S2I}.build.commit.id": sha,
        f"{S2I}.build.commit.ref": "main",
        f"{S2I}.build.commit.author": "Ada Lovelace <ada@example.org>",
        f"{S2I}.build.commit.date": labels[f"{S2I}.build.commit.date"],
        f"{S2I}.build.commit.message": "Add the app",
        f"{S2I}.build.source-location": url,
        f"{S2I}.build.source-context-dir": "",  # none: the builder's own is not the output's
        f"{OCI}.source": url,
        f"{OCI}.revision": sha,
        f"{OCI}.base.name": labelled_builder,
        f"{OCI}.base.digest": builder_id,
        "io.k8s.display-name": app_tag,  # the tag, over the builder's own, as s2i
        "io.k8s.description": "The app",
        "vendor": "me",  # --label wins over the builder's own
        "team": "web",
        "io.sti.build-id": result.build_id,
    }
    date = time.strptime(labels[f"{S2I}.build.commit.date"], "%a %b %d %H:%M:%S %Y %z")
    assert abs(time.mktime(date) - before) < 24 * 3600
    created = time.strptime(labels[f"{OCI}.created"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(created) - time.mktime(time.gmtime(before))) < 120


def test_a_directory_build_names_its_location_and_context_dir(
    api: docker.APIClient,
    docker_host: DockerHost,
    labelled_builder: str,
    app_tag: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "src" / "web").mkdir(parents=True)
    (tmp_path / "src" / "web" / "index.html").write_text("hi\n")
    result, _ = build(
        docker_host, str(tmp_path / "src"), labelled_builder, app_tag, context_dir="web"
    )
    assert result.success, result.messages
    labels = _labels(api, app_tag)
    assert labels["vendor"] == "acme"  # the builder's own label, kept
    assert labels["io.k8s.display-name"] == app_tag
    assert labels[f"{S2I}.build.source-location"] == str(tmp_path / "src")
    assert labels[f"{S2I}.build.source-context-dir"] == "web"
    assert labels[f"{OCI}.source"] == ""  # a path is no URL to find the source at
    assert labels[f"{S2I}.build.commit.id"] == ""


def test_an_extended_builds_image_names_the_runtime_as_its_base(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    result, _ = build(
        docker_host,
        source,
        images["sti-fake-builder"],
        app_tag,
        runtime_image=images["sti-fake"],
    )
    assert result.success, result.messages
    TRACKER.built(api.inspect_image(f"{app_tag}-build")["Id"])
    labels = _labels(api, app_tag)
    assert labels[f"{S2I}.build.image"] == images["sti-fake-builder"]
    assert labels[f"{OCI}.base.name"] == images["sti-fake"]
    assert labels[f"{OCI}.base.digest"] == api.inspect_image(images["sti-fake"])["Id"]
