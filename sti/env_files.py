"""Environment files as s2i reads them: `-E FILE` on the submitting machine and
`.s2i/environment` in the source. One NAME=VALUE per line, the line's surrounding blanks
trimmed, the value taken as it is (no quotes, no expansion); blank lines and lines starting
with # are skipped. Unlike s2i, a line that is not NAME=VALUE is an error, not skipped.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .archive_kinds import archive_kind
from .errors import InvalidInput
from .model import validate_env

SOURCE_ENVIRONMENT = ".s2i/environment"
MAX_FILE_BYTES = 128 * 1024  # what the whole environment of a build may be


def parse_environment(text: str, origin: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{origin} line {number}: {line[:80]!r} is not NAME=VALUE")
        env[name] = value
    try:
        return validate_env(env)
    except InvalidInput as error:
        raise InvalidInput(f"{origin}: {error.message}") from None


def read_environment_file(path: Path) -> dict[str, str]:
    """An -E file: a regular file (through links: it is the user's own) of at most
    MAX_FILE_BYTES of UTF-8."""
    origin = f"environment file {path}"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO: no hang
    except OSError as error:
        raise InvalidInput(f"{origin} cannot be read: {error.strerror}") from None
    return parse_environment(_read_text(descriptor, origin), origin)


def source_environment(root: Path) -> dict[str, str]:
    """The source's .s2i/environment, if it has one. Neither .s2i nor the file may be a link:
    a source must not make its builder read a file outside it."""
    origin = f"{SOURCE_ENVIRONMENT} in the source"
    directory = root / ".s2i"
    try:
        mode = directory.lstat().st_mode
    except FileNotFoundError:
        return {}
    if stat.S_ISLNK(mode):
        raise InvalidInput(".s2i in the source is a symbolic link")
    if not stat.S_ISDIR(mode):
        return {}
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO: no hang
        descriptor = os.open(directory / "environment", flags)
    except FileNotFoundError:
        return {}
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidInput(f"{origin} is a symbolic link") from None
        raise InvalidInput(f"{origin} cannot be read: {error.strerror}") from None
    return parse_environment(_read_text(descriptor, origin), origin)


def _read_text(descriptor: int, origin: str) -> str:
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise InvalidInput(f"{origin} is not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(f"{origin} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"{origin} is not UTF-8 text") from None


def archive_environment(path: Path, context_dir: str | None = None) -> dict[str, str]:
    """The .s2i/environment of a local archive (below context_dir), if it has one: the archive
    is uploaded as it is and streams into the build, so the client reads it, as it does a
    directory's. The last entry of that name wins, as in extraction; a link is refused."""
    kind = archive_kind(path.name)
    if kind is None:
        return {}
    prefix = f"{context_dir.strip('/')}/" if context_dir and context_dir.strip("/") else ""
    wanted = f"{prefix}{SOURCE_ENVIRONMENT}"
    origin = f"{wanted} in {path.name}"
    data = _zip_member(path, wanted, origin) if kind == "zip" else _tar_member(path, wanted, origin)
    if data is None:
        return {}
    try:
        return parse_environment(data.decode("utf-8"), origin)
    except UnicodeDecodeError:
        raise InvalidInput(f"{origin} is not UTF-8 text") from None


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _tar_member(path: Path, wanted: str, origin: str) -> bytes | None:
    import tarfile  # here: sti-submit imports this module for every build, most need no archive

    found: bytes | None = None
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if _member_name(member.name) != wanted:
                    continue
                if not member.isfile():
                    raise InvalidInput(f"{origin} is not a regular file")
                if member.size > MAX_FILE_BYTES:
                    raise InvalidInput(f"{origin} is larger than {MAX_FILE_BYTES} bytes")
                content = archive.extractfile(member)
                found = content.read() if content else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidInput(f"{path.name} is not a readable archive: {error}") from None
    return found


def _zip_member(path: Path, wanted: str, origin: str) -> bytes | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if _member_name(i.filename) == wanted]
            if not infos:
                return None
            info = infos[-1]
            if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                raise InvalidInput(f"{origin} is not a regular file")
            if info.file_size > MAX_FILE_BYTES:
                raise InvalidInput(f"{origin} is larger than {MAX_FILE_BYTES} bytes")
            with archive.open(info) as member:
                return member.read(MAX_FILE_BYTES + 1)[: MAX_FILE_BYTES + 1]
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InvalidInput(f"{path.name} is not a readable archive: {error}") from None
