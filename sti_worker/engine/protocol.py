"""The builder-image protocols: which scripts an image must have, where, and how sti checks.

The original sti protocol keeps prepare, run and save-artifacts in /usr/bin, and save-artifacts
fills /tmp/artifacts. An s2i builder image keeps assemble (the prepare step), run and
save-artifacts in the directory --scripts-url, else its label io.openshift.s2i.scripts-url,
else the legacy io.s2i.scripts-url names (image://<dir>), else in /usr/libexec/s2i when it has
no /usr/bin/prepare; its save-artifacts writes a tar of the artifacts to stdout. Scripts are
looked up through the Docker archive API in a created, never started container, so images with
an ENTRYPOINT, without a shell or without /bin/true are checked just the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from sti.errors import InvalidImage, InvalidInput

from .docker_host import DockerHost, FactCodec, PathStat, container_name

PREPARE_ROLE = "prepare"
RUN_ROLE = "run"
SAVE_ROLE = "save-artifacts"
USAGE_ROLE = "usage"
DEPLOY_SCRIPTS = (PREPARE_ROLE, RUN_ROLE)
INCREMENTAL_SCRIPTS = (PREPARE_ROLE, RUN_ROLE, SAVE_ROLE)

# the Scripts field that holds each role's path
_FIELDS = {
    PREPARE_ROLE: "prepare",
    RUN_ROLE: "run",
    SAVE_ROLE: "save_artifacts",
    USAGE_ROLE: "usage",
}

ARTIFACTS_DIR = "/tmp/artifacts"
BUILD_DIR = "/tmp/build"
SHELL = "/bin/sh"
S2I_SCRIPTS_LABEL = "io.openshift.s2i.scripts-url"
S2I_LABELS = (S2I_SCRIPTS_LABEL, "io.s2i.scripts-url")  # s2i's order: the legacy one second
S2I_DEFAULT_DIR = "/usr/libexec/s2i"


@dataclass(frozen=True)
class Scripts:
    """Where one image keeps the protocol's scripts."""

    kind: str  # "sti" or "s2i": its layout (see layouts)
    prepare: str
    run: str
    save_artifacts: str
    usage: str = ""

    def path(self, role: str) -> str:
        return str(getattr(self, _FIELDS[role]))

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scripts:
        return cls(**data)


ORIGINAL = Scripts(
    "sti", "/usr/bin/prepare", "/usr/bin/run", "/usr/bin/save-artifacts", "/usr/bin/usage"
)


def s2i_scripts_at(directory: str) -> Scripts:
    directory = "/" + directory.strip("/")
    return Scripts(
        "s2i",
        f"{directory}/assemble",
        f"{directory}/run",
        f"{directory}/save-artifacts",
        f"{directory}/usage",
    )


S2I_DEFAULT = s2i_scripts_at(S2I_DEFAULT_DIR)
SCRIPT_ROLES = {
    "assemble": PREPARE_ROLE,
    "run": RUN_ROLE,
    "save-artifacts": SAVE_ROLE,
    "usage": USAGE_ROLE,
}


def with_source_scripts(scripts: Scripts, names: Iterable[str], destination: str) -> Scripts:
    """scripts with those the source brings (s2i names) in <destination>/scripts, where they
    are copied from the source before prepare runs."""
    moved = {
        _FIELDS[SCRIPT_ROLES[name]]: f"{destination}/scripts/{name}"
        for name in names
        if name in SCRIPT_ROLES  # assemble-runtime is the runtime image's
    }
    return replace(scripts, **moved) if moved else scripts


def scripts_of(
    image: str, config: Mapping[str, Any], scripts_url: str | None = None
) -> Scripts | None:
    """The scripts that --scripts-url or, failing it, the image's labels name (s2i's order),
    or None when nothing names them (see inspect_scripts)."""
    labels = config.get("Labels") or {}
    named = [("--scripts-url", scripts_url)] + [(name, labels.get(name)) for name in S2I_LABELS]
    for origin, url in named:
        if not url:
            continue
        if not isinstance(url, str) or not url.startswith("image://") or ".." in url:
            error = InvalidInput if origin == "--scripts-url" else InvalidImage
            raise error(
                f"{origin} of {image} is {url!r}: sti takes image:// locations (a directory "
                "in the image) only"
            )
        return s2i_scripts_at(url.removeprefix("image://"))
    return None


@dataclass(frozen=True)
class ImageScripts:
    image: str
    scripts: Scripts
    found: Mapping[str, PathStat]
    artifacts_dir_empty: bool = False  # /tmp/artifacts in the image is empty or missing
    has_shell: bool = False  # /bin/sh (--build-env hands its values to prepare through it)

    def has(self, role: str) -> bool:
        stat = self.found.get(role)
        return bool(stat and stat.exists and stat.is_file and stat.executable)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "scripts": self.scripts.to_json(),
            "found": {role: asdict(stat) for role, stat in self.found.items()},
            "artifacts_dir_empty": self.artifacts_dir_empty,
            "has_shell": self.has_shell,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageScripts:
        return cls(
            str(data["image"]),
            Scripts.from_json(data["scripts"]),
            {str(role): PathStat(**stat) for role, stat in data["found"].items()},
            bool(data["artifacts_dir_empty"]),
            bool(data["has_shell"]),
        )

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
    scripts_url: str | None = None,
) -> ImageScripts:
    """Find which protocol scripts image has, and where (config: its inspected Config;
    scripts_url: a --scripts-url over its labels); with check_artifacts_dir, also whether its
    /tmp/artifacts is empty."""
    named = scripts_of(image, host.image_config(image) if config is None else config, scripts_url)
    # nothing named: the original layout, or s2i's default directory if only it is there
    candidates = [named] if named else [ORIGINAL, S2I_DEFAULT]

    def look() -> ImageScripts:
        container = host.create_container(
            image, [candidates[0].prepare], name=container_name(build_id, role), build_id=build_id
        )
        try:
            looked = []
            for candidate in candidates:
                # the shell is asked along with the first candidate's scripts
                paths = [candidate.path(role) for role in INCREMENTAL_SCRIPTS]
                *stats, shell_stat = host.stat_all(container, [*paths, SHELL])
                found_here = dict(zip(INCREMENTAL_SCRIPTS, stats, strict=True))
                looked.append((candidate, found_here, shell_stat))
                if found_here[PREPARE_ROLE].exists:
                    break
            scripts, found, shell_stat = next(
                (entry for entry in looked if entry[1][PREPARE_ROLE].exists), looked[0]
            )
            empty = check_artifacts_dir and host.is_empty_directory(container, ARTIFACTS_DIR)
            shell = shell_stat.exists
        finally:
            host.remove_container(container)
        return ImageScripts(image, scripts, found, empty, shell)

    key = ("scripts", named, check_artifacts_dir)  # named: what the labels or the URL name
    return host.image_fact(image, key, look, _IMAGE_SCRIPTS_CODEC)


_IMAGE_SCRIPTS_CODEC = FactCodec(ImageScripts.to_json, ImageScripts.from_json)
