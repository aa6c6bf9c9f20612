"""The build limits as settings: parsed, checked, and turned into what the engine takes."""

from __future__ import annotations

import pytest

from sti.errors import InvalidInput
from sti.settings import Settings
from sti_worker.engine.sandbox import KEPT_CAPABILITIES, Sandbox

MiB = 1024**2


def test_the_defaults_limit_memory_processes_and_privileges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STI_BUILD_MEMORY", "STI_BUILD_PIDS", "STI_BUILD_NETWORK", "STI_BUILD_PRIVILEGES"):
        monkeypatch.delenv(name, raising=False)
    sandbox = Sandbox.from_settings(Settings.from_env())
    assert sandbox == Sandbox()
    assert sandbox.host_config() == {
        "mem_limit": 4096 * MiB,
        "memswap_limit": 4096 * MiB,
        "pids_limit": 4096,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "cap_add": list(KEPT_CAPABILITIES),
    }
    assert sandbox.describe() == (
        "build limits: memory 4 GiB, processes 4096, network bridge, privileges restricted"
    )


def test_the_environment_sets_each_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STI_BUILD_MEMORY", "512M")
    monkeypatch.setenv("STI_BUILD_PIDS", "100")
    monkeypatch.setenv("STI_BUILD_NETWORK", "none")
    monkeypatch.setenv("STI_BUILD_PRIVILEGES", "engine")
    sandbox = Sandbox.from_settings(Settings.from_env())
    assert sandbox == Sandbox(memory_bytes=512 * MiB, pids=100, network="none", privileges="engine")
    assert sandbox.host_config() == {
        "mem_limit": 512 * MiB,
        "memswap_limit": 512 * MiB,
        "pids_limit": 100,
        "network_mode": "none",
    }


def test_zero_lifts_a_limit() -> None:
    assert Sandbox.engine_defaults().host_config() == {}
    assert Sandbox.engine_defaults().describe() == (
        "build limits: memory no limit, processes no limit, network bridge, privileges engine"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"network": "host"}, "STI_BUILD_NETWORK='host' is unknown; use one of: bridge, none"),
        ({"network": "container:abc"}, "STI_BUILD_NETWORK='container:abc' is unknown"),
        ({"privileges": "privileged"}, "STI_BUILD_PRIVILEGES='privileged' is unknown"),
        ({"memory_bytes": 1024}, "STI_BUILD_MEMORY=1024 bytes is below the engine's minimum"),
        ({"memory_bytes": -1}, "STI_BUILD_MEMORY=-1 bytes is below"),
        ({"pids": -5}, "STI_BUILD_PIDS=-5 is negative"),
    ],
)
def test_a_limit_that_cannot_be_is_refused(values: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Sandbox(**values)


def test_a_memory_setting_that_is_not_a_size_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STI_BUILD_MEMORY", "lots")
    with pytest.raises(ValueError, match="STI_BUILD_MEMORY='lots' is not a size"):
        Settings.from_env()


def test_what_each_engine_builder_holds() -> None:
    sandbox = Sandbox(memory_bytes=64 * MiB, pids=10, network="none")
    assert sandbox.not_held_by("buildkit") == [
        f"STI_BUILD_MEMORY={64 * MiB}",
        "STI_BUILD_PIDS=10",
        "STI_BUILD_PRIVILEGES=restricted",
    ]
    assert sandbox.not_held_by("legacy") == ["STI_BUILD_PIDS=10", "STI_BUILD_PRIVILEGES=restricted"]
    memory_only = Sandbox(memory_bytes=64 * MiB, pids=0, privileges="engine")
    assert memory_only.not_held_by("legacy") == []
    assert memory_only.builder_params("legacy") == {"memory": 64 * MiB, "memswap": 64 * MiB}
    assert memory_only.builder_params("buildkit") == {}
    assert sandbox.builder_params("buildkit") == {"networkmode": "none"}


def test_a_kill_is_put_down_to_the_memory_limit_only_under_one() -> None:
    limited = Sandbox(memory_bytes=32 * MiB)
    assert limited.killed_message("/usr/bin/prepare", 137, oom_killed=False) == (
        "/usr/bin/prepare was killed (exit code 137) at the build memory limit of 32 MiB "
        "(STI_BUILD_MEMORY)"
    )
    assert limited.killed_message("/usr/bin/prepare", 1, oom_killed=False) is None
    assert limited.killed_message("/usr/bin/prepare", 1, oom_killed=True) is not None
    assert Sandbox.engine_defaults().killed_message("/usr/bin/prepare", 137, True) is None
