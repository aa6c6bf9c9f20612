"""--build-env: values prepare sees, byte-exact, that appear nowhere in the output image (its
config, its history, any layer of `docker save`), on BuildKit, the legacy builder, the container
path and -m run; over a name in the source's .s2i/environment; refused for an image without
/bin/sh."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.sandbox import Sandbox
from tests.dockertools import image_config, image_files, image_has, temporary_image
from tests.engine_helpers import build

PREPARE = """\
#!/bin/sh
set -e
printf %s "$TOKEN" | md5sum > /tmp/token.md5
printf %s "$OTHER" | md5sum > /tmp/other.md5
echo "visible=$VISIBLE" > /tmp/visible
echo "prepare saw a token of ${#TOKEN} characters"
"""


@pytest.fixture
def builder(api: docker.APIClient) -> Iterator[str]:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": "#!/bin/sh\ncat /tmp/visible\n"}
    with temporary_image(api, files, name="build-env") as tag:
        yield tag


def _token() -> str:
    """A value a careless shell would run or split: quotes, $(...), backquotes, a newline."""
    return f'tok\'en "$(touch /tmp/pwned)" `id` $HOME\n line two {uuid.uuid4().hex}'


def _md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()


def _saved_image(api: docker.APIClient, tag: str) -> bytes:
    """`docker save` of the image: its config, manifest and every layer, uncompressed."""
    return b"".join(api.get_image(tag))


def _host(kind: str, docker_host: DockerHost, buildkit_host: DockerHost) -> DockerHost:
    if kind == "buildkit":
        return buildkit_host
    if kind == "legacy":
        return DockerHost(builder="legacy", sandbox=Sandbox.engine_defaults())
    return docker_host  # the default limits: prepare runs in a container


@pytest.mark.parametrize(
    ("engine", "method"),
    [("buildkit", "build"), ("legacy", "build"), ("container", "build"), ("container", "run")],
)
def test_build_only_values_reach_prepare_and_nothing_of_the_image(
    api: docker.APIClient,
    docker_host: DockerHost,
    buildkit_host: DockerHost,
    builder: str,
    app_tag: str,
    tmp_path: Path,
    engine: str,
    method: str,
) -> None:
    token, other = _token(), f"second-{uuid.uuid4().hex}"
    source = tmp_path / "src"
    (source / ".s2i").mkdir(parents=True)
    (source / ".s2i" / "environment").write_text("TOKEN=from-the-source\nSOURCE_ONLY=kept\n")
    host = _host(engine, docker_host, buildkit_host)
    result, lines = build(
        host,
        str(source),
        builder,
        app_tag,
        method=method,
        env={"VISIBLE": "yes"},
        build_env={"TOKEN": token, "OTHER": other},
    )
    assert result.success, result.messages
    assert any(f"prepare saw a token of {len(token)} characters" in line for line in lines)
    seen = image_files(api, app_tag, "/tmp")
    assert seen["token.md5"].split()[0].decode() == _md5(token)
    assert seen["other.md5"].split()[0].decode() == _md5(other)
    env = image_config(api, app_tag)["Env"]
    assert "VISIBLE=yes" in env and "SOURCE_ONLY=kept" in env
    assert not [item for item in env if item.startswith(("TOKEN=", "OTHER="))]
    history = " ".join(str(entry.get("CreatedBy")) for entry in api.history(app_tag))
    saved = _saved_image(api, app_tag)
    for secret in (token.split("\n")[1], other):  # (the source's own file is in /tmp/src)
        assert secret not in history
        assert secret.encode() not in saved
    assert not image_has(api, app_tag, "/tmp/pwned")


def test_an_image_without_a_shell_is_refused_for_build_only_values(
    api: docker.APIClient, docker_host: DockerHost, app_tag: str, tmp_path: Path
) -> None:
    files = {"/usr/bin/prepare": "#!/bin/ash\ntrue\n", "/usr/bin/run": "#!/bin/ash\n"}
    lines = ['RUN ["/bin/busybox", "rm", "/bin/sh"]', 'CMD ["/usr/bin/run"]']
    with temporary_image(api, files, lines, name="no-shell") as image:
        result, _ = build(docker_host, str(tmp_path), image, app_tag, build_env={"TOKEN": "x"})
        assert not result.success and result.error_code == "InvalidImage"
        assert "no /bin/sh, which hands the --build-env values to prepare" in str(result.error)
        assert not api.images(name=app_tag)
        result, _ = build(docker_host, str(tmp_path), image, app_tag)  # without, it builds
        assert result.success, result.messages


def test_a_name_for_the_image_and_for_the_build_only_is_refused() -> None:
    with pytest.raises(InvalidInput, match="TOKEN is given both"):
        BuildRequest("src", "builder", "app", env={"TOKEN": "a"}, build_env={"TOKEN": "b"})


@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_a_failing_prepare_under_build_only_values_is_prepares_failure(
    api: docker.APIClient,
    docker_host: DockerHost,
    buildkit_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    engine: str,
) -> None:
    host = _host(engine, docker_host, buildkit_host)
    failing = images["sti-fake-failing"]
    result, _ = build(host, source, failing, app_tag, build_env={"TOKEN": "x"})
    assert result.error_code == "BuildFailed"
    assert "/usr/bin/prepare exited with code 3" in result.to_json()["error"]["message"]
    assert "prepare: about to fail" in result.messages
    assert not api.images(name=app_tag)
