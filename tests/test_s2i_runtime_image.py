"""s2i's runtime images: the artifacts assemble made (--runtime-artifact, or the
assemble-input-files label) copied into the runtime image's WORKDIR with s2i's modes, its
assemble-runtime run there as its USER, its run the CMD; the image assemble made does not stay.
Through the engine with both methods, and through the queue with the s2i flags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import (
    image_config,
    image_files,
    image_has,
    image_tree,
    images_of_build,
    run_default_command,
    temporary_image,
)
from tests.engine_helpers import METHODS, build
from tests.queue_helpers import sti_submit
from tests.services import Worker

ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /opt/app-root/dist /opt/app-root/lib
cp /tmp/src/app.txt /opt/app-root/dist/app.war
printf '#!/bin/sh\\necho tool\\n' > /opt/app-root/lib/tool
chmod 700 /opt/app-root/lib/tool
echo private > /opt/app-root/lib/private
chmod 600 /opt/app-root/lib/private
echo "assemble: built"
"""
ASSEMBLE_RUNTIME = """\
#!/bin/sh
set -e
echo "assemble-runtime: as $(id -u) in $(pwd) with VISIBLE=$VISIBLE"
ls deploy lib > listing.txt 2>&1 || true
"""
RUN = "#!/bin/sh\ntest -s app.war || test -s deploy/app.war\n"
LABEL = "io.openshift.s2i.assemble-input-files=/opt/app-root/dist/app.war:deploy;/opt/app-root/lib"


@pytest.fixture(scope="module")
def builder(api: docker.APIClient) -> Iterator[str]:
    files = {"/usr/libexec/s2i/assemble": ASSEMBLE, "/usr/libexec/s2i/run": "#!/bin/sh\n"}
    lines = [
        "RUN mkdir -p /opt/app-root && chown 1001:0 /opt/app-root",
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        "USER 1001",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="rt-builder") as tag:
        yield tag


@contextlib.contextmanager
def _runtime(api: docker.APIClient, *labels: str) -> Iterator[str]:
    files = {"/usr/libexec/s2i/assemble-runtime": ASSEMBLE_RUNTIME, "/usr/libexec/s2i/run": RUN}
    lines = [
        "RUN mkdir -p /opt/runtime && chown 1002:0 /opt/runtime",
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        *[f'LABEL "{label.partition("=")[0]}"="{label.partition("=")[2]}"' for label in labels],
        "WORKDIR /opt/runtime",
        "USER 1002",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="runtime") as tag:
        yield tag


@pytest.fixture(scope="module")
def runtime(api: docker.APIClient) -> Iterator[str]:
    with _runtime(api, LABEL) as tag:
        yield tag


@pytest.fixture
def source(tmp_path: Path) -> str:
    (tmp_path / "app.txt").write_text("the application\n")
    return str(tmp_path)


@METHODS
def test_the_labels_artifacts_go_into_the_runtime_images_workdir(
    api: docker.APIClient,
    docker_host: DockerHost,
    builder: str,
    runtime: str,
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, lines = build(
        docker_host,
        source,
        builder,
        app_tag,
        method=method,
        s2i_runtime_image=runtime,
        env={"VISIBLE": "yes"},
    )
    assert result.success, result.messages
    assert "assemble: built" in lines
    assert "assemble-runtime: as 1002 in /opt/runtime with VISIBLE=yes" in lines
    assert result.to_json()["runtime_image"] == runtime
    config = image_config(api, app_tag)
    assert config["Cmd"] == ["/usr/libexec/s2i/run"] and config["User"] == "1002"
    assert config["WorkingDir"] == "/opt/runtime"
    files = image_files(api, app_tag, "/opt/runtime")
    assert files["deploy/app.war"] == b"the application\n"
    assert files["listing.txt"].split() == [b"deploy:", b"app.war", b"lib:", b"private", b"tool"]
    tree = image_tree(api, app_tag, "/opt/runtime")
    assert tree["lib/tool"].mode & 0o777 == 0o755 and tree["lib/private"].mode & 0o777 == 0o644
    assert not image_has(
        api, app_tag, "/usr/libexec/s2i/assemble"
    )  # the runtime's, not the builder's
    assert run_default_command(api, app_tag) == 0
    assert images_of_build(api, result.build_id) == [api.inspect_image(app_tag)["Id"]]


def test_runtime_artifacts_given_win_over_the_label(
    api: docker.APIClient,
    docker_host: DockerHost,
    builder: str,
    runtime: str,
    app_tag: str,
    source: str,
) -> None:
    result, _ = build(
        docker_host,
        source,
        builder,
        app_tag,
        s2i_runtime_image=runtime,
        runtime_artifacts=("/opt/app-root/dist/app.war:.",),
    )
    assert result.success, result.messages
    files = image_files(api, app_tag, "/opt/runtime")
    assert files["app.war"] == b"the application\n"
    assert "lib/tool" not in files and "deploy/app.war" not in files


def test_a_missing_artifact_fails_the_build_with_nothing_tagged(
    api: docker.APIClient,
    docker_host: DockerHost,
    builder: str,
    runtime: str,
    app_tag: str,
    source: str,
) -> None:
    given = ("/opt/app-root/nothing-here:deploy",)
    result, _ = build(
        docker_host, source, builder, app_tag, s2i_runtime_image=runtime, runtime_artifacts=given
    )
    assert result.error_code == "BuildFailed"
    assert "runtime artifact /opt/app-root/nothing-here is not in the image" in str(result.error)
    assert not api.images(name=app_tag)
    assert images_of_build(api, result.build_id) == []


def test_no_artifacts_or_no_assemble_runtime_is_refused_before_building(
    api: docker.APIClient, docker_host: DockerHost, builder: str, app_tag: str, source: str
) -> None:
    with _runtime(api) as runtime:  # no assemble-input-files label anywhere
        result, lines = build(docker_host, source, builder, app_tag, s2i_runtime_image=runtime)
        assert result.error_code == "InvalidInput"
        assert "needs --runtime-artifact SRC[:DEST], or the" in str(result.error)
        assert "assemble: built" not in lines
    bare = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i", 'CMD ["/bin/sh"]']
    with temporary_image(api, {"/usr/libexec/s2i/run": RUN}, bare, name="no-ar") as runtime:
        result, _ = build(
            docker_host,
            source,
            builder,
            app_tag,
            s2i_runtime_image=runtime,
            runtime_artifacts=("/opt/app-root/dist/app.war",),
        )
        assert result.error_code == "InvalidImage"
        assert "missing /usr/libexec/s2i/assemble-runtime" in str(result.error)


def test_through_the_queue_with_the_s2i_flags(
    api: docker.APIClient,
    worker: Worker,
    broker_url: str,
    builder: str,
    runtime: str,
    app_tag: str,
    source: str,
) -> None:
    args = ["build", source, builder, app_tag, "--runtime-image", runtime]
    done = sti_submit(*args, "-a", "/opt/app-root/dist/app.war:web/", "--broker", broker_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert image_files(api, app_tag, "/opt/runtime")["web/app.war"] == b"the application\n"
    refused = sti_submit(*args, "--incremental", "--broker", broker_url)
    assert refused.returncode == 2 and "never incremental" in refused.stderr
    refused = sti_submit(*args, "-a", "/opt/*.war", "--broker", broker_url)
    assert refused.returncode == 2 and "without wildcards" in refused.stderr


SOURCE_ASSEMBLE_RUNTIME = '#!/bin/sh\necho "brought assemble-runtime: $0 as $(id -u) in $(pwd)"\n'


@pytest.mark.parametrize("brought_by", ["source", "scripts-url"])
def test_the_sources_or_the_urls_assemble_runtime_serves_a_runtime_without_one(
    api: docker.APIClient,
    docker_host: DockerHost,
    http_server: tuple[str, Path],
    builder: str,
    app_tag: str,
    tmp_path: Path,
    brought_by: str,
) -> None:
    source = tmp_path / "app"
    (source / ".s2i" / "bin").mkdir(parents=True)
    (source / "app.txt").write_text("the application\n")
    options: dict[str, object] = {}
    if brought_by == "source":
        script = source / ".s2i" / "bin" / "assemble-runtime"
    else:
        base, root = http_server
        script = root / "s2i" / "assemble-runtime"
        script.parent.mkdir()
        options["scripts_url"] = f"{base}/s2i"
    script.write_text(SOURCE_ASSEMBLE_RUNTIME)
    script.chmod(0o755)
    lines_of_image = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i", "USER 1002"]
    with temporary_image(api, {"/usr/libexec/s2i/run": RUN}, lines_of_image, "no-ar") as runtime:
        result, lines = build(
            docker_host,
            str(source),
            builder,
            app_tag,
            s2i_runtime_image=runtime,
            runtime_artifacts=("/opt/app-root/dist/app.war",),
            **options,
        )
    assert result.success, result.messages
    assert "brought assemble-runtime: /tmp/scripts/assemble-runtime as 1002 in /" in lines
    assert image_files(api, app_tag, "/")["app.war"] == b"the application\n"
