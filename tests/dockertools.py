"""Test helpers that look inside images: run an image's default command, read files out."""

from __future__ import annotations

import io
import tarfile
import uuid

import docker


def run_default_command(api: docker.APIClient, image: str, timeout: int = 30) -> int:
    """Run the image's own CMD to completion in a throwaway container; return its exit code."""
    container = api.create_container(image, name=f"test-run-{uuid.uuid4().hex[:12]}")
    try:
        api.start(container)
        return int(api.wait(container, timeout=timeout)["StatusCode"])
    finally:
        api.remove_container(container, force=True, v=True)


def run_and_read(api: docker.APIClient, image: str, path: str) -> dict[str, bytes]:
    """Run the image's CMD, then return {relative name: content} of regular files under path."""
    container = api.create_container(image, name=f"test-run-{uuid.uuid4().hex[:12]}")
    try:
        api.start(container)
        api.wait(container, timeout=30)
        return read_files(api, container, path)
    finally:
        api.remove_container(container, force=True, v=True)


def read_files(api: docker.APIClient, container: str, path: str) -> dict[str, bytes]:
    stream, _ = api.get_archive(container, path)
    data = b"".join(stream)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            if member.isreg():
                content = archive.extractfile(member)
                assert content is not None
                files[member.name.split("/", 1)[1] if "/" in member.name else ""] = content.read()
            elif member.isdir() or member.issym():
                files.setdefault(member.name.split("/", 1)[1] if "/" in member.name else "", b"")
    return files
