"""Validate and build, composed from the engine's pieces as a short list of named steps.

The state between steps is plain JSON, so the same steps run in one process (run_build) or as a
chain of tasks pinned to one Docker host. Every container and temp dir is found again by the
build id alone, so cleanup works after any step, in any process.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sti.env_files import SOURCE_ENVIRONMENT, source_environment
from sti.errors import (
    BuildFailed,
    InvalidImage,
    InvalidInput,
    NoSuchBaseImage,
    NoSuchRuntimeImage,
    StiError,
)
from sti.ignore import ignore_matcher
from sti.lines import USAGE_MAX_BYTES, BoundedLines
from sti.model import (
    BUILD_ID_PATTERN,
    BuildRequest,
    Result,
    Step,
    UsageRequest,
    ValidateRequest,
    build_tag_for,
    check_build_id,
    exact_reference,
    registry_of,
)
from sti.redaction import redact
from sti.runtime_artifacts import RuntimeArtifact
from sti.source_scripts import source_scripts
from sti.tarstreams import (
    TarPart,
    empty_directory,
    stream_tar,
)
from sti.upload_refs import SCHEME as UPLOAD_SCHEME

from . import users
from .docker_host import (
    CONTAINER_NAME_PREFIX,
    DockerHost,
    LogSink,
    OutputTooLarge,
    container_name,
    translate_error,
)
from .image_metadata import relabelled
from .layouts import (
    ARTIFACTS_INPUT,
    S2I_LAYOUT,
    artifacts_from_stdout,
    artifacts_in_container,
    artifacts_in_tar,
    layout_of,
)
from .methods import (
    ArtifactsNotSaved,
    ContainerMethod,
    PrepareSpec,
    SavedArtifacts,
    base_reference,
)
from .prepare_ways import PrepareWay, prepare_way
from .protocol import (
    BUILD_DIR,
    DEPLOY_SCRIPTS,
    INCREMENTAL_SCRIPTS,
    PREPARE_ROLE,
    RUN_ROLE,
    S2I_DEFAULT_DIR,
    SAVE_ROLE,
    SCRIPT_ROLES,
    SHELL,
    ImageScripts,
    Scripts,
    inspect_scripts,
    with_source_scripts,
)
from .provenance import image_labels, source_labels
from .runtime_artifacts import (
    ASSEMBLE_RUNTIME,
    artifact_parts,
    artifacts_for,
    assemble_runtime_path,
    check_assemble_runtime,
)
from .source_images import Layer, SourceImage, SourceOrigin, source_image
from .sources import (
    FetchedSource,
    Sources,
    checked_context_dir,
    describe,
)
from .trees import remove_tree
from .url_scripts import fetch_scripts, fetched_scripts_part, is_fetched

WORKDIR_PREFIX = "sti-"
# a source image costs one more BuildKit request (about 0.3 s here); sending and unpacking a
# context costs about 30 ms per compressed MiB, so smaller sources are sent each time
SOURCE_IMAGE_MIN_BYTES = 8 * 1024 * 1024
_ABORTED_BUILD_GRACE_S = 15
# what names an attempt's containers, images and work dir: its build id, then .<attempt> for a
# build run again (see attempt_name); group 1 is the name, group 2 the build id
_ATTEMPT_NAME = rf"({BUILD_ID_PATTERN}(?:\.[2-9]|\.[1-9][0-9]+)?)"
_BUILD_CONTAINER = re.compile(rf"^{CONTAINER_NAME_PREFIX}{_ATTEMPT_NAME}-[a-z]+(?:-[a-z]+)*$")
_BUILD_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}{_ATTEMPT_NAME}$")


def attempt_name(build_id: str, attempt: int = 1) -> str:
    """What names an attempt's containers, images and work dir: the build id for the first,
    <build id>.<n> for attempt n of a build run again, so that an earlier attempt still running
    (its worker frozen past its lease) and the new one never touch each other's."""
    check_build_id(build_id)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 0 < attempt < 1000:
        raise InvalidInput(f"attempt {attempt!r} is not a number from 1 to 999")
    return build_id if attempt == 1 else f"{build_id}.{attempt}"


def build_id_of(name: str) -> str:
    """The build id of an attempt's name."""
    return name.partition(".")[0]


def workdir_for(name: str) -> Path:
    """The work dir of an attempt (its name, or the build id for the first)."""
    if not isinstance(name, str) or not re.fullmatch(_ATTEMPT_NAME, name):
        raise InvalidInput(f"{name!r} names no attempt of a build")
    return Path(tempfile.gettempdir()) / f"{WORKDIR_PREFIX}{name}"


@dataclass(frozen=True)
class BaseImage:
    """What a build needs to know of an image it runs prepare in, read from one inspect."""

    id: str
    scripts: Scripts
    entrypoint: tuple[str, ...] | None = None
    owner: tuple[int, int] | None = None  # its numeric USER, who gets the inputs
    user: str | None = None  # its USER as written
    destination: str = "/tmp"  # where its inputs go (s2i's destination)
    injected: tuple[str, ...] = ()  # its scripts that come from the source's .s2i/bin
    fetched: tuple[str, ...] = ()  # its scripts that come from a --scripts-url (not image://)
    run_as: str | None = None  # uid:gid that runs assemble, when not its USER

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scripts": self.scripts.to_json(),
            "entrypoint": list(self.entrypoint) if self.entrypoint else None,
            "owner": list(self.owner) if self.owner else None,
            "user": self.user,
            "destination": self.destination,
            "injected": list(self.injected),
            "fetched": list(self.fetched),
            "run_as": self.run_as,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaseImage:
        entrypoint, owner = data.get("entrypoint"), data.get("owner")
        return cls(
            id=data["id"],
            scripts=Scripts.from_json(data["scripts"]),
            entrypoint=tuple(entrypoint) if entrypoint else None,
            owner=(int(owner[0]), int(owner[1])) if owner else None,
            user=data.get("user"),
            destination=str(data.get("destination") or "/tmp"),
            injected=tuple(data.get("injected") or ()),
            fetched=tuple(data.get("fetched") or ()),
            run_as=data.get("run_as"),
        )


@dataclass(frozen=True)
class BuildState:
    """Everything a later step needs from an earlier one; JSON between tasks."""

    request: BuildRequest
    host: str
    started_at: float = field(default_factory=time.time)
    attempt: int = 1  # a build whose worker died runs again from the start as attempt 2
    # which of stages_for's stages this state is the input of: one sealed state begins one
    # stage, once (None: sealed before stages were counted)
    stage: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)  # provenance of the source
    source_scripts: tuple[str, ...] = ()  # the s2i scripts the source has in .s2i/bin
    url_scripts: tuple[str, ...] = ()  # those --scripts-url gave, in the work dir
    source_dir: str | None = None
    source_streamed: bool = False  # the request's source goes into the build as one stream
    source_bytes: int | None = None  # the streamed source's size as stored, if known
    revision: str | None = None
    builder: BaseImage | None = None
    runtime: BaseImage | None = None
    artifacts_container: str | None = None
    # artifacts_container is an s2i save-artifacts not run yet, this its script (see layouts)
    artifacts_on_stdout_of: str | None = None
    artifacts_tar: str | None = None
    saved_from: SavedArtifacts | None = None
    incremental: bool = False
    stage_image: str | None = None
    image_id: str | None = None
    tagged: bool = False
    replaced_images: tuple[str, ...] = ()
    digest: str | None = None
    messages: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    error: Mapping[str, str] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def attempt_name(self) -> str:
        """What names this attempt's containers, images and work dir (see attempt_name)."""
        return attempt_name(self.request.build_id, self.attempt)

    def fail(self, error: StiError, sink: LogSink) -> BuildState:
        """The state after a step could not finish: later steps are skipped, cleanup still runs."""
        sink(f"Build failed: {error.message}")
        messages = (*self.messages, error.message, *error.details)
        return replace(self, error=error.to_json(), messages=messages)

    def without_credentials(self) -> BuildState:
        """This state with the credentials of URLs masked (the source's, and any a message
        quotes): for once the source is fetched, as states are stored and no later step reads
        the URL."""
        error = {name: redact(text) for name, text in self.error.items()} if self.error else None
        return replace(
            self,
            request=replace(self.request, source=describe(self.request.source)),
            messages=tuple(redact(message) for message in self.messages),
            error=error,
        )

    def say(self, sink: LogSink, message: str) -> BuildState:
        sink(message)
        return replace(self, messages=(*self.messages, message))

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["request"] = self.request.to_json()
        data["messages"] = list(self.messages)
        data["steps"] = [step.to_json() for step in self.steps]
        data["error"] = dict(self.error) if self.error else None
        data["replaced_images"] = list(self.replaced_images)
        data["source_labels"] = dict(self.source_labels)
        data["source_scripts"] = list(self.source_scripts)
        data["url_scripts"] = list(self.url_scripts)
        for name in ("builder", "runtime"):
            data[name] = data[name].to_json() if data[name] is not None else None
        data["saved_from"] = self.saved_from.to_json() if self.saved_from else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildState:
        values = dict(data)
        values["request"] = BuildRequest.from_json(values["request"])
        values["messages"] = tuple(values.get("messages", ()))
        values["steps"] = tuple(Step(**step) for step in values.get("steps", ()))
        values["error"] = dict(values["error"]) if values.get("error") else None
        values["replaced_images"] = tuple(values.get("replaced_images", ()))
        values["source_labels"] = dict(values.get("source_labels") or {})
        values["source_scripts"] = tuple(values.get("source_scripts") or ())
        values["url_scripts"] = tuple(values.get("url_scripts") or ())
        for name in ("builder", "runtime"):
            if values.get(name) is not None:
                values[name] = BaseImage.from_json(values[name])
        if values.get("saved_from") is not None:
            values["saved_from"] = SavedArtifacts.from_json(values["saved_from"])
        return cls(**values)


@dataclass(frozen=True)
class Workbench:
    """What a build's steps work with: the Docker host, where sources come from (both made once
    per process), and the build's log."""

    docker: DockerHost
    sources: Sources
    sink: LogSink
    # asked right before tagging: raises the error the build ends with when this attempt may
    # not tag (taken for lost, the build running again as a later one; or its tag's lock taken
    # by another build while its worker stopped)
    check_may_tag: Callable[[], None] = lambda: None


StepFunction = Callable[[Workbench, BuildState], BuildState]


# steps


def fetch_source_step(bench: Workbench, state: BuildState) -> BuildState:
    request = state.request
    workdir = workdir_for(state.attempt_name)
    remove_tree(workdir)  # left by an earlier delivery of this step
    workdir.mkdir(mode=0o700)
    fetched = bench.sources.fetch(
        request.source,
        workdir,
        bench.sink,
        ref=request.ref,
        context_dir=request.context_dir,
        ignore_submodules=request.ignore_submodules,
        exclude=request.exclude,
    )
    scripts = request.source_scripts  # an upload streams: sti-submit looked
    if fetched.path and fetched.stream_from is None:
        state = _with_source_environment(bench, state, Path(fetched.path))
        root = Path(fetched.path)
        scripts = source_scripts(root, ignore_matcher(root, fetched.exclude))
    if scripts:
        state = state.say(bench.sink, f"Scripts from the source's .s2i/bin: {', '.join(scripts)}")
    if is_fetched(request.scripts_url):
        url = str(request.scripts_url)
        fetched_scripts = fetch_scripts(url, workdir, bench.sources, bench.sink)
        state = replace(state, url_scripts=fetched_scripts)
        state = state.say(bench.sink, f"Scripts from {url}: {', '.join(fetched_scripts)}")
    state = replace(
        state,
        source_dir=fetched.path,
        source_streamed=fetched.stream_from is not None,
        source_bytes=fetched.size,
        revision=fetched.revision,
        source_labels=source_labels(request, fetched.revision, fetched.commit),
        source_scripts=scripts,
    )
    if fetched.revision:
        state = state.say(
            bench.sink, f"Source {describe(request.source)} at commit {fetched.revision}"
        )
    return state


def _with_source_environment(bench: Workbench, state: BuildState, root: Path) -> BuildState:
    """The source's .s2i/environment under the request's env (-E and -e win, as in s2i). A
    directory uploaded by sti-submit streams into the build: the client merged it already."""
    found = source_environment(root)
    if not found:
        return state
    state = replace(state, request=state.request.with_source_environment(found))
    return state.say(bench.sink, f"Environment from {SOURCE_ENVIRONMENT}: {', '.join(found)}")


def check_images_step(bench: Workbench, state: BuildState) -> BuildState:
    """Pull what is missing and refuse images that cannot do the build, before any work."""
    request = state.request
    required = INCREMENTAL_SCRIPTS if request.extended else DEPLOY_SCRIPTS
    builder = _base_image(
        bench.docker,
        request.build_image,
        required,
        "Base",
        state.attempt_name,
        bench.sink,
        request.pull_policy,
        request.scripts_url,
        request.destination,
        state.source_scripts,
        state.url_scripts,
        assemble_user=request.assemble_user,
        allowed_uids=request.allowed_uids,
        needs_shell=bool(request.build_env),
    )
    state = replace(state, builder=builder)
    if request.runtime_image:
        runtime = _runtime_base(
            bench, request, request.runtime_image, DEPLOY_SCRIPTS, state.attempt_name
        )
        state = replace(state, runtime=runtime)
    if request.s2i_runtime_image:
        runtime = _s2i_runtime_image(bench, request, builder, state.attempt_name)
        state = replace(state, runtime=runtime)
    return state


def _runtime_base(
    bench: Workbench,
    request: BuildRequest,
    name: str,
    required: Sequence[str],
    attempt_name: str,
) -> BaseImage:
    return _base_image(
        bench.docker,
        name,
        required,
        "Runtime",
        attempt_name,
        bench.sink,
        request.runtime_pull_policy,
        allowed_uids=request.allowed_uids,
        needs_shell=bool(request.build_env),
    )


def _s2i_runtime_image(
    bench: Workbench, request: BuildRequest, builder: BaseImage, attempt_name: str
) -> BaseImage:
    """A --runtime-image needs run and assemble-runtime, and artifacts to copy."""
    name = request.s2i_runtime_image or ""
    runtime = _runtime_base(bench, request, name, (RUN_ROLE,), attempt_name)
    if not _brings_assemble_runtime(builder):
        check_assemble_runtime(bench.docker, runtime.id, name, runtime.scripts, attempt_name)
    _runtime_artifacts(bench, request, bench.docker.image_config(runtime.id), builder)
    return runtime


def _brings_assemble_runtime(builder: BaseImage) -> bool:
    """Whether the source's .s2i/bin or the --scripts-url has an assemble-runtime (which the
    build put in the builder's <destination>/scripts, from where the deploy takes it)."""
    return ASSEMBLE_RUNTIME in builder.injected + builder.fetched


def _runtime_artifacts(
    bench: Workbench, request: BuildRequest, runtime_config: Mapping[str, Any], builder: BaseImage
) -> list[RuntimeArtifact]:
    """Checked in check_images, found again by the deploy step (which may run in another task)."""
    return artifacts_for(
        request.runtime_artifacts,
        request.s2i_runtime_image or "",
        runtime_config,
        bench.docker.image_config(builder.id) if not request.runtime_artifacts else {},
    )


def save_artifacts_step(bench: Workbench, state: BuildState) -> BuildState:
    """Run save-artifacts in the previous image, keeping its output in a stopped container."""
    request = state.request
    if request.clean:
        return state.say(bench.sink, "Clean build: previous artifacts are not reused")
    if request.s2i_runtime_image:
        return state.say(bench.sink, "A --runtime-image build is clean, as in s2i")
    previous = build_tag_for(request.tag) if request.extended else request.tag
    previous_id = _previous_image(
        bench.docker, previous, request.incremental_pull_policy, bench.sink
    )
    if previous_id is None:
        return state.say(bench.sink, f"No previous image {previous}: clean build")
    config = bench.docker.image_config(previous_id)
    way = prepare_way(request.method, bench.docker, build_env=bool(request.build_env))
    buildkit = way.on_buildkit
    scripts_url = request.scripts_url
    if state.builder and "save-artifacts" in state.builder.injected + state.builder.fetched:
        # the source's own or the URL's, which the previous build copied there
        scripts_url = f"image://{state.builder.destination}/scripts"
    scripts = inspect_scripts(
        bench.docker,
        previous_id,
        build_id=state.attempt_name,
        role="previous",
        config=config,
        check_artifacts_dir=buildkit,
        scripts_url=scripts_url,
    )
    save = scripts.scripts.save_artifacts
    if not scripts.has(SAVE_ROLE):
        return state.say(bench.sink, f"Previous image {previous} has no {save}: clean build")
    layout = layout_of(scripts.scripts)
    owner, user = _owner(config), None
    if request.allowed_uids:  # the uid judged runs it, as assemble (see users)
        try:
            owner = users.judged_ids(
                bench.docker, previous_id, config, previous, request, state.attempt_name
            )
        except InvalidImage as error:
            return state.say(bench.sink, f"Not running {save}: {error.message}: clean build")
        user = f"{owner[0]}:{owner[1]}"
    # a stage FROM the earlier image would run its ONBUILD triggers (sti's images have none)
    in_stage = buildkit and not config.get("OnBuild")
    if in_stage and layout.saves_in_build_stage(scripts.artifacts_dir_empty):
        saved = SavedArtifacts(previous_id, save, owner, config.get("WorkingDir") or "/")
        state = replace(state, saved_from=saved, incremental=True)
        bench.sink(f"Saving artifacts from {previous} in a stage of the build")
        return state.say(bench.sink, f"Incremental build: reusing artifacts saved from {previous}")
    bench.sink(f"Saving artifacts from {previous}")
    output = layout.save_artifacts(
        bench.docker,
        previous_id,
        save,
        state.attempt_name,
        workdir_for(state.attempt_name),
        bench.sink,
        bench.sources.policy.limits,
        user,
        streamed=way.place == "container",
    )
    if output.exit_code != 0:
        state = state.say(
            bench.sink,
            f"Saving artifacts from {previous} failed: {save} exited with code "
            f"{output.exit_code}; doing a clean build instead",
        )
        return replace(state, messages=(*state.messages, *output.last_lines[-5:]))
    state = replace(
        state,
        artifacts_container=output.container,
        artifacts_on_stdout_of=save if output.on_stdout else None,
        artifacts_tar=output.tar,
        incremental=True,
    )
    return state.say(bench.sink, f"Incremental build: reusing artifacts saved from {previous}")


def build_step(bench: Workbench, state: BuildState) -> BuildState:
    """Run prepare on the builder image with the source (and artifacts) in place."""
    request = state.request
    builder = state.builder
    assert (state.source_dir or state.source_streamed) and builder, "fetch_source runs first"
    fetched = FetchedSource(
        state.source_dir or "",
        state.revision,
        request.exclude,
        stream_from=request.source if state.source_streamed else None,
        context_dir=checked_context_dir(request.context_dir) if request.context_dir else None,
    )
    inputs = [bench.sources.part(fetched)]
    input_dirs = ["src"]
    limits = bench.sources.policy.limits
    if state.artifacts_container and state.artifacts_on_stdout_of:
        container, save = state.artifacts_container, state.artifacts_on_stdout_of
        inputs.append(artifacts_from_stdout(bench.docker, container, save, bench.sink, limits))
        input_dirs.append(ARTIFACTS_INPUT)
    elif state.artifacts_container:
        inputs.append(artifacts_in_container(bench.docker, state.artifacts_container, limits))
        input_dirs.append(ARTIFACTS_INPUT)
    elif state.artifacts_tar:
        inputs.append(artifacts_in_tar(Path(state.artifacts_tar), limits))
        input_dirs.append(ARTIFACTS_INPUT)
    if request.extended:
        inputs.append(empty_directory("build"))
        input_dirs.append("build")
    if builder.fetched:
        inputs.append(fetched_scripts_part(workdir_for(state.attempt_name), builder.fetched))
        input_dirs.append("scripts")
    spec = PrepareSpec(
        base_image=builder.id,
        inputs=inputs,
        input_dirs=input_dirs,
        env=request.env,
        build_env=request.build_env,
        build_id=state.attempt_name,
        scripts=builder.scripts,
        stage="builder" if request.extended else "build",
        entrypoint=builder.entrypoint,
        owner=builder.owner,
        user=builder.user,
        input_root=builder.destination,
        run_as=builder.run_as,
        source_scripts=builder.injected,
        saved_from=state.saved_from,
        labels=image_labels(request, state.source_labels, (request.build_image, builder.id)),
    )
    way = prepare_way(request.method, bench.docker, build_env=bool(request.build_env))
    spec, made = _from_source_image(bench, spec, fetched, state.source_bytes or 0, way)
    with made.settling():
        image, state = _prepared(bench, spec, state, way)
    if request.extended or request.s2i_runtime_image:
        return replace(state, stage_image=image)
    image = _with_image_metadata(bench, image, state, [(image, builder)])
    return replace(state, image_id=image)


def _prepared(
    bench: Workbench, spec: PrepareSpec, state: BuildState, way: PrepareWay
) -> tuple[str, BuildState]:
    """The image prepare made; when the previous image's artifacts could not be saved, the
    one a clean build made, with the state saying so."""
    request = state.request
    bench.sink(f"Running {spec.scripts.prepare} in {request.build_image} (method {request.method})")
    bench.sink(way.describe())
    method = way.method
    try:
        return method.prepare_image(bench.docker, spec, bench.sink), state
    except ArtifactsNotSaved as error:
        previous = build_tag_for(request.tag) if request.extended else request.tag
        state = state.say(
            bench.sink,
            f"Saving artifacts from {previous} failed: {error.message}; "
            "doing a clean build instead",
        )
        state = replace(state, incremental=False, messages=(*state.messages, *error.details[-5:]))
        return method.prepare_image(bench.docker, _without_artifacts(spec), bench.sink), state


def _without_artifacts(spec: PrepareSpec) -> PrepareSpec:
    """spec for a clean build: no save-artifacts stage, no artifacts input."""
    kept = [
        (part, name)
        for part, name in zip(spec.inputs, spec.input_dirs, strict=True)
        if name != ARTIFACTS_INPUT
    ]
    return replace(
        spec,
        saved_from=None,
        inputs=[part for part, _ in kept],
        input_dirs=[name for _, name in kept],
    )


def _with_image_metadata(
    bench: Workbench,
    image: str,
    state: BuildState,
    written: Sequence[tuple[str | None, BaseImage | None]],
) -> str:
    """The image with the labels assemble asked for (see image_metadata) in each image an s2i
    base made (the later over the earlier: an extended build's runtime over its builder), the
    user's --label over them."""
    wanted: dict[str, str] = {}
    for made, base in written:
        if made and base:
            found = layout_of(base.scripts).requested_labels(
                bench.docker, made, base.destination, state.attempt_name, bench.sink
            )
            wanted.update(found)
    if not wanted:
        return image
    labels = {**wanted, **state.request.labels}
    labelled = relabelled(bench.docker, image, labels, state.attempt_name, bench.sink)
    bench.docker.remove_image(image)  # the legacy builder's parent stays, as its layers do
    return labelled


def _from_source_image(
    bench: Workbench, spec: PrepareSpec, fetched: FetchedSource, size: int, way: PrepareWay
) -> tuple[PrepareSpec, SourceImage]:
    """prepare starts from the source image of an uploaded source (see source_images) when it
    runs on BuildKit or in a container, this engine keeps them and the source is large enough
    to be worth one more request; the source is then no input of its own. A source submitted
    again unchanged then costs no copy at all; a first one costs one commit more than a copy
    straight into prepare's container, whose own commit is then that much smaller."""
    host = bench.docker
    upload = fetched.stream_from or ""
    worth_it = size >= SOURCE_IMAGE_MIN_BYTES and host.source_images_keep > 0
    if not (upload.startswith(UPLOAD_SCHEME) and worth_it and way.place != "legacy"):
        return spec, SourceImage(spec.base_image)
    assert spec.input_dirs[0] == "src", "the source is the first input"

    def key() -> str | None:  # of an upload still arriving, known once the copy has read it
        named = bench.sources.settled_name(upload)
        origin = SourceOrigin(named, fetched.context_dir, tuple(fetched.exclude))
        return origin.key(spec) if named else None

    over = _over_base_copy(bench, spec, fetched)
    made = source_image(host, spec, spec.inputs[0], key, bench.sink, over)
    from_copy = replace(
        spec,
        base_image=made.id,
        inputs=spec.inputs[1:],
        input_dirs=spec.input_dirs[1:],
        source_scripts=(),
    )
    return from_copy, made


def _over_base_copy(
    bench: Workbench, spec: PrepareSpec, fetched: FetchedSource
) -> Callable[[], Layer | None]:
    """For an upload that is changes over another (a delta): the key of that one's source image
    and the layer that makes this one's of it (see source_images)."""

    def over() -> Layer | None:
        found = bench.sources.layer(fetched)
        if not found:
            return None
        base, layer = found
        return SourceOrigin(base, fetched.context_dir, tuple(fetched.exclude)).key(spec), layer

    return over


def deploy_step(bench: Workbench, state: BuildState) -> BuildState:
    """Extended builds: hand the builder's /tmp/build to the runtime image as its /tmp/src, or
    (s2i's --runtime-image) the runtime artifacts to its WORKDIR and its assemble-runtime."""
    if state.request.s2i_runtime_image:
        return _deploy_runtime_artifacts(bench, state)
    request = state.request
    runtime = state.runtime
    assert state.stage_image and runtime, "build and check_images run first"
    extract = bench.docker.create_container(
        state.stage_image,
        ["/bin/true"],  # never started: it only holds /tmp/build for the copy
        name=container_name(state.attempt_name, "extract"),
        build_id=state.attempt_name,
    )
    try:
        spec = PrepareSpec(
            base_image=runtime.id,
            inputs=[bench.docker.archive_part(extract, BUILD_DIR, "src")],
            input_dirs=["src"],
            env=request.env,
            build_env=request.build_env,
            build_id=state.attempt_name,
            scripts=runtime.scripts,
            stage="runtime",
            entrypoint=runtime.entrypoint,
            owner=runtime.owner,
            user=runtime.user,
            input_root=runtime.destination,
            run_as=runtime.run_as,
            labels=image_labels(
                request, state.source_labels, (request.runtime_image or "", runtime.id)
            ),
        )
        bench.sink(f"Deploying the build output into {request.runtime_image}")
        way = prepare_way(request.method, bench.docker, build_env=bool(spec.build_env))
        bench.sink(way.describe())
        image = way.method.prepare_image(bench.docker, spec, bench.sink)
    finally:
        bench.docker.remove_container(extract)
    made = [(state.stage_image, state.builder), (image, runtime)]
    return replace(state, image_id=_with_image_metadata(bench, image, state, made))


def _deploy_runtime_artifacts(bench: Workbench, state: BuildState) -> BuildState:
    """Copy the artifacts out of the image assemble made into a container of the runtime image,
    run assemble-runtime there as the image's USER, in its WORKDIR, and commit it with the
    runtime's run as CMD; the image assemble made goes."""
    request = state.request
    runtime, builder, made = state.runtime, state.builder, state.stage_image
    assert runtime and builder and made, "build and check_images run first"
    name = request.s2i_runtime_image or ""
    config = bench.docker.image_config(runtime.id)
    artifacts = _runtime_artifacts(bench, request, config, builder)
    workdir = config.get("WorkingDir") or "/"
    script = assemble_runtime_path(runtime.scripts)
    brought = _brings_assemble_runtime(builder)
    if brought:
        script = f"{runtime.destination}/scripts/{ASSEMBLE_RUNTIME}"
    extract = bench.docker.create_container(
        made,
        ["/bin/true"],  # never started: it only holds the artifacts for the copy
        name=container_name(state.attempt_name, "extract"),
        build_id=state.attempt_name,
    )
    try:
        spec = PrepareSpec(
            base_image=runtime.id,
            inputs=artifact_parts(bench.docker, extract, artifacts),
            input_dirs=[],
            env=request.env,
            build_env=request.build_env,
            build_id=state.attempt_name,
            scripts=replace(runtime.scripts, prepare=script),
            stage="runtime",
            entrypoint=runtime.entrypoint,
            owner=runtime.owner,
            user=runtime.user,
            input_root=workdir,
            run_as=runtime.run_as,
            placed=_placed_assemble_runtime(bench, extract, builder, script) if brought else (),
            labels=image_labels(request, state.source_labels, (name, runtime.id)),
        )
        listed = ", ".join(str(artifact) for artifact in artifacts)
        bench.sink(f"Copying {listed} into {name} at {workdir}; running {script}")
        image = ContainerMethod().prepare_image(bench.docker, spec, bench.sink)
    finally:
        bench.docker.remove_container(extract)
    try:
        image = _with_image_metadata(bench, image, state, [(made, builder)])
    finally:
        bench.docker.remove_image(made)
    return replace(state, image_id=image, stage_image=None)


def _placed_assemble_runtime(
    bench: Workbench, extract: str, builder: BaseImage, script: str
) -> list[tuple[str, TarPart]]:
    """The assemble-runtime the build brought, out of the image assemble made, at script."""
    brought = f"{builder.destination}/scripts/{ASSEMBLE_RUNTIME}"
    return [("/", bench.docker.archive_part(extract, brought, script.lstrip("/"), s2i_modes=True))]


def tag_step(bench: Workbench, state: BuildState) -> BuildState:
    """Tag only now that everything succeeded; undo a half-done tagging."""
    request = state.request
    assert state.image_id, "build runs first"
    wanted = [(request.tag, state.image_id)]
    if request.extended and state.stage_image:
        wanted.insert(0, (build_tag_for(request.tag), state.stage_image))
    previous = {tag: bench.docker.image_id(exact_reference(tag)) for tag, _ in wanted}
    bench.check_may_tag()  # asked last: it keeps the build and the tag this attempt's for a lease
    done: list[str] = []
    try:
        for tag, image in wanted:
            bench.docker.tag(image, tag)
            done.append(tag)
    except StiError:
        for tag in done:
            if previous[tag]:
                bench.docker.tag(previous[tag], tag)
            else:
                bench.docker.untag(tag)
        raise
    replaced = tuple(
        old
        for (tag, image), old in zip(wanted, previous.values(), strict=True)
        if old and old != image
    )
    state = replace(state, tagged=True, replaced_images=replaced)
    for tag, image in wanted:
        state = state.say(bench.sink, f"Tagged image {_short(image)} as {tag}")
    return state


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _previous_image(docker: DockerHost, previous: str, policy: str, sink: LogSink) -> str | None:
    """The previous image's id as its pull policy finds it, None when there is none. Another
    host may have built it: its registry has it if it was pushed; a registry that fails leaves
    the image this host has."""
    found = docker.image_id(exact_reference(previous))
    if policy == "never" or (found and policy == "if-not-present"):
        return found
    if registry_of(previous) is None:
        return found
    try:
        docker.pull(previous)
    except StiError as error:
        if found:
            sink(f"Pulling previous image {previous} failed ({error.message}): using this host's")
        else:
            sink(f"Previous image {previous} is neither on this host nor in its registry")
        return found
    sink(f"Pulled previous image {previous} from its registry")
    return docker.image_id(exact_reference(previous))


def push_step(bench: Workbench, state: BuildState) -> BuildState:
    """Push what was tagged, so any host can pull it (and its artifacts) next time."""
    request = state.request
    refs = [build_tag_for(request.tag)] if request.extended else []
    digest = ""
    for ref in [*refs, request.tag]:
        digest = bench.docker.push(ref, bench.sink)
        state = state.say(bench.sink, f"Pushed {ref} ({digest})")
    return replace(state, digest=digest)


def steps_for(request: BuildRequest) -> list[tuple[str, StepFunction]]:
    steps: list[tuple[str, StepFunction]] = [
        ("fetch_source", fetch_source_step),
        ("check_images", check_images_step),
        ("save_artifacts", save_artifacts_step),
        ("build", build_step),
    ]
    if request.extended or request.s2i_runtime_image:
        steps.append(("deploy", deploy_step))
    steps.append(("tag", tag_step))
    if request.push:
        steps.append(("push", push_step))
    return steps


_SCRIPT_STEPS = ("build", "deploy")


def stages_for(request: BuildRequest) -> list[list[str]]:
    """The build's steps as a queue worker runs them, one task per stage: each step that runs a
    build script, the quick steps that gather its inputs joined to the first of those and
    tagging and pushing to the last (a hop between tasks costs as much as a quick step)."""
    names = [name for name, _ in steps_for(request)]
    stages: list[list[str]] = [[]]
    for name in names:
        stages[-1].append(name)
        if name in _SCRIPT_STEPS:
            stages.append([])
    after_the_last = stages.pop()
    stages[-1] += after_the_last
    return stages


def run_step(name: str, step: StepFunction, bench: Workbench, state: BuildState) -> BuildState:
    """Run one step unless an earlier one failed; a failure is recorded in the state, not raised."""
    if state.failed:
        return state
    started = time.monotonic()
    try:
        state = step(bench, state)
    except Exception as error:
        state = state.fail(translate_error(error), bench.sink)
    return replace(state, steps=(*state.steps, Step(name, time.monotonic() - started)))


def cleanup(docker: DockerHost | None, state: BuildState) -> None:
    """Remove what this build made and did not hand over (containers, temp dir, untagged
    images), and the images its tags named before, unless something still uses them: a rebuild
    would otherwise leave every earlier image behind on the host."""
    untagged = () if state.tagged else (state.image_id, state.stage_image)
    made = [image for image in untagged if image]
    images = [*made, *state.replaced_images]
    cleanup_build(docker, state.attempt_name, images, settled=not state.failed)


def cleanup_build(
    docker: DockerHost | None,
    name: str,
    images: Sequence[str] = (),
    *,
    settled: bool = False,
) -> None:
    """Cleanup knowing only an attempt's name (attempt_name; the build id for the first): what
    it made is found by container name and label, and nothing of another attempt is touched.
    settled: every step ended well, so no docker build of this one can still be finishing."""
    remove_tree(workdir_for(name))
    if docker is None:
        return
    with ThreadPoolExecutor(max_workers=3) as pool:  # three lookups at once: ~12 ms, not ~25
        named = pool.submit(docker.containers_named, container_name(name, ""))
        pinned = pool.submit(docker.references_in, base_reference(name, "")[:-1])
        labelled = pool.submit(docker.untagged_images_of, name)
    containers, left = named.result(), labelled.result()
    for container in containers:
        docker.remove_container(container)
    for reference in pinned.result():
        docker.remove_reference(reference)  # left by a step whose worker died
    for image in images:
        docker.remove_image(image)
    if containers or not settled:
        left = docker.untagged_images_of(name)
    # an aborted docker build may still be removing its step container, which holds the last
    # layer it made: give it a moment rather than leave that layer behind
    deadline = time.monotonic() + _ABORTED_BUILD_GRACE_S
    while left and time.monotonic() < deadline:
        if not all([docker.remove_image(image) for image in left]):
            time.sleep(0.5)
        left = docker.untagged_images_of(name)


def trim_build_cache(docker: DockerHost | None, sink: LogSink) -> None:
    """A build host's housekeeping, not part of a build (run_build leaves the engine's cache
    alone: with --local it is the user's): the engine's build cache back under its keep limit;
    a problem is said, not raised."""
    problem = docker.trim_build_cache() if docker is not None else None
    if problem:
        sink(problem)


def leftover_attempts(docker: DockerHost) -> set[str]:
    """Attempts (their names, see attempt_name) that still have containers on this engine or a
    work dir on this machine."""
    found = {
        match.group(1)
        for name in docker.container_names(CONTAINER_NAME_PREFIX)
        if (match := _BUILD_CONTAINER.match(name))
    }
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        if match := _BUILD_WORKDIR.match(path.name):
            found.add(match.group(1))
    return found


def result_of(state: BuildState) -> Result:
    return Result(
        kind="build",
        build_id=state.request.build_id,
        success=not state.failed,
        messages=state.messages,
        error=state.error,
        **_build_fields(state),
    )


def _build_fields(state: BuildState) -> dict[str, Any]:
    request = state.request
    return {
        "tag": request.tag,
        "image_id": state.image_id if state.tagged else None,
        "incremental": state.incremental,
        "method": request.method,
        "runtime_image": request.runtime_image or request.s2i_runtime_image,
        "revision": state.revision,
        "digest": state.digest,
        "host": state.host,
        "duration_s": time.time() - state.started_at,
        "steps": state.steps,
    }


def run_build(
    docker: DockerHost,
    request: BuildRequest,
    sink: LogSink,
    host: str,
    sources: Sources | None = None,
) -> Result:
    """Run every step of a build in this process; never raises for build or Docker problems.
    sources: where sources may come from (default: Sources(), the in-process policy)."""
    state = BuildState(request=request, host=host)
    bench = Workbench(docker, sources or Sources(), sink)
    try:
        for name, step in steps_for(request):
            state = run_step(name, step, bench, state)
    finally:
        cleanup(docker, state)
    return result_of(state)


def run_validate(docker: DockerHost, request: ValidateRequest, sink: LogSink, host: str) -> Result:
    def validate() -> tuple[list[str], StiError | None]:
        messages = list(validate_images(docker, request, sink))
        return messages, None

    result = _checked_run(docker, "validate", request.build_id, host, validate)
    if result.error is None and any("failed validation" in m for m in result.messages):
        return replace(result, success=False)
    return result


def run_usage(
    docker: DockerHost,
    request: UsageRequest,
    sink: LogSink,
    host: str,
    sources: Sources | None = None,
    max_output_bytes: int = USAGE_MAX_BYTES,
) -> Result:
    """Run the image's usage script (in a container under the build limits) and return what it
    printed as the messages, at most max_output_bytes of it (STI_USAGE_MAX_BYTES); a usage
    script that fails is a failed result with its output. A fetched --scripts-url with a usage
    script brings its own (sources: where it may come from)."""

    def usage() -> tuple[list[str], StiError | None]:
        image_id = docker.ensure_image(request.build_image, sink)
        url = request.scripts_url
        scripts = inspect_scripts(
            docker,
            image_id,
            build_id=request.build_id,
            role="usage-check",
            scripts_url=None if is_fetched(url) else url,
        ).scripts
        brought = _fetched_usage(docker, request, image_id, sources or Sources(), sink)
        script = f"{brought}/scripts/usage" if brought else scripts.usage
        container = docker.create_container(
            image_id,
            [script],
            name=container_name(request.build_id, "usage"),
            build_id=request.build_id,
        )
        if brought:
            part = fetched_scripts_part(workdir_for(request.build_id), ["usage"])
            docker.put_archive(container, brought, stream_tar([part]))
        elif not docker.stat(container, script).executable:
            raise InvalidImage(f"image {request.build_image} has no usage script {script}")
        output = BoundedLines(max_output_bytes, "STI_USAGE_MAX_BYTES")

        def keep(line: str) -> None:
            output.append(line)
            if output.full:  # nothing more is kept: the script is stopped (removed below)
                raise OutputTooLarge(f"{script} printed more than {max_output_bytes} bytes")

        try:
            exit_code, _ = docker.run_to_completion(container, keep)
        except OutputTooLarge:
            return output.lines, None
        failed = BuildFailed(f"{script} exited with code {exit_code}") if exit_code else None
        return output.lines, failed

    try:
        return _checked_run(docker, "usage", request.build_id, host, usage)
    finally:
        remove_tree(workdir_for(request.build_id))


def _fetched_usage(
    docker: DockerHost, request: UsageRequest, image_id: str, sources: Sources, sink: LogSink
) -> str | None:
    """Where the usage script of a fetched --scripts-url goes (the image's destination, whose
    scripts/ it is put in), or None when the URL is the image's own or has no usage script."""
    url = request.scripts_url
    if not url or not is_fetched(url):
        return None
    workdir = workdir_for(request.build_id)
    remove_tree(workdir)
    workdir.mkdir(mode=0o700)
    if "usage" not in fetch_scripts(url, workdir, sources, sink):
        return None
    config = docker.image_config(image_id)
    return S2I_LAYOUT.destination(request.build_image, config, None)


def _checked_run(
    docker: DockerHost,
    kind: str,
    build_id: str,
    host: str,
    work: Callable[[], tuple[list[str], StiError | None]],
) -> Result:
    """A one-off check (validate, usage): its messages, and its error or what it raised, as a
    result; the containers it made are removed whatever happened."""
    started = time.time()
    try:
        messages, error = work()
    except Exception as raised:
        messages, error = [], translate_error(raised)
    finally:
        for container in docker.containers_named(container_name(build_id, "")):
            docker.remove_container(container)
    if error is not None:
        return Result.from_error(
            kind, build_id, error, messages, host=host, duration_s=time.time() - started
        )
    return Result(
        kind=kind,
        build_id=build_id,
        success=True,
        messages=tuple(messages),
        host=host,
        duration_s=time.time() - started,
    )


def validate_images(docker: DockerHost, request: ValidateRequest, sink: LogSink) -> list[str]:
    """One message per problem, naming the image; or one message saying the image is valid."""
    incremental = request.incremental or request.runtime_image is not None
    checks = [("Base", request.build_image, INCREMENTAL_SCRIPTS if incremental else DEPLOY_SCRIPTS)]
    if request.runtime_image:
        checks.append(("Runtime", request.runtime_image, DEPLOY_SCRIPTS))
    messages = []
    for role, image, required in checks:
        missing = NoSuchBaseImage if role == "Base" else NoSuchRuntimeImage
        image_id = docker.ensure_image(image, sink, missing)
        scripts = inspect_scripts(docker, image_id, build_id=request.build_id, role="validate")
        problems = scripts.problems(required)
        found = [f"{role} image {image} failed validation: {problem}" for problem in problems]
        if not found:
            kind = " for incremental builds" if role == "Base" and incremental else ""
            found = [f"{role} image {image} is valid{kind}"]
        for message in found:
            sink(message)
        messages += found
    return messages


def _base_image(
    docker: DockerHost,
    name: str,
    required: Sequence[str],
    role: str,
    build_id: str,
    sink: LogSink,
    pull_policy: str,
    scripts_url: str | None = None,
    destination: str | None = None,
    source_scripts: Sequence[str] = (),
    url_scripts: Sequence[str] = (),
    *,
    assemble_user: str | None = None,
    allowed_uids: str | None = None,
    needs_shell: bool = False,
) -> BaseImage:
    """Pull name as its policy says, refuse it unless it has the required scripts (or the
    source or a fetched --scripts-url brings them, in that order), a user allowed_uids allows
    and, for --build-env, /bin/sh; and keep what the build needs of it."""
    missing = NoSuchBaseImage if role == "Base" else NoSuchRuntimeImage
    image_id = docker.ensure_image(name, sink, missing, pull_policy)
    config = docker.image_config(image_id)

    def inspect(url: str | None) -> ImageScripts:
        check = f"{role.lower()}-check"
        return inspect_scripts(
            docker, image_id, build_id=build_id, role=check, config=config, scripts_url=url
        )

    scripts = inspect(None if is_fetched(scripts_url) else scripts_url)
    injected: tuple[str, ...] = ()
    fetched = tuple(script for script in url_scripts if script not in source_scripts)
    takes_brought = layout_of(scripts.scripts).takes_brought_scripts
    if source_scripts and not fetched and not takes_brought and scripts.has(PREPARE_ROLE):
        sink(f"{name} is an original sti builder: the source's .s2i/bin is for s2i builders")
    elif source_scripts or fetched:
        if not takes_brought:  # no scripts of its own: s2i's default directory
            scripts = inspect(f"image://{S2I_DEFAULT_DIR}")
        injected = tuple(source_scripts)
    where = layout_of(scripts.scripts).destination(name, config, destination)
    roles = {SCRIPT_ROLES[script] for script in injected + fetched if script in SCRIPT_ROLES}
    problems = scripts.problems([r for r in required if r not in roles])
    if needs_shell and not scripts.has_shell:
        problems.append(f"no {SHELL}, which hands the --build-env values to prepare")
    if problems:
        first, *rest = [f"{role} image {name} failed validation: {p}" for p in problems]
        if role == "Base" and SAVE_ROLE in required and not scripts.has(SAVE_ROLE):
            rest.append("extended builds (-R) need a builder image with save-artifacts")
        raise InvalidImage(first, details=rest)
    who = users.assemble_user(
        docker,
        image_id,
        config,
        name=name,
        given=assemble_user,
        allowed_uids=allowed_uids,
        build_id=build_id,
    )
    if who.own:
        owner, run_as = _owner(config), None
    elif who.ids is None:
        raise InvalidImage(
            f"{name} has no user {who.written!r} (assemble user) in its /etc/passwd or /etc/group"
        )
    else:
        owner = who.ids if who.ids[0] != 0 else None
        run_as = f"{who.ids[0]}:{who.ids[1]}"
        sink(f"assemble runs as {who.written} ({run_as}) in {name}")
    entrypoint = config.get("Entrypoint")
    return BaseImage(
        image_id,
        with_source_scripts(scripts.scripts, injected + fetched, where),
        tuple(entrypoint) if entrypoint else None,
        owner,
        config.get("User") or None,
        where,
        injected,
        fetched,
        run_as,
    )


def _owner(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """The image's USER as numbers, if it names them (s2i images run as e.g. 1001): the
    inputs are given to that user so the scripts can move and change them."""
    uid, _, gid = str(config.get("User") or "").partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()) or uid == "0":
        return None
    return int(uid), int(gid or 0)
