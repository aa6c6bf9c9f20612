"""The file of build-only values reads back byte-exact in a shell, and runs nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sti_worker.engine.build_env import env_file, prepare_command

VALUES = [
    "",
    "plain",
    "it's",
    "'''",
    'a "quoted" $HOME `id` $(touch pwned) \\ backslash',
    "line one\nline two\n",
    "unicode ✓ and tab\t",
    "-n",
]


@pytest.mark.parametrize("value", VALUES)
def test_a_value_reads_back_byte_exact_and_runs_nothing(tmp_path: Path, value: str) -> None:
    (tmp_path / "env").write_bytes(env_file({"TOKEN": value, "OTHER": "x"}))
    shown = subprocess.run(
        ["/bin/sh", "-c", '. ./env && printf %s "$TOKEN"'],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    assert shown == value.encode()
    assert not (tmp_path / "pwned").exists()


def test_prepare_runs_as_itself_without_values_and_under_the_shell_with_them() -> None:
    assert prepare_command("/usr/bin/prepare", "/tmp", {}) == ["/usr/bin/prepare"]
    argv = prepare_command("/usr/libexec/s2i/assemble", "/opt/app-root", {"TOKEN": "secret"})
    assert argv[0] == "/bin/sh" and argv[-1] == "/usr/libexec/s2i/assemble"
    assert "/opt/app-root/.sti-build-env/env" in argv[2]
    assert "secret" not in " ".join(argv)
