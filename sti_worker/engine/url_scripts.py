"""The scripts a --scripts-url names when it is not a directory of the image (see
sti.scripts_urls): fetched once, in the fetch step, into the build's work dir, from which the
build copies them to <destination>/scripts, where s2i installs them.

Over http(s) each script is one GET of <url>/<name> under the source address policy (every
connection, redirects included, judged by the address it reaches); a 404 means the image's own
script serves. The tar sti-submit uploaded for a file:// URL, and a file:// directory read
in-process, go through one check: top-level regular files of the known names, each at most
MAX_SCRIPT_BYTES; anything else in it is refused.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

import requests
import urllib3

from sti.errors import InvalidInput, SourceFetchFailed
from sti.scripts_urls import (
    MAX_SCRIPT_BYTES,
    UPLOADED_SCHEME,
    URL_SCRIPT_NAMES,
    local_directory,
    pack_scripts,
    read_capped,
)
from sti.source_urls import scrubbed
from sti.tarstreams import TarPart, empty_directory, small_file

from .docker_host import LogSink
from .guarded_http import guarded_session
from .sources import CappedReader, Sources, check_url_host

FETCHED_DIR = "url-scripts"
_TIMEOUT_S = (10, 60)


def is_fetched(url: str | None) -> bool:
    """Whether the scripts of url come into the build from outside the image."""
    return bool(url) and not str(url).startswith("image://")


def fetch_scripts(url: str, workdir: Path, sources: Sources, sink: LogSink) -> tuple[str, ...]:
    """The names of the scripts url has, written (mode 0755) to workdir/FETCHED_DIR."""
    if url.startswith("file://") and not sources.policy.allow_file_urls:
        raise InvalidInput(
            f"--scripts-url {url[:200]!r} names a directory of the submitting machine: "
            "sti-submit uploads it; a worker does not read its own disk"
        )
    if url.startswith(UPLOADED_SCHEME) and sources.uploaded_scripts is None:
        raise InvalidInput(f"--scripts-url {url}: this worker has no store of uploads")
    target = workdir / FETCHED_DIR
    target.mkdir(mode=0o700)
    if url.startswith(("http://", "https://")):
        found = _download(url, target, sources, sink)
    elif url.startswith(UPLOADED_SCHEME):
        assert sources.uploaded_scripts
        chunks = sources.uploaded_scripts(url.removeprefix(UPLOADED_SCHEME))
        found = _unpack(chunks, target, "the uploaded scripts")
    elif url.startswith("file://"):
        packed, _ = pack_scripts(local_directory(url))
        found = _unpack([packed], target, url)
    else:
        raise InvalidInput(f"--scripts-url {url[:200]!r} is not fetched by the worker")
    if not found:
        raise InvalidInput(f"--scripts-url {url} has none of {', '.join(URL_SCRIPT_NAMES)}")
    return found


def fetched_scripts_part(workdir: Path, names: Iterable[str]) -> TarPart:
    """Those of the fetched scripts the build uses, as scripts/<name> (0755, as s2i has them)."""
    wanted = tuple(names)

    def add(tar: tarfile.TarFile) -> None:
        empty_directory("scripts")(tar)
        for name in wanted:
            data = (workdir / FETCHED_DIR / name).read_bytes()
            small_file(f"scripts/{name}", data, mode=0o755)(tar)

    return add


def _download(url: str, target: Path, sources: Sources, sink: LogSink) -> tuple[str, ...]:
    policy = sources.policy
    check_url_host(url, policy)
    allowed = None if policy.allow_internal_urls else policy.is_reachable
    base = url.rstrip("/")
    found = []
    deadline = time.monotonic() + policy.download_timeout_s  # for all of them together
    with guarded_session(allowed) as session:
        for name in URL_SCRIPT_NAMES:
            script = f"{base}/{name}"
            try:
                with session.get(script, stream=True, timeout=_TIMEOUT_S) as response:
                    if response.status_code == 404:
                        continue
                    if response.status_code != 200:
                        raise SourceFetchFailed(
                            f"downloading {script} failed: HTTP {response.status_code}"
                        )
                    response.raw.decode_content = True
                    body = CappedReader(
                        response.raw, MAX_SCRIPT_BYTES, script, deadline, "a script's limit"
                    )
                    data = body.read(MAX_SCRIPT_BYTES + 1)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                said = scrubbed(str(error), script)
                raise SourceFetchFailed(f"downloading {script} failed: {said}") from error
            _write(target / name, data)
            found.append(name)
    if found:
        sink(f"Downloaded {', '.join(found)} from {base}")
    return tuple(found)


def _unpack(chunks: Iterable[bytes], target: Path, what: str) -> tuple[str, ...]:
    """The scripts of a tar made by pack_scripts (or by anyone who can write to Redis)."""
    found: list[str] = []
    limit = len(URL_SCRIPT_NAMES) * (MAX_SCRIPT_BYTES + 4096) + 4096
    packed = read_capped(chunks, what, limit)  # all of it: reading to the end verifies a digest
    try:
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r|") as tar:
            for member in tar:
                name = member.name
                if name not in URL_SCRIPT_NAMES or name in found:
                    raise InvalidInput(f"{what}: {name[:100]!r} is not a script name, or twice")
                if not member.isreg() or member.size > MAX_SCRIPT_BYTES:
                    raise InvalidInput(f"{what}: {name} is not a regular file of at most 4 MiB")
                extracted = tar.extractfile(member)
                assert extracted is not None
                _write(target / name, extracted.read(member.size))
                found.append(name)
    except (tarfile.TarError, ValueError) as error:  # tarfile reads some headers with int()
        raise InvalidInput(f"{what} is not a tar of scripts: {error}") from error
    return tuple(found)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o755)
