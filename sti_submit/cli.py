"""The sti-submit command line: parse, call the library, print, pick the exit code.

Live log lines go to stderr; messages, the outcome and --json output go to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from sti_worker.engine.errors import ExitCode, StiError, exit_code_for
from sti_worker.engine.requests import (
    METHODS,
    BuildRequest,
    Result,
    ValidateRequest,
    parse_env_options,
)


def _local_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--local", is_flag=True, help="Run in this process against the local Docker engine."
    )(command)
    command = click.option(
        "-U",
        "--url",
        "docker_url",
        envvar="DOCKER_HOST",
        help="Docker engine for --local (default: DOCKER_HOST, else the local socket).",
    )(command)
    return command


def _output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print the final result as one JSON object."
    )(command)
    command = click.option(
        "-q", "--quiet", is_flag=True, help="No live log lines, only the outcome."
    )(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """sti: build ready-to-run Docker images from source and a builder image."""


@main.command()
@click.argument("source")
@click.argument("build_image")
@click.argument("app_image_tag")
@click.option("--clean", is_flag=True, help="Clean build: no artifact reuse.")
@click.option("-e", "--env", "env_options", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("-R", "--runtime", "runtime_image", help="Extended build: deploy into this image.")
@click.option(
    "-m",
    "--method",
    type=click.Choice(METHODS),
    default="build",
    show_default=True,
    help="build = generated Dockerfile + docker build; run = container + commit.",
)
@click.option("--ref", help="git branch, tag or commit to build.")
@click.option("--context-dir", help="Build only this subdirectory of the source.")
@click.option("--ignore-submodules", is_flag=True, help="Do not fetch git submodules.")
@_output_options
@_local_options
def build(
    source: str,
    build_image: str,
    app_image_tag: str,
    clean: bool,
    env_options: tuple[str, ...],
    runtime_image: str | None,
    method: str,
    ref: str | None,
    context_dir: str | None,
    ignore_submodules: bool,
    as_json: bool,
    quiet: bool,
    local: bool,
    docker_url: str | None,
) -> None:
    """Build SOURCE with BUILD_IMAGE into an image tagged APP_IMAGE_TAG."""
    request = _checked(
        lambda: BuildRequest(
            source=source,
            build_image=build_image,
            tag=app_image_tag,
            clean=clean,
            env=parse_env_options(env_options),
            runtime_image=runtime_image,
            method=method,
            ref=ref,
            context_dir=context_dir,
            ignore_submodules=ignore_submodules,
        )
    )
    sink = _sink(quiet or as_json)
    if not local:
        raise click.UsageError("only --local builds are available in this version")
    from sti_submit.local import build_locally

    _finish(build_locally(request, docker_url, sink), as_json)


@main.command()
@click.argument("build_image")
@click.option("-I", "--incremental", is_flag=True, help="Validate for incremental builds.")
@click.option("-R", "--runtime", "runtime_image", help="Also validate this runtime image.")
@_output_options
@_local_options
def validate(
    build_image: str,
    incremental: bool,
    runtime_image: str | None,
    as_json: bool,
    quiet: bool,
    local: bool,
    docker_url: str | None,
) -> None:
    """Say whether BUILD_IMAGE can serve as an sti builder image, and why not."""
    request = _checked(
        lambda: ValidateRequest(
            build_image=build_image, incremental=incremental, runtime_image=runtime_image
        )
    )
    sink = _sink(True)
    if not local:
        raise click.UsageError("only --local validation is available in this version")
    from sti_submit.local import validate_locally

    _finish(validate_locally(request, docker_url, sink), as_json)


def _checked(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except StiError as error:
        raise click.BadParameter(error.message) from error


def _sink(silent: bool) -> Callable[[str], None]:
    if silent:
        return lambda line: None
    return lambda line: click.echo(line, err=True)


def _finish(result: Result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        for message in result.messages:
            click.echo(message)
        click.echo(_outcome(result))
    sys.exit(exit_code_for(result.error_code, result.success))


def _outcome(result: Result) -> str:
    if result.kind == "validate":
        return "Valid" if result.success else "Invalid"
    if result.success:
        return f"Build succeeded: {result.tag} ({result.image_id})"
    code = f" [{result.error_code}]" if result.error_code else ""
    return f"Build failed{code}"


__all__ = ["ExitCode", "main"]
