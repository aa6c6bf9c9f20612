"""The forms a --scripts-url takes, and the scripts tar of a file:// one (light: the client
imports it).

image:///dir names a directory of the builder image. http(s)://host/dir is fetched by the
worker, one request per script (<url>/assemble, ...), as s2i does. file:///dir is a directory
of the submitting machine: sti-submit packs the scripts found there into a small tar, uploads
it and sends sti+scripts://sha256:<hex> instead; only an in-process build reads file:// itself.
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .blobstore import check_digest
from .errors import InvalidInput
from .source_urls import parse_url

URL_SCRIPT_NAMES = ("assemble", "run", "save-artifacts", "usage", "assemble-runtime")
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
UPLOADED_SCHEME = "sti+scripts://"
MAX_URL_CHARS = 2048

_IMAGE_DIR = re.compile(r"^image://(/[A-Za-z0-9._@+-]+)+/?$")


def check_scripts_url(url: str) -> str:
    """A scripts URL sti takes, in one of the forms above; refused with the reason otherwise."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"--scripts-url must be a string of at most {MAX_URL_CHARS} chars")
    shown = repr(url[:200])
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidInput(f"--scripts-url {shown} has a space or a control character")
    if url.startswith("image://"):
        if not _IMAGE_DIR.fullmatch(url) or _climbs(url.removeprefix("image://")):
            raise InvalidInput(f"--scripts-url {shown} is not image:///a/plain/directory")
    elif url.startswith(UPLOADED_SCHEME):
        check_digest(url.removeprefix(UPLOADED_SCHEME))
    elif url.startswith(("http://", "https://")):
        if parse_url(url, "--scripts-url", query=False).userinfo is not None:
            raise InvalidInput(f"--scripts-url {shown} carries credentials; sti does not take them")
    elif url.startswith("file://"):
        local_directory(url)
    else:
        raise InvalidInput(
            f"--scripts-url {shown} is not image:///dir, http(s)://host/dir or file:///dir"
        )
    return url


def read_capped(chunks: Iterable[bytes], what: str, limit: int = MAX_SCRIPT_BYTES) -> bytes:
    """All of chunks, refused (InvalidInput naming what) past limit bytes."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise InvalidInput(f"{what} is larger than {limit} bytes")
    return bytes(data)


def _climbs(path: str) -> bool:
    return any(part in (".", "..") for part in path.split("/"))


def local_directory(url: str) -> Path:
    """The directory a file:// URL names (file:///abs/dir or file://localhost/abs/dir)."""
    refused = InvalidInput(f"--scripts-url {url[:200]!r} is not file:///an/absolute/directory")
    try:
        parts = urlsplit(url)
    except ValueError:  # a "[" without its "]"
        raise refused from None
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise refused
    path = unquote(parts.path)
    if not path.startswith("/") or _climbs(path.rstrip("/")) or "\x00" in path:
        raise refused
    return Path(path)


def pack_scripts(directory: Path) -> tuple[bytes, tuple[str, ...]]:
    """A tar of the scripts URL_SCRIPT_NAMES names in directory (regular files, each at most
    MAX_SCRIPT_BYTES, mode 0755 as s2i installs them) and their names; links are followed, as
    s2i's copy does, since the directory is the submitter's own."""
    if not directory.is_dir():
        raise InvalidInput(f"--scripts-url directory {str(directory)!r} is not a directory")
    buffer = io.BytesIO()
    found = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in URL_SCRIPT_NAMES:
            path = directory / name
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                raise InvalidInput(f"{path} is not a regular file")
            data = path.read_bytes()
            if len(data) > MAX_SCRIPT_BYTES:
                raise InvalidInput(f"{path} is larger than {MAX_SCRIPT_BYTES} bytes")
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
            found.append(name)
    if not found:
        raise InvalidInput(
            f"--scripts-url directory {str(directory)!r} has none of {', '.join(URL_SCRIPT_NAMES)}"
        )
    return buffer.getvalue(), tuple(found)
