"""Benchmark: building large sources through the queue, next to baselines run in the same run.

    .venv/bin/python bench/sources.py [--sizes 56,500] [--kind code|random]

For each source (56 MB in 2,000 files; 500 MB in 100 files) it times, and reports the peak RSS
of: tar | gzip -1 of the directory and a direct docker build of it (the baselines), sti-submit
--local, and sti-submit through the queue (client upload + worker build), first submission and
a resubmission of the same content. Ratios are to the baselines of the same run.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import resource
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sti_worker.busybox_images import build_busybox_image  # noqa: E402
from tests.services import BIN, RedisServer, Worker  # noqa: E402

BUILDER = "sti-bench/builder"
PREPARE = '#!/bin/sh\nset -e\necho "prepare: $(find /tmp/src -type f | wc -l) files"\n'
RUN = "#!/bin/sh\nexit 0\n"


def make_source(root: Path, total_mb: int, files: int, kind: str) -> Path:
    """kind "code": lines of random identifiers and numbers, which compress like source code
    (about 3:1); kind "random": base64 of random bytes, a worst case for compression."""
    source = root / f"src-{total_mb}mb-{kind}"
    per_file = total_mb * 1024 * 1024 // files
    rng = random.Random(total_mb)
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12))) for _ in range(5000)
    ]
    for index in range(files):
        directory = source / f"pkg{index % 40}" / f"mod{index % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        if kind == "random":
            content = base64.b64encode(os.urandom(per_file * 3 // 4))[:per_file]
        else:
            content = _code_like(rng, words, per_file)
        (directory / f"file{index}.txt").write_bytes(content)
    return source


def _code_like(rng: random.Random, words: list[str], size: int) -> bytes:
    lines: list[str] = []
    length = 0
    while length < size:
        target, call = rng.choices(words, k=2)
        line = f"    {target} = {call}({rng.randint(0, 99999)}, {rng.choice(words)})\n"
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:size]


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB) of the command's own process tree, and its stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {out[-500:]!r}")
    return elapsed, usage.ru_maxrss, out.decode()


def tar_baseline(source: Path) -> tuple[float, int]:
    elapsed, rss, _ = timed(["sh", "-c", f"tar cf - -C {source} . | gzip -1 > /dev/null"])
    return elapsed, rss


def docker_build_baseline(api: docker.APIClient, source: Path) -> float:
    """docker build of FROM builder + COPY . /tmp/src, with the context streamed from tar."""
    dockerfile = f'FROM {BUILDER}\nCOPY . /tmp/src\nRUN ["/usr/bin/prepare"]\n'.encode()
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
            tar.add(str(source), arcname=".")
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as context:
        image = None
        for event in api.build(
            fileobj=context, custom_context=True, rm=True, nocache=True, decode=True
        ):
            if "error" in event:
                raise RuntimeError(event["error"])
            image = event.get("aux", {}).get("ID", image)
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if image:
        api.remove_image(image, force=True)
    return elapsed


def worker_peak_rss_kib(worker: Worker) -> int:
    """Largest VmHWM among the worker's processes (sti-worker, celery main, pool children)."""
    peak = 0
    pids = [worker.process.pid]
    for pid in pids:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(child) for child in children.read_text().split()]
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="56,500", help="MB sizes to run (56 and/or 500)")
    parser.add_argument("--kind", choices=["code", "random"], default="code")
    parser.add_argument("--method", choices=["build", "run"], default="build")
    args = parser.parse_args()
    api = docker.APIClient(version="auto")
    build_busybox_image(api, BUILDER, {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN})
    shapes = {56: 2000, 500: 100}
    rows = []
    with tempfile.TemporaryDirectory(prefix="sti-bench-") as scratch:
        work = Path(scratch)
        redis_server = RedisServer(work)
        worker = Worker(redis_server.url(), "bench", work, concurrency=1)
        env = dict(
            os.environ, STI_BROKER_URL=redis_server.url(), STI_UPLOAD_MAX_BYTES=str(2 * 1024**3)
        )
        try:
            for size in [int(s) for s in args.sizes.split(",")]:
                source = make_source(work, size, shapes.get(size, 1000), args.kind)
                tar_s, tar_rss = tar_baseline(source)
                docker_s = docker_build_baseline(api, source)
                submit = [
                    str(BIN / "sti-submit"),
                    "build",
                    str(source),
                    BUILDER,
                    f"sti-bench/app-{size}",
                    "-q",
                    "--json",
                    "--method",
                    args.method,
                ]
                local_s, local_rss, _ = timed([*submit, "--local"], env)
                queue_s, queue_rss, out = timed(submit, env)
                again_s, again_rss, again_out = timed(submit, env)
                result = json.loads(out.strip().splitlines()[-1])
                again = json.loads(again_out.strip().splitlines()[-1])
                steps = {step["name"]: step["duration_s"] for step in result["steps"]}
                rows.append(
                    {
                        "source": f"{size} MB / {shapes.get(size, 1000)} files, {args.kind}",
                        "method": args.method,
                        "tar|gzip -1 s": round(tar_s, 2),
                        "docker build s": round(docker_s, 2),
                        "sti --local s": round(local_s, 2),
                        "sti queue s": round(queue_s, 2),
                        "sti queue again s": round(again_s, 2),
                        "queue/tar": round(queue_s / tar_s, 2),
                        "queue/docker build": round(queue_s / docker_s, 2),
                        "client share of queue s": round(queue_s - result["duration_s"], 2),
                        "client share of again s": round(again_s - again["duration_s"], 2),
                        "worker fetch s": steps.get("fetch_source"),
                        "worker build s": steps.get("build"),
                        "client peak RSS MiB": round(max(queue_rss, again_rss) / 1024, 1),
                        "--local peak RSS MiB": round(local_rss / 1024, 1),
                        "tar peak RSS MiB": round(tar_rss / 1024, 1),
                        "worker peak RSS MiB": round(worker_peak_rss_kib(worker) / 1024, 1),
                    }
                )
                api.remove_image(f"sti-bench/app-{size}", force=True)
        finally:
            worker.stop()
            redis_server.stop()
    for row in rows:
        print(json.dumps(row, indent=1))
    own_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of this process: {own_peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
