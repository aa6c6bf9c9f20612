"""Build environments as s2i gives them: the source's .s2i/environment, then -E files, then -e,
a later value winning; they reach prepare and stay in the image, through the queue (where the
directory is uploaded) and with --local (where the engine reads the file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.dockertools import temporary_image
from tests.images import RUN
from tests.queue_helpers import sti_submit
from tests.services import Worker

pytestmark = pytest.mark.docker

PREPARE = '#!/bin/sh\necho "seen: A=$A B=$B C=$C"\n'


@pytest.fixture
def printing_builder(api: docker.APIClient) -> Iterator[str]:
    with temporary_image(api, {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}) as tag:
        yield tag


@pytest.mark.parametrize("where", ["queue", "local"])
def test_source_environment_then_files_then_options(
    worker: Worker,
    broker_url: str,
    api: docker.APIClient,
    printing_builder: str,
    app_tag: str,
    tmp_path: Path,
    where: str,
) -> None:
    source = tmp_path / "app"
    (source / ".s2i").mkdir(parents=True)
    (source / ".s2i" / "environment").write_text("A=source\nB=source\nC=source\n")
    (tmp_path / "build.env").write_text("# for the build\nB=file\nC=file\n")
    args = ["build", str(source), printing_builder, app_tag, "-E"]
    args += [str(tmp_path / "build.env"), "-e", "C=option"]
    args += ["--local"] if where == "local" else ["--broker", broker_url]
    done = sti_submit(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seen: A=source B=file C=option" in done.stderr
    env = api.inspect_image(app_tag)["Config"]["Env"]
    assert {"A=source", "B=file", "C=option"} <= set(env)


def test_a_source_environment_that_is_a_link_is_refused(
    broker_url: str, printing_builder: str, app_tag: str, tmp_path: Path
) -> None:
    source = tmp_path / "app"
    (source / ".s2i").mkdir(parents=True)
    (source / ".s2i" / "environment").symlink_to("/etc/passwd")
    done = sti_submit("build", str(source), printing_builder, app_tag, "--local", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert ".s2i/environment in the source is a symbolic link" in done.stdout


@pytest.mark.parametrize("where", ["queue", "local"])
def test_build_only_values_reach_prepare_and_leave_the_source_environments_name_out(
    worker: Worker,
    broker_url: str,
    api: docker.APIClient,
    printing_builder: str,
    app_tag: str,
    tmp_path: Path,
    where: str,
) -> None:
    source = tmp_path / "app"
    (source / ".s2i").mkdir(parents=True)
    (source / ".s2i" / "environment").write_text("A=source\nB=source\n")
    args = ["build", str(source), printing_builder, app_tag, "--build-env", "B=build-only"]
    args += ["--build-env", "C=only, this", "-e", "A=option"]
    args += ["--local"] if where == "local" else ["--broker", broker_url]
    done = sti_submit(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seen: A=option B=build-only C=only, this" in done.stderr
    env = api.inspect_image(app_tag)["Config"]["Env"]
    assert "A=option" in env
    assert not [item for item in env if item.startswith(("B=", "C="))]


def test_a_name_both_for_the_image_and_the_build_only_is_bad_input(
    printing_builder: str, app_tag: str, tmp_path: Path
) -> None:
    args = ["build", str(tmp_path), printing_builder, app_tag, "-e", "B=1", "--build-env", "B=2"]
    done = sti_submit(*args, "--local")
    assert done.returncode == 2
    assert "B is given both for the image (-e, -E) and for the build only" in done.stderr
