"""A source URL with credentials (`https://user:token@host/...`): the worker uses them, and
neither the CLI's output, the result object, `sti-submit logs` nor the worker's log shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.queue_helpers import json_result, make_source, sti_submit, tar_gz_of
from tests.services import Worker

SECRET = "tok3n-s3cret"


@pytest.mark.parametrize("exists", [True, False], ids=["fetched", "missing"])
def test_credentials_in_a_source_url_are_shown_nowhere(
    worker: Worker,
    broker_url: str,
    images: dict[str, str],
    app_tag: str,
    http_server: tuple[str, Path],
    tmp_path: Path,
    exists: bool,
) -> None:
    base, root = http_server
    if exists:
        (root / "app.tar.gz").write_bytes(tar_gz_of(make_source(tmp_path)))
    url = base.replace("http://", f"http://builder:{SECRET}@") + "/app.tar.gz"
    done = sti_submit("build", url, images["sti-fake"], app_tag, "--broker", broker_url, "--json")
    result = json_result(done)
    assert result["success"] is exists, result
    logs = sti_submit("logs", result["build_id"], "--broker", broker_url)
    assert logs.returncode == 0
    shown = {
        "CLI output": done.stdout + done.stderr,
        "sti-submit logs": logs.stdout + logs.stderr,
        "worker log": worker.log(),
    }
    assert {where: SECRET in text for where, text in shown.items()} == dict.fromkeys(shown, False)
    assert "builder:" not in done.stdout
