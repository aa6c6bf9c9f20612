"""Build tiny offline images FROM scratch with the host's static busybox binary.

Used by the examples, the test fixtures and the bench (not part of the installed package): no
registry, no network, only docker-py.
"""

from __future__ import annotations

import io
import posixpath
import shlex
import tarfile
from collections.abc import Iterable, Mapping, Sequence

import docker
import docker.errors

#: Where the given files are put in the build context and (briefly) in the image.
_STAGING = ".sti-busybox-files"

#: Fixed mtime for context entries, so identical inputs give identical contexts.
_MTIME = 0

# Shared by every image built from the same busybox binary, so Docker caches these layers.
_BASE_LINES = (
    "FROM scratch",
    "COPY busybox /bin/busybox",
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
    "RUN mkdir -p /tmp /usr/bin /usr/local/bin && chmod 1777 /tmp",
)


def _normalize_target(path: str) -> str:
    """Return the image path for a files key, rejecting relative or escaping paths."""
    if not path.startswith("/"):
        raise ValueError(f"image path must be absolute: {path!r}")
    norm = "/" + posixpath.normpath(path).lstrip("/")
    if norm == "/" or ".." in path.split("/") or "\n" in path or "\0" in path:
        raise ValueError(f"invalid image path: {path!r}")
    return norm


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _dockerfile(targets: Sequence[str], extra_lines: Iterable[str]) -> str:
    lines = list(_BASE_LINES)
    if targets:
        # COPY straight onto an existing symlink may follow it; stage then move instead.
        lines.append(f"COPY {_STAGING}/ /{_STAGING}/")
        steps = []
        for target in targets:
            src = shlex.quote(f"/{_STAGING}{target}")
            dst = shlex.quote(target)
            parent = shlex.quote(posixpath.dirname(target))
            steps.append(f"mkdir -p {parent} && rm -rf {dst} && mv {src} {dst}")
        steps.append(f"rm -rf /{_STAGING}")
        lines.append("RUN " + " && ".join(steps))
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


def _build_context(
    files: Mapping[str, str | bytes], dockerfile_lines: Sequence[str], busybox_path: str
) -> io.BytesIO:
    staged: dict[str, bytes] = {}
    for path, content in files.items():
        target = _normalize_target(path)
        if target in staged:
            raise ValueError(f"duplicate image path: {path!r}")
        staged[target] = content.encode() if isinstance(content, str) else bytes(content)

    with open(busybox_path, "rb") as fh:
        busybox = fh.read()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = _dockerfile(sorted(staged), dockerfile_lines)
        _add_file(tar, "Dockerfile", dockerfile.encode(), 0o644)
        _add_file(tar, "busybox", busybox, 0o755)
        for target in sorted(staged):
            _add_file(tar, f"{_STAGING}{target}", staged[target], 0o755)
    buf.seek(0)
    return buf


def build_busybox_image(
    api: docker.APIClient,
    tag: str,
    files: Mapping[str, str | bytes],
    *,
    dockerfile_lines: Sequence[str] = (),
    busybox_path: str = "/bin/busybox",
) -> str:
    """Build ``tag`` FROM scratch with busybox installed in /bin and ``files`` added.

    ``files`` maps absolute image paths (e.g. "/usr/bin/prepare") to contents; each is stored
    with mode 0755, replacing whatever was at that path. ``dockerfile_lines`` are appended
    verbatim (ENV, ENTRYPOINT, CMD, RUN, ...). Returns the image id ("sha256:...").
    Raises RuntimeError with the daemon's message when the build fails.
    """
    context = _build_context(files, dockerfile_lines, busybox_path)
    log: list[str] = []
    image_id: str | None = None
    try:
        for chunk in api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in chunk:
                log.append(str(chunk["stream"]))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            if error:
                output = "".join(log).strip()
                raise RuntimeError(f"building {tag} failed: {error.strip()}\n{output}".rstrip())
    except docker.errors.APIError as exc:
        raise RuntimeError(f"building {tag} failed: {exc.explanation or exc}") from exc
    return image_id or str(api.inspect_image(tag)["Id"])
