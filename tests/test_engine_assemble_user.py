"""Who runs assemble: --assemble-user over the io.openshift.s2i.assemble-user label over USER,
names looked up in the image; --allowed-uids refuses the rest; the output keeps its USER."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import image_config, run_and_read, temporary_image
from tests.engine_helpers import build

ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /opt/app
echo "$(id -u):$(id -g)" > /opt/app/who
cp /tmp/src/* /opt/app/
mv /tmp/src /tmp/moved  # only the owner of the inputs may
"""
ACCOUNTS = {
    "/etc/passwd": "root:x:0:0:root:/:/bin/sh\napp:x:1234:1500::/opt/app:/bin/sh\n",
    "/etc/group": "root:x:0:\napp:x:1500:\nstaff:x:50:\n",
}


def _builder(api: docker.APIClient, *lines: str) -> Iterator[str]:
    files = {"/usr/libexec/s2i/assemble": ASSEMBLE, "/usr/libexec/s2i/run": "#!/bin/sh\n"}
    with temporary_image(
        api,
        {**files, **ACCOUNTS},
        [
            "RUN mkdir -p /opt/app && chmod 777 /opt/app",
            "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
            *lines,
            'CMD ["/bin/sh"]',
        ],
        name="assemble-user",
    ) as tag:
        yield tag


@pytest.fixture(scope="module")
def labelled(api: docker.APIClient) -> Iterator[str]:
    """No USER (root), assemble-user label 1001."""
    yield from _builder(api, "LABEL io.openshift.s2i.assemble-user=1001")


@pytest.fixture(scope="module")
def rooted(api: docker.APIClient) -> Iterator[str]:
    yield from _builder(api)


@pytest.fixture
def source(tmp_path: Path) -> str:
    (tmp_path / "app.txt").write_text("hello\n")
    return str(tmp_path)


@pytest.mark.parametrize("builder", ["container", "buildkit"])
def test_the_label_names_who_runs_assemble_and_the_image_keeps_its_user(
    api: docker.APIClient,
    docker_host: DockerHost,
    buildkit_host: DockerHost,
    labelled: str,
    source: str,
    app_tag: str,
    builder: str,
) -> None:
    host = buildkit_host if builder == "buildkit" else docker_host
    result, lines = build(host, source, labelled, app_tag)
    assert result.success, result.messages
    assert "assemble runs as 1001 (1001:0)" in "\n".join(lines)
    assert run_and_read(api, app_tag, "/opt/app")["who"] == b"1001:0\n"
    assert image_config(api, app_tag).get("User") in ("", "0")


def test_run_method_and_a_user_name_from_the_image(
    api: docker.APIClient, docker_host: DockerHost, labelled: str, source: str, app_tag: str
) -> None:
    result, _ = build(
        docker_host, source, labelled, app_tag, method="run", assemble_user="app:staff"
    )
    assert result.success, result.messages
    assert run_and_read(api, app_tag, "/opt/app")["who"] == b"1234:50\n"


def test_an_unknown_user_name_is_refused(
    docker_host: DockerHost, labelled: str, source: str, app_tag: str
) -> None:
    result, _ = build(docker_host, source, labelled, app_tag, assemble_user="nobody-here")
    assert not result.success
    assert result.error and result.error["code"] == "InvalidImage"
    assert "no user 'nobody-here'" in result.error["message"]


def test_allowed_uids_refuse_root_and_accept_the_assemble_user(
    docker_host: DockerHost, labelled: str, rooted: str, source: str, app_tag: str
) -> None:
    refused, _ = build(docker_host, source, rooted, app_tag, allowed_uids="1-")
    assert not refused.success and refused.error
    assert refused.error["code"] == "InvalidImage"
    assert "root (no USER) (uid 0), outside --allowed-uids 1-" in refused.error["message"]
    accepted, _ = build(docker_host, source, labelled, app_tag, allowed_uids="1000-2000")
    assert accepted.success, accepted.messages
    named, _ = build(
        docker_host, source, labelled, app_tag, allowed_uids="1-1233", assemble_user="app"
    )
    assert not named.success and named.error
    assert "as app (uid 1234)" in named.error["message"]
