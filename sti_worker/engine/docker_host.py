"""The one module that talks to docker-py: images, containers, archives, builds and commits.

Docker errors are turned into sti errors here, with messages that name what was being done.
"""

from __future__ import annotations

import base64
import codecs
import io
import json
import posixpath
import re
import tarfile
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import CancellableStream, LogConfig, Mount

from sti.errors import (
    BuildFailed,
    BuildStepFailed,
    CommitContainerFailed,
    CreateContainerFailed,
    DockerConnectionFailed,
    InternalError,
    InvalidInput,
    NoSuchBaseImage,
    PullImageFailed,
    PushImageFailed,
    StiError,
    TagImageFailed,
)
from sti.failures import error_for_failure, is_time_limit
from sti.lines import LINE_MAX_BYTES, TEXT_MAX_BYTES, cut_line
from sti.model import is_reserved_name
from sti.tarstreams import IterReader, TarPart, retargeted

from . import call_trace
from .buildkit_trace import TraceDecodeError, decode_trace
from .fact_cache import FactCache
from .sandbox import Sandbox

LogSink = Callable[[str], None]

BUILD_ID_LABEL = "io.sti.build-id"
CONTAINER_NAME_PREFIX = "sti-"
_TAIL_LINES = 20
# the legacy builder colours a RUN step's stderr for terminals
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_LINK_HOPS = 8
_PARALLEL_STATS = 6
BUILDERS = ("auto", "buildkit", "legacy", "container")
ENGINE_BUILDERS = ("buildkit", "legacy")
_BUILDKIT_TRACE = "moby.buildkit.trace"
# build code's containers log nowhere: sti reads their streams, and the engine's default driver
# (json-file, unbounded) would keep all they print on its disk (its own builder does the same)
_NO_LOG = LogConfig(type=LogConfig.types.NONE)
_EXIT_CODE = re.compile(r"exit code: (\d+)")
# BuildKit reusing a cache record whose snapshot the engine has deleted: a child snapshot cannot
# be prepared, or a step's file system cannot be mounted
_BROKEN_BUILD_CACHE = re.compile(
    r"(failed to prepare|error creating overlay mount to) \S+: .*no such file or directory"
)
# the legacy builder's message when a RUN step exits non-zero
_LEGACY_STEP_FAILED = re.compile(r"The command '(.*)' returned a non-zero code: (\d+)", re.S)


def container_name(build_id: str, role: str) -> str:
    """Containers are found again by name, never by label: labels are inherited by images."""
    return f"{CONTAINER_NAME_PREFIX}{build_id}-{role}"


class FileTooLarge(ValueError):
    """A file of an image is larger than its reader takes."""


class OutputTooLarge(ValueError):
    """A container wrote more than its reader takes."""


@dataclass(frozen=True)
class MadeImage:
    id: str
    created: str  # as the engine writes it: RFC 3339, to the nanosecond
    parent: str | None  # the image a committed container was made of


@dataclass(frozen=True)
class PathStat:
    path: str
    exists: bool
    is_file: bool = False
    executable: bool = False


class OutputTail:
    """Forwards output lines to a sink and keeps the last few for error messages.

    A line is held to max_line_bytes, cut with a note: the start of a line whose newline has not
    come yet waits in pieces, and what comes past the cap before its newline is dropped, so a
    line without end costs neither memory nor a copy per chunk."""

    def __init__(
        self,
        sink: LogSink,
        keep: int = _TAIL_LINES,
        lines: list[str] | None = None,
        max_line_bytes: int = LINE_MAX_BYTES,
    ) -> None:
        """lines: a list to keep them in, shared by the outputs of one step (stdout, stderr)."""
        self._sink = sink
        self._keep = keep
        self.lines: list[str] = [] if lines is None else lines
        self._max_line_bytes = max_line_bytes
        self._held: list[str] = []
        self._held_chars = 0  # at most max_line_bytes: a character is at least a byte
        self._dropped = False  # the held line went on past the cap
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed_bytes(self, data: bytes) -> None:
        """Output as bytes: a character split between two chunks is decoded whole."""
        self.feed(self._decoder.decode(data))

    def feed(self, text: str) -> None:
        first, newline, rest = text.partition("\n")
        self._hold(first)
        if not newline:
            return
        *complete, last = rest.split("\n")
        self._emit_held()
        for line in complete:
            self._emit(line.rstrip("\r"))
        self._hold(last)

    def close(self) -> None:
        self._hold(self._decoder.decode(b"", final=True))
        if self._held or self._dropped:
            self._emit_held()

    def _hold(self, piece: str) -> None:
        room = self._max_line_bytes - self._held_chars
        if len(piece) > room:
            piece, self._dropped = piece[:room], True
        if piece:
            self._held.append(piece)
            self._held_chars += len(piece)

    def _emit_held(self) -> None:
        line, dropped = "".join(self._held), self._dropped
        self._held.clear()
        self._held_chars, self._dropped = 0, False
        self._emit(line.rstrip("\r"), dropped)

    def _emit(self, line: str, dropped: bool = False) -> None:
        if len(line) > self._max_line_bytes:
            line, dropped = line[: self._max_line_bytes], True
        line = cut_line(_TERMINAL_ESCAPES.sub("", line), self._max_line_bytes, cut=dropped)
        self._sink(line)
        self.lines.append(line)
        del self.lines[: -self._keep]


Answer = TypeVar("Answer")


@dataclass(frozen=True)
class FactCodec(Generic[Answer]):
    """How an image fact becomes JSON for a fact cache, and back."""

    encode: Callable[[Answer], Any]
    decode: Callable[[Any], Answer]


_IMAGE_FACTS_KEPT = 512


class DockerHost:
    """A Docker engine reached through docker-py's low-level API client."""

    def __init__(
        self,
        url: str | None = None,
        timeout: int = 600,
        registry_auth: Mapping[str, str] | None = None,
        builder: str = "auto",
        build_cache_keep_bytes: int | None = None,
        sandbox: Sandbox | None = None,
        source_images_keep: int = 0,
        fact_cache: FactCache | None = None,
        line_max_bytes: int = LINE_MAX_BYTES,
        trace_calls: bool = False,
    ) -> None:
        """registry_auth ({"username", "password"}) comes from the worker's configuration only;
        without it, docker-py uses the Docker config file of the user running the worker.
        builder: "auto", "buildkit", "legacy" or "container" (STI_BUILDER); build_cache_keep_bytes:
        after each BuildKit build, the engine's build cache is pruned down to this size; sandbox:
        the limits of build code (Sandbox() unless given); source_images_keep: how many source
        images (see source_images) this engine keeps, 0 for none (STI_SOURCE_IMAGES_KEEP);
        fact_cache: where image facts last between processes (--local), None for memory only;
        line_max_bytes: where a line of build output is cut (STI_LOG_LINE_MAX_BYTES);
        trace_calls: log every Engine API call with its milliseconds (STI_TRACE_ENGINE_CALLS)."""
        if builder not in BUILDERS:
            raise InvalidInput(f"STI_BUILDER={builder!r} is unknown; use one of: {BUILDERS}")
        self.sandbox = sandbox or Sandbox()
        not_held = self.sandbox.not_held_by(builder) if builder in ENGINE_BUILDERS else []
        if not_held:
            raise InvalidInput(
                f"STI_BUILDER={builder} cannot hold {', '.join(not_held)}: the Engine API gives "
                "its RUN steps no such limit. Leave STI_BUILDER at auto (prepare then runs in a "
                "container that holds them) or lift them (STI_BUILD_MEMORY=0, STI_BUILD_PIDS=0, "
                "STI_BUILD_PRIVILEGES=engine)"
            )
        self.builder_setting = builder  # STI_BUILDER as set; builder is what it decided
        self._builder = builder
        self._build_cache_keep = build_cache_keep_bytes
        self.source_images_keep = source_images_keep
        self.line_max_bytes = line_max_bytes
        self._buildkit: bool | None = None
        self._registry_auth = dict(registry_auth) if registry_auth else None
        self._streams: set[CancellableStream] = set()
        self._streams_lock = threading.Lock()
        self._image_facts: dict[Hashable, Any] = {}
        self._fact_cache = fact_cache
        self.url = url or "the local Docker engine (DOCKER_HOST or /var/run/docker.sock)"
        try:
            self.api, self._os_type = _connect(url, timeout)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise DockerConnectionFailed(
                f"cannot reach the Docker engine at {self.url}: {_reason(error)}; "
                "is dockerd running and is DOCKER_HOST right?"
            ) from error
        if trace_calls:
            call_trace.trace_calls(self.api)

    def close(self) -> None:
        self.api.close()

    @contextmanager
    def _tracked(self, stream: CancellableStream) -> Iterator[None]:
        """Make a stream abortable; a step that stops reading it (a time limit, an error) also
        closes it, so the engine stops that build instead of finishing it for nobody."""
        with self._streams_lock:
            self._streams.add(stream)
        try:
            yield
        except BaseException:
            with suppress(OSError, AttributeError):
                stream.close()
            raise
        finally:
            with self._streams_lock:
                self._streams.discard(stream)

    def abort(self, build_id: str) -> None:
        """Stop a build from another thread: kill its containers, cut its output streams."""
        for container in self.containers_named(container_name(build_id, "")):
            with suppress(docker.errors.APIError):
                self.api.kill(container)
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            with suppress(OSError, AttributeError):
                stream.close()

    # images

    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as error:
            if error.status_code == 404:
                return None
            raise _connection_error(error, f"inspecting image {ref}") from error

    def _image_named(self, ref: str) -> str | None:
        """The id of the image ref names, as image_id; but an image with no name of its own
        outside sti's (a source image holding another build's source, an untagged layer),
        reached by a prefix of its id, is not there for a build to start from."""
        try:
            found = self.api.inspect_image(ref)
        except docker.errors.APIError as error:
            if error.status_code == 404:
                return None
            raise _connection_error(error, f"inspecting image {ref}") from error
        names = [*(found.get("RepoTags") or ()), *(found.get("RepoDigests") or ())]
        if not any(not is_reserved_name(name) for name in names):
            return None
        return str(found["Id"])

    def image_made(self, ref: str) -> MadeImage | None:
        """The image's id, when it was made (RFC 3339, to the nanosecond, where the image list
        gives whole seconds) and what it was made of, from one inspect; None if there is none."""
        try:
            found = self.api.inspect_image(ref)
        except docker.errors.APIError as error:
            if error.status_code == 404:
                return None
            raise _connection_error(error, f"inspecting image {ref}") from error
        return MadeImage(str(found["Id"]), str(found["Created"]), found.get("Parent") or None)

    def image_config(self, ref: str) -> Mapping[str, Any]:
        return self.api.inspect_image(ref).get("Config") or {}

    def ensure_image(
        self,
        ref: str,
        sink: LogSink,
        missing: type[StiError] = NoSuchBaseImage,
        policy: str = "if-not-present",
    ) -> str:
        """The id of ref, pulled as the policy says: when this engine does not have it
        (if-not-present), first whatever it has (always: a registry that fails leaves the image
        this engine has), or never."""
        found = self._image_named(ref)
        if policy == "always":
            sink(f"Pulling {ref} (pull policy always)")
            try:
                self.pull(ref)
            except PullImageFailed as error:
                if not found:
                    raise
                sink(f"{error.message}; using the image this engine has")
                return found
        elif found:
            return found
        elif policy == "never":
            raise missing(f"image {ref} is not on this engine, and the pull policy is never")
        else:
            sink(f"Image {ref} not found locally, pulling it")
            self.pull(ref)
        pulled = self._image_named(ref)
        if not pulled:
            raise missing(f"image {ref} does not exist, even after pulling it")
        return pulled

    def pull(self, ref: str) -> None:
        try:
            for event in self._registry_call(self.api.pull, ref):
                if "error" in event:
                    raise PullImageFailed(_pull_failed(ref, event["error"]))
        except docker.errors.APIError as error:
            raise PullImageFailed(_pull_failed(ref, _reason(error))) from error

    def _registry_call(self, call: Callable[..., Any], ref: str) -> Iterator[dict[str, Any]]:
        """A pull or push of ref, as a stream of decoded events, with the worker's credentials."""
        repository, tag = _split_tag(ref)
        return call(  # type: ignore[no-any-return]
            repository,
            tag=tag or "latest",
            stream=True,
            decode=True,
            auth_config=self._registry_auth,
        )

    def push(self, ref: str, sink: LogSink) -> str:
        """Push ref to its registry; return the digest the registry gave it."""
        digest = None
        try:
            for event in self._registry_call(self.api.push, ref):
                if "error" in event:
                    raise PushImageFailed(f"pushing {ref} failed: {event['error']}")
                digest = (event.get("aux") or {}).get("Digest", digest)
                if event.get("status") and not event.get("progressDetail"):
                    sink(f"push {ref}: {event.get('id', '')} {event['status']}".replace("  ", " "))
        except docker.errors.APIError as error:
            raise PushImageFailed(f"pushing {ref} failed: {_reason(error)}") from error
        if not digest:
            raise PushImageFailed(f"pushing {ref} ended without a digest from the registry")
        return str(digest)

    def tag(self, image_id: str, ref: str) -> None:
        repository, tag = _split_tag(ref)
        try:
            self.api.tag(image_id, repository, tag=tag or "latest", force=True)
        except docker.errors.APIError as error:
            raise TagImageFailed(f"tagging {image_id} as {ref} failed: {_reason(error)}") from error

    def untag(self, ref: str) -> None:
        try:
            self.api.remove_image(ref, noprune=False)
        except docker.errors.APIError as error:
            if error.status_code != 404:
                raise

    def remove_reference(self, ref: str) -> None:
        """Remove a name sti gave an image for a while; the image stays if in use or named
        otherwise."""
        try:
            self.api.remove_image(ref, force=True, noprune=True)
        except docker.errors.APIError as error:
            if error.status_code != 404:
                raise _connection_error(error, f"removing the reference {ref}") from error

    def image_fact(
        self,
        image_id: str,
        question: Hashable,
        answer: Callable[[], Answer],
        lasting: FactCodec[Answer] | None = None,
    ) -> Answer:
        """What answer() finds out about an image, found once per image id in this process: an
        image id is the hash of the image's content, so what its files say cannot change. With
        lasting (how the answer becomes JSON and back) and a fact cache, kept on disk too."""
        if not image_id.startswith("sha256:"):
            return answer()
        key = (image_id, question)
        if key not in self._image_facts:
            if len(self._image_facts) >= _IMAGE_FACTS_KEPT:
                del self._image_facts[next(iter(self._image_facts))]
            self._image_facts[key] = self._lasting_fact(key, answer, lasting)
        return self._image_facts[key]  # type: ignore[no-any-return]

    def _lasting_fact(
        self,
        key: tuple[str, Hashable],
        answer: Callable[[], Answer],
        lasting: FactCodec[Answer] | None,
    ) -> Answer:
        if lasting is None or self._fact_cache is None:
            return answer()
        name = repr(key)  # the questions are tuples of strings, bools and frozen dataclasses
        stored = self._fact_cache.get(name)
        if stored is not None:
            with suppress(AttributeError, LookupError, TypeError, ValueError):  # a bad file
                return lasting.decode(stored)
        found = answer()
        self._fact_cache.put(name, lasting.encode(found))
        return found

    def references_in(self, repository: str) -> list[str]:
        """Every repository:tag reference in one repository."""
        found = self.api.images(name=repository)
        return [tag for image in found for tag in image.get("RepoTags") or () if tag]

    def remove_image(self, image_id: str) -> bool:
        """Remove an image sti made or replaced; one that is still tagged elsewhere or used by a
        container is left alone. False if it is still there.

        The engine itself refuses only an image of two or more tags: one of exactly one tag (a
        user's `docker tag app app:v1` of the image a rebuild replaced) it would delete, tag
        and all, so the tags are looked at first."""
        try:
            if self.api.inspect_image(image_id).get("RepoTags"):
                return False
            self.api.remove_image(image_id)
        except docker.errors.APIError as error:
            if error.status_code == 404:
                return True
            if error.status_code != 409:
                raise
            return False
        return True

    def untagged_images_of(self, build_id: str) -> list[str]:
        """Images a build made (they carry its id label) that no tag points to."""
        found = self.api.images(filters={"label": f"{BUILD_ID_LABEL}={build_id}", "dangling": True})
        return [image["Id"] for image in found]

    @property
    def builder(self) -> str:
        """Where the build method runs prepare on this engine, decided once: "buildkit" or
        "legacy" (a docker build) when that builder holds the sandbox, else "container".

        BuildKit needs Engine API 1.39 (Docker 18.09), a Linux engine, and the engine's "bridge"
        network for its RUN steps (a dockerd started with --bridge=none has none); STI_BUILDER
        picks one.
        """
        if self._builder == "auto":
            candidates = ("buildkit", "legacy") if self.has_buildkit else ("legacy",)
            held = [name for name in candidates if not self.sandbox.not_held_by(name)]
            self._builder = held[0] if held else "container"
        return self._builder

    @property
    def has_buildkit(self) -> bool:
        """Whether this engine builds with BuildKit (whether or not prepare runs there)."""
        if self._buildkit is None:
            version = tuple(int(part) for part in str(self.api.api_version).split("."))
            os_type = self._os_type or str(self.api.version().get("Os", "linux"))
            bridge = any(n["Name"] == "bridge" for n in self.api.networks(names=["bridge"]))
            self._buildkit = version >= (1, 39) and os_type == "linux" and bridge
        return self._buildkit

    def build(
        self,
        context: Callable[[], Iterator[bytes]],
        *,
        buildargs: Mapping[str, str],
        sink: LogSink,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Build a streamed tar context (Dockerfile at its root) with this engine's builder;
        return the image id. A RUN that exits non-zero raises BuildStepFailed.

        context is called for each attempt: a BuildKit cache whose records point at layers the
        engine has deleted fails every build that reuses them (a Docker 20.10 fault, seen after
        image removals), so such a failure clears the unused cache and builds once more.
        """
        try:
            return self._build_once(context(), buildargs=buildargs, labels=labels, sink=sink)
        except BuildFailed as error:
            if self.builder != "buildkit" or not _BROKEN_BUILD_CACHE.search(error.message):
                raise
            sink(f"The engine's build cache is damaged ({error.message}): cleared, building again")
            self.clear_build_cache()
        return self._build_once(context(), buildargs=buildargs, labels=labels, sink=sink)

    def _build_once(
        self,
        context: Iterator[bytes],
        *,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str] | None,
        sink: LogSink,
    ) -> str:
        if self.builder == "buildkit":
            params = {"version": "2", "pull": False}
            read: Callable[[Iterator[dict[str, Any]], LogSink, int], str] = _read_buildkit_build
        else:
            params = {"rm": True, "forcerm": True, "nocache": True, "pull": False}
            read = _read_legacy_build
        params |= self.sandbox.builder_params(self.builder)
        params["buildargs"] = json.dumps(dict(buildargs))
        if labels:  # byte-exact, unlike a LABEL line (a commit message has newlines)
            params["labels"] = json.dumps(dict(labels))
        try:
            # docker-py's build() hides the response; it is needed to abort a running build
            response = self.api._post(
                self.api._url("/build"),
                data=context,
                params=params,
                headers={"Content-Type": "application/tar"},
                stream=True,
                timeout=None,
            )
            self.api._raise_for_status(response)
            events = CancellableStream(self.api._stream_helper(response, decode=True), response)
            with self._tracked(events):
                return read(events, sink, self.line_max_bytes)
        except docker.errors.APIError as error:
            raise BuildFailed(f"docker build failed: {_reason(error)}") from error

    def clear_build_cache(self) -> None:
        """Remove every BuildKit cache record no running build uses."""
        try:
            self.api.prune_builds(all=True)
        except docker.errors.APIError as error:
            raise _connection_error(error, "clearing the build cache") from error

    def trim_build_cache(self) -> str | None:
        """Prune BuildKit's cache down to the keep limit: what no build uses and no image
        shares, least recently used first. Without a limit, or with the legacy builder, nothing.

        Housekeeping, not part of any build: a failure (an engine whose cache is damaged cannot
        size it) is returned as a message, not raised."""
        if self._build_cache_keep is None or self.builder != "buildkit":
            return None
        try:
            self.api.prune_builds(keep_storage=self._build_cache_keep)
        except docker.errors.APIError as error:
            return f"Could not trim the engine's build cache: {_reason(error)}"
        return None

    # containers

    def create_container(
        self,
        image: str,
        command: list[str],
        *,
        name: str,
        build_id: str,
        env: Mapping[str, str] | None = None,
        empty_volumes_at: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> str:
        """Create (not start) a container whose command replaces any ENTRYPOINT of the image
        (user: who runs it, if not the image's USER).

        empty_volumes_at mounts a fresh anonymous volume at each path, hiding what the image has
        there; a volume outlives the container's process, so files can be taken out after it
        exits, and a commit leaves it out.
        """
        mounts = [
            Mount(target=path, source=None, type="volume", no_copy=True)
            for path in empty_volumes_at
        ]
        host_config = self.api.create_host_config(
            mounts=mounts, log_config=_NO_LOG, **self.sandbox.host_config()
        )
        config = self.api.create_container_config(
            image,
            command=command,
            entrypoint=[],
            environment=[f"{key}={value}" for key, value in (env or {}).items()],
            labels={**(labels or {}), BUILD_ID_LABEL: build_id},
            user=user,
            host_config=host_config,
            detach=True,
        )
        try:
            try:
                created = self.api.create_container_from_config(config, name=name)
            except docker.errors.APIError as error:
                if error.status_code != 409:
                    raise
                # a step run again after its worker died: the container it made is stale
                self.remove_container(name)
                created = self.api.create_container_from_config(config, name=name)
        except docker.errors.APIError as error:
            raise CreateContainerFailed(
                f"creating a container from {image} failed: {_reason(error)}"
            ) from error
        return str(created["Id"])

    def image_file(
        self, image: str, path: str, *, max_bytes: int, build_id: str, role: str
    ) -> bytes | None:
        """The content of a regular file of an image (through a created, never started
        container), None if there is none at path; FileTooLarge past max_bytes."""
        container = self.create_container(
            image, ["/"], name=container_name(build_id, role), build_id=build_id
        )
        try:
            found = self.stat(container, path)
            if not found.exists or not found.is_file:
                return None
            archive = bytearray()
            with self.archive(container, path) as chunks:
                for chunk in chunks:
                    archive += chunk
                    if len(archive) > max_bytes + 64 * 1024:  # the content, headers, padding
                        raise FileTooLarge(f"{path} is larger than {max_bytes} bytes")
        finally:
            self.remove_container(container)
        with tarfile.open(fileobj=io.BytesIO(bytes(archive))) as tar:
            member = tar.next()
            content = tar.extractfile(member) if member and member.isfile() else None
            data = content.read(max_bytes + 1) if content else b""
        if len(data) > max_bytes:
            raise FileTooLarge(f"{path} is larger than {max_bytes} bytes")
        return data

    def remove_container(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if error.status_code not in (404, 409):  # 409: removal already in progress
                raise

    def container_names(self, prefix: str) -> list[str]:
        """Names (without the leading /) of all containers whose name starts with prefix."""
        found = self.api.containers(all=True, filters={"name": f"^/{prefix}"})
        return [
            n.lstrip("/") for c in found for n in c["Names"] if n.lstrip("/").startswith(prefix)
        ]

    def containers_named(self, prefix: str) -> list[str]:
        """Ids of containers whose name starts with prefix (Docker's name filter is a regex)."""
        found = self.api.containers(all=True, filters={"name": f"^/{prefix}"})
        return [c["Id"] for c in found if any(n.lstrip("/").startswith(prefix) for n in c["Names"])]

    def put_archive(self, container_id: str, path: str, chunks: Iterator[bytes]) -> None:
        try:
            self.api.put_archive(container_id, path, chunks)
        except docker.errors.APIError as error:
            raise CreateContainerFailed(
                f"copying files into the container at {path} failed: {_reason(error)}"
            ) from error

    def stat(self, container_id: str, path: str) -> PathStat:
        """What is at path in the container's file system, following links inside it."""
        current = path
        for _ in range(_MAX_LINK_HOPS):
            try:
                # docker-py has no call for HEAD /archive (a stat); the client is a Session
                response = self.api.head(
                    self.api._url("/containers/{0}/archive", container_id),
                    params={"path": current},
                )
            except docker.errors.APIError as error:  # pragma: no cover - defensive
                raise _connection_error(error, f"looking for {path}") from error
            if response.status_code == 404:
                return PathStat(path, exists=False)
            self.api._raise_for_status(response)
            info = _decode_stat(response.headers.get("X-Docker-Container-Path-Stat", ""))
            link = info.get("linkTarget") or ""
            mode = int(info.get("mode", 0))
            is_link = bool(mode & (1 << 27))
            if not is_link or not link:
                is_dir = bool(mode & (1 << 31))
                return PathStat(path, True, is_file=not is_dir, executable=bool(mode & 0o111))
            current = posixpath.normpath(posixpath.join(posixpath.dirname(current), link))
        return PathStat(path, exists=False)

    def stat_all(self, container_id: str, paths: Sequence[str]) -> list[PathStat]:
        """stat of each path, asked all at once (the engine answers them in parallel)."""
        if len(paths) < 2:
            return [self.stat(container_id, path) for path in paths]
        with ThreadPoolExecutor(max_workers=min(len(paths), _PARALLEL_STATS)) as pool:
            return list(pool.map(lambda path: self.stat(container_id, path), paths))

    def is_empty_directory(self, container_id: str, path: str) -> bool:
        """Whether path in the container is an empty directory or missing; reads no more of
        its archive than two headers."""
        found = self.stat(container_id, path)
        if not found.exists:
            return True
        if found.is_file:
            return False
        with self.archive(container_id, path) as chunks:
            with tarfile.open(fileobj=IterReader(chunks), mode="r|") as tar:
                directory_itself, first_entry = tar.next(), tar.next()
            return directory_itself is not None and first_entry is None

    @contextmanager
    def archive(self, container_id: str, path: str) -> Iterator[Iterator[bytes]]:
        """The tar of path in the container, as it is read; the request is closed on leaving,
        read to its end or not: the engine removes no container while it still sends one of
        its archives (a cleanup after a reader's error waited for it, until its timeout).
        Uncompressed, as get_archive asks for it: requests' default Accept-Encoding has the
        engine gzip the tar (50 MB of artifacts took 1.0 s to read instead of 0.15 s)."""
        response = self.api._get(
            self.api._url("/containers/{0}/archive", container_id),
            params={"path": path},
            headers={"Accept-Encoding": "identity"},
            stream=True,
        )
        try:
            self.api._raise_for_status(response)
            yield response.iter_content(chunk_size=64 * 1024)
        finally:
            response.close()

    def archive_part(
        self, container_id: str, path: str, to_prefix: str, *, s2i_modes: bool = False
    ) -> TarPart:
        """A tar part of path in the container (see archive), its top renamed to_prefix (see
        retargeted); read when the part is written, its request closed however that ends."""
        top = posixpath.basename(path.rstrip("/"))

        def add(tar: tarfile.TarFile) -> None:
            with self.archive(container_id, path) as chunks:
                retargeted(lambda: chunks, top, to_prefix, s2i_modes=s2i_modes)(tar)

        return add

    @contextmanager
    def _started(self, container_id: str) -> Iterator[Iterator[tuple[bytes | None, bytes | None]]]:
        """Start the container; its output as (stdout, stderr) chunks as they come, straight
        from its streams (attached before the start, so nothing is missed): its log driver
        keeps nothing, and the logs endpoint would be no place for binary data anyway."""
        output = self.api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
        )
        with self._tracked(output):
            self.api.start(container_id)
            yield output

    def run_to_completion(self, container_id: str, sink: LogSink) -> tuple[int, list[str]]:
        """Start the container, forward its output line by line (stdout's and stderr's each
        whole), return (exit code, last lines)."""
        lines: list[str] = []
        stdout, stderr = (
            OutputTail(sink, lines=lines, max_line_bytes=self.line_max_bytes) for _ in range(2)
        )
        with self._started(container_id) as output:
            for out, err in output:
                if out:
                    stdout.feed_bytes(out)
                if err:
                    stderr.feed_bytes(err)
        stdout.close()
        stderr.close()
        status = self.api.wait(container_id)
        return int(status.get("StatusCode", -1)), lines

    def run_capturing_stdout(
        self, container_id: str, out: Path, sink: LogSink, max_bytes: int
    ) -> tuple[int, list[str]]:
        """Start the container, write its stdout to out (a tar, for s2i's save-artifacts) and
        forward its stderr line by line as it comes; return (exit code, last stderr lines).
        Past max_bytes of stdout, raise OutputTooLarge (the container runs on: remove it)."""
        ended: list[tuple[int, list[str]]] = []
        written = 0
        chunks = self.stdout_chunks(container_id, sink, ended)
        with closing(chunks), out.open("wb") as file:
            for stdout in chunks:
                written += len(stdout)
                if written > max_bytes:
                    raise OutputTooLarge(f"its output is larger than {max_bytes} bytes")
                file.write(stdout)
        return ended[0]

    def stdout_chunks(
        self, container_id: str, sink: LogSink, ended: list[tuple[int, list[str]]]
    ) -> Iterator[bytes]:
        """Start the container; its stdout as it comes (a tar, for s2i's save-artifacts), its
        stderr forwarded line by line meanwhile. Once stdout ends, the exit code and the last
        stderr lines are appended to ended; closed before, the container runs on (remove it)."""
        tail = OutputTail(sink, max_line_bytes=self.line_max_bytes)
        with self._started(container_id) as output:
            for stdout, stderr in output:
                if stderr:
                    tail.feed_bytes(stderr)
                if stdout:
                    yield stdout
        tail.close()
        status = self.api.wait(container_id)
        ended.append((int(status.get("StatusCode", -1)), tail.lines))

    def oom_killed(self, container_id: str) -> bool:
        """Whether the kernel killed a process of the (exited) container at its memory limit."""
        try:
            state = self.api.inspect_container(container_id).get("State") or {}
        except docker.errors.APIError:
            return False
        return bool(state.get("OOMKilled"))

    def commit(
        self,
        container_id: str,
        changes: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> str:
        """An image of the container's files; its config the container's with changes (Dockerfile
        instructions), or config (an image's Config, as inspected) where given."""
        try:
            committed = self.api.commit(
                container_id, changes=list(changes), conf=dict(config) if config else None
            )
        except docker.errors.APIError as error:
            raise CommitContainerFailed(
                f"committing the container failed: {_reason(error)}"
            ) from error
        return str(committed["Id"])


def _connect(url: str | None, timeout: int) -> tuple[docker.APIClient, str | None]:
    """A client speaking the engine's API version, and the engine's OS, learnt from one /_ping
    (its headers say both); docker-py's version="auto" asks /version for it, which the engine
    answers by running runc and asking containerd (10-20 ms), and a ping came on top."""
    connection = {"base_url": url} if url else docker.utils.kwargs_from_env()
    probe = docker.APIClient(version=docker.constants.MINIMUM_DOCKER_API_VERSION, **connection)
    try:
        response = probe.get(f"{probe.base_url}/_ping", timeout=timeout)
        response.raise_for_status()
    finally:
        probe.close()
    version = response.headers.get("Api-Version")
    if not version:  # an engine older than API 1.25 does not say
        return docker.APIClient(version="auto", timeout=timeout, **connection), None
    return docker.APIClient(version=version, timeout=timeout, **connection), response.headers.get(
        "Ostype"
    )


def _read_legacy_build(events: Iterator[dict[str, Any]], sink: LogSink, max_line_bytes: int) -> str:
    """The legacy builder's events: output as "stream" text, the image id as aux ID."""
    tail = OutputTail(sink, max_line_bytes=max_line_bytes)
    image_id: str | None = None
    for event in events:
        if "stream" in event:
            tail.feed(event["stream"])
        if "aux" in event and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
        if "error" in event:
            tail.close()
            message = _engine_error(event)
            failed = _LEGACY_STEP_FAILED.search(message)
            if failed:
                raise BuildStepFailed(
                    f"docker build failed: {message}",
                    command=failed.group(1),
                    exit_code=int(failed.group(2)),
                    details=_tail_message(tail.lines),
                )
            raise BuildFailed(f"docker build failed: {message}", details=_tail_message(tail.lines))
    tail.close()
    if not image_id:
        raise BuildFailed("docker build ended without producing an image")
    return image_id


class _BuildKitProgress:
    """Turns BuildKit's trace into log lines: each step's name once, then its output line by
    line; keeps the last lines of every step for the error message of the one that fails."""

    def __init__(self, sink: LogSink, max_line_bytes: int) -> None:
        self._sink = sink
        self._max_line_bytes = max_line_bytes
        self._names: dict[str, str] = {}
        self._cached: set[str] = set()
        self._outputs: dict[tuple[str, int], OutputTail] = {}
        self._recent: dict[str, list[str]] = {}
        self.failed_step: str | None = None

    def feed(self, encoded: str) -> None:
        try:
            status = decode_trace(encoded)
        except TraceDecodeError as error:
            message = f"docker build sent a progress message sti cannot read: {error}"
            raise BuildFailed(message) from error
        for vertex in status.vertexes:
            shown = not vertex.name.startswith("[internal]")
            if vertex.digest not in self._names and shown:
                self._sink(vertex.name)
            if vertex.cached and vertex.digest not in self._cached and shown:
                self._sink(f"CACHED {vertex.name}")  # as docker build says it
                self._cached.add(vertex.digest)
            self._names[vertex.digest] = vertex.name
            if vertex.error:
                self.failed_step = vertex.digest
        for log in status.logs:
            key = (log.vertex, log.stream)
            if key not in self._outputs:
                recent = self._recent.setdefault(log.vertex, [])
                self._outputs[key] = OutputTail(
                    self._sink, lines=recent, max_line_bytes=self._max_line_bytes
                )
            self._outputs[key].feed_bytes(log.data)

    def close(self) -> None:
        for output in self._outputs.values():
            output.close()

    def failure(self, message: str) -> BuildFailed:
        self.close()
        step = self.failed_step
        details = _tail_message(self._recent.get(step, [])) if step else []
        exit_code = _EXIT_CODE.search(message)
        if step and exit_code:
            return BuildStepFailed(
                f"docker build failed: {message}",
                command=self._names.get(step, ""),
                exit_code=int(exit_code.group(1)),
                details=details,
            )
        return BuildFailed(f"docker build failed: {message}", details=details)


def _read_buildkit_build(
    events: Iterator[dict[str, Any]], sink: LogSink, max_line_bytes: int
) -> str:
    """BuildKit's events: progress as base64 protobuf in aux (id moby.buildkit.trace), the
    image id as aux ID (id moby.image.id), a failure as error/errorDetail."""
    progress = _BuildKitProgress(sink, max_line_bytes)
    image_id: str | None = None
    for event in events:
        aux = event.get("aux")
        if event.get("id") == _BUILDKIT_TRACE and isinstance(aux, str):
            progress.feed(aux)
        elif isinstance(aux, dict) and "ID" in aux:
            image_id = aux["ID"]
        if "error" in event:
            raise progress.failure(_engine_error(event))
    progress.close()
    if not image_id:
        raise BuildFailed("docker build ended without producing an image")
    return image_id


def _engine_error(event: Mapping[str, Any]) -> str:
    """A build's error as the engine sent it, held to TEXT_MAX_BYTES before anything searches it
    (it quotes what the build was given)."""
    return cut_line(str(event["error"]).strip(), TEXT_MAX_BYTES)


def _decode_stat(header: str) -> dict[str, Any]:
    if not header:
        return {}
    return json.loads(base64.b64decode(header))


def _pull_failed(ref: str, reason: str) -> str:
    return f"image {ref} is not on this Docker engine and pulling it failed: {reason}"


def _split_tag(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        return ref, None
    name, _, tag = ref.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return ref, None


def _reason(error: BaseException) -> str:
    explanation = getattr(error, "explanation", None)
    if explanation:
        return str(explanation).strip()
    return str(error).strip() or type(error).__name__


def _tail_message(lines: list[str]) -> list[str]:
    return ["last output lines:", *lines] if lines else []


def _connection_error(error: BaseException, doing: str) -> StiError:
    return DockerConnectionFailed(f"Docker engine error while {doing}: {_reason(error)}")


def translate_error(error: BaseException) -> StiError:
    """Any exception from a build as the sti error a user can act on."""
    if isinstance(error, StiError):
        return error
    if isinstance(error, requests.exceptions.ConnectionError):
        inner = _wrapped_error(error)
        if inner is not None:  # raised while streaming a request body, e.g. a tar producer
            return translate_error(inner)
        return DockerConnectionFailed(f"lost the connection to the Docker engine: {error}")
    if is_time_limit(error):  # a step's soft time limit, raised into the running code
        return error_for_failure(error)
    if isinstance(error, docker.errors.DockerException):
        return DockerConnectionFailed(f"Docker engine error: {_reason(error)}")
    return InternalError(f"unexpected {type(error).__name__}: {error}")


def _wrapped_error(error: BaseException, depth: int = 3) -> BaseException | None:
    """An sti or Docker error that requests wrapped in a ConnectionError's arguments."""
    if depth == 0:
        return None
    for arg in error.args:
        if isinstance(arg, StiError | docker.errors.DockerException):
            return arg
        if isinstance(arg, BaseException):
            found = _wrapped_error(arg, depth - 1)
            if found is not None:
                return found
    return None
