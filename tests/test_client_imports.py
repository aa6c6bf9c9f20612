"""The laptop side stays light: submitting imports neither docker-py nor GitPython."""

from __future__ import annotations

import json
import subprocess
import sys

WORKER_ONLY = ("docker", "git", "sti_worker.engine.docker_host", "sti_worker.engine.sources")


def test_submitting_imports_no_worker_only_module() -> None:
    code = (
        "import json, sys\n"
        "import sti_submit.cli, sti_submit.client, sti_submit.upload\n"
        f"print(json.dumps([m for m in {WORKER_ONLY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
