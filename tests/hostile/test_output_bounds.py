"""Build output an attacker controls stays bounded: masking is linear on any line, and lines,
build logs, usage results and save-artifacts' streams are cut at their caps with a note."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from sti import keys
from sti.errors import SaveArtifactsFailed
from sti.lines import TEXT_MAX_BYTES, cut_line
from sti.model import BuildRequest, Result, UsageRequest, ValidateRequest
from sti.redaction import redact
from sti.runtime_artifacts import RuntimeArtifact
from sti.settings import Settings
from sti.tarstreams import stream_tar
from sti_submit.client import StiClient
from sti_worker.buildlog import BuildLog
from sti_worker.engine.archives import ExtractLimits
from sti_worker.engine.docker_host import DockerHost, OutputTail, container_name
from sti_worker.engine.layouts import artifacts_in_tar
from sti_worker.engine.pipeline import run_build, run_usage, run_validate
from sti_worker.engine.runtime_artifacts import artifact_parts
from sti_worker.engine.sources import SourcePolicy, Sources
from tests.dockertools import TRACKER, temporary_image, write_source
from tests.images import PREPARE, RUN
from tests.services import RedisServer, Worker

MB = 1_000_000
# shapes that make a backtracking pattern retry from every position: long runs of what a part of
# a URL may hold, each followed by what ends the match too late or fails it
ADVERSARIAL_LINES = {
    "scheme characters then @": '"a." * (MB // 2) + "@"',
    "a run of letters then @": '"a" * MB + "@"',
    "separators then @": '"://" * (MB // 3) + "@"',
    "schemes and separators then @": '"a://" * (MB // 4) + "@"',
    "ats then a separator": '"@" * MB + "://"',
    "a separator then ats": '"://" + "@" * MB',
    "a separator then a long userinfo": '"://" + "a:b" * (MB // 3) + "@"',
    "near-separators": '"a:/" * (MB // 3) + "@"',
    "a userinfo to mask in every URL": '"://a@" * (MB // 5)',
    "colons then slashes": '":" * MB + "//@"',
    "URLs without a host": '"://@/" * (MB // 5)',
    "whitespace in the authority": '"://" + " \\t" * (MB // 2) + "@"',
    "non-ASCII letters": '"é://" + "é." * (MB // 2) + "@"',
    "percent-escapes": '"https://" + "%40" * (MB // 3) + "#"',
    # a quote no longer ends an authority: a userinfo may hold one
    "a separator then quotes then @": '"://" + "\'\\"<>`" * (MB // 5) + "@"',
    "a quoted URL with a userinfo, again and again": "\"'://a@'\" * (MB // 6)",
}


@pytest.mark.parametrize("expression", ADVERSARIAL_LINES.values(), ids=ADVERSARIAL_LINES.keys())
def test_a_megabyte_line_of_any_shape_is_masked_at_once(expression: str) -> None:
    """The old pattern took 3-4 s on 80 kB of "a." and about ten minutes on a megabyte, holding
    the GIL (leases expired, cancel went unseen). Run apart, so a regression fails at the
    guard instead of hanging the suite; the guard is generous, the work takes milliseconds."""
    code = f"from sti.redaction import redact\nMB = {MB}\nredact({expression})\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


def test_masking_keeps_what_it_did_on_long_lines() -> None:
    secret = "https://user:tok@git.example/app.git "
    assert redact(secret * 20_000) == "https://***@git.example/app.git " * 20_000
    assert redact("a." * 100_000 + "@") == "a." * 100_000 + "@"


NOTE = "… [line cut at 64 bytes]"  # 26 bytes: 38 of 64 are left for the line


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("x" * 63, "x" * 63),
        ("x" * 64, "x" * 64),
        ("x" * 65, "x" * 38 + NOTE),
        ("é" * 33, "é" * 19 + NOTE),  # 2 bytes each: 66
        ("€" * 22, "€" * 12 + NOTE),  # 3 bytes each, 66: a character is never split
        ("\udcff" * 21, "\udcff" * 21),  # lone surrogates count as 3 bytes too
    ],
)
def test_a_line_is_cut_at_its_byte_cap_with_a_note(line: str, kept: str) -> None:
    assert cut_line(line, 64) == kept
    assert len(cut_line(line, 64).encode("utf-8", "surrogatepass")) <= 64
    assert cut_line(cut_line(line, 64), 64) == cut_line(line, 64)  # a cut line is cut no more


# one line without end, from a build


def test_a_line_without_end_is_held_to_the_cap_in_memory() -> None:
    """The tail used to copy the growing partial line on every chunk (quadratic, unbounded);
    now it keeps the cap's worth and drops the rest until the newline."""
    lines: list[str] = []
    tail = OutputTail(lines.append, max_line_bytes=16 * 1024)
    chunk = b"y" * 64 * 1024
    tracemalloc.start()
    try:
        for _ in range(128):  # 8 MiB of one line
            tail.feed_bytes(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    tail.feed_bytes(b"\nnext line\n")
    assert lines == [cut_line("y" * 16 * 1024, 16 * 1024, cut=True), "next line"]
    assert lines[0].endswith("… [line cut at 16384 bytes]")
    assert len(lines[0].encode()) == 16 * 1024


def test_a_long_line_inside_one_chunk_is_cut_and_the_rest_kept() -> None:
    lines: list[str] = []
    tail = OutputTail(lines.append, max_line_bytes=1024)
    tail.feed("short\n" + "z" * 100_000 + "\nlast")
    tail.close()
    assert lines[0] == "short" and lines[2] == "last"
    assert lines[1] == "z" * (1024 - len("… [line cut at 1024 bytes]".encode())) + (
        "… [line cut at 1024 bytes]"
    )


def test_a_character_split_between_chunks_is_read_whole() -> None:
    lines: list[str] = []
    tail = OutputTail(lines.append)
    encoded = "naïve café\n".encode()
    for byte in encoded:
        tail.feed_bytes(bytes([byte]))
    tail.close()
    assert lines == ["naïve café"]


def test_a_cut_never_shows_a_credential_whose_at_sign_it_took() -> None:
    line = "cloning https://user:" + "t" * 20_000 + "@git.example/app.git"
    lines: list[str] = []
    tail = OutputTail(lines.append, max_line_bytes=1024)
    tail.feed(line + "\n")
    assert "tttt" not in lines[0] and lines[0].startswith("cloning https://***")
    assert "tttt" not in cut_line(line, 1024)
    assert "tttt" not in redact(cut_line(line, 1024))


# the build log in Redis


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    """The session's Redis (shared: each test uses a build id of its own)."""
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    yield client
    client.close()


def _stored(client: redis.Redis, build_id: str) -> list[str]:
    entries = client.xrange(keys.log_stream(build_id))
    return [fields[keys.LINE_FIELD] for _, fields in entries if keys.LINE_FIELD in fields]


def _log(client: redis.Redis, build_id: str, **caps: int) -> BuildLog:
    return BuildLog(client, build_id, max_lines=20_000, expires_s=60, **caps)


def test_a_huge_line_reaches_redis_cut_and_masked(redis_client: redis.Redis) -> None:
    build_id = uuid.uuid4().hex
    line = "fetching https://ci:" + "s" * 1_000_000 + "@git.example/app.git"
    _log(redis_client, build_id, max_line_bytes=16 * 1024).write(line)
    [stored] = _stored(redis_client, build_id)
    assert len(stored.encode()) <= 16 * 1024
    assert stored.startswith("fetching https://***")
    assert stored.endswith("… [line cut at 16384 bytes]")
    assert "ssss" not in stored


def test_a_build_log_stops_at_its_cap_and_says_so_once(redis_client: redis.Redis) -> None:
    """Lines were capped by count alone: 20,000 lines of a megabyte each fit. Now the log's
    bytes are counted across the build's tasks (each writes through a BuildLog of its own), the
    build goes on, and the log's last line says where it was cut."""
    build_id = uuid.uuid4().hex
    line = "x" * 1000
    first = _log(redis_client, build_id, max_bytes=50_000)
    for _ in range(30):
        first.write(line)
    second = _log(redis_client, build_id, max_bytes=50_000)  # the build's next step
    for _ in range(30):
        second.write(line)
    second.end()
    stored = _stored(redis_client, build_id)
    assert stored[:-1] == [line] * 50
    assert stored[-1] == (
        "[the log was cut at 50000 bytes (STI_LOG_MAX_BYTES): the build goes on, its later "
        "lines are not kept]"
    )
    assert sum(len(text) for text in stored[:-1]) <= 50_000
    ended = redis_client.xrange(keys.log_stream(build_id))[-1][1]
    assert ended == {keys.END_FIELD: "1"}  # followers still learn that the log is complete
    another = _log(redis_client, build_id, max_bytes=50_000)
    another.write("a line of a later task")
    assert len(_stored(redis_client, build_id)) == 51


def test_a_count_that_is_not_one_is_replaced(redis_client: redis.Redis) -> None:
    build_id = uuid.uuid4().hex
    redis_client.set(f"{keys.log_stream(build_id)}:bytes", "lots")
    _log(redis_client, build_id).write("hello")
    assert _stored(redis_client, build_id) == ["hello"]
    assert redis_client.get(f"{keys.log_stream(build_id)}:bytes") == "5"


# settings


@pytest.fixture
def no_sti_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STI_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_sti_environment")
def test_the_output_caps_default_and_read_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert (settings.log_line_max_bytes, settings.log_max_bytes, settings.usage_max_bytes) == (
        16 * 1024,
        16 * 1024**2,
        64 * 1024,
    )
    monkeypatch.setenv("STI_LOG_LINE_MAX_BYTES", "4K")
    monkeypatch.setenv("STI_LOG_MAX_BYTES", "1G")
    monkeypatch.setenv("STI_USAGE_MAX_BYTES", "1MiB")
    settings = Settings.from_env()
    assert (settings.log_line_max_bytes, settings.log_max_bytes, settings.usage_max_bytes) == (
        4096,
        1024**3,
        1024**2,
    )


@pytest.mark.usefixtures("no_sti_environment")
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STI_LOG_LINE_MAX_BYTES", "0", "less than the least it may be, 256"),
        ("STI_LOG_LINE_MAX_BYTES", "-1", "is not a size"),
        ("STI_LOG_LINE_MAX_BYTES", "16 KiB", "is not a size"),
        ("STI_LOG_MAX_BYTES", "1K", "less than the least it may be, 65536"),
        ("STI_LOG_MAX_BYTES", "lots", "is not a size"),
        ("STI_USAGE_MAX_BYTES", "100", "less than the least it may be, 1024"),
    ],
)
def test_an_output_cap_that_is_no_size_or_too_small_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}={value!r}.*{says}"):
        Settings.from_env()


# a usage script's output


def _usage_of(api: docker.APIClient, host: DockerHost, usage: str, max_bytes: int) -> Result:
    """sti.usage's result for an s2i image whose usage script is usage."""
    files = {
        "/usr/libexec/s2i/assemble": "#!/bin/sh\n",
        "/usr/libexec/s2i/run": "#!/bin/sh\n",
        "/usr/libexec/s2i/usage": usage,
    }
    lines = ["LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="chatty-usage") as image:
        return run_usage(
            host, UsageRequest(image), lambda line: None, "test", max_output_bytes=max_bytes
        )


def test_a_usage_result_is_cut_at_its_cap(api: docker.APIClient, docker_host: DockerHost) -> None:
    """sti.usage returned all a usage script printed (into the result backend, in Redis)."""
    usage = "#!/bin/sh\nyes 'usage: build me' | head -n 100000\nhead -c 1000000 /dev/zero\n"
    _assert_cut_at(_usage_of(api, docker_host, usage, 65536), 65536)


def _assert_cut_at(result: Result, max_bytes: int) -> None:
    assert result.success, result.messages[-3:]
    assert result.messages[0] == "usage: build me"
    assert result.messages[-1] == (
        f"[output cut at {max_bytes} bytes (STI_USAGE_MAX_BYTES); the rest is left out]"
    )
    assert sum(len(line) + 1 for line in result.messages[:-1]) <= max_bytes


# the artifacts a previous image's save-artifacts hands on


def _tar(members: list[tuple[str, bytes | str | None]], compress: str = "") -> bytes:
    """A tar of (name, content): bytes a file, str a symbolic link's target, None a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compress}") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _handed_on(saved: bytes, tmp_path: Path, limits: ExtractLimits) -> dict[str, bytes | None]:
    """What prepare's inputs get from save-artifacts' stream (file name -> content)."""
    path = tmp_path / "artifacts.tar"
    path.write_bytes(saved)
    stream = b"".join(stream_tar([artifacts_in_tar(path, limits)]))
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        return {
            member.name: tar.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            for member in tar
        }


@pytest.mark.parametrize("compress", ["", "gz", "bz2", "xz"])
def test_saved_artifacts_go_on_under_artifacts(tmp_path: Path, compress: str) -> None:
    saved = _tar([("./", None), ("./cache/", None), ("./cache/a.txt", b"a")], compress)
    handed = _handed_on(saved, tmp_path, ExtractLimits())
    assert handed == {"artifacts": None, "artifacts/cache": None, "artifacts/cache/a.txt": b"a"}


@pytest.mark.parametrize(
    ("members", "refused"),
    [
        ([("../outside", b"x")], "points outside"),
        ([("/etc/cron.d/x", b"x")], "absolute"),
        ([("lib", "/etc"), ("lib/passwd", b"x")], "would write through a link"),
        ([("a", b"1"), ("a", b"2")], "appears twice"),
        ([(f"f{index}", b"") for index in range(11)], "more than 10 files"),
        ([("big", b"x" * 2000)], "over 1024 bytes (STI_SOURCE_MAX_BYTES)"),
    ],
)
def test_saved_artifacts_are_checked_as_a_source_is(
    tmp_path: Path, members: list[tuple[str, bytes | str | None]], refused: str
) -> None:
    """Before, the stream went on with only its names checked: any count, any size, entries
    written through links."""
    limits = ExtractLimits(max_total_bytes=1024, max_files=10)
    with pytest.raises(SaveArtifactsFailed, match=re.escape(refused)) as failed:
        _handed_on(_tar(members), tmp_path, limits)
    assert failed.value.message.startswith("the artifacts saved from the previous image were")


def _build_with_limits(
    docker_host: DockerHost,
    source: str,
    image: str,
    tag: str,
    limits: ExtractLimits,
    **options: Any,
) -> tuple[Result, list[str]]:
    lines: list[str] = []
    sources = Sources(SourcePolicy(allow_file_urls=True, allow_local_paths=True, limits=limits))
    request = BuildRequest(source=source, build_image=image, tag=tag, **options)
    result = run_build(docker_host, request, lines.append, host="test", sources=sources)
    TRACKER.built(result.image_id)
    return result, lines


def test_an_endless_s2i_save_artifacts_fails_at_the_source_cap(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """`cat /dev/zero` as the source's .s2i/bin/save-artifacts: the next build wrote its
    stdout to the worker's disk until $TMPDIR was full (and read its stderr whole into memory
    after). Its stdout now stops at STI_SOURCE_MAX_BYTES, and the build fails saying so; its
    stderr comes line by line, each held to the line cap."""
    source = Path(write_source(tmp_path / "src"))
    script = source / ".s2i" / "bin" / "save-artifacts"
    script.parent.mkdir(parents=True)
    noise = "head -c 5000000 /dev/zero | tr '\\0' e >&2; echo >&2"
    script.write_text(f"#!/bin/sh\n{noise}\nexec cat /dev/zero\n")
    script.chmod(0o755)
    limits = ExtractLimits(max_total_bytes=1024 * 1024)
    first, _ = _build_with_limits(docker_host, str(source), images["s2i-fake"], app_tag, limits)
    assert first.success, first.messages
    second, lines = _build_with_limits(
        docker_host, str(source), images["s2i-fake"], app_tag, limits
    )
    assert second.error_code == "SaveArtifactsFailed", second.messages
    [noise_line] = [line for line in lines if line.startswith("eee")]
    assert noise_line == cut_line("e" * 5_000_000, 16 * 1024)
    assert second.error and second.error["message"] == (
        "/tmp/scripts/save-artifacts wrote more than 1048576 bytes of artifacts to its stdout, "
        "the limit of a source (STI_SOURCE_MAX_BYTES)"
    )


def test_original_save_artifacts_are_held_to_the_source_cap(
    api: docker.APIClient, docker_host: DockerHost, app_tag: str, source: str
) -> None:
    """An original-layout image's /tmp/artifacts, taken out of its stopped container, goes
    through the checks of a source on its way into the next build."""
    save = "#!/bin/sh\nmkdir -p /tmp/artifacts\nhead -c 2097152 /dev/zero > /tmp/artifacts/big\n"
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN, "/usr/bin/save-artifacts": save}
    limits = ExtractLimits(max_total_bytes=1024 * 1024)
    with temporary_image(api, files, name="big-artifacts") as image:
        first, _ = _build_with_limits(docker_host, source, image, app_tag, limits, method="run")
        assert first.success, first.messages
        second, _ = _build_with_limits(docker_host, source, image, app_tag, limits, method="run")
    assert second.error_code == "SaveArtifactsFailed", second.messages
    assert "the artifacts saved from the previous image were refused" in str(second.error)
    assert "over 1048576 bytes (STI_SOURCE_MAX_BYTES)" in str(second.error)


# through the queue: an operator's caps hold for a build's log


@pytest.fixture(scope="module")
def capped_worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StiClient]:
    url = redis_server.url(9)  # a queue of its own, served by this worker only
    logs = tmp_path_factory.mktemp("capped-worker")
    caps = {"STI_LOG_MAX_BYTES": "64K", "STI_LOG_LINE_MAX_BYTES": "1K"}
    worker = Worker(url, "capped-host", logs, **caps)
    client = StiClient(url)
    yield client
    client.close()
    worker.stop()


def test_a_chatty_build_is_logged_up_to_the_workers_caps(
    capped_worker: StiClient, api: docker.APIClient, app_tag: str, source: str
) -> None:
    prepare = (
        "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' l; echo\n"
        "yes 'a line of the build' | head -n 10000\necho 'prepare: done'\n"
    )
    with temporary_image(api, {"/usr/bin/prepare": prepare, "/usr/bin/run": RUN}) as image:
        build_id = capped_worker.submit_build(BuildRequest(source, image, app_tag))
        result = capped_worker.wait(build_id, timeout=120)
    TRACKER.built(result.image_id)
    assert result.success, result.messages  # the build went on after its log was cut
    lines = list(capped_worker.follow(build_id, follow=False))
    assert cut_line("l" * 100_000, 1024) in lines
    assert lines[-1] == (
        "[the log was cut at 65536 bytes (STI_LOG_MAX_BYTES): the build goes on, its later "
        "lines are not kept]"
    )
    assert "prepare: done" not in lines
    assert sum(len(line.encode()) for line in lines[:-1]) <= 65536


# what the engine keeps of build code's output


def _run_in(host: DockerHost, image: str, script: str, lines: list[str]) -> tuple[str, int]:
    """Run script in a container sti makes of image; (the container, left for the caller to
    look at and remove, and the exit code)."""
    build_id = uuid.uuid4().hex
    container = host.create_container(
        image, ["/bin/sh", "-c", script], name=container_name(build_id, "chatty"), build_id=build_id
    )
    try:
        exit_code, _ = host.run_to_completion(container, lines.append)
    except BaseException:
        host.remove_container(container)
        raise
    return container, exit_code


def test_the_engine_keeps_no_copy_of_what_build_code_prints(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    """Every container sti ran (prepare with -m run or the container builder, save-artifacts,
    usage) logged through the engine's default log driver: json-file, unbounded, on the Docker
    host's disk. `yes` wrote 56 MB a second there (30 times its output) until the step's time
    limit, whatever sti kept of it. The engine now keeps nothing (as its own builder does for
    RUN containers); sti reads the output from the container's streams."""
    lines: list[str] = []
    container, exit_code = _run_in(
        docker_host, images["sti-fake"], "yes 'a line' | head -n 20000", lines
    )
    try:
        assert (exit_code, len(lines), lines[-1]) == (0, 20000, "a line")
        with pytest.raises(docker.errors.APIError, match="does not support reading"):
            api.logs(container)
    finally:
        docker_host.remove_container(container)


def test_stdout_and_stderr_lines_stay_apart(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    """Read from the container's streams, a stderr line printed in the middle of a stdout line
    must not join it (a URL cut in two would go unmasked)."""
    script = "printf 'https://ci:s3cret'; echo warning >&2; sleep 0.2; echo '@git.example/x'"
    lines: list[str] = []
    container, exit_code = _run_in(docker_host, images["sti-fake"], script, lines)
    docker_host.remove_container(container)
    assert exit_code == 0
    assert sorted(lines) == ["https://ci:s3cret@git.example/x", "warning"]
    assert redact(lines[lines.index("warning") - 1]) == "https://***@git.example/x"


# archive requests closed however their reader ends


class _Broken(Exception):
    pass


class _FailingTar(tarfile.TarFile):
    """A tar that takes one member and fails on the next, as a consumer fails mid-stream."""

    def __init__(self) -> None:
        super().__init__(fileobj=io.BytesIO(), mode="w")
        self.taken = 0

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: Any = None) -> None:
        self.taken += 1
        if self.taken > 1:
            raise _Broken(tarinfo.name)
        super().addfile(tarinfo, fileobj)


@pytest.fixture
def big_files_image(api: docker.APIClient) -> Iterator[str]:
    lines = ["RUN head -c 40000000 /dev/zero > /data/big", 'CMD ["/bin/sh"]']
    with temporary_image(api, {"/data/small": "small\n"}, lines, name="big-files") as image:
        yield image


def test_runtime_artifacts_let_go_of_the_engine_when_their_reader_fails(
    big_files_image: str,
) -> None:
    """A runtime artifact's stream stayed open when its consumer failed, while the error (and
    the stream, in its traceback) lived on: removing the container then waited for the
    client's timeout (600 s on a worker; 15 s here)."""
    host = DockerHost(timeout=15)
    build_id = uuid.uuid4().hex
    container = host.create_container(
        big_files_image, ["/bin/true"], name=container_name(build_id, "extract"), build_id=build_id
    )
    try:
        [part] = artifact_parts(host, container, [RuntimeArtifact("/data", "")])
        with pytest.raises(_Broken):
            try:
                part(_FailingTar())
            finally:  # as a build's cleanup runs: its error, and what it holds, alive
                host.remove_container(container)
    finally:
        host.remove_container(container)
        host.close()


def test_a_source_script_over_its_cap_fails_the_build_at_once(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """A 6 MB .s2i/bin/assemble (the cap of a script is 4 MiB) was refused while its copy was
    read out of the prepare container, which the cleanup then waited for: the build ended
    InternalError, a ReadTimeout of the engine's client, 600 s later (20 s here)."""
    source = Path(write_source(tmp_path / "src"))
    script = source / ".s2i" / "bin" / "assemble"
    script.parent.mkdir(parents=True)
    script.write_bytes(b"#!/bin/sh\n" + b"#" * 6_000_000 + b"\n")
    script.chmod(0o755)
    host = DockerHost(timeout=20)
    try:
        result, _ = _build_with_limits(
            host, str(source), images["s2i-fake"], app_tag, ExtractLimits(), method="run"
        )
    finally:
        host.close()
    assert result.error_code == "InvalidInput", result.error
    assert result.error and "is larger than 4194304 bytes" in result.error["message"]


# what errors and usage scripts return


def test_an_image_label_of_megabytes_is_not_quoted_whole(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    """validate of an image whose scripts-url label is 2 MB: the refusal quoted the label, and
    the result (kept in Redis for the result expiry, one per validate) held all of it."""
    label = "https://" + "l" * 2_000_000
    container = api.create_container(images["s2i-fake"], ["/bin/true"])
    try:
        tag = f"sti-test/huge-label-{uuid.uuid4().hex[:10]}"
        image = api.commit(
            container, repository=tag, conf={"Labels": {"io.openshift.s2i.scripts-url": label}}
        )["Id"]
    finally:
        api.remove_container(container, force=True)
    try:
        result = run_validate(docker_host, ValidateRequest(tag), lambda line: None, "test")
    finally:
        api.remove_image(image, force=True)
    assert result.error_code == "InvalidImage", result.error
    text = str(result.to_json())
    assert len(text) < 3 * TEXT_MAX_BYTES
    assert result.error and result.error["message"].endswith(
        f"… [line cut at {TEXT_MAX_BYTES} bytes]"
    )


def test_a_usage_script_that_never_ends_is_stopped_at_the_cap(
    api: docker.APIClient, docker_host: DockerHost
) -> None:
    """A usage script printing forever held a worker slot until the step's time limit (this
    one gives up after 30 s, exit 3, a failed result): past STI_USAGE_MAX_BYTES nothing more of
    it is kept, so it is stopped there and what it printed is the result."""
    usage = "#!/bin/sh\nyes 'usage: build me' & sleep 30; kill $!; exit 3\n"
    _assert_cut_at(_usage_of(api, docker_host, usage, 4096), 4096)
