"""Benchmark: sti next to the floors of the same engine, in one run, as one table.

    .venv/bin/python bench/bench.py [--rounds 5] [--cases tiny,56r,56c,500,incr] [--limits default]

Cases: a tiny source (2 files); 56 MB in 2,000 files of random bytes (56r) and of source-like
text (56c); 500 MB in 100 files; and an incremental builder whose prepare spends 5 s making
50 MB of dependencies that save-artifacts keeps (a clean build, then a rebuild). Each is built
by sti through the queue and with --local, with both methods; next to it, the floors on the
same engine: a direct BuildKit build of the Dockerfile sti generates (POST /build?version=2,
the context tar made beforehand) of a changed source and again of the same source (BuildKit
reuses its COPY), the same on the legacy builder, and docker create + cp + start -a + commit.
Variants alternate within each round, each after a sync (untimed, so that none pays for the
writeback of what the one before wrote), in an order shuffled each round (seeded by the round: a
build right after one that wrote and deleted many files is slower, and no variant should always
be the one); the table shows medians. "again" is the same source
submitted a second time, unchanged. Ratios are to the floors of the same run.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import docker
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.busybox_images import build_busybox_image  # noqa: E402
from sti import keys  # noqa: E402
from sti.model import SOURCE_REPOSITORY  # noqa: E402
from sti_worker.engine.sandbox import Sandbox  # noqa: E402
from tests.services import BIN, UNCONFINED, RedisServer, Worker  # noqa: E402

BUILDER = "sti-bench/builder"
INCREMENTAL_BUILDER = "sti-bench/incremental-builder"
PREPARE = '#!/bin/sh\nset -e\necho "prepare: $(find /tmp/src -type f | wc -l) files"\n'
RUN = "#!/bin/sh\nexit 0\n"
INCREMENTAL_PREPARE = """\
#!/bin/sh
set -e
mkdir -p /opt/app
if [ -d /tmp/artifacts/deps ]; then
    cp -R /tmp/artifacts/deps /opt/app/deps
else
    sleep 5
    mkdir -p /opt/app/deps
    dd if=/dev/urandom of=/opt/app/deps/blob bs=1048576 count=50 2>/dev/null
fi
"""
INCREMENTAL_SAVE = "#!/bin/sh\nset -e\ncp -R /opt/app/deps /tmp/artifacts/deps\n"
SHAPES = {"tiny": (0, 2, "code"), "56r": (56, 2000, "random"), "56c": (56, 2000, "code")}
SHAPES |= {"500": (500, 100, "code"), "incr": (0, 2, "code")}
_NO_TRIM = "1024G"  # STI_BUILD_CACHE_KEEP: more than a bench makes
SOURCE_IMAGES_KEEP = 10  # the worker's STI_SOURCE_IMAGES_KEEP (the default)
STI_VARIANTS = [("queue", "build"), ("local", "build"), ("queue", "run"), ("local", "run")]


def make_source(root: Path, case: str) -> Path:
    """random: base64 of random bytes (a worst case for compression); code: lines of random
    identifiers and numbers, which compress like source code (about 3:1)."""
    total_mb, files, kind = SHAPES[case]
    source = root / f"src-{case}"
    per_file = max(total_mb * 1024 * 1024 // files, 64)
    rng = random.Random(case)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12))) for _ in range(500)]
    for index in range(files):
        directory = source / f"pkg{index % 40}" / f"mod{index % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        if kind == "random":
            content = base64.b64encode(os.urandom(per_file * 3 // 4 + 3))[:per_file]
        else:
            content = _code_like(rng, words, per_file)
        (directory / f"file{index}.txt").write_bytes(content)
    return source


def _code_like(rng: random.Random, words: list[str], size: int) -> bytes:
    lines, length = [], 0
    while length < size:
        target, call = rng.choices(words, k=2)
        line = f"    {target} = {call}({rng.randint(0, 99999)}, {rng.choice(words)})\n"
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:size]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB) of the command's process, and its stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed: {out[-500:]!r}")
    return elapsed, usage.ru_maxrss, out.decode()


# the floors


def context_tar(source: Path, scratch: Path) -> Path:
    """The context sti would send: its Dockerfile first, then the source under src/."""
    dockerfile = (
        f"FROM {BUILDER}\nCOPY src /tmp/src\nARG STI_BUILD_ID\n"
        'RUN ["/usr/bin/prepare"]\nLABEL io.sti.build-id=bench\nCMD ["/usr/bin/run"]\n'
    ).encode()
    path = scratch / f"context-{source.name}.tar"
    (scratch / "Dockerfile").write_bytes(dockerfile)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(str(scratch / "Dockerfile"), arcname="Dockerfile")
        tar.add(str(source), arcname="src")
    return path


def direct_build(api: docker.APIClient, context: Path, version: str) -> float:
    params = {"version": version, "buildargs": json.dumps({"STI_BUILD_ID": uuid.uuid4().hex})}
    if version == "1":
        params |= {"nocache": True, "rm": True, "forcerm": True}
    started = time.perf_counter()
    with context.open("rb") as body:
        response = api._post(
            api._url("/build"),
            data=body,
            params=params,
            headers={"Content-Type": "application/tar"},
            stream=True,
            timeout=None,
        )
        image = None
        for event in api._stream_helper(response, decode=True):
            if "error" in event:
                raise RuntimeError(event["error"])
            aux = event.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image = aux["ID"]
    elapsed = time.perf_counter() - started
    if image:
        api.remove_image(image, force=True)
    return elapsed


def create_cp_commit(source: Path) -> float:
    def docker_cli(*args: str) -> str:
        return subprocess.run(
            ["docker", *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    started = time.perf_counter()
    container = docker_cli("create", BUILDER, "/usr/bin/prepare")
    docker_cli("cp", str(source), f"{container}:/tmp/src")
    docker_cli("start", "-a", container)
    image = docker_cli("commit", "--change", 'CMD ["/usr/bin/run"]', container)
    elapsed = time.perf_counter() - started
    docker_cli("rm", "-f", container)
    docker_cli("rmi", "-f", image)
    return elapsed


def warm_create_put_commit(
    api: docker.APIClient, context: Path, host_config: dict[str, object]
) -> float:
    """The container path's floor in a warm process, through the same client sti uses: create
    (under the build limits sti would set), put the context tar at /tmp, start, wait, commit."""
    started = time.perf_counter()
    container = api.create_container(
        BUILDER, ["/usr/bin/prepare"], host_config=api.create_host_config(**host_config)
    )["Id"]
    with context.open("rb") as body:
        api.put_archive(container, "/tmp", body)
    api.start(container)
    api.wait(container)
    image = api.commit(container, changes='CMD ["/usr/bin/run"]')["Id"]
    elapsed = time.perf_counter() - started
    api.remove_container(container, force=True)
    api.remove_image(image, force=True)
    return elapsed


# sti


class Sti:
    def __init__(self, env: dict[str, str], api: docker.APIClient) -> None:
        self.env = env
        self.api = api
        self.redis = redis.Redis.from_url(env["STI_BROKER_URL"])
        self.client_rss_kib = 0
        self.client_seconds: list[float] = []
        self.steps: list[dict] = []  # of each queue build: where its time went, for --samples

    def build(
        self, source: Path, builder: str, tag: str, mode: str, method: str, *extra: str
    ) -> dict:
        command = [str(BIN / "sti-submit"), "build", str(source), builder, tag, "-q", "--json"]
        command += ["-m", method, *extra]
        if mode == "local":
            command.append("--local")
        started_ms = int(time.time() * 1000)
        elapsed, rss, out = timed(command, self.env)
        result = json.loads(out.strip().splitlines()[-1])
        if not result["success"]:
            raise RuntimeError(f"{command}: {result['messages']}")
        result["wall_s"] = elapsed
        if mode == "queue":
            self.client_rss_kib = max(self.client_rss_kib, rss)
            self.client_seconds.append(elapsed - result["duration_s"])
            steps = {step["name"]: step["duration_s"] for step in result["steps"]}
            self.steps.append(
                {"app_tag": tag, "method": method, "options": extra, "wall_s": elapsed, **steps}
                | {"started_ms": started_ms, "log": self._timed_log(result["build_id"])}
            )
            self._wait_for_housekeeping()
        return result

    def _timed_log(self, build_id: str) -> list[tuple[int, str]]:
        """The build's log lines, each with the millisecond its stream entry was added."""
        entries = self.redis.xrange(keys.log_stream(build_id))
        return [
            (int(entry_id.split(b"-")[0]), fields.get(b"line", b"").decode(errors="replace"))
            for entry_id, fields in entries
        ]

    def _wait_for_housekeeping(self) -> None:
        """Until the worker has removed the source images beyond its limit, after the result
        (untimed, as the build cache's pruning): while the engine deletes an image's layers it
        holds every image request, and the next build measured, sti's or a floor's, would pay
        for the removal. The image list is one of those requests: once it shows no more than
        the limit, the removal is over."""
        deadline = time.monotonic() + 120
        while len(made := self.api.images(name=SOURCE_REPOSITORY)) > SOURCE_IMAGES_KEEP + len(
            _bases(made)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker kept more source images than its limit")
            time.sleep(0.05)


def _bases(source_images: list[dict]) -> set[str]:
    """Those another source image was made of (a delta's changes laid over it): the worker
    keeps them beyond its limit while that one is kept."""
    ids = {image["Id"] for image in source_images}
    return {image["ParentId"] for image in source_images if image.get("ParentId") in ids}


def worker_rss_kib(worker: Worker, field: str) -> int:
    """Largest VmRSS or VmHWM among the worker's processes (sti-worker, celery, pool)."""
    peak = 0
    pids = [worker.process.pid]
    for pid in pids:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(child) for child in children.read_text().split()]
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith(f"{field}:"):
                    peak = max(peak, int(line.split()[1]))
    return peak


def touch(source: Path) -> None:
    """A change to one file, so the next submission is a new source, not an unchanged one."""
    first = sorted(source.rglob("*.txt"))[0]
    first.write_bytes(first.read_bytes()[:-8] + uuid.uuid4().hex[:8].encode())


def app_tag(case: str, mode: str, method: str) -> str:
    """Each variant rebuilds a tag of its own, as a user rebuilding an app does: the image its
    tag named before (which sti removes) is then one it made, not another variant's."""
    return f"sti-bench/app-{case}-{mode}-{method}"


def run_case(
    case: str,
    source: Path,
    scratch: Path,
    api: docker.APIClient,
    sti: Sti,
    round_number: int,
    host_config: dict[str, object],
) -> dict:
    """One round of one case: every variant once, in an order of its own (shuffled, the same
    for the same round number: a build just after one that wrote and deleted many files runs
    slower, and no variant should always be the one); returns name -> seconds."""
    times: dict[str, float] = {}
    if case == "incr":
        for mode, method in STI_VARIANTS:
            tag = app_tag(case, mode, method)
            os.sync()
            clean = sti.build(source, INCREMENTAL_BUILDER, tag, mode, method, "--clean")
            os.sync()
            rebuild = sti.build(source, INCREMENTAL_BUILDER, tag, mode, method)
            assert rebuild["incremental"], rebuild
            times[f"{mode} {method} clean"] = clean["wall_s"]
            times[f"{mode} {method} incremental"] = rebuild["wall_s"]
        return times
    context = scratch / "none-yet"

    def changed_context() -> Path:
        """As sti's "first": a source changed since the last build (the tar made untimed)."""
        nonlocal context
        touch(source)
        context = context_tar(source, scratch)
        return context

    # each unit runs as a whole: "again" is the same source right after its first build
    units: list[list[tuple[str, Callable[[], float]]]] = [
        [
            ("buildkit direct", lambda: direct_build(api, changed_context(), "2")),
            ("buildkit direct again", lambda: direct_build(api, context, "2")),
        ],
        [("legacy direct", lambda: direct_build(api, changed_context(), "1"))],
        [("create+cp+commit", lambda: create_cp_commit(source))],
        [
            (
                "warm create+put+commit",
                lambda: warm_create_put_commit(api, context_tar(source, scratch), host_config),
            )
        ],
    ]
    for mode, method in STI_VARIANTS:
        tag = app_tag(case, mode, method)

        def sti_build(mode: str = mode, method: str = method, tag: str = tag) -> float:
            touch(source)
            return float(sti.build(source, BUILDER, tag, mode, method, "--clean")["wall_s"])

        unit = [(f"{mode} {method}", sti_build)]
        if mode == "queue":
            unit.append(
                (
                    f"{mode} {method} again",
                    lambda m=method, t=tag: sti.build(source, BUILDER, t, "queue", m, "--clean")[
                        "wall_s"
                    ],
                )
            )
        units.append(unit)
    random.Random(round_number).shuffle(units)
    for unit in units:
        for name, step in unit:
            os.sync()  # untimed: no step pays for the writeback of what the one before wrote
            times[name] = step()
    return times


def timeline(steps: list[dict], worker_log: str) -> list[str]:
    """The last tiny --clean queue build of method build, from the client's start to its end:
    the build log's lines (as Redis stamped them) and every Engine API call the worker made
    meanwhile (STI_TRACE_ENGINE_CALLS: logged when the response headers came, "took" before),
    in milliseconds from the client's start."""
    tiny = [
        step
        for step in steps
        if step["app_tag"] == app_tag("tiny", "queue", "build") and step["method"] == "build"
    ]
    if not tiny:
        return []
    build = tiny[-1]
    start_ms = build["started_ms"]
    end_ms = start_ms + build["wall_s"] * 1000
    events: list[tuple[float, str, str]] = [(0.0, "", "sti-submit starts")]
    events += [(ms - start_ms, "", f"log: {line}") for ms, line in build["log"]]
    for raw in worker_log.splitlines():
        if '"engine call"' not in raw:
            continue
        call = json.loads(raw)
        stamp = datetime.fromisoformat(call["timestamp"].replace("Z", "+00:00"))
        done_ms = stamp.timestamp() * 1000
        if start_ms <= done_ms - call["ms"] and done_ms <= end_ms:
            began = done_ms - call["ms"] - start_ms
            events.append((began, f"{call['ms']:.1f}", f"{call['method']} {call['path']}"))
    events.append((end_ms - start_ms, "", "sti-submit has the result"))
    lines = [
        "timeline of the last tiny queue build (-m build, --clean), ms from sti-submit's start:",
        "",
        "| at ms | took ms | what |",
        "|---|---|---|",
    ]
    lines += [f"| {at:.0f} | {took} | {what} |" for at, took, what in sorted(events)]
    return lines


def table(medians: dict[str, dict[str, float]]) -> str:
    columns = [
        "buildkit direct",
        "buildkit direct again",
        "legacy direct",
        "create+cp+commit",
        "warm create+put+commit",
        "queue build",
        "queue build again",
        "local build",
        "queue run",
        "queue run again",
        "local run",
    ]
    ratios = [
        "queue build / buildkit",
        "queue build - buildkit",
        "queue build - warm floor",
        "again / buildkit again",
    ]
    lines = [
        "| case | " + " | ".join(columns + ratios) + " |",
        "|---" * (len(columns) + len(ratios) + 1) + "|",
    ]
    for case, row in medians.items():
        if case == "incr":
            continue
        cells = [f"{row[c]:.2f}" if c in row else "" for c in columns]
        ratio = row["queue build"] / row["buildkit direct"]
        delta = row["queue build"] - row["buildkit direct"]
        over_floor = row["queue build"] - row["warm create+put+commit"]
        again = row["queue build again"] / row["buildkit direct again"]
        cells += [f"{ratio:.2f}x", f"{delta:+.2f} s", f"{over_floor:+.2f} s", f"{again:.2f}x"]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    if "incr" in medians:
        row = medians["incr"]
        lines += ["", "| incremental builder | clean s | incremental s | incremental / clean |"]
        lines.append("|---|---|---|---|")
        for mode, method in STI_VARIANTS:
            clean = row[f"{mode} {method} clean"]
            incremental = row[f"{mode} {method} incremental"]
            lines.append(
                f"| {mode} {method} | {clean:.2f} | {incremental:.2f} | "
                f"{incremental / clean:.2f}x |"
            )
    return "\n".join(lines)


def compile_bytecode() -> None:
    """What `pip install` does: an editable install run with PYTHONDONTWRITEBYTECODE (as here)
    would otherwise compile every module of the CLI on every run, 60 ms of a submit."""
    for package in ("sti", "sti_submit", "sti_worker"):
        compileall.compile_dir(ROOT / package, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default="tiny,56r,56c,500,incr")
    parser.add_argument(
        "--samples",
        type=Path,
        help="also write every sample (case -> variant -> seconds) and the steps of each queue "
        "build here",
    )
    parser.add_argument(
        "--limits",
        choices=("lifted", "default"),
        default="lifted",
        help="the worker's and --local's build limits: lifted (-m build on BuildKit) or the "
        "defaults users get (-m build runs prepare in a container)",
    )
    args = parser.parse_args()
    cases = args.cases.split(",")
    limits = UNCONFINED if args.limits == "lifted" else {}
    sandbox = Sandbox.engine_defaults() if args.limits == "lifted" else Sandbox()
    host_config = sandbox.host_config()  # the warm floor's container, held as sti's are
    compile_bytecode()
    api = docker.APIClient(version="auto")
    build_busybox_image(api, BUILDER, {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN})
    build_busybox_image(
        api,
        INCREMENTAL_BUILDER,
        {
            "/usr/bin/prepare": INCREMENTAL_PREPARE,
            "/usr/bin/run": RUN,
            "/usr/bin/save-artifacts": INCREMENTAL_SAVE,
        },
    )
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="sti-bench-") as scratch:
        work = Path(scratch)
        redis_server = RedisServer(work)
        # --limits lifted (the default here): -m build runs on BuildKit; with the default
        # limits it runs prepare in a container, as -m run does (see prepare_ways). The
        # build cache is emptied before each round, untimed, instead of the worker's trims:
        # a trim would also delete what the direct builds left, at sti's expense
        worker = Worker(
            redis_server.url(),
            "bench",
            work,
            concurrency=1,
            STI_BUILD_CACHE_KEEP=_NO_TRIM,
            STI_SOURCE_IMAGES_KEEP=str(SOURCE_IMAGES_KEEP),
            STI_TRACE_ENGINE_CALLS="1",  # for the timeline; a log line a call, ~0.1 ms
            **limits,
        )
        idle_kib = worker_rss_kib(worker, "VmRSS")
        env = dict(
            os.environ,
            STI_BROKER_URL=redis_server.url(),
            STI_UPLOAD_MAX_BYTES=str(2 * 1024**3),
            **limits,
        )
        sti = Sti(env, api)
        try:
            sources = {case: make_source(work, case) for case in cases}
            for round_number in range(args.rounds):
                api.prune_builds(all=True)
                for case in cases:
                    times = run_case(case, sources[case], work, api, sti, round_number, host_config)
                    for name, seconds in times.items():
                        samples[case][name].append(seconds)
                print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
            peak_kib = worker_rss_kib(worker, "VmHWM")
            timeline_lines = timeline(sti.steps, worker.log()) if "tiny" in cases else []
        finally:
            worker.stop()
            redis_server.stop()
            for case in cases:
                for mode, method in STI_VARIANTS:
                    subprocess.run(
                        ["docker", "rmi", "-f", app_tag(case, mode, method)],
                        check=False,
                        capture_output=True,
                    )
    if args.samples:
        written = {"samples": samples, "queue build steps": sti.steps}
        args.samples.write_text(json.dumps(written, indent=1) + "\n")
    medians = {
        case: {name: statistics.median(values) for name, values in row.items()}
        for case, row in samples.items()
    }
    engine = api.version()
    print(
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Docker {engine['Version']} "
        f"({api.info().get('Driver')}), build limits {args.limits}, {args.rounds} rounds, "
        "medians in seconds\n"
    )
    print(table(medians))
    if timeline_lines:
        print("\n" + "\n".join(timeline_lines))
    client = statistics.median(sti.client_seconds) if sti.client_seconds else 0.0
    print(
        f"\nclient share of a queue build (its wall time minus the build's duration): "
        f"{client:.2f} s median; client peak RSS {sti.client_rss_kib / 1024:.0f} MiB; "
        f"worker idle RSS {idle_kib / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
