"""The sti-submit command line: parse, call the library, print, pick the exit code.

Live log lines go to stderr; messages, the outcome and --json output go to stdout.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from sti.env_files import read_environment_file
from sti.environment import DEFAULT_BROKER_URL
from sti.errors import ExitCode, InvalidInput, StiError, exit_code_for
from sti.model import (
    METHODS,
    PULL_POLICIES,
    BuildRequest,
    Result,
    UsageRequest,
    ValidateRequest,
    parse_build_env_options,
    parse_env_options,
    parse_label_options,
)

Options = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*decorators: Options) -> Options:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


broker_option = click.option(
    "--broker",
    envvar="STI_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="Redis URL of the queue ($STI_BROKER_URL).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the final result as one JSON object."
)
local_options = _stack(
    click.option(
        "--local", is_flag=True, help="Run in this process against the local Docker engine."
    ),
    click.option(
        "-U",
        "--url",
        "docker_url",
        envvar="DOCKER_HOST",
        help="Docker engine for --local (default: DOCKER_HOST, else the local socket).",
    ),
)
wait_options = _stack(
    click.option("-q", "--quiet", is_flag=True, help="No live log lines, only the outcome."),
    click.option("--no-wait", is_flag=True, help="Enqueue, print the build id, exit."),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        help="Stop waiting after this many seconds; the build is cancelled.",
    ),
)


scripts_url_option = click.option(
    "-s",
    "--scripts-url",
    help="The builder's s2i scripts, over its labels: image://DIR (in the image), "
    "http(s)://HOST/DIR (fetched by the worker) or file:///DIR (uploaded with the source).",
)


def _pull_policy_option(flag: str, what: str) -> Callable[[Any], Any]:
    return click.option(
        flag,
        type=click.Choice(PULL_POLICIES),
        default="if-not-present",
        help=f"When to pull {what}.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """sti: build ready-to-run Docker images from source and a builder image."""


@main.command()
@click.argument("source")
@click.argument("build_image")
@click.argument("app_image_tag")
@click.option("--clean", is_flag=True, help="Clean build: no artifact reuse.")
@click.option("-e", "--env", "env_options", multiple=True, help="NAME=VALUE (repeatable).")
@click.option(
    "-E",
    "--environment-file",
    "env_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="File of NAME=VALUE lines, as s2i reads it (repeatable; -e wins).",
)
@click.option(
    "--build-env",
    "build_env_options",
    multiple=True,
    help="NAME=VALUE for prepare/assemble only, never in the image (repeatable).",
)
@click.option(
    "--label", "label_options", multiple=True, help="Image label NAME=VALUE (repeatable)."
)
@click.option(
    "-n", "--application-name", "display_name", help="io.k8s.display-name (default: the tag)."
)
@click.option("--description", help="io.k8s.description of the image.")
@click.option("-R", "--runtime", "runtime_image", help="Extended build: deploy into this image.")
@click.option(
    "--runtime-image",
    "s2i_runtime_image",
    help="s2i's: copy the runtime artifacts into this image, then run its assemble-runtime.",
)
@click.option(
    "-a",
    "--runtime-artifact",
    "runtime_artifacts",
    multiple=True,
    help="SRC[:DEST] copied from the built image into the runtime image's WORKDIR (repeatable).",
)
@click.option(
    "-m",
    "--method",
    type=click.Choice(METHODS),
    default="build",
    show_default=True,
    help="build = generated Dockerfile + docker build; run = container + commit.",
)
@click.option("-r", "--ref", help="git branch, tag or commit to build.")
@scripts_url_option
@click.option("-d", "--destination", help="s2i builders: where source and artifacts go (/tmp).")
@click.option(
    "--assemble-user", help="Run assemble as this user (over the assemble-user label and USER)."
)
@click.option(
    "-u",
    "--allowed-uids",
    help="Refuse to run assemble as a uid outside these ranges (1- forbids root).",
)
@click.option("--context-dir", help="Build only this subdirectory of the source.")
@click.option("--ignore-submodules", is_flag=True, help="Do not fetch git submodules.")
@click.option("--push", is_flag=True, help="Push APP_IMAGE_TAG to its registry after tagging.")
@click.option(
    "--exclude",
    multiple=True,
    help="gitignore-style pattern left out of an uploaded directory (repeatable).",
)
@_pull_policy_option("--pull-policy", "BUILD_IMAGE")
@_pull_policy_option("--incremental-pull-policy", "the previous image of an incremental build")
@_pull_policy_option("--runtime-pull-policy", "the runtime image")
@click.option("--incremental", is_flag=True, help="s2i's: sti builds incrementally when it can.")
@click.option("--rm", "remove_previous", is_flag=True, help="s2i's: sti always does so.")
@click.option("--copy", "copy_source", is_flag=True, help="s2i's: sti always copies.")
@click.option("--keep-symlinks", is_flag=True, help="s2i's: sti always keeps them.")
@json_option
@wait_options
@local_options
@broker_option
def build(
    source: str,
    build_image: str,
    app_image_tag: str,
    env_options: tuple[str, ...],
    env_files: tuple[Path, ...],
    build_env_options: tuple[str, ...],
    label_options: tuple[str, ...],
    exclude: tuple[str, ...],
    incremental: bool,
    remove_previous: bool,
    copy_source: bool,
    keep_symlinks: bool,
    local: bool,
    docker_url: str | None,
    broker: str,
    as_json: bool,
    quiet: bool,
    no_wait: bool,
    timeout: float | None,
    **options: Any,
) -> None:
    """Build SOURCE with BUILD_IMAGE into an image tagged APP_IMAGE_TAG."""
    if incremental and options.get("clean"):
        raise click.BadParameter("--incremental and --clean contradict each other")
    if incremental and options.get("s2i_runtime_image"):
        raise click.BadParameter("a --runtime-image build is never incremental, as in s2i")
    for given, note in (
        (incremental, "--incremental: sti builds incrementally whenever it can (--clean not)"),
        (remove_previous, "--rm: sti removes the image its tag named before, unless in use"),
        (copy_source, "--copy: sti always copies the source into the build"),
        (keep_symlinks, "--keep-symlinks: sti always keeps symbolic links as links"),
    ):
        if given and not (quiet or as_json):
            click.echo(f"Note: {note}", err=True)
    request = _checked(
        lambda: BuildRequest(
            source=source,
            build_image=build_image,
            tag=app_image_tag,
            env=_environment(env_files, env_options),
            build_env=parse_build_env_options(build_env_options),
            labels=parse_label_options(label_options),
            exclude=exclude,
            **options,
        )
    )
    sink = _sink(quiet or as_json)
    if local:
        _finish(_locally(lambda engine: engine.build_locally(request, docker_url, sink)), as_json)
    _finish_queued(
        broker, lambda client: client.submit_build(request), as_json, sink, no_wait, timeout
    )


def _environment(files: tuple[Path, ...], options: tuple[str, ...]) -> dict[str, str]:
    """-E files in order, then -e: a later value wins (the source's .s2i/environment comes
    before them all)."""
    env: dict[str, str] = {}
    for path in files:
        env.update(read_environment_file(path))
    return {**env, **parse_env_options(options)}


@main.command()
@click.argument("build_image")
@click.option("-I", "--incremental", is_flag=True, help="Validate for incremental builds.")
@click.option("-R", "--runtime", "runtime_image", help="Also validate this runtime image.")
@json_option
@local_options
@broker_option
def validate(
    build_image: str,
    incremental: bool,
    runtime_image: str | None,
    as_json: bool,
    local: bool,
    docker_url: str | None,
    broker: str,
) -> None:
    """Say whether BUILD_IMAGE can serve as an sti builder image, and why not."""
    request = _checked(
        lambda: ValidateRequest(
            build_image=build_image, incremental=incremental, runtime_image=runtime_image
        )
    )
    if local:
        _finish(
            _locally(lambda engine: engine.validate_locally(request, docker_url, _sink(True))),
            as_json,
        )
    _finish_queued(
        broker, lambda client: client.submit_validate(request), as_json, _sink(True), False, None
    )


@main.command()
@click.argument("build_image")
@scripts_url_option
@json_option
@local_options
@broker_option
def usage(
    build_image: str,
    scripts_url: str | None,
    as_json: bool,
    local: bool,
    docker_url: str | None,
    broker: str,
) -> None:
    """Print what BUILD_IMAGE's usage script says (s2i's usage)."""
    request = _checked(lambda: UsageRequest(build_image=build_image, scripts_url=scripts_url))
    if local:
        _finish(
            _locally(lambda engine: engine.usage_locally(request, docker_url, _sink(True))),
            as_json,
        )
    _finish_queued(
        broker, lambda client: client.submit_usage(request), as_json, _sink(True), False, None
    )


@main.command()
@click.argument("build_id")
@json_option
@broker_option
def status(build_id: str, as_json: bool, broker: str) -> None:
    """Where BUILD_ID is: its state and phase, or its result once it has finished."""
    found = _with_client(broker, lambda client: client.status(build_id))
    if as_json:
        click.echo(json.dumps(found))
    elif "schema" in found:
        _print_result(Result.from_json(found))
    else:
        host = f" on {found['host']}" if found.get("host") else ""
        click.echo(f"{build_id}: {found['state']} ({found['phase']}){host}")


@main.command()
@click.argument("build_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the build ends.")
@broker_option
def logs(build_id: str, follow: bool, broker: str) -> None:
    """Print BUILD_ID's log lines so far (all of them, from the start)."""

    def show(client: Any) -> None:
        client.check_broker()
        if not client.known(build_id):
            _fail(InvalidInput(f"no build {build_id} is known to the queue"))
        for line in client.follow(build_id, follow=follow):
            click.echo(line)

    _with_client(broker, show)


@main.command()
@click.argument("build_id")
@broker_option
def cancel(build_id: str, broker: str) -> None:
    """Cancel BUILD_ID: stop its containers, clean up, tag nothing."""
    state = _with_client(broker, lambda client: client.cancel(build_id))
    if state in ("SUCCESS", "FAILURE", "REVOKED"):
        click.echo(f"Build {build_id} had already finished ({state})")
    else:
        click.echo(f"Cancelling build {build_id} (was {state})")


@main.command()
@json_option
@broker_option
def workers(as_json: bool, broker: str) -> None:
    """The build hosts: id, slots, and the builds running there."""
    hosts = _with_client(broker, lambda client: client.workers())
    if as_json:
        click.echo(json.dumps(hosts))
        return
    if not hosts:
        click.echo("No live build hosts")
    for host in hosts:
        running = ", ".join(host["running"]) or "-"
        click.echo(f"{host['host_id']}: {host['slots']} slots, running: {running}")


def _checked(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except StiError as error:
        raise click.BadParameter(error.message) from error


def _locally(run: Callable[[Any], Result]) -> Result:
    """run(engine) in this process. Ctrl-C, and a SIGTERM or SIGHUP (a `timeout`, a CI job or a
    closed terminal stopping it), end it as an interrupt: the engine's cleanup then removes what
    the run made (containers, tags, work dir) before sti-submit exits 4. Left to their default,
    SIGTERM and SIGHUP end the process at once and leave a running build's container behind."""
    engine = _local_engine()
    previous = {number: signal.getsignal(number) for number in _STOPPING_SIGNALS}
    for number in _STOPPING_SIGNALS:
        signal.signal(number, _interrupt)
    try:
        return run(engine)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: the build was stopped and what it made removed.", err=True)
        sys.exit(ExitCode.TIMED_OUT_OR_CANCELLED)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(number: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(number).name)


def _local_engine() -> Any:
    """The engine, for --local: part of the worker install, absent from a laptop's."""
    try:
        from sti_worker import local
    except ImportError as error:
        _fail(
            InvalidInput(
                f"--local runs the build engine here and needs the worker's packages "
                f"(pip install 'sti[worker]'): {error}"
            )
        )
    _settle_imports()
    return local


def _settle_imports() -> None:
    """Exempt what importing made (modules, classes, functions: kept to the end anyway) from
    the garbage collector: a run then spends no collections on them, and the exit of a process
    that imported the engine takes about 30 ms less (measured in bench/)."""
    gc.freeze()


def _sink(silent: bool) -> Callable[[str], None]:
    if silent:
        return lambda line: None
    return lambda line: click.echo(line, err=True)


def _with_client(broker: str, call: Callable[[Any], Any]) -> Any:
    from sti_submit.client import StiClient

    _settle_imports()
    try:
        client = StiClient(broker)  # a malformed URL is refused here
    except StiError as error:
        _fail(error)
    try:
        return call(client)
    except StiError as error:
        _fail(error)
    finally:
        client.close()


def _finish_queued(
    broker: str,
    submit: Callable[[Any], str],
    as_json: bool,
    sink: Callable[[str], None],
    no_wait: bool,
    timeout: float | None,
) -> NoReturn:
    def run(client: Any) -> Result | str:
        build_id = submit(client)
        if no_wait:
            return build_id
        try:
            return client.wait(build_id, timeout=timeout, on_line=sink)
        except KeyboardInterrupt:
            click.echo(f"\nStopped waiting; build {build_id} goes on.", err=True)
            click.echo(f"Follow it with: sti-submit logs --follow {build_id}", err=True)
            sys.exit(ExitCode.TIMED_OUT_OR_CANCELLED)

    outcome = _with_client(broker, run)
    if isinstance(outcome, str):
        click.echo(outcome)
        sys.exit(ExitCode.OK)
    _finish(outcome, as_json)


def _fail(error: StiError) -> NoReturn:
    click.echo(f"sti-submit: {error.message}", err=True)
    sys.exit(error.exit_code)


def _finish(result: Result, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        _print_result(result)
    sys.exit(exit_code_for(result.error_code, result.success))


def _print_result(result: Result) -> None:
    for message in result.messages:
        click.echo(message)
    outcome = _outcome(result)
    if outcome:  # a usage script's output is the whole answer
        click.echo(outcome)


def _outcome(result: Result) -> str:
    if result.kind == "validate":
        return "Valid" if result.success else "Invalid"
    if result.kind == "usage":
        code = f" [{result.error_code}]" if result.error_code else ""
        return "" if result.success else f"Usage failed{code}"
    if result.success:
        return f"Build succeeded: {result.tag} ({result.image_id})"
    code = f" [{result.error_code}]" if result.error_code else ""
    return f"Build failed{code}"
