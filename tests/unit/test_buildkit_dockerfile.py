"""The Dockerfile a BuildKit build sends holds nothing of one build: BuildKit unpacks a context
again unless its bytes are those of an earlier one, so the same request must give the same text."""

from __future__ import annotations

from sti_worker.engine.methods import (
    BASE_ARG,
    BUILD_ID_ARG,
    PREVIOUS_ARG,
    PrepareSpec,
    SavedArtifacts,
    buildkit_dockerfile,
)
from sti_worker.engine.protocol import ORIGINAL


def _spec(build_id: str, base: str, previous: str) -> PrepareSpec:
    return PrepareSpec(
        base_image=base,
        inputs=[],
        input_dirs=["src"],
        env={"MODE": "dev"},
        build_id=build_id,
        scripts=ORIGINAL,
        owner=(1001, 0),
        user="app",
        saved_from=SavedArtifacts(previous, ORIGINAL.save_artifacts),
        labels={"io.k8s.display-name": "app"},
    )


def test_two_builds_of_one_request_send_the_same_dockerfile() -> None:
    first = buildkit_dockerfile(_spec("a" * 32, "sha256:" + "1" * 64, "sha256:" + "2" * 64))
    second = buildkit_dockerfile(_spec("b" * 32, "sha256:" + "3" * 64, "sha256:" + "4" * 64))
    assert first == second
    for per_build in ("a" * 32, "1" * 64, "2" * 64, "io.sti.build-id"):
        assert per_build not in first


def test_the_images_and_the_build_id_arrive_as_build_arguments() -> None:
    text = buildkit_dockerfile(_spec("a" * 32, "sha256:" + "1" * 64, "sha256:" + "2" * 64))
    lines = text.splitlines()
    assert lines[:2] == [f"ARG {PREVIOUS_ARG}", f"ARG {BASE_ARG}"]  # before any FROM
    assert f"FROM ${{{PREVIOUS_ARG}}} AS sti-artifacts" in lines
    assert f"FROM ${{{BASE_ARG}}}" in lines
    assert f"ARG {BUILD_ID_ARG}" in lines
