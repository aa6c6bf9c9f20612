"""Labels assemble asks for in <destination>/.s2i/image_metadata.json: over the builder's and
sti's provenance, under the user's --label, never sti's own; a malformed file fails the build
with nothing tagged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import image_config, temporary_image
from tests.engine_helpers import build

ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /opt/dest/.s2i
cp /opt/dest/src/metadata.json /opt/dest/.s2i/image_metadata.json
"""


@pytest.fixture
def builder(api: docker.APIClient) -> Iterator[str]:
    files = {"/usr/libexec/s2i/assemble": ASSEMBLE, "/usr/libexec/s2i/run": "#!/bin/sh\n"}
    with temporary_image(
        api,
        files,
        [
            "RUN mkdir -p /opt/dest",
            "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
            "LABEL io.openshift.s2i.destination=/opt/dest",
            "LABEL team=builder shared=from-builder",
            'CMD ["/bin/sh"]',
        ],
        name="metadata",
    ) as tag:
        yield tag


def _source(root: Path, metadata: object) -> str:
    (root / "metadata.json").write_text(json.dumps(metadata))
    return str(root)


@pytest.mark.parametrize("engine", ["container", "buildkit"])
def test_assembles_labels_go_over_the_builders_and_under_the_users(
    api: docker.APIClient,
    docker_host: DockerHost,
    buildkit_host: DockerHost,
    builder: str,
    app_tag: str,
    tmp_path: Path,
    engine: str,
) -> None:
    metadata = {
        "labels": [
            {"shared": "from-assemble", "extra": "line one\nline two"},
            {"io.sti.build-id": "forged", "user-wins": "assemble"},
            {"io.k8s.display-name": "from assemble"},
        ]
    }
    host = buildkit_host if engine == "buildkit" else docker_host
    result, lines = build(
        host, _source(tmp_path, metadata), builder, app_tag, labels={"user-wins": "user"}
    )
    assert result.success, result.messages
    labels = image_config(api, app_tag)["Labels"]
    assert labels["shared"] == "from-assemble" and labels["extra"] == "line one\nline two"
    assert labels["team"] == "builder" and labels["user-wins"] == "user"
    assert labels["io.k8s.display-name"] == "from assemble"
    assert labels["io.sti.build-id"] == result.build_id
    assert any("label io.sti.build-id is sti's own" in line for line in lines)
    assert result.image_id == api.inspect_image(app_tag)["Id"]


@pytest.mark.parametrize(
    "metadata",
    [{"labels": {"a": "b"}}, {"labels": [{"a": 1}]}, ["a"], {"labels": [{"": "x"}]}],
)
def test_a_malformed_file_fails_the_build_and_tags_nothing(
    api: docker.APIClient,
    docker_host: DockerHost,
    builder: str,
    app_tag: str,
    tmp_path: Path,
    metadata: object,
) -> None:
    result, _ = build(docker_host, _source(tmp_path, metadata), builder, app_tag)
    assert not result.success and result.error
    assert result.error["code"] == "BuildFailed"
    assert "/opt/dest/.s2i/image_metadata.json" in result.error["message"]
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(app_tag)


def test_metadata_without_labels_changes_nothing(
    api: docker.APIClient, docker_host: DockerHost, builder: str, app_tag: str, tmp_path: Path
) -> None:
    (tmp_path / "metadata.json").write_text("{}")
    result, lines = build(docker_host, str(tmp_path), builder, app_tag)
    assert result.success, result.messages
    assert not any("Labels from" in line for line in lines)


EXTENDED_ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /tmp/.s2i /tmp/build
cp /tmp/src/metadata.json /tmp/.s2i/image_metadata.json
cp /tmp/src/metadata.json /tmp/build/
"""


@pytest.fixture
def extended_builder(api: docker.APIClient) -> Iterator[str]:
    """Writes its metadata and its output (/tmp/build) for a runtime image."""
    files = {
        "/usr/libexec/s2i/assemble": EXTENDED_ASSEMBLE,
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        "/usr/libexec/s2i/save-artifacts": "#!/bin/sh\n",
    }
    lines = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="metadata-extended") as tag:
        yield tag


@pytest.fixture
def s2i_runtime(api: docker.APIClient) -> Iterator[str]:
    files = {
        "/usr/libexec/s2i/assemble-runtime": "#!/bin/sh\n",
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
    }
    lines = [
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        "LABEL io.openshift.s2i.assemble-input-files=/tmp/build",
        "WORKDIR /opt/runtime",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="metadata-runtime") as tag:
        yield tag


@pytest.mark.parametrize("kind", ["-R", "--runtime-image"])
def test_an_extended_builds_output_image_gets_the_builders_metadata_labels(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    extended_builder: str,
    app_tag: str,
    tmp_path: Path,
    kind: str,
) -> None:
    metadata = {"labels": [{"from-assemble": "yes"}]}
    if kind == "-R":
        options: dict[str, object] = {"runtime_image": images["sti-fake"]}
    else:
        options = {"s2i_runtime_image": request.getfixturevalue("s2i_runtime")}
    result, lines = build(
        docker_host, _source(tmp_path, metadata), extended_builder, app_tag, **options
    )
    assert result.success, result.messages
    assert image_config(api, app_tag)["Labels"]["from-assemble"] == "yes"
    assert "Labels from /tmp/.s2i/image_metadata.json: from-assemble" in lines
