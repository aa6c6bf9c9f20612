"""Where an s2i builder keeps its scripts, found as s2i finds them: --scripts-url, then the
io.openshift.s2i.scripts-url label, then the legacy io.s2i.scripts-url, then /usr/libexec/s2i;
an image with the original /usr/bin/prepare stays an original sti builder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.errors import InvalidInput
from sti.model import Result, UsageRequest
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_usage
from tests.dockertools import image_config, temporary_image
from tests.engine_helpers import METHODS, build
from tests.images import PREPARE, RUN
from tests.queue_helpers import sti_submit
from tests.services import Worker

pytestmark = pytest.mark.docker


def _assemble(name: str) -> str:
    return f'#!/bin/sh\necho "assemble from {name}"\n'


def _scripts(directory: str, name: str) -> dict[str, str]:
    return {
        f"{directory}/assemble": _assemble(name),
        f"{directory}/run": "#!/bin/sh\necho run\n",
        f"{directory}/usage": f'#!/bin/sh\necho "usage of {name}"\necho "  build me"\n',
    }


@pytest.fixture
def unlabelled(api: docker.APIClient) -> Iterator[str]:
    """s2i's default directory only, and a second set elsewhere for --scripts-url."""
    files = {**_scripts("/usr/libexec/s2i", "libexec"), **_scripts("/opt/other", "other")}
    with temporary_image(api, files, name="s2i-unlabelled") as tag:
        yield tag


@METHODS
def test_an_image_without_labels_uses_usr_libexec_s2i(
    api: docker.APIClient,
    docker_host: DockerHost,
    unlabelled: str,
    source: str,
    app_tag: str,
    method: str,
) -> None:
    result, lines = build(docker_host, source, unlabelled, app_tag, method=method)
    assert result.success, result.messages
    assert "assemble from libexec" in lines
    assert image_config(api, app_tag)["Cmd"] == ["/usr/libexec/s2i/run"]


@METHODS
def test_scripts_url_wins_over_everything_the_image_says(
    api: docker.APIClient,
    docker_host: DockerHost,
    unlabelled: str,
    source: str,
    app_tag: str,
    method: str,
) -> None:
    result, lines = build(
        docker_host, source, unlabelled, app_tag, method=method, scripts_url="image:///opt/other"
    )
    assert result.success, result.messages
    assert "assemble from other" in lines
    assert image_config(api, app_tag)["Cmd"] == ["/opt/other/run"]


def test_the_legacy_label_is_read_after_the_current_one(
    api: docker.APIClient, docker_host: DockerHost, source: str, app_tag: str
) -> None:
    files = {**_scripts("/opt/legacy", "legacy"), **_scripts("/opt/current", "current")}
    with temporary_image(
        api, files, ["LABEL io.s2i.scripts-url=image:///opt/legacy", 'CMD ["/bin/sh"]']
    ) as legacy_only:
        result, lines = build(docker_host, source, legacy_only, app_tag)
        assert result.success, result.messages
        assert "assemble from legacy" in lines
    both = [
        "LABEL io.s2i.scripts-url=image:///opt/legacy",
        "LABEL io.openshift.s2i.scripts-url=image:///opt/current",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, both) as labelled:
        result, lines = build(docker_host, source, labelled, app_tag)
    assert result.success, result.messages
    assert "assemble from current" in lines


def test_an_original_builder_with_s2i_scripts_too_stays_original(
    api: docker.APIClient, docker_host: DockerHost, source: str, app_tag: str
) -> None:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN, **_scripts("/usr/libexec/s2i", "x")}
    with temporary_image(api, files) as mixed:
        result, lines = build(docker_host, source, mixed, app_tag)
    assert result.success, result.messages
    assert "assemble from x" not in lines
    assert image_config(api, app_tag)["Cmd"] == ["/usr/bin/run"]


@pytest.mark.parametrize(
    "url", ["ftp://scripts.example/s2i", "image://relative", "image:///a/../etc"]
)
def test_a_scripts_url_sti_cannot_take_is_bad_input(
    docker_host: DockerHost, unlabelled: str, source: str, app_tag: str, url: str
) -> None:
    with pytest.raises(InvalidInput, match="--scripts-url"):
        build(docker_host, source, unlabelled, app_tag, scripts_url=url)


DESTINATION_ASSEMBLE = """\
#!/bin/sh
set -e
echo "assemble: src $(ls /opt/dest/src | tr '\\n' ' ')"
saved=/opt/dest/artifacts/cache.txt
if [ -f "$saved" ]; then echo "assemble: restored $(cat "$saved")"; fi
if [ -e /tmp/src ]; then echo "assemble: /tmp/src exists"; fi
mkdir -p /opt/app && cp -R /opt/dest/src/. /opt/app/ && echo cached > /opt/app/cache.txt
"""


@pytest.fixture
def destination_builder(api: docker.APIClient) -> Iterator[str]:
    files = {
        "/usr/libexec/s2i/assemble": DESTINATION_ASSEMBLE,
        "/usr/libexec/s2i/run": "#!/bin/sh\nls /opt/app\n",
        "/usr/libexec/s2i/save-artifacts": "#!/bin/sh\ncd /opt/app\ntar cf - cache.txt\n",
    }
    lines = [
        "RUN mkdir -p /opt/dest",
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        "LABEL io.openshift.s2i.destination=/opt/dest",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="s2i-destination") as tag:
        yield tag


@pytest.mark.parametrize(
    ("engine", "method"),
    [
        ("buildkit_host", "build"),
        ("docker_host", "build"),  # in a container, under the build limits
        ("docker_host", "run"),
    ],
)
def test_the_destination_label_places_source_and_artifacts(
    request: pytest.FixtureRequest,
    destination_builder: str,
    source: str,
    app_tag: str,
    method: str,
    engine: str,
) -> None:
    docker_host: DockerHost = request.getfixturevalue(engine)
    first, lines = build(docker_host, source, destination_builder, app_tag, method=method)
    assert first.success, first.messages
    assert any(line.startswith("assemble: src ") and "index.html" in line for line in lines), lines
    assert "assemble: /tmp/src exists" not in lines
    second, lines = build(docker_host, source, destination_builder, app_tag, method=method)
    assert second.success and second.incremental, second.messages
    assert "assemble: restored cached" in lines


def test_destination_given_wins_over_the_label_and_is_refused_for_original_builders(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    unlabelled: str,
    source: str,
    app_tag: str,
) -> None:
    files = {
        "/usr/libexec/s2i/assemble": '#!/bin/sh\necho "in $(ls -d /srv/in/src)"\n',
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
    }
    lines = ["RUN mkdir -p /srv/in", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines) as image:
        result, output = build(docker_host, source, image, app_tag, destination="/srv/in")
    assert result.success, result.messages
    assert "in /srv/in/src" in output
    refused, _ = build(docker_host, source, images["sti-fake"], app_tag, destination="/srv/in")
    assert refused.error_code == "InvalidInput"
    assert "--destination applies to s2i builder images" in refused.messages[-1]


@pytest.mark.parametrize("path", ["relative", "/a/../etc", "/a b", "/a\nRUN x"])
def test_a_destination_that_is_not_plain_is_bad_input(
    docker_host: DockerHost, unlabelled: str, source: str, app_tag: str, path: str
) -> None:
    with pytest.raises(InvalidInput, match="is not a plain absolute directory"):
        build(docker_host, source, unlabelled, app_tag, destination=path)


def _usage(docker_host: DockerHost, image: str, scripts_url: str | None = None) -> Result:
    request = UsageRequest(image, scripts_url=scripts_url)
    return run_usage(docker_host, request, lambda line: None, "test")


def test_usage_prints_what_the_images_usage_script_says(
    docker_host: DockerHost, unlabelled: str
) -> None:
    result = _usage(docker_host, unlabelled)
    assert result.success, result.messages
    assert result.messages == ("usage of libexec", "  build me")
    assert _usage(docker_host, unlabelled, "image:///opt/other").messages[0] == "usage of other"


def test_usage_of_an_image_without_one_or_with_a_failing_one(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    missing = _usage(docker_host, images["sti-fake"])
    assert missing.error_code == "InvalidImage"
    assert missing.messages[-1] == f"image {images['sti-fake']} has no usage script /usr/bin/usage"
    files = {
        **_scripts("/usr/libexec/s2i", "x"),
        "/usr/libexec/s2i/usage": "#!/bin/sh\necho no\nexit 3\n",
    }
    with temporary_image(api, files) as failing:
        failed = _usage(docker_host, failing)
    assert failed.error_code == "BuildFailed"
    assert failed.messages == ("no", "/usr/libexec/s2i/usage exited with code 3")


@pytest.mark.parametrize("where", ["queue", "local"])
def test_sti_submit_usage_prints_it(
    worker: Worker, broker_url: str, unlabelled: str, where: str
) -> None:
    args = ["usage", unlabelled, *(["--local"] if where == "local" else ["--broker", broker_url])]
    done = sti_submit(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "usage of libexec\n  build me\n"


SOURCE_ASSEMBLE = """#!/bin/sh
set -e
echo "source assemble in $(dirname "$0")"
if [ -f /tmp/artifacts/cache.txt ]; then echo "restored $(cat /tmp/artifacts/cache.txt)"; fi
mkdir -p /opt/app && cp -R /tmp/src/. /opt/app/ && echo kept > /opt/app/cache.txt
"""


def _repository_source(root: Path, with_save: bool = True) -> Path:
    """A source laid out for s2i: its own assemble, run and save-artifacts in .s2i/bin."""
    source = root / "app"
    scripts = source / ".s2i" / "bin"
    scripts.mkdir(parents=True)
    (source / "index.html").write_text("hello\n")
    files = {
        "assemble": SOURCE_ASSEMBLE,
        "run": "#!/bin/sh\necho source run\n",
    }
    if with_save:
        files["save-artifacts"] = "#!/bin/sh\ncd /opt/app\ntar cf - cache.txt\n"
    for name, text in files.items():
        (scripts / name).write_text(text)
        (scripts / name).chmod(0o755)
    return source


@pytest.mark.parametrize(
    ("engine", "method"),
    [("buildkit_host", "build"), ("docker_host", "build"), ("docker_host", "run")],
)
def test_a_sources_s2i_scripts_win_over_the_images(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    unlabelled: str,
    app_tag: str,
    tmp_path: Path,
    engine: str,
    method: str,
) -> None:
    docker_host: DockerHost = request.getfixturevalue(engine)
    source = str(_repository_source(tmp_path))
    first, lines = build(docker_host, source, unlabelled, app_tag, method=method)
    assert first.success, first.messages
    assert "Scripts from the source's .s2i/bin: assemble, run, save-artifacts" in first.messages
    assert "source assemble in /tmp/scripts" in lines
    assert image_config(api, app_tag)["Cmd"] == ["/tmp/scripts/run"]
    second, lines = build(docker_host, source, unlabelled, app_tag, method=method)
    assert second.success and second.incremental, second.messages
    assert "restored kept" in lines  # the source's save-artifacts, kept in the image


def test_an_image_with_no_scripts_builds_with_the_sources(
    api: docker.APIClient, docker_host: DockerHost, app_tag: str, tmp_path: Path
) -> None:
    with temporary_image(api, {"/opt/nothing": "x"}, name="no-scripts") as bare:
        result, lines = build(docker_host, str(_repository_source(tmp_path)), bare, app_tag)
    assert result.success, result.messages
    assert "source assemble in /tmp/scripts" in lines


def test_an_original_builder_leaves_the_sources_s2i_scripts_alone(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    source = str(_repository_source(tmp_path))
    result, lines = build(docker_host, source, images["sti-fake"], app_tag)
    assert result.success, result.messages
    assert not any("source assemble" in line for line in lines)
    assert any("is an original sti builder" in line for line in lines)


def test_an_uploaded_repository_brings_its_scripts_through_the_queue(
    worker: Worker,
    broker_url: str,
    api: docker.APIClient,
    unlabelled: str,
    app_tag: str,
    tmp_path: Path,
) -> None:
    source = _repository_source(tmp_path, with_save=False)
    done = sti_submit("build", str(source), unlabelled, app_tag, "--broker", broker_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "source assemble in /tmp/scripts" in done.stderr
    assert image_config(api, app_tag)["Cmd"] == ["/tmp/scripts/run"]
