"""s2i's build flags, accepted with s2i's meaning: -r, the pull policies, and the flags whose
behaviour sti always has (--incremental, --rm, --copy, --keep-symlinks) with a note."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli_requests import local_request


def test_r_is_ref_and_the_pull_policies_reach_the_request(tmp_path: Path) -> None:
    request = local_request(
        tmp_path,
        "-r",
        "v1.2",
        "--pull-policy",
        "always",
        "--incremental-pull-policy",
        "never",
        "--runtime-pull-policy",
        "if-not-present",
    ).request
    assert request is not None
    assert request.ref == "v1.2"
    assert (request.pull_policy, request.incremental_pull_policy) == ("always", "never")
    assert request.runtime_pull_policy == "if-not-present"


def test_the_pull_policies_default_to_if_not_present(tmp_path: Path) -> None:
    request = local_request(tmp_path).request
    assert request is not None
    policies = (request.pull_policy, request.incremental_pull_policy, request.runtime_pull_policy)
    assert policies == ("if-not-present",) * 3


def test_an_unknown_pull_policy_is_bad_input(tmp_path: Path) -> None:
    submitted = local_request(tmp_path, "--pull-policy", "sometimes")
    assert submitted.exit_code == 2
    assert "'sometimes' is not one of 'if-not-present', 'always', 'never'" in submitted.output


@pytest.mark.parametrize(
    ("flag", "note"),
    [
        ("--incremental", "sti builds incrementally whenever it can"),
        ("--rm", "sti removes the image its tag named before"),
        ("--copy", "sti always copies the source"),
        ("--keep-symlinks", "sti always keeps symbolic links as links"),
    ],
)
def test_flags_sti_always_honours_are_accepted_with_a_note(
    tmp_path: Path, flag: str, note: str
) -> None:
    submitted = local_request(tmp_path, flag)
    assert submitted.request is not None, submitted.output
    assert f"Note: {flag}: {note}" in submitted.output
    assert submitted.request.clean is False


def test_incremental_and_clean_together_are_bad_input(tmp_path: Path) -> None:
    submitted = local_request(tmp_path, "--incremental", "--clean")
    assert submitted.exit_code == 2
    assert "--incremental and --clean contradict each other" in submitted.output
