"""--scripts-url over http(s) and file://, as s2i takes them: each script from the URL unless the
source's .s2i/bin has it, the image's own for the rest; installed in <destination>/scripts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest, UsageRequest
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build, run_usage
from sti_worker.engine.sources import SourcePolicy, Sources
from tests.dockertools import image_config, run_output, temporary_image
from tests.engine_helpers import build
from tests.queue_helpers import sti_submit
from tests.services import Worker

pytestmark = pytest.mark.docker

URL_ASSEMBLE = """#!/bin/sh
set -e
echo "url assemble in $(dirname "$0") as $(id -u)"
if [ -f /opt/dest/artifacts/kept.txt ]; then echo "restored $(cat /opt/dest/artifacts/kept.txt)"; fi
mkdir -p /opt/app && cp -R /opt/dest/src/. /opt/app/ && echo kept > /opt/app/kept.txt
"""
URL_SCRIPTS = {
    "assemble": URL_ASSEMBLE,
    "run": "#!/bin/sh\necho url run\n",
    "save-artifacts": "#!/bin/sh\ncd /opt/app\ntar cf - kept.txt\n",
    "usage": "#!/bin/sh\necho url usage\n",
}


@pytest.fixture(scope="module")
def image_scripts_builder(api: docker.APIClient) -> Iterator[str]:
    """Labelled s2i scripts of its own (which a URL overrides), destination /opt/dest, user 1001."""
    files = {
        "/usr/libexec/s2i/assemble": "#!/bin/sh\necho image assemble\n",
        "/usr/libexec/s2i/run": "#!/bin/sh\necho image run\n",
        "/usr/libexec/s2i/usage": "#!/bin/sh\necho image usage\n",
    }
    lines = [
        "RUN mkdir -p /opt/dest /opt/app && chown 1001:0 /opt/dest /opt/app",
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        "LABEL io.openshift.s2i.destination=/opt/dest",
        "USER 1001",
    ]
    with temporary_image(api, files, lines, name="s2i-url-scripts") as tag:
        yield tag


def _write_scripts(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_text(URL_SCRIPTS[name])  # not executable: s2i makes them so
    return directory


@pytest.mark.parametrize(("engine", "method"), [("buildkit_host", "build"), ("docker_host", "run")])
def test_http_scripts_win_over_the_images_and_serve_the_next_build_too(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    http_server: tuple[str, Path],
    image_scripts_builder: str,
    source: str,
    app_tag: str,
    engine: str,
    method: str,
) -> None:
    docker_host: DockerHost = request.getfixturevalue(engine)
    base, root = http_server
    _write_scripts(root / "s2i", ("assemble", "run", "save-artifacts"))
    url = f"{base}/s2i"
    first, lines = build(
        docker_host, source, image_scripts_builder, app_tag, method=method, scripts_url=url
    )
    assert first.success, first.messages
    assert f"Scripts from {url}: assemble, run, save-artifacts" in first.messages
    assert "url assemble in /opt/dest/scripts as 1001" in lines
    assert image_config(api, app_tag)["Cmd"] == ["/opt/dest/scripts/run"]
    assert run_output(api, app_tag) == "url run\n"
    again, lines = build(
        docker_host, source, image_scripts_builder, app_tag, method=method, scripts_url=url
    )
    assert again.success and again.incremental, again.messages
    assert "restored kept" in lines  # the URL's save-artifacts, installed in the image


def test_the_sources_scripts_win_over_the_urls_per_script(
    api: docker.APIClient,
    docker_host: DockerHost,
    http_server: tuple[str, Path],
    image_scripts_builder: str,
    tmp_path: Path,
    app_tag: str,
) -> None:
    base, root = http_server
    _write_scripts(root / "s2i", ("assemble", "run"))
    source = tmp_path / "app"
    (source / ".s2i" / "bin").mkdir(parents=True)
    (source / ".s2i" / "bin" / "run").write_text("#!/bin/sh\necho source run\n")
    (source / ".s2i" / "bin" / "run").chmod(0o755)
    result, lines = build(
        docker_host, str(source), image_scripts_builder, app_tag, scripts_url=f"{base}/s2i"
    )
    assert result.success, result.messages
    assert "url assemble in /opt/dest/scripts as 1001" in lines
    assert run_output(api, app_tag) == "source run\n"


@pytest.mark.parametrize("where", ["queue", "local"])
def test_a_file_url_is_uploaded_with_the_source(
    worker: Worker,
    broker_url: str,
    api: docker.APIClient,
    image_scripts_builder: str,
    source: str,
    app_tag: str,
    tmp_path: Path,
    where: str,
) -> None:
    scripts = _write_scripts(tmp_path / "my scripts", ("assemble", "usage"))
    url = f"file://{str(scripts).replace(' ', '%20')}"
    target = ["--local"] if where == "local" else ["--broker", broker_url]
    done = sti_submit("build", source, image_scripts_builder, app_tag, "-s", url, *target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "url assemble in /opt/dest/scripts as 1001" in done.stderr
    assert run_output(api, app_tag) == "image run\n"  # the image's own run: the URL has none
    usage = sti_submit("usage", image_scripts_builder, "-s", url, *target)
    assert usage.returncode == 0, usage.stdout + usage.stderr
    assert usage.stdout == "url usage\n"


def test_usage_from_http_and_a_url_without_one(
    docker_host: DockerHost, http_server: tuple[str, Path], image_scripts_builder: str
) -> None:
    base, root = http_server
    _write_scripts(root / "with", ("usage",))
    _write_scripts(root / "without", ("assemble",))

    def usage(url: str) -> tuple[str, ...]:
        result = run_usage(
            docker_host, UsageRequest(image_scripts_builder, url), lambda line: None, "test"
        )
        assert result.success, result.messages
        return result.messages

    assert usage(f"{base}/with") == ("url usage",)
    assert usage(f"{base}/without") == ("image usage",)


def test_a_worker_refuses_a_file_url_it_was_sent(
    docker_host: DockerHost, image_scripts_builder: str, source: str, app_tag: str, tmp_path: Path
) -> None:
    scripts = _write_scripts(tmp_path / "s2i", ("assemble",))
    request = BuildRequest(source, image_scripts_builder, app_tag, scripts_url=f"file://{scripts}")
    shared = Sources(SourcePolicy(allow_local_paths=True))  # as a worker: no file:// URLs
    result = run_build(docker_host, request, lambda line: None, host="test", sources=shared)
    assert result.error_code == "InvalidInput"
    assert "a worker does not read its own disk" in result.messages[-1]
