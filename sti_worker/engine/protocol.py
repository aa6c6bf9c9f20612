"""The builder-image protocols: which scripts an image must have, where, and how sti checks.

The original sti protocol keeps prepare, run and save-artifacts in /usr/bin, and save-artifacts
fills /tmp/artifacts. An s2i builder image names its scripts directory in the label
io.openshift.s2i.scripts-url (image://<dir>) and keeps assemble (the prepare step), run and
save-artifacts there; its save-artifacts writes a tar of the artifacts to stdout. Scripts are
looked up through the Docker archive API in a created, never started container, so images with
an ENTRYPOINT, without a shell or without /bin/true are checked just the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sti.errors import InvalidImage

from .docker_host import DockerHost, PathStat, container_name

PREPARE_ROLE = "prepare"
RUN_ROLE = "run"
SAVE_ROLE = "save-artifacts"
DEPLOY_SCRIPTS = (PREPARE_ROLE, RUN_ROLE)
INCREMENTAL_SCRIPTS = (PREPARE_ROLE, RUN_ROLE, SAVE_ROLE)

ARTIFACTS_DIR = "/tmp/artifacts"
BUILD_DIR = "/tmp/build"
S2I_SCRIPTS_LABEL = "io.openshift.s2i.scripts-url"


@dataclass(frozen=True)
class Scripts:
    """Where one image keeps the protocol's scripts."""

    kind: str  # "sti" or "s2i"
    prepare: str
    run: str
    save_artifacts: str

    @property
    def artifacts_on_stdout(self) -> bool:
        return self.kind == "s2i"

    def path(self, role: str) -> str:
        return {PREPARE_ROLE: self.prepare, RUN_ROLE: self.run, SAVE_ROLE: self.save_artifacts}[
            role
        ]

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scripts:
        return cls(**data)


ORIGINAL = Scripts("sti", "/usr/bin/prepare", "/usr/bin/run", "/usr/bin/save-artifacts")


def scripts_of(image: str, config: Mapping[str, Any]) -> Scripts:
    """The scripts of an image, from its labels (s2i) or the original locations."""
    url = (config.get("Labels") or {}).get(S2I_SCRIPTS_LABEL)
    if not url:
        return ORIGINAL
    if not url.startswith("image://") or ".." in url:
        raise InvalidImage(
            f"image {image} keeps its s2i scripts at {url!r}; sti supports image:// locations only"
        )
    directory = "/" + url.removeprefix("image://").strip("/")
    return Scripts(
        "s2i", f"{directory}/assemble", f"{directory}/run", f"{directory}/save-artifacts"
    )


@dataclass(frozen=True)
class ImageScripts:
    image: str
    scripts: Scripts
    found: Mapping[str, PathStat]
    artifacts_dir_empty: bool = False  # /tmp/artifacts in the image is empty or missing

    def has(self, role: str) -> bool:
        stat = self.found.get(role)
        return bool(stat and stat.exists and stat.is_file and stat.executable)

    def problems(self, roles: Iterable[str]) -> list[str]:
        problems = []
        for role in roles:
            stat = self.found.get(role)
            path = self.scripts.path(role)
            if stat is None or not stat.exists:
                problems.append(f"missing {path}")
            elif not stat.is_file:
                problems.append(f"{path} is not a file")
            elif not stat.executable:
                problems.append(f"{path} is not executable")
        return problems


def inspect_scripts(
    host: DockerHost,
    image: str,
    *,
    build_id: str,
    role: str,
    config: Mapping[str, Any] | None = None,
    check_artifacts_dir: bool = False,
) -> ImageScripts:
    """Find which protocol scripts image has, and where (config: its inspected Config); with
    check_artifacts_dir, also whether its /tmp/artifacts is empty."""
    scripts = scripts_of(image, host.image_config(image) if config is None else config)

    def look() -> ImageScripts:
        container = host.create_container(
            image, [scripts.prepare], name=container_name(build_id, role), build_id=build_id
        )
        try:
            found = {
                script_role: host.stat(container, scripts.path(script_role))
                for script_role in INCREMENTAL_SCRIPTS
            }
            empty = check_artifacts_dir and host.is_empty_directory(container, ARTIFACTS_DIR)
        finally:
            host.remove_container(container)
        return ImageScripts(image, scripts, found, empty)

    return host.image_fact(image, ("scripts", scripts, check_artifacts_dir), look)
