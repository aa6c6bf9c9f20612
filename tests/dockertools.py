"""Test helpers that look inside images: run an image's default command, read files out.

Every container made here is removed again before the helper returns: a container created from
an image built by sti carries the io.sti.build-id label, and the autouse nothing_left_behind
fixture fails a test that leaves such a container behind.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from examples.busybox_images import build_busybox_image
from sti_worker.engine.docker_host import BUILD_ID_LABEL


@dataclass(frozen=True)
class Entry:
    """One member of an archive taken out of a container."""

    kind: str  # "file", "dir", "symlink", "hardlink" (content filled in) or "other"
    content: bytes = b""
    linkname: str = ""
    mode: int = 0


@contextlib.contextmanager
def _container(
    api: docker.APIClient, image: str, *, run: bool, timeout: int = 30
) -> Iterator[tuple[str, int | None]]:
    """A throwaway container of image (started and waited for when run), removed afterwards."""
    container = api.create_container(image, name=f"test-run-{uuid.uuid4().hex[:12]}")
    try:
        exit_code = None
        if run:
            api.start(container)
            exit_code = int(api.wait(container, timeout=timeout)["StatusCode"])
        yield container["Id"], exit_code
    finally:
        api.remove_container(container, force=True, v=True)


def run_default_command(api: docker.APIClient, image: str, timeout: int = 30) -> int:
    """Run the image's own CMD to completion in a throwaway container; return its exit code."""
    with _container(api, image, run=True, timeout=timeout) as (_, exit_code):
        assert exit_code is not None
        return exit_code


def run_output(api: docker.APIClient, image: str, timeout: int = 30) -> str:
    """What the image's own CMD prints on stdout, run to completion in a throwaway container."""
    with _container(api, image, run=True, timeout=timeout) as (container, _):
        return str(api.logs(container, stdout=True, stderr=False).decode())


def run_and_read(api: docker.APIClient, image: str, path: str) -> dict[str, bytes]:
    """Run the image's CMD, then return {relative name: content} of regular files under path.

    Directories and symlinks are left out (see run_and_read_tree); hard links are files.
    """
    with _container(api, image, run=True) as (container, _):
        return read_files(api, container, path)


def run_and_read_tree(api: docker.APIClient, image: str, path: str) -> dict[str, Entry]:
    """Run the image's CMD, then return {relative name: Entry} of everything under path."""
    with _container(api, image, run=True) as (container, _):
        return read_tree(api, container, path)


def image_tree(api: docker.APIClient, image: str, path: str) -> dict[str, Entry]:
    """{relative name: Entry} under path in the image, without running anything."""
    with _container(api, image, run=False) as (container, _):
        return read_tree(api, container, path)


def image_files(api: docker.APIClient, image: str, path: str) -> dict[str, bytes]:
    """Like run_and_read, without running anything."""
    with _container(api, image, run=False) as (container, _):
        return read_files(api, container, path)


def image_has(api: docker.APIClient, image: str, path: str) -> bool:
    """Whether path exists in the image (without running anything)."""
    with _container(api, image, run=False) as (container, _):
        try:
            api.get_archive(container, path)[0].close()
        except docker.errors.NotFound:
            return False
        return True


def read_tree(api: docker.APIClient, container: str, path: str) -> dict[str, Entry]:
    """{name relative to path: Entry} for every member of the archive of path ("" is path)."""
    stream, _ = api.get_archive(container, path)
    data = b"".join(stream)
    entries: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            name = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isreg():
                content = archive.extractfile(member)
                assert content is not None
                entries[name] = Entry("file", content.read(), mode=member.mode)
            elif member.isdir():
                entries[name] = Entry("dir", mode=member.mode)
            elif member.issym():
                entries[name] = Entry("symlink", linkname=member.linkname, mode=member.mode)
            elif member.islnk():  # content is that of the (earlier) member it links to
                target = member.linkname.split("/", 1)[1] if "/" in member.linkname else ""
                content = entries[target].content if target in entries else b""
                entries[name] = Entry("hardlink", content, member.linkname, member.mode)
            else:
                entries[name] = Entry("other", mode=member.mode)
    return entries


def read_files(api: docker.APIClient, container: str, path: str) -> dict[str, bytes]:
    """{name relative to path: content} of the regular files (and hard links) under path."""
    tree = read_tree(api, container, path)
    return {name: e.content for name, e in tree.items() if e.kind in ("file", "hardlink")}


def image_config(api: docker.APIClient, image: str) -> Mapping[str, Any]:
    return api.inspect_image(image).get("Config") or {}


def image_env(api: docker.APIClient, image: str) -> dict[str, str]:
    """The image config's Env as a dict (split at the first "=")."""
    env: dict[str, str] = {}
    for item in image_config(api, image).get("Env") or []:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def image_id_or_none(api: docker.APIClient, ref: str) -> str | None:
    try:
        return str(api.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        return None


def images_of_build(api: docker.APIClient, build_id: str) -> list[str]:
    """Ids of every image (intermediate ones included) labelled with this build id."""
    found = api.images(all=True, filters={"label": f"{BUILD_ID_LABEL}={build_id}"})
    return [image["Id"] for image in found]


def containers_of_build(api: docker.APIClient, build_id: str) -> list[str]:
    found = api.containers(all=True, filters={"label": f"{BUILD_ID_LABEL}={build_id}"})
    return [container["Id"] for container in found]


class ImageTracker:
    """Images tests made that no fixture removes: replaced builds and bases of other images.

    An incremental build moves APP_TAG to a new image, leaving the previous one untagged; the
    app_tag fixture only removes what the tags point to at the end. Test modules record every
    image a build made and call cleanup() after each test (see their autouse fixture).
    """

    def __init__(self) -> None:
        self._built: list[str] = []
        self._bases: list[str] = []

    def built(self, *image_ids: str | None) -> None:
        self._built += [image_id for image_id in image_ids if image_id]

    def base(self, image_id: str) -> None:
        """An image others were built on: removed after them."""
        self._bases.append(image_id)

    def cleanup(self) -> None:
        if not self._built and not self._bases:
            return
        api = docker.APIClient(version="auto")
        try:
            for image_id in [*reversed(self._built), *reversed(self._bases)]:
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_image(image_id, force=True)
        finally:
            api.close()
            self._built.clear()
            self._bases.clear()


TRACKER = ImageTracker()


@contextlib.contextmanager
def temporary_image(
    api: docker.APIClient,
    files: Mapping[str, str | bytes],
    dockerfile_lines: Sequence[str] = ('CMD ["/bin/sh"]',),
    name: str = "custom",
) -> Iterator[str]:
    """A busybox image built for one test, tagged sti-test/<name>-<random>; removed after.

    If images built on it still exist, it is only untagged here and removed by TRACKER.cleanup().
    """
    tag = f"sti-test/{name}-{uuid.uuid4().hex[:10]}"
    image_id = build_busybox_image(api, tag, files, dockerfile_lines=dockerfile_lines)
    try:
        yield tag
    finally:
        TRACKER.base(image_id)
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_image(tag, force=True)


#: Every field CONTRACT.md lists for a build result object.
CONTRACT_FIELDS = frozenset(
    {
        "schema",
        "kind",
        "build_id",
        "success",
        "messages",
        "error",
        "tag",
        "image_id",
        "incremental",
        "method",
        "runtime_image",
        "host",
        "duration_s",
        "steps",
    }
)


#: The files write_source puts in a source directory (relative path -> content).
SOURCE_FILES: dict[str, bytes] = {
    "index.html": b"<html><body>hello from sti</body></html>\n",
    "nested/deeper/data.txt": b"nested data\n",
    "nested/notes.md": b"# notes\n",
}


def write_source(root: Path) -> str:
    """Write SOURCE_FILES under root (created if needed); return root as a str."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in SOURCE_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return str(root)


def descendants(api: docker.APIClient, image_id: str) -> list[str]:
    """Ids of every image (intermediate ones included) built on image_id, children last."""
    parent_of = {image["Id"]: image.get("ParentId") or "" for image in api.images(all=True)}
    found: list[str] = []
    frontier = [image_id]
    while frontier:
        current = frontier.pop()
        children = sorted(child for child, parent in parent_of.items() if parent == current)
        found += children
        frontier += children
    return found


def remove_images(api: docker.APIClient, image_ids: Sequence[str]) -> None:
    """Remove these images, last first (so children go before their parents)."""
    for image_id in reversed(image_ids):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_image(image_id, force=True)


def build_cache_bytes(api: docker.APIClient) -> int:
    """What a prune of BuildKit's cache could reclaim: records no build uses and no image shares."""
    records = api.df().get("BuildCache") or []
    return sum(int(r["Size"]) for r in records if not r["InUse"] and not r["Shared"])


def four_mebibyte_source(root: Path) -> Path:
    """Four files of 1 MiB that nothing in the build cache holds yet."""
    root.mkdir()
    for index in range(4):
        (root / f"blob-{index}").write_bytes(uuid.uuid4().bytes * 64 * 1024)
    return root
