"""The direction of imports: the core (sti) imports neither side, the laptop side (sti_submit)
imports no worker module, so `pip install sti` on a laptop has no docker-py, GitPython, Celery or
redis-py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.queue_helpers import json_result, make_source, sti_submit
from tests.services import Worker

ROOT = Path(__file__).resolve().parent.parent
WORKER_SIDE = ("sti_worker", "docker", "git", "structlog", "celery", "kombu", "redis")
LAPTOP_SITE = Path(__file__).parent / "laptop_site"
# the one way in from the laptop side: `sti-submit --local` runs the engine in-process
LAZY_WORKER_IMPORTS = {("sti_submit/cli.py", "_local_engine")}


def _imports(path: Path) -> Iterator[tuple[str, str | None]]:
    """(imported module, enclosing function or None) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    for function, node in _walk(tree, None):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, function


def _walk(node: ast.AST, function: str | None) -> Iterator[tuple[str | None, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        if _for_type_checkers_only(child):
            continue
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else None
        yield function, child
        yield from _walk(child, inner or function)


def _for_type_checkers_only(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def _offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for module, function in _imports(path):
            if module.split(".")[0] not in forbidden:
                continue
            if (relative, function) not in LAZY_WORKER_IMPORTS:
                found.append(f"{relative}: {module} (in {function or 'module'})")
    return found


def test_the_core_imports_neither_side_nor_the_worker_libraries() -> None:
    assert _offending("sti", ("sti_submit", *WORKER_SIDE)) == []


def test_the_laptop_side_imports_no_worker_module() -> None:
    assert _offending("sti_submit", WORKER_SIDE) == []


def test_the_public_api_loads_no_worker_module() -> None:
    code = (
        "import json, sys\n"
        "import sti_submit.cli, sti_submit.client, sti_submit.upload\n"
        "from sti_submit import BuildRequest, ExitCode, Result, StiClient, StiError\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {WORKER_SIDE!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def _laptop_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(LAPTOP_SITE)}


def test_a_laptop_install_submits_a_build_and_says_what_local_needs(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    laptop = _laptop_env()
    check = subprocess.run(
        [sys.executable, "-c", "import docker"], env=laptop, capture_output=True, text=True
    )
    assert "No module named 'docker'" in check.stderr

    source = make_source(tmp_path)
    done = sti_submit(
        "build",
        str(source),
        images["sti-fake"],
        app_tag,
        "--broker",
        broker_url,
        "--json",
        env=laptop,
    )
    assert done.returncode == 0, done.stderr
    assert json_result(done)["success"] is True

    local = sti_submit(
        "build", str(source), images["sti-fake"], app_tag, "--local", "--json", env=laptop
    )
    assert local.returncode == 2
    assert "pip install 'sti[worker]'" in local.stdout + local.stderr


@pytest.mark.parametrize("package", ["sti", "sti_submit", "sti_worker"])
def test_every_module_has_a_docstring(package: str) -> None:
    missing = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []
