"""Builder images, labels and generated Dockerfiles, tried as the author of a hostile builder
image (or of the source whose assemble writes image_metadata.json) would: a scripts-url label
or USER that spells Dockerfile lines, ONBUILD triggers that run as root under --allowed-uids,
labels that claim another provenance. Pure checks first, then the few real builds where the
behaviour only shows in the engine."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest

from sti.errors import (
    BuildFailed,
    CreateDockerfileFailed,
    InvalidImage,
    InvalidInput,
    NoSuchBaseImage,
)
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.image_metadata import metadata_labels
from sti_worker.engine.methods import (
    PrepareSpec,
    SavedArtifacts,
    buildkit_dockerfile,
    commit_changes,
    legacy_dockerfile,
)
from sti_worker.engine.protocol import s2i_scripts_at
from sti_worker.engine.users import assemble_user, check_onbuild_triggers, image_user_of
from tests.dockertools import (
    TRACKER,
    image_config,
    image_has,
    image_id_or_none,
    run_and_read,
    temporary_image,
)
from tests.engine_helpers import build
from tests.images import PREPARE, RUN, SAVE_ARTIFACTS

BUILD_ID = "a" * 32
# what a directory name in a builder image (and so its scripts-url label) can spell
INJECTIONS = [
    'x"]\nRUN ["/bin/touch", "/injected',
    'x"]\rRUN ["/bin/touch", "/injected',
    'x"]\r\nUSER 0\nCMD ["',
    'x\\"]\nONBUILD RUN touch /injected\n#',
    "x\\\nRUN touch /injected",
    'x]\nLABEL injected=yes\nCMD ["',
    '$HOME"]\nENV PATH=/evil\nCMD ["${HOME}',
    "x\u2028RUN touch /injected",
]


def _spec(directory: str = "/opt/s2i", **fields: Any) -> PrepareSpec:
    values: dict[str, Any] = {
        "base_image": "sha256:" + "1" * 64,
        "inputs": [],
        "input_dirs": ["src", "artifacts"],
        "env": {"MODE": "dev"},
        "build_id": BUILD_ID,
        "scripts": s2i_scripts_at(directory),
        "owner": (1001, 0),
        "user": "1001",
        "run_as": "1234:50",
        "entrypoint": (f"{directory}/entry", "--flag"),  # an image's ENTRYPOINT, kept
    }
    return PrepareSpec(**(values | fields))


def _writers(spec: PrepareSpec) -> dict[str, str]:
    saved = replace(spec, saved_from=_saved(spec))
    return {
        "legacy": legacy_dockerfile(spec),
        "buildkit": buildkit_dockerfile(spec),
        "buildkit, saving artifacts in a stage": buildkit_dockerfile(saved),
        "commit changes": "\n".join(commit_changes(spec)),
    }


def _host(request: pytest.FixtureRequest, engine: str) -> DockerHost:
    """The engine's BuildKit with the limits lifted, or the sandboxed container path."""
    host: DockerHost = request.getfixturevalue(
        "buildkit_host" if engine == "buildkit" else "docker_host"
    )
    return host


def _saved(spec: PrepareSpec) -> SavedArtifacts:
    return SavedArtifacts("sha256:" + "2" * 64, spec.scripts.save_artifacts, (1001, 0))


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_scripts_directory_stays_one_argument_in_every_dockerfile_and_commit(
    injection: str,
) -> None:
    """The text differs from a plain directory's only inside the JSON strings, which decode
    back to the path byte for byte: no line is added, none changed."""
    plain = _writers(_spec("/opt/PLAIN"))
    hostile = _writers(_spec(f"/opt/{injection}"))
    escaped = json.dumps(f"/opt/{injection}")[1:-1]
    for writer, text in hostile.items():
        assert "\r" not in text and "\u2028" not in text, writer
        assert text.replace(escaped, "/opt/PLAIN") == plain[writer], writer
        for line in text.splitlines():
            if line.startswith(("RUN ", "CMD ")):
                argv = json.loads(line[line.index("[") :])
                assert argv[0].startswith(f"/opt/{injection}/"), writer


@pytest.mark.parametrize(
    "workdir", ["/tmp\nRUN touch /injected", "/tmp\n", "/$HOME", "/a b", "rel"]
)
def test_an_earlier_images_working_dir_that_is_not_plain_is_not_written(workdir: str) -> None:
    saved = SavedArtifacts("sha256:" + "2" * 64, "/usr/bin/save-artifacts", workdir=workdir)
    text = buildkit_dockerfile(_spec(saved_from=saved))
    assert "WORKDIR /\n" in text and "injected" not in text and "$HOME" not in text


def test_a_build_run_again_names_its_attempt_in_the_legacy_dockerfile() -> None:
    """A build whose worker died runs again as <build id>.2, which names all it makes."""
    text = legacy_dockerfile(_spec(build_id=f"{BUILD_ID}.2"))
    assert f"LABEL io.sti.build-id={BUILD_ID}.2\n" in text


@pytest.mark.parametrize(
    "build_id", [f"{BUILD_ID}\nRUN touch /x", f"{BUILD_ID}.2 x", f"{BUILD_ID}.", "$HOME", ""]
)
def test_a_build_id_that_is_no_attempt_name_is_not_written(build_id: str) -> None:
    with pytest.raises((CreateDockerfileFailed, InvalidInput)):
        legacy_dockerfile(_spec(build_id=build_id))


def test_a_nul_in_a_script_path_is_refused() -> None:
    for writer in (legacy_dockerfile, buildkit_dockerfile, commit_changes):
        with pytest.raises(CreateDockerfileFailed, match="cannot be written"):
            writer(_spec("/opt/s2i\x00x"))


@pytest.mark.parametrize(
    "user",
    ["0\nRUN touch /injected", "1001\r", "app user", "$UID", '"0"', "a\\", "0\x00", "root:\n0"],
)
def test_an_images_user_that_is_no_plain_user_is_refused_where_written_and_when_inspected(
    user: str,
) -> None:
    for writer in (legacy_dockerfile, buildkit_dockerfile, commit_changes):
        with pytest.raises(CreateDockerfileFailed, match="the user"):
            writer(_spec(user=user))
    with pytest.raises(InvalidImage, match="is not a user"):
        image_user_of({"User": user}, "evil:1")


@pytest.mark.parametrize(
    "root", ["/tmp/a b", "/tmp/$HOME", "/tmp/a,rw", "/tmp/x\nRUN y", "tmp", "/tmp/../etc", "/"]
)
def test_an_input_directory_that_is_not_plain_is_refused(root: str) -> None:
    for writer in (legacy_dockerfile, buildkit_dockerfile):
        with pytest.raises(CreateDockerfileFailed, match="the path"):
            writer(_spec(input_root=root))


@pytest.mark.parametrize("name", ["A\nRUN x", "A B", "A=B", "$A", "A\r"])
def test_an_environment_name_that_is_not_plain_is_refused(name: str) -> None:
    for writer in (legacy_dockerfile, buildkit_dockerfile):
        with pytest.raises(CreateDockerfileFailed, match="environment variable name"):
            writer(_spec(env={name: "x"}))


# ONBUILD triggers under --allowed-uids, as s2i holds them (and every RUN checked)

ROOT = ""
APP = "1001"
NAMED = "app"  # what the name means is /etc/passwd's, read when the trigger runs


@pytest.mark.parametrize(
    ("user", "triggers"),
    [
        (APP, ["USER root", "RUN touch /x"]),
        (APP, ["USER 0"]),
        (APP, ["user 0"]),
        (APP, ["  USER\t0  "]),
        (APP, ["\ufeffUSER 0"]),
        (APP, ["USER 0:1001"]),
        (APP, ["USER 00"]),
        (APP, ["USER 4294967295"]),
        (APP, ["USER 99999999999"]),
        (APP, ["ENV U=0", "USER $U", "RUN x"]),
        (APP, ['USER "1001"']),
        (APP, ["USER 1001 0"]),
        (APP, ["USER 1001", "USER 0", "RUN x"]),
        (APP, ["USER 1001\nRUN x"]),
        (APP, ["LABEL a=b \\\nUSER 1001", "RUN x"]),
        (APP, ["RUN x\r"]),
        (ROOT, ["RUN x"]),
        (ROOT, ["run x"]),
        (ROOT, ["Run\tx"]),
        (ROOT, ['RUN ["/bin/sh", "-c", "x"]']),
        (ROOT, ["RUN --mount=type=tmpfs,target=/t x"]),
        (ROOT, ["  \u00a0RUN x"]),
        (ROOT, ["# escape=`"]),
        (ROOT, [""]),
        (ROOT, ["COPY . /tmp/src", "RUN x"]),
        (NAMED, ["RUN x"]),
        (NAMED, ["COPY --from=evil:1 /etc/passwd /etc/passwd", "RUN x"]),
        (NAMED, ["USER 1001", "USER app", "RUN x"]),
    ],
)
def test_onbuild_triggers_that_would_run_or_switch_to_a_refused_user_are_refused(
    user: str, triggers: list[str]
) -> None:
    with pytest.raises(InvalidImage, match="ONBUILD"):
        check_onbuild_triggers("evil:1", {"OnBuild": triggers}, user, "1-")


@pytest.mark.parametrize(
    ("user", "triggers"),
    [
        (APP, ["RUN touch /x"]),
        (ROOT, ["USER 1001", "RUN touch /x"]),  # s2i's sti-fake-onbuild-numericuser
        (ROOT, ["COPY . /tmp/src", "LABEL a=b", "ENV A=b", "WORKDIR /tmp/src"]),
        (APP, ["USER 1001:0", "run touch /x", "USER 2000", "RUN y"]),
        (NAMED, ["USER 1001", "RUN x"]),
        (NAMED, ["COPY . /tmp/src", "LABEL a=b"]),
    ],
)
def test_onbuild_triggers_that_run_as_allowed_uids_are_accepted(
    user: str, triggers: list[str]
) -> None:
    check_onbuild_triggers("fine:1", {"OnBuild": triggers}, user, "1-")


# real builds

S2I_LABEL = "io.openshift.s2i.scripts-url"
ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /opt/app
echo "$(id -u)" > /opt/app/assembled-as
"""


@contextlib.contextmanager
def _with_labels(api: docker.APIClient, tag: str, labels: dict[str, str]) -> Iterator[str]:
    """A copy of tag with labels the Dockerfile LABEL instruction cannot spell (line breaks),
    tagged: removing an image built on it would take an untagged parent along."""
    container = api.create_container(tag, ["/bin/true"], name=f"test-{uuid.uuid4().hex[:12]}")
    try:
        config = dict(api.inspect_image(tag)["Config"])
        config["Labels"] = {**(config.get("Labels") or {}), **labels}
        copy = f"{tag}-labelled"
        api.commit(container["Id"], repository=copy, conf=config)
    finally:
        api.remove_container(container, force=True)
    try:
        yield copy
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_image(copy, force=True)


@pytest.fixture(scope="module")
def injecting_builder(api: docker.APIClient) -> Iterator[str]:
    """An s2i builder whose scripts are in a directory named to end the RUN and CMD lines sti
    writes and add a LABEL; /opt/x, which the head of those lines names, is a script too."""
    directory = 'x"]\nLABEL injected=yes\nCMD ["'
    make = (
        r"""RUN d="$(printf '/opt/x"]\nLABEL injected=yes\nCMD ["')" && mkdir -p "$d" """
        r"""&& cp /usr/libexec/s2i/assemble /usr/libexec/s2i/run "$d"/"""
    )
    files = {
        "/usr/libexec/s2i/assemble": ASSEMBLE,
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        "/opt/x": "#!/bin/sh\necho x ran instead of assemble\n",
    }
    with (
        temporary_image(api, files, [make, 'CMD ["/bin/sh"]'], name="injecting") as tag,
        _with_labels(api, tag, {S2I_LABEL: f"image:///opt/{directory}"}) as labelled,
    ):
        yield labelled


@pytest.mark.docker
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_a_scripts_url_label_spelling_dockerfile_lines_adds_none(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    injecting_builder: str,
    app_tag: str,
    tmp_path: Path,
    engine: str,
) -> None:
    host = _host(request, engine)
    (tmp_path / "app.txt").write_text("hello\n")
    result, _ = build(host, str(tmp_path), injecting_builder, app_tag)
    assert result.success, result.messages
    config = image_config(api, app_tag)
    assert "injected" not in (config.get("Labels") or {})
    assert config["Cmd"] == ['/opt/x"]\nLABEL injected=yes\nCMD ["/run']
    assert run_and_read(api, app_tag, "/opt/app")["assembled-as"] == b"0\n"


ONBUILD_LINES = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i"]


def _onbuild_builder(api: docker.APIClient, lines: list[str]) -> Iterator[str]:
    files = {
        "/usr/libexec/s2i/assemble": ASSEMBLE,
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        # USER root resolves on BuildKit too
        "/etc/passwd": "root:x:0:0:root:/:/bin/sh\n",
        "/etc/group": "root:x:0:\n",
    }
    all_lines = [*ONBUILD_LINES, "RUN mkdir -p /opt/app && chmod 777 /opt/app", *lines]
    with temporary_image(api, files, [*all_lines, 'CMD ["/bin/sh"]'], name="onbuild") as tag:
        yield tag


@pytest.fixture(scope="module")
def root_trigger(api: docker.APIClient) -> Iterator[str]:
    """USER 1001, whose trigger switches to root and runs a command (s2i's onbuild-rootuser)."""
    yield from _onbuild_builder(
        api, ["USER 1001", "ONBUILD USER root", "ONBUILD RUN id -u > /onbuild-ran-as"]
    )


@pytest.fixture(scope="module")
def rootless_trigger(api: docker.APIClient) -> Iterator[str]:
    """No USER (root), assemble runs as 1001 by its label; the trigger runs as root without
    naming a user at all."""
    yield from _onbuild_builder(
        api,
        [
            "LABEL io.openshift.s2i.assemble-user=1001",
            "ONBUILD run\tid -u > /onbuild-ran-as",
        ],
    )


@pytest.fixture(scope="module")
def numeric_trigger(api: docker.APIClient) -> Iterator[str]:
    """s2i's onbuild-numericuser: the trigger switches to an allowed uid, then runs (with a
    group: BuildKit looks a bare uid up in /etc/passwd, which this image has not)."""
    yield from _onbuild_builder(
        api, ["USER 1001", "ONBUILD USER 1001:0", "ONBUILD RUN id -u > /tmp/onbuild-ran-as"]
    )


@pytest.mark.docker
@pytest.mark.parametrize("image", ["root_trigger", "rootless_trigger"])
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_allowed_uids_refuse_a_builder_whose_triggers_run_as_root(
    request: pytest.FixtureRequest, app_tag: str, source: str, image: str, engine: str
) -> None:
    """On every path, as s2i: the same request gets the same answer on any build host."""
    host = _host(request, engine)
    builder = request.getfixturevalue(image)
    result, _ = build(host, source, builder, app_tag, allowed_uids="1-")
    assert not result.success and result.error
    assert result.error["code"] == "InvalidImage"
    assert "ONBUILD" in result.error["message"] and "--allowed-uids 1-" in result.error["message"]


@pytest.mark.docker
def test_allowed_uids_refuse_a_runtime_image_whose_triggers_run_as_root(
    api: docker.APIClient,
    buildkit_host: DockerHost,
    root_trigger: str,
    app_tag: str,
    source: str,
) -> None:
    """-R: the deploy is a docker build FROM the runtime image, which runs its triggers."""
    files = {
        "/usr/bin/prepare": "#!/bin/sh\nmkdir -p /tmp/build && cp -R /tmp/src/. /tmp/build/\n",
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    with temporary_image(api, files, ["USER 1001", 'CMD ["/bin/sh"]'], name="rootless") as builder:
        result, _ = build(
            buildkit_host, source, builder, app_tag, runtime_image=root_trigger, allowed_uids="1-"
        )
    TRACKER.built(image_id_or_none(api, f"{app_tag}-build"))
    assert not result.success and result.error
    assert result.error["code"] == "InvalidImage" and root_trigger in result.error["message"]


@pytest.mark.docker
@pytest.mark.parametrize(("engine", "runs"), [("buildkit", True), ("container", False)])
def test_triggers_as_an_allowed_uid_build_and_run_only_in_a_docker_build(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    numeric_trigger: str,
    app_tag: str,
    source: str,
    engine: str,
    runs: bool,
) -> None:
    """A docker build FROM the builder runs its triggers (here as the allowed 1001); a
    container of it does not. The output image carries no trigger either way."""
    host = _host(request, engine)
    result, _ = build(host, source, numeric_trigger, app_tag, allowed_uids="1-")
    assert result.success, result.messages
    assert image_has(api, app_tag, "/tmp/onbuild-ran-as") is runs
    if runs:
        assert run_and_read(api, app_tag, "/tmp")["onbuild-ran-as"] == b"1001\n"
    assert not image_config(api, app_tag).get("OnBuild")


ARTIFACTS_PREPARE = """\
#!/bin/sh
set -e
mkdir -p /sti-fake/artifacts
cp -R /tmp/artifacts/. /sti-fake/artifacts/ 2>/dev/null || true
"""


@pytest.mark.docker
def test_an_earlier_image_with_triggers_has_its_artifacts_saved_without_running_them(
    api: docker.APIClient, buildkit_host: DockerHost, app_tag: str, source: str
) -> None:
    """The tag being rebuilt names an image with a trigger (pulled from a registry anyone with
    push rights fills, or tagged by hand): BuildKit would run it in the stage FROM that image
    that saves the artifacts. It is saved in a container instead, where no trigger runs."""
    files = {"/usr/bin/prepare": ARTIFACTS_PREPARE, "/usr/bin/run": RUN}
    saving = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
    saving["/usr/bin/save-artifacts"] = SAVE_ARTIFACTS
    trigger = "ONBUILD RUN mkdir -p /tmp/artifacts && touch /tmp/artifacts/trigger-ran"
    with (
        temporary_image(api, files, name="artifacts-builder") as builder,
        temporary_image(api, saving, [trigger, 'CMD ["/bin/sh"]'], name="previous") as earlier,
    ):
        api.tag(earlier, app_tag)
        result, lines = build(buildkit_host, source, builder, app_tag)
        assert result.success and result.incremental, result.messages
    saved = run_and_read(api, app_tag, "/sti-fake/artifacts")
    assert "save-artifacts-invoked" in saved and "trigger-ran" not in saved
    assert not any("in a stage of the build" in line for line in lines)


METADATA_ASSEMBLE = """\
#!/bin/sh
set -e
mkdir -p /tmp/.s2i
cp /tmp/src/metadata.json /tmp/.s2i/image_metadata.json
"""

FORGED = {
    "io.openshift.s2i.build.commit.id": "0" * 40,  # sti wrote none: a directory has no commit
    "io.openshift.s2i.build.source-location": "https://example.org/trusted.git",
    "io.openshift.s2i.build.image": "registry.example.org/blessed:1",
    "io.openshift.s2i.build.commit.author": "Someone Trusted <t@example.org>",
    "org.opencontainers.image.revision": "1" * 40,
    "org.opencontainers.image.base.digest": "sha256:" + "2" * 64,
    "org.opencontainers.image.created": "2000-01-01T00:00:00Z",
    "io.sti.build-id": "f" * 32,
}


@pytest.mark.docker
def test_image_metadata_cannot_claim_another_provenance(
    api: docker.APIClient, docker_host: DockerHost, app_tag: str, tmp_path: Path
) -> None:
    files = {"/usr/libexec/s2i/assemble": METADATA_ASSEMBLE, "/usr/libexec/s2i/run": "#!/bin/sh\n"}
    asked = {**FORGED, "extra": "kept", "io.k8s.display-name": "From assemble"}
    (tmp_path / "metadata.json").write_text(json.dumps({"labels": [asked]}))
    lines_of_image = [f"LABEL {S2I_LABEL}=image:///usr/libexec/s2i", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines_of_image, name="metadata") as builder:
        result, lines = build(docker_host, str(tmp_path), builder, app_tag)
        builder_id = api.inspect_image(builder)["Id"]
    assert result.success, result.messages
    labels = image_config(api, app_tag)["Labels"]
    assert labels["extra"] == "kept" and labels["io.k8s.display-name"] == "From assemble"
    assert not labels.get("io.openshift.s2i.build.commit.id")
    assert not labels.get("io.openshift.s2i.build.commit.author")
    assert labels["io.openshift.s2i.build.source-location"] == str(tmp_path)
    assert labels["io.openshift.s2i.build.image"] == builder
    assert labels["org.opencontainers.image.base.digest"] == builder_id
    assert labels["org.opencontainers.image.created"] != FORGED["org.opencontainers.image.created"]
    assert not labels.get("org.opencontainers.image.revision")
    assert labels["io.sti.build-id"] == result.build_id
    for name in FORGED:
        assert any(f"label {name} is sti's own, left as it is" in line for line in lines), name


# a builder's own labels are kept on the output image (as s2i keeps them), but not the ones that
# say where the output came from: a builder built from git, by s2i or a CI, carries its own
INHERITED = {
    "io.openshift.s2i.build.commit.id": "0" * 40,
    "io.openshift.s2i.build.commit.ref": "release",
    "io.openshift.s2i.build.commit.author": "Someone Trusted <t@example.org>",
    "io.openshift.s2i.build.commit.date": "Mon Jan 1 00:00:00 2001 +0000",
    "io.openshift.s2i.build.commit.message": "Reviewed",
    "io.openshift.s2i.build.source-context-dir": "blessed",
    "org.opencontainers.image.source": "https://example.org/builder.git",
    "org.opencontainers.image.revision": "1" * 40,
}


@pytest.mark.docker
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_a_builders_own_provenance_labels_say_nothing_of_the_output(
    request: pytest.FixtureRequest, api: docker.APIClient, app_tag: str, source: str, engine: str
) -> None:
    """A directory has no commit, ref, context dir or URL: the builder's values of them are
    not the output's."""
    files = {"/usr/libexec/s2i/assemble": ASSEMBLE, "/usr/libexec/s2i/run": "#!/bin/sh\n"}
    written = " ".join(f"{name}={json.dumps(value)}" for name, value in INHERITED.items())
    lines = [*ONBUILD_LINES, "RUN mkdir -p /opt/app", f"LABEL {written}", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="labelled") as builder:
        assert image_config(api, builder)["Labels"].items() >= INHERITED.items()
        result, _ = build(_host(request, engine), source, builder, app_tag)
    assert result.success, result.messages
    labels = image_config(api, app_tag)["Labels"]
    assert {name: labels.get(name) or "" for name in INHERITED} == dict.fromkeys(INHERITED, "")


# --allowed-uids judges a user by name in the image's /etc/passwd; the engine must then run the
# uid judged, not the name looked up again by a reader that parses the file its own way

# runc (BuildKit's and the container's user lookup) trims white space around a line; sti's
# first look saw " app" as no user and took the second line
TWO_READINGS = " app:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\nroot:x:0:0::/:/bin/sh\n"


# save-artifacts says who ran it, in the artifacts the next assemble keeps
SAVE_AS = """\
#!/bin/sh
set -e
mkdir -p /tmp/save && id -u > /tmp/save/saved-as
tar cf - -C /tmp/save saved-as
"""
SAVED_AS_KEPT = "cp /tmp/artifacts/saved-as /opt/app/ 2>/dev/null || true\n"


@pytest.fixture(scope="module")
def named_user_builder(api: docker.APIClient) -> Iterator[str]:
    files = {
        "/usr/libexec/s2i/assemble": ASSEMBLE + SAVED_AS_KEPT,
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        "/usr/libexec/s2i/save-artifacts": SAVE_AS,
        "/etc/passwd": TWO_READINGS,
        "/etc/group": "root:x:0:\napp:x:1000:\n",
    }
    lines = [
        "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
        "RUN mkdir -p /opt/app && chmod 777 /opt/app",
        "USER app",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="named-user") as tag:
        yield tag


@pytest.mark.docker
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_allowed_uids_run_assemble_as_the_uid_judged_not_the_name_looked_up_again(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    named_user_builder: str,
    app_tag: str,
    source: str,
    engine: str,
) -> None:
    host = _host(request, engine)
    result, _ = build(host, source, named_user_builder, app_tag, allowed_uids="1-")
    assert result.success, result.messages
    assert run_and_read(api, app_tag, "/opt/app")["assembled-as"] == b"1000\n"
    assert image_config(api, app_tag)["User"] == "app"


DEPLOY_PREPARE = "#!/bin/sh\nset -e\nid -u > /opt/app/deployed-as\n"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("runtime_lines", "runs_as"),
    [
        (["USER app"], b"1000\n"),  # a name two readers of /etc/passwd read apart
        (["LABEL io.openshift.s2i.assemble-user=1001"], b"1001\n"),  # root, but labelled 1001
    ],
    ids=["named", "labelled"],
)
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_allowed_uids_deploy_into_a_runtime_image_as_the_uid_judged(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    app_tag: str,
    source: str,
    runtime_lines: list[str],
    runs_as: bytes,
    engine: str,
) -> None:
    """-R: the runtime image's user is judged as the builder's is, and its prepare runs as the
    uid judged."""
    host = _host(request, engine)
    builder_files = {
        "/usr/bin/prepare": "#!/bin/sh\nmkdir -p /tmp/build && cp -R /tmp/src/. /tmp/build/\n",
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    runtime_files = {
        "/usr/bin/prepare": DEPLOY_PREPARE,
        "/usr/bin/run": RUN,
        "/etc/passwd": TWO_READINGS,
        "/etc/group": "root:x:0:\napp:x:1000:\n",
    }
    made = ["RUN mkdir -p /opt/app && chmod 777 /opt/app", *runtime_lines, 'CMD ["/bin/sh"]']
    with (
        temporary_image(api, builder_files, ["USER 1001", 'CMD ["/bin/sh"]'], "b") as builder,
        temporary_image(api, runtime_files, made, name="runtime") as runtime,
    ):
        result, _ = build(host, source, builder, app_tag, runtime_image=runtime, allowed_uids="1-")
    TRACKER.built(image_id_or_none(api, f"{app_tag}-build"))
    assert result.success, result.messages
    assert run_and_read(api, app_tag, "/opt/app")["deployed-as"] == runs_as


class _ImageWithFile:
    """An image holding one file at every path (image_metadata and users read it through these
    calls)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def image_file(self, image: str, path: str, **_: Any) -> bytes:
        return self._data

    def image_fact(self, image: str, key: object, compute: Callable[[], Any]) -> Any:
        return compute()


@pytest.mark.parametrize(
    "passwd",
    [
        "app:x:\u00b2:0::/:/bin/sh\n",  # a digit to str.isdigit, not to int()
        "app:x:" + "9" * 5000 + ":0::/:/bin/sh\n",  # more digits than int() reads
        "app:x:2147483648:0::/:/bin/sh\n",  # past the engine's ids
        "app:x:-1:0::/:/bin/sh\n",
    ],
)
def test_an_account_file_with_a_uid_no_engine_takes_leaves_the_user_unknown(passwd: str) -> None:
    image = _ImageWithFile(passwd.encode())
    config = {"User": "app"}
    with pytest.raises(InvalidImage, match="neither a number nor a user"):
        assemble_user(
            image,  # type: ignore[arg-type]
            "sha256:1",
            config,
            name="evil:1",
            given=None,
            allowed_uids="1-",
            build_id=BUILD_ID,
        )


@pytest.mark.parametrize(
    "written",
    [
        b'{"labels": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # deeper than Python recurses
        b'{"labels": [{"a": ' + b'{"b": ' * 100_000 + b"1" + b"}" * 100_001 + b"]}",
        b'{"labels": [{"a": "b"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["nested-list", "nested-object", "nested-elsewhere"],
)
def test_image_metadata_nested_past_any_parser_is_a_failed_build(written: bytes) -> None:
    with pytest.raises(BuildFailed, match="is not image metadata"):
        metadata_labels(_ImageWithFile(written), "sha256:1", "/tmp", BUILD_ID, print)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "io.openshift.s2i.build.\nsti: build succeeded",  # sti's own, left out: named in the log
        "x\nsti: build succeeded",
        "x\u2028y",
        "io.openshift.s2i.build.\udc80",  # a lone surrogate: JSON spells it, UTF-8 cannot
    ],
)
def test_image_metadata_label_names_are_shown_on_one_encodable_line(name: str) -> None:
    written = json.dumps({"labels": [{name: "v"}]}).encode()
    lines: list[str] = []
    metadata_labels(_ImageWithFile(written), "sha256:1", "/tmp", BUILD_ID, lines.append)  # type: ignore[arg-type]
    assert lines
    for line in lines:
        assert line.isprintable(), line
        line.encode("utf-8")


@pytest.mark.docker
@pytest.mark.parametrize(
    ("user", "passwd"),
    [
        ("4294967296", "4294967296:x:0:0::/:/bin/sh\n"),  # past uint32: looked up as a name
        ("app", "app:x:4294967296:0::/:/bin/sh\n4294967296:x:0:0::/:/bin/sh\n"),
    ],
    ids=["uid", "named"],
)
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_allowed_uids_refuse_a_uid_the_engine_cannot_hold(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    app_tag: str,
    source: str,
    user: str,
    passwd: str,
    engine: str,
) -> None:
    """A uid past what the engine takes as a number is looked up as a user name (BuildKit)."""
    files = {
        "/usr/libexec/s2i/assemble": ASSEMBLE,
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        "/etc/passwd": passwd + "root:x:0:0::/:/bin/sh\n",
        "/etc/group": "root:x:0:\n",
    }
    lines = [*ONBUILD_LINES, "RUN mkdir -p /opt/app && chmod 777 /opt/app", f"USER {user}"]
    with temporary_image(api, files, lines, name="big-uid") as builder:
        result, _ = build(_host(request, engine), source, builder, app_tag, allowed_uids="1-")
    if result.success:
        assert run_and_read(api, app_tag, "/opt/app")["assembled-as"] != b"0\n"
    assert not result.success and result.error and result.error["code"] == "InvalidImage"


@pytest.mark.docker
@pytest.mark.parametrize("engine", ["buildkit", "container"])
def test_allowed_uids_save_artifacts_never_as_a_uid_not_judged(
    request: pytest.FixtureRequest,
    api: docker.APIClient,
    named_user_builder: str,
    app_tag: str,
    source: str,
    engine: str,
) -> None:
    """The earlier image (the first build's, USER app as the builder has it) runs its
    save-artifacts for the next build: as the uid judged, or not at all."""
    host = _host(request, engine)
    for _ in range(2):
        result, _ = build(host, source, named_user_builder, app_tag, allowed_uids="1-")
        assert result.success, result.messages
    assert run_and_read(api, app_tag, "/opt/app").get("saved-as") in (None, b"1000\n")


def test_an_image_of_sti_s_own_is_no_builder_by_a_prefix_of_its_id(
    api: docker.APIClient, images: dict[str, str], docker_host: DockerHost
) -> None:
    """A source image holds another build's source and has no name a user may give; Docker
    still finds it by a prefix of its id (in build logs), which must not make it a builder."""
    key = uuid.uuid4().hex[:12]
    container = api.create_container(images["sti-fake"], name=f"sti-test-{key}")
    image = api.commit(container["Id"], repository="sti-source", tag=key)["Id"]
    api.remove_container(container["Id"])
    prefix = image.removeprefix("sha256:")[:12]
    try:
        with pytest.raises(NoSuchBaseImage):
            docker_host.ensure_image(prefix, lambda _line: None, policy="never")
        api.tag(image, "sti-test/named-too", key)  # a name of its own: the user's to use
        assert docker_host.ensure_image(prefix, lambda _line: None, policy="never") == image
    finally:
        api.remove_image(image, force=True)
