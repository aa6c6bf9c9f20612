"""A directory submitted again after an edit goes as a delta against its last whole upload, and
the build through the queue sees the tree a whole upload gives; when that upload is no longer
stored, the same command sends the directory whole and the build succeeds all the same."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
import redis

from sti import keys
from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.dockertools import Entry, image_tree
from tests.queue_helpers import sti_submit
from tests.unit.deltas_helpers import edit_everything, make_tree

OVER_ITS_BASE = "go into the build over their base"


def _build(
    api: docker.APIClient, broker_url: str, root: Path, image: str, tag: str, cache: Path
) -> tuple[dict[str, Entry], str]:
    """sti-submit build, as a user runs it (with a cache dir of its own): the tree prepare
    copied out of /tmp/src, and the build's log lines (on stderr)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    done = sti_submit("build", str(root), image, tag, "--broker", broker_url, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return image_tree(api, tag, "/sti-fake/src"), done.stderr


@pytest.mark.usefixtures("worker")
def test_an_edited_directory_builds_from_its_delta_the_tree_of_a_whole_upload(
    api: docker.APIClient, broker_url: str, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "app")
    cache = tmp_path / "cache"
    _, first_log = _build(api, broker_url, root, images["sti-fake"], app_tag, cache)
    assert OVER_ITS_BASE not in first_log
    edit_everything(root)
    from_delta, delta_log = _build(api, broker_url, root, images["sti-fake"], app_tag, cache)
    assert OVER_ITS_BASE in delta_log
    whole, whole_log = _build(
        api, broker_url, root, images["sti-fake"], app_tag, tmp_path / "other"
    )
    assert OVER_ITS_BASE not in whole_log
    assert from_delta == whole
    assert "old" not in from_delta and from_delta["to-file"].kind == "file"
    assert not [name for name in from_delta if ".git" in name]


@pytest.mark.usefixtures("worker")
def test_the_whole_directory_goes_in_the_same_command_when_its_base_is_gone(
    api: docker.APIClient,
    broker_url: str,
    client: StiClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_tree(tmp_path / "app")
    said: list[str] = []
    request = BuildRequest(str(root), images["sti-fake"], app_tag)
    first = client.wait(client.submit_build(request, said.append), timeout=120)
    assert first.success, first.messages
    (base,) = [line.split(" as ")[-1] for line in said if line.startswith("Uploaded ")]
    redis.Redis.from_url(broker_url).delete(keys.blob_meta(base))  # expired, or evicted
    edit_everything(root)
    said.clear()
    request = BuildRequest(str(root), images["sti-fake"], app_tag)
    again = client.wait(client.submit_build(request, said.append), timeout=120)
    assert again.success, again.messages
    assert said and said[0].startswith(f"Uploaded {root} (") and "changes" not in said[0]
    tree = image_tree(api, app_tag, "/sti-fake/src")
    assert tree["app.py"] == Entry("file", b"print('app, edited')\n", mode=0o100644)
    assert "old" not in tree
