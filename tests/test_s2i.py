"""s2i builder images work too: scripts from the scripts-url label, assemble as the prepare
step, save-artifacts' tar on stdout, inputs owned by the image's USER."""

from __future__ import annotations

from pathlib import Path

import docker

from sti.model import ValidateRequest
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_validate
from tests.dockertools import image_config, image_files, temporary_image
from tests.engine_helpers import METHODS, build


def test_s2i_builder_validates_for_incremental_builds(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    request = ValidateRequest(images["s2i-fake"], incremental=True)
    result = run_validate(docker_host, request, lambda line: None, "test")
    assert result.success, result.messages
    assert result.messages == (f"Base image {images['s2i-fake']} is valid for incremental builds",)


def test_s2i_builder_without_assemble_names_the_s2i_path(
    api: docker.APIClient, docker_host: DockerHost
) -> None:
    lines = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i", 'CMD ["/bin/sh"]']
    with temporary_image(api, {"/usr/libexec/s2i/run": "#!/bin/sh\n"}, lines) as image:
        result = run_validate(docker_host, ValidateRequest(image), lambda line: None, "test")
    assert result.messages == (
        f"Base image {image} failed validation: missing /usr/libexec/s2i/assemble",
    )


@METHODS
def test_s2i_build_runs_assemble_as_the_image_user_and_reuses_artifacts(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    first, lines = build(docker_host, source, images["s2i-fake"], app_tag, method=method)
    assert first.success, first.messages
    assert "assemble: as 1001" in lines
    assert image_config(api, app_tag)["Cmd"] == ["/usr/libexec/s2i/run"]
    assert image_config(api, app_tag)["User"] == image_config(api, images["s2i-fake"])["User"]
    assert "index.html" in image_files(api, app_tag, "/opt/app-root")  # moved: 1001 owns /tmp/src

    second, lines = build(docker_host, source, images["s2i-fake"], app_tag, method=method)
    assert second.success and second.incremental, second.messages
    assert "assemble: restoring artifacts" in lines
    restored = image_files(api, app_tag, "/opt/app-root")["restored.txt"]
    assert restored == b"cache from an earlier build\n"


@METHODS
def test_a_save_artifacts_failing_mid_stream_means_a_clean_build(
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    """In a container (the default limits) an s2i save-artifacts runs while its tar goes into
    prepare's container: one that writes part of a tar and then fails is found out there, and
    the build runs again clean, as when its tar went to a file first."""
    script = Path(source) / ".s2i" / "bin" / "save-artifacts"
    script.parent.mkdir(parents=True)
    script.write_text(
        "#!/bin/sh\ncd /opt/app-root && tar cf - . 2>/dev/null | head -c 700\n"
        "echo 'save-artifacts: disk gone' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    first, _ = build(docker_host, source, images["s2i-fake"], app_tag, method=method)
    assert first.success, first.messages
    second, lines = build(docker_host, source, images["s2i-fake"], app_tag, method=method)
    assert second.success, second.messages
    assert second.incremental is False
    assert (
        f"Saving artifacts from {app_tag} failed: /tmp/scripts/save-artifacts exited with code 3; "
        "doing a clean build instead"
    ) in second.messages
    assert "save-artifacts: disk gone" in lines and "save-artifacts: disk gone" in second.messages
    assert "assemble: restoring artifacts" not in lines
