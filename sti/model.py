"""Requests and results that cross process boundaries, as frozen dataclasses with plain JSON.

Validation of user input (tags, env names, methods) lives here so every entry point shares it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .errors import InvalidBuildMethod, InvalidInput, StiError
from .ignore import in_git_metadata
from .lines import TEXT_MAX_BYTES, shown_line
from .scripts_urls import check_scripts_url
from .source_scripts import check_script_names
from .source_urls import check_source_url

RESULT_SCHEMA = "sti.result/1"
METHODS = ("build", "run")

# Docker's reference grammar (distribution/reference), without digests: sti tags what it builds.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# Like Docker, a first component is a registry only if it is localhost or has a "." or a port.
_DOMAIN = rf"(?:localhost(?::[0-9]+)?|{_HOST}(?:\.{_HOST})+(?::[0-9]+)?|{_HOST}:[0-9]+)"
_IMAGE_REF = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_ITEM_START = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_]*=)")
_MAX_REF_LENGTH = 255
ENV_MAX_VARIABLES = 256
ENV_MAX_BYTES = 128 * 1024
LABELS_MAX = 100
LABELS_MAX_BYTES = 64 * 1024
PULL_POLICIES = ("if-not-present", "always", "never")
RESERVED_LABEL_PREFIX = "io.sti."  # sti finds what a build made by io.sti.build-id


# sti-submit's uuid hex or, for tasks sent by other apps, Celery's dashed uuid: build ids name
# work dirs, containers and Redis keys, so nothing else is accepted
BUILD_ID_PATTERN = r"([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"


def new_build_id() -> str:
    return uuid.uuid4().hex


def is_build_id(build_id: object) -> bool:
    return isinstance(build_id, str) and bool(re.fullmatch(BUILD_ID_PATTERN, build_id))


def check_build_id(build_id: object) -> str:
    if not is_build_id(build_id):
        raise InvalidInput(f"build id {build_id!r} is not a lowercase uuid")
    return build_id


def validate_image_ref(ref: str, what: str) -> str:
    """Return ref if Docker would accept it as an image reference and it is not a name sti
    keeps for itself, else raise InvalidInput."""
    valid = isinstance(ref, str) and len(ref) <= _MAX_REF_LENGTH and _IMAGE_REF.fullmatch(ref)
    if not valid:
        raise InvalidInput(
            f"{what} {ref!r} is not a valid image reference "
            "(expected [registry/]name[:tag], lower-case name, tag of at most 128 characters)"
        )
    if is_reserved_name(ref):
        raise InvalidInput(f"{what} {ref!r} names images sti keeps for itself on a build host")
    return ref


# the worker's own images: a source image (sti-source:<key>) and the names that pin a build's
# images while it runs (sti-base-<build id>:<stage>); an image a user tags or pulls so could
# stand in for them
SOURCE_REPOSITORY = "sti-source"
BASE_REPOSITORY_PREFIX = "sti-base-"
RESERVED_REPOSITORIES = (SOURCE_REPOSITORY,)
RESERVED_PREFIXES = (BASE_REPOSITORY_PREFIX,)


def is_reserved_name(ref: str) -> bool:
    """Whether ref names one of the worker's own images (a source image, a build's pin)."""
    local = _local_name(ref)
    return local in RESERVED_REPOSITORIES or local.startswith(RESERVED_PREFIXES)


def _local_name(ref: str) -> str:
    """The repository the engine files ref under: without tag or digest, and without the
    docker.io/library/ that it adds to a bare name."""
    name = ref.partition("@")[0]
    if ":" in name.rpartition("/")[2]:
        name = name.rpartition(":")[0]
    for implied in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(implied)
    return name.removeprefix("library/")


def registry_of(ref: str) -> str | None:
    """The registry a reference names explicitly (localhost:5000, registry.example), if any."""
    first, slash, _ = ref.partition("/")
    if slash and re.fullmatch(_DOMAIN, first):
        return first
    return None


def validate_tag(tag: str, what: str = "APP_IMAGE_TAG") -> str:
    validate_image_ref(tag, what)
    if "@" in tag:
        raise InvalidInput(f"{what} {tag!r} names a digest; sti can only tag, not create digests")
    if _local_name(tag) == _DIGEST_ALGORITHM:  # Docker reads sha256:<hex> as an image's id
        raise InvalidInput(
            f"{what} {tag!r} is named {_DIGEST_ALGORITHM}, as image ids begin: Docker tags "
            "no such name"
        )
    return tag


DOCKER_HUB = "docker.io"
_DEFAULT_TAG = "latest"
_DIGEST_ALGORITHM = "sha256"


def _docker_parts(ref: str) -> tuple[str, str, str]:
    """(registry, path, tag) of a valid tag as Docker reads it (distribution/reference's
    ParseNormalizedNamed, then its default tag): no registry or index.docker.io is docker.io,
    a one-component path there is under library/, no tag is latest."""
    name, tag = ref, _DEFAULT_TAG
    if ":" in ref.rpartition("/")[2]:
        name, _, tag = ref.rpartition(":")
    registry = registry_of(name)
    path = name.partition("/")[2] if registry else name
    if registry in (None, "index.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path, tag


def normalized_tag(tag: str) -> str:
    """The one reference the engine files a tag under, whatever its spelling: acme/app,
    acme/app:latest, docker.io/acme/app and index.docker.io/acme/app are all
    docker.io/acme/app:latest, x and docker.io/library/x are docker.io/library/x:latest.
    Everything keyed by a tag (its lock, above all) is keyed by this."""
    registry, path, name_tag = _docker_parts(validate_tag(tag))
    return f"{registry}/{path}:{name_tag}"


def exact_reference(tag: str) -> str:
    """tag spelt so that Docker looks it up as a name, never as an image id: a name without a
    "/" that no image has (df2d9bfc608d) is looked up as a prefix of an image's id, so it is
    given as Docker files it (docker.io/library/df2d9bfc608d:latest), which it is not."""
    return tag if "/" in tag else normalized_tag(tag)


def build_tag_for(tag: str) -> str:
    """The tag of an extended build's builder result: APP_IMAGE_TAG-build as the user spelled
    APP_IMAGE_TAG, as in the original and the contract (acme/app:latest gives
    acme/app:latest-build, acme/app gives acme/app-build: two images, each locked by its own
    normalized reference)."""
    return validate_tag(f"{tag}-build", "builder tag (APP_IMAGE_TAG-build)")


def validate_env(env: Mapping[str, str]) -> dict[str, str]:
    """Names a shell accepts, string values without NUL, and at most ENV_MAX_VARIABLES
    variables of ENV_MAX_BYTES in all (they travel to the engine in a build's request line)."""
    if len(env) > ENV_MAX_VARIABLES:
        raise InvalidInput(
            f"{len(env)} environment variables given; at most {ENV_MAX_VARIABLES} are allowed"
        )
    checked: dict[str, str] = {}
    size = 0
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise InvalidInput(
                f"environment variable name {name!r} is invalid "
                "(letters, digits and _ only, not starting with a digit)"
            )
        if not isinstance(value, str):
            raise InvalidInput(f"environment variable {name} must have a string value")
        if "\x00" in value:
            raise InvalidInput(f"environment variable {name} contains a NUL byte")
        size += len(name) + _utf8_size(name, value)
        checked[name] = value
    if size > ENV_MAX_BYTES:
        raise InvalidInput(
            f"the environment variables given take {size} bytes; at most {ENV_MAX_BYTES} "
            "(names and values together) are allowed"
        )
    return checked


def _utf8_size(name: str, value: str) -> int:
    """A value's size as UTF-8; refused, without the value (a --build-env one is a secret), when
    it holds a lone surrogate (JSON's "\\udcff", or bytes a shell gave that are not UTF-8)."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode())
    except UnicodeEncodeError:
        pass  # raised outside the handler: the error's repr is the whole value
    raise InvalidInput(f"environment variable {name} is not UTF-8 text")


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Image labels a user adds: string names and values without NUL, names without "=" or
    sti's own prefix, at most LABELS_MAX of LABELS_MAX_BYTES in all (they travel to the engine
    in a build's request line, as the environment does)."""
    if len(labels) > LABELS_MAX:
        raise InvalidInput(f"{len(labels)} labels given; at most {LABELS_MAX} are allowed")
    size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in labels.items())
    if size > LABELS_MAX_BYTES:
        raise InvalidInput(
            f"the labels given take {size} bytes; at most {LABELS_MAX_BYTES} are allowed"
        )
    for name, value in labels.items():
        if not isinstance(name, str) or not name.strip() or "=" in name or "\x00" in name:
            raise InvalidInput(f"label name {name!r} is invalid (empty, or with = or NUL)")
        if name.startswith(RESERVED_LABEL_PREFIX):
            raise InvalidInput(f"label {name} is sti's own ({RESERVED_LABEL_PREFIX}*)")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput(f"label {name} must have a string value without NUL bytes")
    return dict(labels)


_DESTINATION = re.compile(r"^(/[A-Za-z0-9._@+-]+)+$")


def check_destination(path: str, origin: str) -> str:
    """An s2i destination: an absolute directory, plainly written (it is used in a Dockerfile)."""
    parts = path.split("/")
    if not _DESTINATION.fullmatch(path) or ".." in parts or "." in parts or len(path) > 1024:
        raise InvalidInput(f"{origin} {path[:200]!r} is not a plain absolute directory")
    return path


def parse_label_options(options: Iterable[str]) -> dict[str, str]:
    """Repeated --label NAME=VALUE: the value is everything after the first "="."""
    labels: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise InvalidInput(f"label option {option!r} is not NAME=VALUE")
        labels[name] = value
    return validate_labels(labels)


def parse_env_options(options: Iterable[str]) -> dict[str, str]:
    """Parse repeated -e options; each may be a comma list NAME=V,NAME2=V2 as in the original.

    A comma only starts a new variable when NAME= follows it, so values may contain commas.
    """
    env: dict[str, str] = {}
    for option in options:
        for item in _ENV_ITEM_START.split(option):
            name, sep, value = item.partition("=")
            if not sep:
                raise InvalidInput(f"environment option {item!r} is not NAME=VALUE")
            env[name] = value
    return validate_env(env)


def parse_build_env_options(options: Iterable[str]) -> dict[str, str]:
    """Repeated --build-env NAME=VALUE. A value is a secret: it is everything after the first
    "=", commas and all (split as -e is, the part after ",word=" would become a variable whose
    name every task event shows), and a refusal names the option by its place, never its text
    (`--build-env "$TOKEN"` with NAME= forgotten goes to a terminal or a CI log)."""
    env: dict[str, str] = {}
    for number, option in enumerate(options, start=1):
        name, sep, value = option.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise InvalidInput(
                f"--build-env option {number} is not NAME=VALUE with a name of letters, digits "
                "and _ (not starting with a digit); it is not shown, as it may hold a secret"
            )
        env[name] = value
    return validate_env(env)


def _from_json(cls: type, data: Mapping[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InvalidInput(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    missing = required - set(data)
    if missing:
        raise InvalidInput(f"{cls.__name__} needs {', '.join(sorted(missing))}")
    return cls(**data)


def from_task_arguments(
    cls: type, args: Sequence[Any], kwargs: Mapping[str, Any], task_id: str
) -> Any:
    """A request from a task message of any Celery app: keyword arguments only, no build_id
    among them (it is the task's id)."""
    if args:
        raise InvalidInput("sti tasks take keyword arguments only")
    if "build_id" in kwargs:
        raise InvalidInput("build_id is not an argument: it is the task's id")
    return _from_json(cls, {**kwargs, "build_id": task_id})


_TYPE_NAMES = {str: "a string", bool: "true or false", type(None): "null", dict: "an object"}
_LISTS = (list, tuple)


def _check_types(request: object, expected: Mapping[str, tuple[type, ...]]) -> None:
    """Each field has its declared JSON type, exactly: the string "false" is not false, and a
    string is not a list of strings."""
    for name, allowed in expected.items():
        value = getattr(request, name)
        if allowed == _LISTS:
            if type(value) in _LISTS and all(type(item) is str for item in value):
                continue
            raise InvalidInput(f"{name} must be a list of strings, not {_shown(value)}")
        if type(value) not in allowed:
            wanted = " or ".join(_TYPE_NAMES[kind] for kind in allowed)
            # a build-only value is said in no message (results and logs are kept a week)
            shown = type(value).__name__ if name == "build_env" else _shown(value)
            raise InvalidInput(f"{name} must be {wanted}, not {shown}")
    for name in expected:
        if name != "build_env":  # checked with its values' sizes, naming only the variable
            _check_text(name, getattr(request, name))


def _check_text(name: str, value: object) -> None:
    """JSON carries lone surrogates ("\\udcff") that nothing downstream can encode (the engine,
    Redis, a log): refused here, by name, rather than as a Celery failure later."""
    if isinstance(value, dict):
        texts = [text for pair in value.items() for text in pair]
    else:
        texts = list(value) if type(value) in _LISTS else [value]
    for text in texts:
        if isinstance(text, str) and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise InvalidInput(
                    f"{name} holds text that is not UTF-8 (a lone surrogate)"
                ) from None


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


_STRING, _OPTIONAL = (str,), (str, type(None))
_BUILD_TYPES = {
    "source": _STRING,
    "build_image": _STRING,
    "tag": _STRING,
    "clean": (bool,),
    "env": (dict,),
    "build_env": (dict,),
    "runtime_image": _OPTIONAL,
    "s2i_runtime_image": _OPTIONAL,
    "runtime_artifacts": _LISTS,
    "method": _STRING,
    "ref": _OPTIONAL,
    "context_dir": _OPTIONAL,
    "ignore_submodules": (bool,),
    "push": (bool,),
    "exclude": _LISTS,
    "labels": (dict,),
    "display_name": _OPTIONAL,
    "description": _OPTIONAL,
    "scripts_url": _OPTIONAL,
    "destination": _OPTIONAL,
    "assemble_user": _OPTIONAL,
    "allowed_uids": _OPTIONAL,
    "source_scripts": _LISTS,
    "pull_policy": _STRING,
    "incremental_pull_policy": _STRING,
    "runtime_pull_policy": _STRING,
    "build_id": _STRING,
}
_USAGE_TYPES = {"build_image": _STRING, "scripts_url": _OPTIONAL, "build_id": _STRING}
_VALIDATE_TYPES = {
    "build_image": _STRING,
    "incremental": (bool,),
    "runtime_image": _OPTIONAL,
    "build_id": _STRING,
}


_REQUIRED_BUILD_FIELDS = ("source", "build_image", "tag")


@dataclass(frozen=True)
class BuildRequest:
    source: str
    build_image: str
    tag: str
    clean: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    runtime_image: str | None = None
    method: str = "build"
    ref: str | None = None
    context_dir: str | None = None
    ignore_submodules: bool = False
    push: bool = False
    exclude: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)  # --label, over the generated ones
    display_name: str | None = None  # io.k8s.display-name (default: the tag), as s2i's -n
    description: str | None = None  # io.k8s.description
    scripts_url: str | None = None  # image://DIR: the builder's s2i scripts, over its labels
    destination: str | None = None  # s2i images: where src and artifacts go, over the label
    assemble_user: str | None = None  # who runs assemble, over the image's label and USER
    allowed_uids: str | None = None  # s2i's ranges of uids assemble may run as ("1-": not root)
    # the scripts an uploaded directory has in .s2i/bin (sti-submit finds them: the upload
    # streams into the build, so the worker cannot look before it)
    source_scripts: tuple[str, ...] = ()
    pull_policy: str = "if-not-present"  # of BUILD_IMAGE, as s2i's --pull-policy
    incremental_pull_policy: str = "if-not-present"  # of the previous image
    runtime_pull_policy: str = "if-not-present"  # of the runtime image
    # --build-env: for prepare only, never in the image's config, history or layers
    build_env: Mapping[str, str] = field(default_factory=dict)
    # s2i's --runtime-image: what assemble made, copied (runtime_artifacts, SRC[:DEST], or the
    # image's assemble-input-files label) into this image's WORKDIR, then its assemble-runtime
    s2i_runtime_image: str | None = None
    runtime_artifacts: tuple[str, ...] = ()
    build_id: str = field(default_factory=new_build_id)

    def __post_init__(self) -> None:
        _check_types(self, _BUILD_TYPES)
        if not self.source.strip():
            raise InvalidInput("SOURCE is empty")
        check_source_url(self.source)
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "source_scripts", check_script_names(self.source_scripts))
        validate_image_ref(self.build_image, "BUILD_IMAGE")
        validate_tag(self.tag)
        if self.runtime_image is not None:
            validate_image_ref(self.runtime_image, "runtime image")
            build_tag_for(self.tag)
        object.__setattr__(self, "runtime_artifacts", tuple(self.runtime_artifacts))
        self._check_s2i_runtime()
        if self.push and registry_of(self.tag) is None:
            raise InvalidInput(
                f"--push needs APP_IMAGE_TAG to name its registry, e.g. "
                f"registry.example:5000/{self.tag}"
            )
        if self.method not in METHODS:
            raise InvalidBuildMethod(
                f"build method {self.method!r} is unknown; use one of: {', '.join(METHODS)}"
            )
        object.__setattr__(self, "env", validate_env(dict(self.env)))
        object.__setattr__(self, "build_env", validate_env(dict(self.build_env)))
        validate_env({**self.env, **self.build_env})  # the two together within the limits
        if both := sorted(set(self.env) & set(self.build_env)):
            raise InvalidInput(
                f"environment variable {both[0]} is given both for the image (-e, -E) and "
                "for the build only (--build-env)"
            )
        if self.context_dir is not None and in_git_metadata(self.context_dir):
            raise InvalidInput(
                f"--context-dir {self.context_dir!r} is git metadata, never part of a source"
            )
        for name, given in (("display_name", self.display_name), ("description", self.description)):
            if given is not None and (len(given) > 4096 or "\x00" in given):
                raise InvalidInput(f"{name} must be at most 4096 characters, without NUL")
        object.__setattr__(self, "labels", validate_labels(dict(self.labels)))
        if self.scripts_url is not None:
            check_scripts_url(self.scripts_url)
        if self.destination is not None:
            check_destination(self.destination, "--destination")
        if self.assemble_user is not None or self.allowed_uids is not None:
            # imported when used: most requests have neither, and a submission pays for imports
            from .uid_ranges import check_user, parse_uid_ranges

            if self.assemble_user is not None:
                check_user(self.assemble_user, "--assemble-user")
            if self.allowed_uids is not None:
                parse_uid_ranges(self.allowed_uids)
        for name in ("pull_policy", "incremental_pull_policy", "runtime_pull_policy"):
            if getattr(self, name) not in PULL_POLICIES:
                raise InvalidInput(
                    f"{name} {getattr(self, name)!r} is unknown; use one of: "
                    f"{', '.join(PULL_POLICIES)}"
                )
        check_build_id(self.build_id)

    def _check_s2i_runtime(self) -> None:
        if self.s2i_runtime_image is None:
            if self.runtime_artifacts:
                raise InvalidInput("--runtime-artifact needs --runtime-image")
            return
        validate_image_ref(self.s2i_runtime_image, "--runtime-image")
        if self.runtime_image is not None:
            raise InvalidInput(
                "-R/--runtime (the original's extended build) and --runtime-image (s2i's) "
                "cannot be used together"
            )
        from .runtime_artifacts import parse_runtime_artifacts  # as uid_ranges, above

        parse_runtime_artifacts(self.runtime_artifacts)

    @property
    def extended(self) -> bool:
        return self.runtime_image is not None

    def with_source_environment(self, found: Mapping[str, str]) -> BuildRequest:
        """The source's .s2i/environment under this request's: -e and -E win, as in s2i, and a
        name given to --build-env stays out of the image."""
        kept = {name: value for name, value in found.items() if name not in self.build_env}
        return replace(self, env={**kept, **self.env})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["env"] = dict(self.env)
        data["build_env"] = dict(self.build_env)
        data["exclude"] = list(self.exclude)
        data["labels"] = dict(self.labels)
        data["source_scripts"] = list(self.source_scripts)
        data["runtime_artifacts"] = list(self.runtime_artifacts)
        return data

    def task_keywords(self) -> dict[str, Any]:
        """The keywords of an sti.build message for this request: those not at their default
        (a worker that predates an option still takes a build that does not use it), without
        the build id (the task's id)."""
        defaults = BuildRequest(self.source, self.build_image, self.tag, build_id=self.build_id)
        given = self.to_json()
        unchanged = defaults.to_json()
        return {
            name: value
            for name, value in given.items()
            if name != "build_id" and (name in _REQUIRED_BUILD_FIELDS or value != unchanged[name])
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildRequest:
        return _from_json(cls, data)


@dataclass(frozen=True)
class ValidateRequest:
    build_image: str
    incremental: bool = False
    runtime_image: str | None = None
    build_id: str = field(default_factory=new_build_id)

    def __post_init__(self) -> None:
        _check_types(self, _VALIDATE_TYPES)
        check_build_id(self.build_id)
        validate_image_ref(self.build_image, "BUILD_IMAGE")
        if self.runtime_image is not None:
            validate_image_ref(self.runtime_image, "runtime image")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValidateRequest:
        return _from_json(cls, data)


@dataclass(frozen=True)
class UsageRequest:
    """Run an image's usage script and return what it prints (s2i's `usage`)."""

    build_image: str
    scripts_url: str | None = None
    build_id: str = field(default_factory=new_build_id)

    def __post_init__(self) -> None:
        _check_types(self, _USAGE_TYPES)
        check_build_id(self.build_id)
        validate_image_ref(self.build_image, "BUILD_IMAGE")
        if self.scripts_url is not None:
            check_scripts_url(self.scripts_url)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageRequest:
        return _from_json(cls, data)


@dataclass(frozen=True)
class Step:
    name: str
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True)
class Result:
    """The result object of CONTRACT.md; to_json() is what every consumer reads."""

    kind: str
    build_id: str
    success: bool
    messages: tuple[str, ...] = ()
    error: Mapping[str, str] | None = None
    tag: str | None = None
    image_id: str | None = None
    incremental: bool = False
    method: str | None = None
    runtime_image: str | None = None
    revision: str | None = None
    digest: str | None = None
    host: str | None = None
    duration_s: float = 0.0
    steps: tuple[Step, ...] = ()
    schema: str = RESULT_SCHEMA

    def __post_init__(self) -> None:
        # a result is shown and stored: never with the credentials of a source URL in it, each
        # text held to a cap (it can quote a build's output)
        shown = tuple(shown_line(line, TEXT_MAX_BYTES) for line in self.messages)
        object.__setattr__(self, "messages", shown)
        if self.error:
            error = {
                name: shown_line(str(value), TEXT_MAX_BYTES) for name, value in self.error.items()
            }
            object.__setattr__(self, "error", error)

    @property
    def error_code(self) -> str | None:
        return self.error["code"] if self.error else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": self.schema,
            "kind": self.kind,
            "build_id": self.build_id,
            "success": self.success,
            "messages": list(self.messages),
            "error": dict(self.error) if self.error else None,
        }
        if self.kind == "build":
            data.update(
                tag=self.tag,
                image_id=self.image_id,
                incremental=self.incremental,
                method=self.method,
                runtime_image=self.runtime_image,
                revision=self.revision,
                digest=self.digest,
            )
        data.update(
            host=self.host,
            duration_s=round(self.duration_s, 3),
            steps=[step.to_json() for step in self.steps],
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        values = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        values["messages"] = tuple(values.get("messages") or ())
        values["steps"] = tuple(Step(**s) for s in values.get("steps") or ())
        return cls(**values)

    @classmethod
    def from_error(
        cls, kind: str, build_id: str, error: StiError, messages: Iterable[str] = (), **extra: Any
    ) -> Result:
        return cls(
            kind=kind,
            build_id=build_id,
            success=False,
            messages=(*messages, error.message, *error.details),
            error=error.to_json(),
            **extra,
        )
