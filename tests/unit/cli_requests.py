"""What `sti-submit build ... --local` would hand the engine, without an engine: the request
the CLI made, or how it refused (exit code and output)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sti.model import BuildRequest
from sti_submit import cli


@dataclass(frozen=True)
class Submitted:
    exit_code: int
    output: str
    request: BuildRequest | None


def local_request(tmp_path: Path, *options: str) -> Submitted:
    seen: list[BuildRequest] = []

    class Engine:
        @staticmethod
        def build_locally(request: BuildRequest, docker_url: Any, sink: Any) -> None:
            seen.append(request)
            raise SystemExit(0)

    source = tmp_path / "app"
    source.mkdir(exist_ok=True)
    original = cli._local_engine
    cli._local_engine = lambda: Engine  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(
            cli.main, ["build", str(source), "img", "acme/app", "--local", *options]
        )
    finally:
        cli._local_engine = original  # type: ignore[assignment]
    return Submitted(result.exit_code, result.output, seen[0] if seen else None)
