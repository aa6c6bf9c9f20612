"""Running the engine in-process from tests: one build, with every line its sink received."""

from __future__ import annotations

import pytest

from sti.model import BuildRequest, Result
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build
from sti_worker.engine.sources import SourcePolicy, Sources
from tests.dockertools import TRACKER

METHODS = pytest.mark.parametrize("method", ["build", "run"])
# in-process, as sti-submit --local: the machine's own paths and file:// git URLs are allowed
IN_PROCESS = Sources(SourcePolicy(allow_file_urls=True, allow_local_paths=True))


def build(
    docker_host: DockerHost, source: str, image: str, tag: str, **options: object
) -> tuple[Result, list[str]]:
    """Run one build; return its result and every line its sink received."""
    lines: list[str] = []
    request = BuildRequest(source=source, build_image=image, tag=tag, **options)
    result = run_build(docker_host, request, lines.append, host="test", sources=IN_PROCESS)
    TRACKER.built(result.image_id)
    assert result.build_id == request.build_id
    return result, lines
