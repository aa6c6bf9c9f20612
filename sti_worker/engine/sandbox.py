"""What untrusted build code (prepare, assemble, save-artifacts) may use: memory, processes,
network and privileges, as the worker's settings give them.

Every container sti runs gets the whole sandbox. The engine's builders take less through the
Engine API (Docker 20.10): the legacy builder a memory limit and a network mode, BuildKit a
network mode only, so a build method on an engine builder holds the sandbox only when
everything else is switched off; otherwise its prepare runs in a container too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sti.errors import InvalidInput

if TYPE_CHECKING:
    from sti.settings import Settings

NETWORKS = ("bridge", "none")
PRIVILEGES = ("restricted", "engine")
# Docker's default set without MKNOD, NET_RAW, SETFCAP, SETPCAP and SYS_CHROOT: what package
# managers and user switching (apt, npm, su to the builder's user) need, not what they do not
KEPT_CAPABILITIES = (
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
)
_OOM_EXIT_CODE = 137  # SIGKILL, which is how the kernel ends a cgroup over its memory limit


@dataclass(frozen=True)
class Sandbox:
    memory_bytes: int = 4 * 1024**3  # 0: no limit (STI_BUILD_MEMORY)
    pids: int = 4096  # 0: no limit (STI_BUILD_PIDS)
    network: str = "bridge"  # STI_BUILD_NETWORK
    privileges: str = "restricted"  # STI_BUILD_PRIVILEGES

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise InvalidInput(
                f"STI_BUILD_NETWORK={self.network!r} is unknown; use one of: {', '.join(NETWORKS)}"
            )
        if self.privileges not in PRIVILEGES:
            raise InvalidInput(
                f"STI_BUILD_PRIVILEGES={self.privileges!r} is unknown; "
                f"use one of: {', '.join(PRIVILEGES)}"
            )
        if self.memory_bytes < 0 or 0 < self.memory_bytes < 6 * 1024**2:
            raise InvalidInput(
                f"STI_BUILD_MEMORY={self.memory_bytes} bytes is below the engine's minimum of 6 MiB"
            )
        if self.pids < 0:
            raise InvalidInput(f"STI_BUILD_PIDS={self.pids} is negative")

    @classmethod
    def engine_defaults(cls) -> Sandbox:
        """Nothing beyond what the engine does anyway."""
        return cls(memory_bytes=0, pids=0, network="bridge", privileges="engine")

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        return cls(
            memory_bytes=settings.build_memory_bytes,
            pids=settings.build_pids,
            network=settings.build_network,
            privileges=settings.build_privileges,
        )

    def host_config(self) -> dict[str, Any]:
        """Arguments of docker-py's create_host_config for a container of build code."""
        config: dict[str, Any] = {}
        if self.memory_bytes:
            config |= {"mem_limit": self.memory_bytes, "memswap_limit": self.memory_bytes}
        if self.pids:
            config["pids_limit"] = self.pids
        if self.network == "none":
            config["network_mode"] = "none"
        if self.privileges == "restricted":
            config |= {
                "security_opt": ["no-new-privileges"],
                "cap_drop": ["ALL"],
                "cap_add": list(KEPT_CAPABILITIES),
            }
        return config

    def builder_params(self, builder: str) -> dict[str, Any]:
        """Query parameters of POST /build that hold what this builder can hold."""
        params: dict[str, Any] = {}
        if self.network == "none":
            params["networkmode"] = "none"
        if builder == "legacy" and self.memory_bytes:
            params |= {"memory": self.memory_bytes, "memswap": self.memory_bytes}
        return params

    def not_held_by(self, builder: str) -> list[str]:
        """The settings a RUN step on this builder would not be held to."""
        missing = []
        if self.memory_bytes and builder != "legacy":
            missing.append(f"STI_BUILD_MEMORY={self.memory_bytes}")
        if self.pids:
            missing.append(f"STI_BUILD_PIDS={self.pids}")
        if self.privileges == "restricted":
            missing.append("STI_BUILD_PRIVILEGES=restricted")
        return missing

    def killed_message(self, script: str, exit_code: int, oom_killed: bool) -> str | None:
        """What to say when script was ended by the kernel at the memory limit (an engine
        builder does not say why its RUN was killed: a SIGKILL under a limit is taken as it)."""
        if not self.memory_bytes or not (oom_killed or exit_code == _OOM_EXIT_CODE):
            return None
        return (
            f"{script} was killed (exit code {exit_code}) at the build memory limit of "
            f"{_size(self.memory_bytes)} (STI_BUILD_MEMORY)"
        )

    def describe(self) -> str:
        memory = _size(self.memory_bytes) if self.memory_bytes else "no limit"
        pids = str(self.pids) if self.pids else "no limit"
        return (
            f"build limits: memory {memory}, processes {pids}, network {self.network}, "
            f"privileges {self.privileges}"
        )


def _size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
