"""Turning SOURCE into a directory in the build's own work dir (or read in place), then into a
tar stream under src/. Every source is untrusted: git URLs and refs that could be read as
options are refused, archives are extracted only through the safe extractor.

SOURCE can be a git URL, a local directory, a local archive or file, an http(s) archive URL,
or a scheme registered by the caller (the worker registers uploaded sources).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

import requests
import urllib3.exceptions

from sti.archive_kinds import archive_kind
from sti.errors import InvalidInput, SourceFetchFailed
from sti.ignore import ignore_matcher
from sti.tarstreams import TarPart, directory

from .archives import ExtractLimits, extract_tar_stream, extract_zip
from .guarded_http import guarded_session
from .trees import measure_tree

if TYPE_CHECKING:
    import git

LogSink = Callable[[str], None]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_GIT_SCHEMES = ("git://", "https://", "http://", "ssh://", "file://")
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?!//)\S+$")
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SAFE_REF = re.compile(r"^[A-Za-z0-9._/@{}^~+][A-Za-z0-9._/@{}^~+-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_GIT_TIMEOUT_S = 600
_MAX_SUBMODULES = 100
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SourcePolicy:
    """What a source may be and how large, as configured where the build runs."""

    allow_file_urls: bool = False
    # a path on the machine running the build: natural in-process, a leak on a shared worker
    allow_local_paths: bool = True
    # URLs resolving to any address that is not global (loopback, private, link-local, shared
    # 100.64/10, documentation, multicast, ...): a shared worker must not be made to fetch from
    # its own network (cloud metadata, internal services) into an image
    allow_internal_urls: bool = True
    # networks allowed even so (a build farm's own git server), never the rest of the internal
    # ranges (STI_ALLOWED_NETWORKS)
    allowed_networks: tuple[IPNetwork, ...] = ()
    limits: ExtractLimits = field(default_factory=ExtractLimits)
    download_max_bytes: int = 1024**3
    download_timeout_s: float = 60.0

    def is_reachable(self, ip: IPAddress) -> bool:
        return self.allow_internal_urls or is_reachable_address(ip, self.allowed_networks)


@dataclass(frozen=True)
class FetchedSource:
    """A source ready to build: a directory, or (stream_from) a source streamed straight into
    the build by the streamer registered for it, with context_dir selected on the way."""

    path: str
    revision: str | None = None
    exclude: tuple[str, ...] = ()
    stream_from: str | None = None
    context_dir: str | None = None
    commit: Mapping[str, str] | None = None  # a git source's author, date and message
    size: int | None = None  # of a streamed upload as stored (compressed), if known


Opener = Callable[[str, Path, LogSink, SourcePolicy], FetchedSource]
Streamer = Callable[[str, str | None, SourcePolicy], TarPart]


@dataclass(frozen=True)
class Sources:
    """Where this process takes sources from: its policy, and the openers of the sources only
    its deployment knows (a source starting with an opener's prefix is fetched by it; e.g. the
    uploads of sti-submit). A source its opener marks stream_from goes into the build as one
    stream, by the streamer of the same prefix: streamer(source, context_dir, policy) gives the
    tar part under src/. The worker builds one at start; in-process use takes the defaults."""

    policy: SourcePolicy = field(default_factory=SourcePolicy)
    openers: Mapping[str, Opener] = field(default_factory=dict)
    streamers: Mapping[str, Streamer] = field(default_factory=dict)
    # the tar of scripts sti-submit uploaded for a file:// --scripts-url, by its digest
    uploaded_scripts: Callable[[str], Iterator[bytes]] | None = None
    # by prefix: a streamed source's reference by its content, once known (an upload named
    # before its bytes arrived, by its digest once they all have); None until then
    settled: Mapping[str, Callable[[str], str | None]] = field(default_factory=dict)

    def fetch(
        self,
        source: str,
        workdir: Path,
        sink: LogSink,
        *,
        ref: str | None = None,
        context_dir: str | None = None,
        ignore_submodules: bool = False,
        exclude: Iterable[str] = (),
    ) -> FetchedSource:
        """A directory holding the source to build: inside workdir, or a local one read in
        place; or a source to stream (stream_from)."""
        return _fetch(
            self, source, workdir, sink, ref, context_dir, ignore_submodules, tuple(exclude)
        )

    def part(self, fetched: FetchedSource) -> TarPart:
        """The source as tar members under src/, leaving out .stiignore'd files and git
        metadata."""
        if fetched.stream_from:
            prefix = next(p for p in self.streamers if fetched.stream_from.startswith(p))
            return self.streamers[prefix](fetched.stream_from, fetched.context_dir, self.policy)
        root = Path(fetched.path)
        return directory(root, "src", skip=ignore_matcher(root, fetched.exclude))

    def settled_name(self, source: str) -> str | None:
        """source as it names its content, if it can (see settled)."""
        found = next((s for prefix, s in self.settled.items() if source.startswith(prefix)), None)
        return found(source) if found else source

    def opener_for(self, source: str) -> Opener | None:
        return next((o for prefix, o in self.openers.items() if source.startswith(prefix)), None)


def is_git_url(source: str) -> bool:
    return source.startswith(_GIT_SCHEMES) or bool(_SCP_LIKE.fullmatch(source))


def _fetch(
    sources: Sources,
    source: str,
    workdir: Path,
    sink: LogSink,
    ref: str | None,
    context_dir: str | None,
    ignore_submodules: bool,
    exclude: tuple[str, ...],
) -> FetchedSource:
    policy = sources.policy
    opener = sources.opener_for(source)
    if ref and (opener or not is_git_url(source) or _is_archive_url(source)):
        raise InvalidInput(f"--ref {ref!r} only applies to git sources, not {source!r}")
    if opener:
        fetched = opener(source, workdir, sink, policy)
    elif _is_archive_url(source):
        fetched = _download_archive(source, workdir, sink, policy)
    elif is_git_url(source):
        fetched = _clone(source, workdir / "git", sink, ref, ignore_submodules, policy)
    else:
        fetched = _local(source, workdir, sink, policy)
    if fetched.stream_from:
        selected = checked_context_dir(context_dir) if context_dir else None
        return replace(fetched, exclude=exclude, context_dir=selected)
    fetched = replace(fetched, exclude=exclude)
    if context_dir:
        subdirectory = _subdirectory(Path(fetched.path), context_dir)
        return replace(fetched, path=str(subdirectory))
    return fetched


# local paths


def _local(source: str, workdir: Path, sink: LogSink, policy: SourcePolicy) -> FetchedSource:
    if not policy.allow_local_paths:
        raise InvalidInput(
            f"SOURCE {source!r} is refused: it is not a URL, and this worker does not build its "
            "own files (sti-submit uploads local sources; STI_ALLOW_LOCAL_SOURCES=1 allows this)"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInput(
            f"SOURCE {source!r} is not an existing directory, file, archive or git URL"
        )
    if path.is_dir():
        return FetchedSource(str(path.resolve()))
    if not path.is_file():
        raise InvalidInput(f"SOURCE {source!r} is neither a directory nor a regular file")
    target = _fresh_dir(workdir / "src")
    kind = archive_kind(path.name)
    with path.open("rb") as stream:
        if kind == "zip":
            extract_zip(path, target, policy.limits)
        elif kind:
            extract_tar_stream(stream, target, kind, policy.limits)
        else:
            copy_single_file(stream, target, path.name, policy.limits)
    sink(f"Source {path.name}: " + (f"{kind} archive extracted" if kind else "single file"))
    return FetchedSource(str(target))


def check_file_name(name: str) -> None:
    """A single-file source keeps its name in /tmp/src: a plain name, nothing more."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise InvalidInput(f"source file name {name!r} is not a plain file name")


def copy_single_file(stream: BinaryIO, target: Path, name: str, limits: ExtractLimits) -> None:
    """Deliver one file (a binary, a .war) as /tmp/src/<name>."""
    check_file_name(name)
    written = 0
    descriptor = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as out:
        while chunk := stream.read(_COPY_CHUNK):
            written += len(chunk)
            if written > limits.max_total_bytes:
                raise InvalidInput(
                    f"source file {name} is larger than {limits.max_total_bytes} bytes "
                    "(STI_SOURCE_MAX_BYTES)"
                )
            out.write(chunk)


def checked_context_dir(context_dir: str) -> str:
    """--context-dir as a normalised relative path, or a refusal."""
    parts = [part for part in context_dir.split("/") if part not in ("", ".")]
    if context_dir.startswith("/") or ".." in parts or "\x00" in context_dir or not parts:
        raise InvalidInput(f"--context-dir {context_dir!r} must be a relative path in the source")
    return "/".join(parts)


def _subdirectory(root: Path, context_dir: str) -> Path:
    checked_context_dir(context_dir)
    target = (root / context_dir).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInput(f"--context-dir {context_dir!r} leads outside the source")
    if not target.is_dir():
        raise InvalidInput(f"--context-dir {context_dir!r} is not a directory in the source")
    return target


def _fresh_dir(path: Path) -> Path:
    path.mkdir(mode=0o755)
    return path


# archives over http(s)


def _is_archive_url(source: str) -> bool:
    return source.startswith(("http://", "https://")) and archive_kind(source) is not None


def _download_archive(
    url: str, workdir: Path, sink: LogSink, policy: SourcePolicy
) -> FetchedSource:
    kind = archive_kind(url)
    assert kind
    check_url_host(url, policy)
    target = _fresh_dir(workdir / "src")
    sink(f"Downloading {describe(url)}")
    allowed = None if policy.allow_internal_urls else policy.is_reachable
    try:
        with (
            guarded_session(allowed) as session,
            session.get(url, stream=True, timeout=(10, policy.download_timeout_s)) as response,
        ):
            if response.status_code != 200:
                raise SourceFetchFailed(f"downloading {url} failed: HTTP {response.status_code}")
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > policy.download_max_bytes:
                raise InvalidInput(_too_large(url, policy.download_max_bytes))
            deadline = time.monotonic() + policy.download_timeout_s
            body = CappedReader(response.raw, policy.download_max_bytes, url, deadline)
            response.raw.decode_content = True
            if kind == "zip":
                archive = workdir / "download.zip"
                with archive.open("wb") as out:
                    shutil.copyfileobj(body, out, _COPY_CHUNK)
                extract_zip(archive, target, policy.limits)
                archive.unlink()
            else:
                extract_tar_stream(body, target, kind, policy.limits)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise SourceFetchFailed(f"downloading {url} failed: {error}") from error
    return FetchedSource(str(target))


def _too_large(url: str, limit: int, limit_name: str = "STI_DOWNLOAD_MAX_BYTES") -> str:
    return f"{url} is larger than {limit} bytes ({limit_name})"


class CappedReader:
    """A binary reader that refuses to read past a byte limit (limit_name says which) or a
    deadline."""

    def __init__(
        self,
        raw: BinaryIO,
        limit: int,
        what: str,
        deadline: float,
        limit_name: str = "STI_DOWNLOAD_MAX_BYTES",
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._limit_name = limit_name
        self._what = what
        self._read = 0
        self._deadline = deadline  # a server sending a byte a minute would pass every read's

    def read(self, size: int = -1) -> bytes:
        """size bytes, or fewer at the end: gzip reads its header expecting them whole. Read as
        they arrive (read1), so the deadline is looked at every few packets."""
        wanted = size if size and size > 0 else _COPY_CHUNK
        parts, count = [], 0
        while count < wanted:
            if time.monotonic() > self._deadline:
                raise SourceFetchFailed(
                    f"downloading {describe(self._what)} took too long (STI_DOWNLOAD_TIMEOUT)"
                )
            part = self._raw.read1(wanted - count)
            if not part:
                break
            parts.append(part)
            count += len(part)
        self._read += count
        if self._read > self._limit:
            raise InvalidInput(_too_large(self._what, self._limit, self._limit_name))
        return b"".join(parts)


# git


def check_git_url(url: str, policy: SourcePolicy) -> None:
    """Refuse git URLs that git could read as an option or a command-running transport."""
    if url.startswith("-") or any(ord(c) < 32 for c in url):
        raise InvalidInput(f"git URL {url!r} is refused: it could be read as a git option")
    if _TRANSPORT_PREFIX.match(url):
        raise InvalidInput(f"git URL {url!r} uses a <transport>:: form that sti does not allow")
    if url.startswith("file://") and not policy.allow_file_urls:
        raise InvalidInput(
            f"git URL {url!r} is refused: file:// sources are not allowed on this worker "
            "(STI_ALLOW_FILE_URLS)"
        )
    if _host_of(url).startswith("-"):
        raise InvalidInput(f"git URL {url!r} is refused: its host could be read as an option")


def check_url_host(url: str, policy: SourcePolicy) -> list[str]:
    """Refuse a URL whose host resolves to an address that is not global (see SourcePolicy),
    unless it is in an allowed network or the policy allows internal addresses; return the
    addresses judged ([] when every address is allowed)."""
    if policy.allow_internal_urls:
        return []
    host = _host_of(url)
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError as error:
        raise SourceFetchFailed(f"cannot resolve the host of {describe(url)}: {error}") from error
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not is_reachable_address(ip, policy.allowed_networks):
            raise InvalidInput(
                f"{describe(url)} is refused: {host} is an internal address ({ip}) "
                "(STI_ALLOWED_NETWORKS lists networks a worker may fetch from; "
                "STI_ALLOW_INTERNAL_URLS allows every address)"
            )
    return addresses


def is_reachable_address(ip: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Whether a worker may fetch from ip: a global address, or one in an allowed network.
    An IPv6 address carrying an IPv4 one (mapped, NAT64 64:ff9b::/96, 6to4, Teredo) is judged
    by every address it carries, so ::ffff:127.0.0.1 is loopback."""
    allowed = tuple(allowed)
    for candidate in _addresses_in(ip):
        if any(candidate.version == net.version and candidate in net for net in allowed):
            continue
        if not candidate.is_global or candidate.is_multicast:
            return False
    return True


def _addresses_in(ip: IPAddress) -> list[IPAddress]:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return [ip.ipv4_mapped]  # the same address, written as IPv6
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour:
            found.append(ip.sixtofour)
        if ip.teredo:
            found.extend(ip.teredo)
    return found


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _host_of(url: str) -> str:
    if "://" in url:
        return urlsplit(url).hostname or ""
    return url.split(":", 1)[0].split("@")[-1]  # scp-like user@host:path


def check_git_ref(ref: str) -> None:
    if not _SAFE_REF.fullmatch(ref) or ".." in ref:
        raise InvalidInput(f"--ref {ref!r} is not a valid git branch, tag or commit")


def _clone(
    url: str,
    destination: Path,
    sink: LogSink,
    ref: str | None,
    ignore_submodules: bool,
    policy: SourcePolicy,
) -> FetchedSource:
    pins = _checked_git_url(url, policy)
    if ref:
        check_git_ref(ref)
    file_allow = "always" if policy.allow_file_urls else "never"
    config = [
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "protocol.fd.allow=never",
        "-c",
        f"protocol.file.allow={file_allow}",
        "-c",
        "http.followRedirects=false",  # a redirect would lead past the address check
        *pins,
    ]
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    sink(f"Fetching {describe(url)}" + (f" at {ref}" if ref else ""))
    destination.mkdir()
    import git  # a tenth of a second to import: only builds of git sources pay it

    repo = git.Repo.init(destination)
    try:
        with repo.git.custom_environment(**env):
            repo.git.remote("add", "origin", "--", url)
            target = "FETCH_HEAD"
            try:
                _git(repo, config, "fetch", "--depth", "1", "origin", "--", ref or "HEAD")
            except git.GitCommandError:
                if not (ref and _COMMIT.fullmatch(ref)):
                    raise
                # a server that refuses fetching a commit by id: fetch everything, then find it
                _git(repo, config, "fetch", "--tags", "origin")
                target = ref
            _git(repo, config, "checkout", "--detach", target, "--")
            if not ignore_submodules and (destination / ".gitmodules").is_file():
                sink("Fetching submodules")
                _fetch_submodules(repo, config, destination, policy)
        revision = repo.head.commit.hexsha
        commit = _commit_facts(repo.head.commit)
        _check_checkout_size(destination, policy.limits)
    except git.GitCommandError as error:
        stderr = (error.stderr or "").strip().replace("\n", " ")
        raise SourceFetchFailed(f"fetching {describe(url)} failed: {stderr or error}") from error
    finally:
        repo.close()
    sink(f"Source at commit {revision}")
    return FetchedSource(str(destination), revision, commit=commit)


def _commit_facts(commit: git.Commit) -> dict[str, str]:
    """As s2i labels them: author "Name <email>", the date as git log prints it, the subject."""
    return {
        "author": f"{commit.author.name} <{commit.author.email}>",
        "date": commit.authored_datetime.strftime("%a %b %-d %H:%M:%S %Y %z"),
        "message": commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
    }


def _check_checkout_size(root: Path, limits: ExtractLimits) -> None:
    """A repository is held to the limits an archive is (its history is not counted)."""
    entries, size = measure_tree(root, stop_after_files=limits.max_files)
    if entries > limits.max_files:
        raise InvalidInput(
            f"the repository holds more than {limits.max_files} files, directories and links "
            "(STI_SOURCE_MAX_FILES)"
        )
    if size > limits.max_total_bytes:
        raise InvalidInput(
            f"the repository holds more than {limits.max_total_bytes} bytes (STI_SOURCE_MAX_BYTES)"
        )


def _fetch_submodules(repo: git.Repo, config: list[str], root: Path, policy: SourcePolicy) -> None:
    """Level by level, each submodule URL as git resolves it (relative ones against the
    parent's) checked as the source URL is, before anything is fetched from it."""
    pending, fetched = [root], 0
    while pending:
        directory = pending.pop()
        _git(repo, config, "-C", str(directory), "submodule", "init")
        urls = _config_values(repo, config, directory, r"^submodule\..*\.url$")
        fetched += len(urls)
        if fetched > _MAX_SUBMODULES:
            raise InvalidInput(f"the source has more than {_MAX_SUBMODULES} git submodules")
        pins = [pin for submodule_url in urls for pin in _checked_git_url(submodule_url, policy)]
        _git(repo, [*config, *pins], "-C", str(directory), "submodule", "update", "--depth", "1")
        for path in _config_values(
            repo, config, directory, r"^submodule\..*\.path$", ".gitmodules"
        ):
            below = (directory / path).resolve()
            if below.is_relative_to(root.resolve()) and (below / ".gitmodules").is_file():
                pending.append(below)


def _config_values(
    repo: git.Repo, config: list[str], directory: Path, pattern: str, file: str | None = None
) -> list[str]:
    import git

    where = ["-f", file] if file else ["--local"]
    try:
        found = _git(repo, config, "-C", str(directory), "config", *where, "--get-regexp", pattern)
    except git.GitCommandError:  # none found: git config exits 1
        return []
    return [line.split(" ", 1)[1] for line in found.splitlines() if " " in line]


def _checked_git_url(url: str, policy: SourcePolicy) -> list[str]:
    """Refuse url as check_git_url and check_url_host do; for http(s), the git options that pin
    its host to the addresses just judged (DNS could answer differently for git itself)."""
    check_git_url(url, policy)
    if url.startswith("file://"):
        return []
    addresses = check_url_host(url, policy)
    parts = urlsplit(url) if "://" in url else None
    if not addresses or parts is None or parts.scheme not in ("http", "https"):
        return []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    spelled = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return ["-c", f"http.curloptResolve={parts.hostname}:{port}:{spelled}"]


def _git(repo: git.Repo, config: list[str], *args: str) -> str:
    return str(repo.git.execute(["git", *config, *args], kill_after_timeout=_GIT_TIMEOUT_S))


def describe(source: str) -> str:
    """The source as shown to users (URLs without credentials)."""
    if "://" in source:
        parts = urlsplit(source)
        if parts.password or parts.username:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return parts._replace(netloc=netloc).geturl()
    return unquote(source)
