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
from typing import BinaryIO

import requests
import urllib3.exceptions

from sti.archive_kinds import archive_kind
from sti.errors import InvalidInput, SourceFetchFailed
from sti.ignore import ignore_matcher, in_git_metadata
from sti.source_urls import (
    GIT_TRANSPORTS,
    Remote,
    describe,
    is_scp_like,
    parse_git_url,
    parse_url,
    scheme_of,
    scrubbed,
)
from sti.tarstreams import TarPart, directory

from .archives import ExtractLimits, extract_tar_stream, extract_zip
from .guarded_http import guarded_session

LogSink = Callable[[str], None]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_GIT_SCHEMES = (*(f"{scheme}://" for scheme in GIT_TRANSPORTS), "file://")
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?!//)\S+$")
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
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
Layerer = Callable[[str, str | None, SourcePolicy], tuple[str, TarPart] | None]


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
    # by prefix: of a streamed source that is changes over another (a delta upload), that
    # source and the part that lays the changes over a copy of it; None for any other
    layers: Mapping[str, Layerer] = field(default_factory=dict)

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

    def layer(self, fetched: FetchedSource) -> tuple[str, TarPart] | None:
        """The source fetched is changes over (see layers), and the part that lays them."""
        source = fetched.stream_from or ""
        found = next(
            (lay for prefix, lay in self.layers.items() if source.startswith(prefix)), None
        )
        return found(source, fetched.context_dir, self.policy) if found else None

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
        raise InvalidInput(f"--ref {ref!r} only applies to git sources, not {describe(source)!r}")
    if opener:
        fetched = opener(source, workdir, sink, policy)
    elif _is_archive_url(source):
        fetched = _download_archive(source, workdir, sink, policy)
    elif is_git_url(source):
        from .git_sources import clone  # imports GitPython: only builds of git sources pay it

        fetched = clone(source, workdir / "git", sink, ref, ignore_submodules, policy)
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
            f"SOURCE {describe(source)!r} is refused: it is not a URL, and this worker does not "
            "build its own files (sti-submit uploads local sources; STI_ALLOW_LOCAL_SOURCES=1 "
            "allows this)"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInput(
            f"SOURCE {describe(source)!r} is not an existing directory, file, archive or git URL"
        )
    if path.is_dir():
        return FetchedSource(str(path.resolve()))
    if not path.is_file():
        raise InvalidInput(f"SOURCE {describe(source)!r} is neither a directory nor a regular file")
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
    if in_git_metadata(target.relative_to(root.resolve()).as_posix()):  # through a link
        raise InvalidInput(f"--context-dir {context_dir!r} leads into git metadata")
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
    remote = parse_url(url, "SOURCE")
    check_url_host(url, policy, "SOURCE")
    target = _fresh_dir(workdir / "src")
    shown = describe(url)
    sink(f"Downloading {shown}")
    allowed = None if policy.allow_internal_urls else policy.is_reachable
    try:
        with (
            guarded_session(allowed) as session,
            session.get(
                remote.spelled(), stream=True, timeout=(10, policy.download_timeout_s)
            ) as response,
        ):
            if response.status_code != 200:
                raise SourceFetchFailed(f"downloading {shown} failed: HTTP {response.status_code}")
            declared = _content_length(response.headers.get("Content-Length"), shown)
            if declared > policy.download_max_bytes:
                raise InvalidInput(_too_large(shown, policy.download_max_bytes))
            deadline = time.monotonic() + policy.download_timeout_s
            body = CappedReader(response.raw, policy.download_max_bytes, shown, deadline)
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
        raise SourceFetchFailed(
            f"downloading {shown} failed: {scrubbed(str(error), url)}"
        ) from error
    return FetchedSource(str(target))


def _content_length(declared: str | None, shown: str) -> int:
    """The size a server declares (0: none), or a refusal naming what it sent instead."""
    if not declared:
        return 0
    digits = declared.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise SourceFetchFailed(
            f"downloading {shown} failed: the server sent Content-Length {describe(declared)!r}, "
            "not a number"
        )
    return int(digits) if len(digits) <= 20 else 10**20  # past any limit (int() reads 4300)


def _too_large(url: str, limit: int, limit_name: str = "STI_DOWNLOAD_MAX_BYTES") -> str:
    return f"{url} is larger than {limit} bytes ({limit_name})"


class CappedReader:
    """A binary reader that refuses to read past a byte limit (limit_name says which) or a
    deadline."""

    def __init__(
        self,
        raw: BinaryIO,
        limit: int,
        what: str,  # as shown: describe()d
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
                    f"downloading {self._what} took too long (STI_DOWNLOAD_TIMEOUT)"
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


# git URLs and the address policy


def check_git_url(url: str, policy: SourcePolicy) -> None:
    """Refuse git URLs that git could read as an option, a command-running transport, or with
    another host than sti reads (sti.source_urls), and file URLs the policy does not allow."""
    if url.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInput(
            f"git URL {describe(url)!r} is refused: it could be read as a git option"
        )
    if _TRANSPORT_PREFIX.match(url):
        raise InvalidInput(
            f"git URL {describe(url)!r} uses a <transport>:: form that sti does not allow"
        )
    if scheme_of(url) == "file" or not (scheme_of(url) or is_scp_like(url)):
        if not policy.allow_file_urls:
            raise InvalidInput(
                f"git URL {describe(url)!r} is refused: file:// and local repositories are not "
                "allowed on this worker (STI_ALLOW_FILE_URLS)"
            )
        return
    parse_git_url(url)


def check_url_host(url: str, policy: SourcePolicy, what: str = "URL") -> list[str]:
    """Refuse a URL whose host resolves to an address that is not global (see SourcePolicy),
    unless it is in an allowed network or the policy allows internal addresses; return the
    addresses judged, in the resolver's order ([] when every address is allowed)."""
    web = url.startswith(("http://", "https://"))
    return judged_addresses(parse_url(url, what) if web else parse_git_url(url), url, policy)


def judged_addresses(remote: Remote, url: str, policy: SourcePolicy) -> list[str]:
    """The addresses remote's host resolves to, each judged by the policy ([] when every
    address is allowed): the addresses a fetch must then connect to."""
    if policy.allow_internal_urls:
        return []
    try:
        found = socket.getaddrinfo(remote.host, None, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise SourceFetchFailed(f"cannot resolve the host of {describe(url)}: {error}") from error
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in found))
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not is_reachable_address(ip, policy.allowed_networks):
            raise InvalidInput(
                f"{describe(url)} is refused: {remote.host} is an internal address ({ip}) "
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
        if not _is_global(candidate):
            return False
    return True


def _is_global(ip: IPAddress) -> bool:
    """Whether IANA's special-purpose registries take ip for globally reachable, by sti's own
    table as well as the running Python's: those differ by patch release (3.11.7 takes
    192.0.0.0/24 and the local-use NAT64 prefix for global)."""
    not_global = _NOT_GLOBAL_V4 if ip.version == 4 else _NOT_GLOBAL_V6
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in not_global)


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
# not globally reachable (IANA's IPv4 and IPv6 special-purpose address registries, 2025), with
# the deprecated IPv4-compatible, IPv4-translated and site-local ranges
_NOT_GLOBAL_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    )
)
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",
        "::ffff:0:0:0/96",
        "64:ff9b:1::/48",
        "100::/63",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)
