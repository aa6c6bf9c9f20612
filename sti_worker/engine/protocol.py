"""The builder-image protocol: which scripts an image must have, and how sti checks for them.

Scripts are looked up through the Docker archive API in a created (never started) container, so
images with an ENTRYPOINT, without a shell or without /bin/true are checked just the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .docker_host import DockerHost, PathStat, container_name

PREPARE = "/usr/bin/prepare"
RUN = "/usr/bin/run"
SAVE_ARTIFACTS = "/usr/bin/save-artifacts"
ALL_SCRIPTS = (PREPARE, RUN, SAVE_ARTIFACTS)
DEPLOY_SCRIPTS = (PREPARE, RUN)
INCREMENTAL_SCRIPTS = (PREPARE, RUN, SAVE_ARTIFACTS)

SOURCE_DIR = "/tmp/src"
ARTIFACTS_DIR = "/tmp/artifacts"
BUILD_DIR = "/tmp/build"


@dataclass(frozen=True)
class ImageScripts:
    image: str
    found: Mapping[str, PathStat]

    def has(self, script: str) -> bool:
        stat = self.found.get(script)
        return bool(stat and stat.exists and stat.is_file and stat.executable)

    def problems(self, required: Iterable[str]) -> list[str]:
        problems = []
        for script in required:
            stat = self.found.get(script)
            if stat is None or not stat.exists:
                problems.append(f"missing {script}")
            elif not stat.is_file:
                problems.append(f"{script} is not a file")
            elif not stat.executable:
                problems.append(f"{script} is not executable")
        return problems


def inspect_scripts(host: DockerHost, image: str, *, build_id: str, role: str) -> ImageScripts:
    """Find which protocol scripts image has."""
    container = host.create_container(
        image, [PREPARE], name=container_name(build_id, role), build_id=build_id
    )
    try:
        found = {script: host.stat(container, script) for script in ALL_SCRIPTS}
    finally:
        host.remove_container(container)
    return ImageScripts(image, found)
