"""A directory submitted again after an edit is sent as a delta against its last whole upload:
the changed and added entries and the removed paths. The worker lays it over the base and
streams the very tree a whole upload of the edited directory gives; when the base is no longer
stored, or the changes are large, the directory goes whole."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import redis

from sti import keys
from sti.blobstore import BlobStore
from sti.tarstreams import stream_tar
from sti.upload_refs import UploadRef
from sti_submit.manifests import ManifestCache, cache_root
from sti_submit.upload import SourceUpload, Uploaded
from sti_worker.engine.sources import SourcePolicy
from sti_worker.uploads import layers
from tests.unit.deltas_helpers import (
    Member,
    edit_everything,
    edit_removing_nothing,
    make_tree,
    settle,
    streamed_tree,
    submit,
    tree_of,
)

BROKER = "redis://build-queue:6379/0"


@pytest.fixture
def store(redis_client: redis.Redis) -> BlobStore:
    return BlobStore(redis_client, expires_s=600, max_bytes=64 * 1024 * 1024)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _cache(root: Path, cache_dir: Path) -> ManifestCache:
    return ManifestCache(root, BROKER, cache_dir)


def _uploaded(store: BlobStore, tmp_path: Path, cache_dir: Path) -> tuple[Path, Uploaded]:
    """A fresh source, uploaded whole once (and recorded)."""
    root = make_tree(tmp_path / "app")
    return root, submit(store, root, _cache(root, cache_dir))


def _write(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text)
    settle(root)


def _whole_tree(store: BlobStore, root: Path, context_dir: str | None = None) -> dict:
    return streamed_tree(store, str(submit(store, root, None).ref), context_dir)


def test_a_delta_gives_the_tree_a_whole_upload_gives(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, first = _uploaded(store, tmp_path, cache_dir)
    assert first.ref.kind == "dir"
    edit_everything(root)
    upload = SourceUpload(store, root, history=_cache(root, cache_dir))
    assert upload.delta and not upload.streams
    assert set(upload.delta.changed) == {
        "app.py", "run.sh", "added.txt", "lib", "lib/deep/renamed.txt", "fresh", "fresh/nested",
        "fresh/nested/n.txt", "to-file", "to-dir", "to-dir/x.txt", "link", "dirlink",
    }  # fmt: skip
    # not to-file/inner.txt: what was below a path that is now a file goes with it
    assert upload.delta.removed == ("emptied/one.txt", "lib/deep/leaf.txt", "old")
    second = upload.send()
    assert second.ref.kind == "delta" and second.ref.name == first.ref.blob
    delta_tree = streamed_tree(store, str(second.ref))
    whole_tree = _whole_tree(store, root)
    assert delta_tree == whole_tree
    assert "src/old" not in delta_tree and "src/emptied" in delta_tree
    assert delta_tree["src/to-file"][0] == "f" and delta_tree["src/to-dir/x.txt"][0] == "f"
    assert delta_tree["src/link"] == ("l", 0o777, 0, b"run.sh")
    assert stat.S_IMODE(delta_tree["src/run.sh"][1]) == 0o700 & 0o755
    assert not any(".git" in name for name in delta_tree)


@pytest.mark.parametrize("context_dir", [None, "lib"])
def test_changes_that_remove_nothing_are_a_layer_that_makes_the_base_the_whole_tree(
    store: BlobStore, tmp_path: Path, cache_dir: Path, context_dir: str | None
) -> None:
    """The layer holds the changed entries and the directories above them (their modes and
    times as a whole copy sets them); put over the base's copy as an engine puts an archive
    (an entry replaces what is at its path, but a directory over a directory), it is the tree
    of a whole upload."""
    root, first = _uploaded(store, tmp_path, cache_dir)
    edit_removing_nothing(root)
    sent = submit(store, root, _cache(root, cache_dir))
    found = layers(lambda: store)(str(sent.ref), context_dir, SourcePolicy())
    assert found and found[0] == str(first.ref)
    layer = tree_of(b"".join(stream_tar([found[1]])))
    if context_dir is None:
        assert "src/static/big.css" not in layer and "src/lib/util.py" not in layer
        assert layer["src/lib"][0] == "d" and layer["src/fresh/nested/n.txt"][0] == "f"
    base = streamed_tree(store, str(first.ref), context_dir)
    assert _put_over(base, layer) == _whole_tree(store, root, context_dir)


def test_changes_that_remove_paths_are_no_layer(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, _ = _uploaded(store, tmp_path, cache_dir)
    edit_everything(root)
    sent = submit(store, root, _cache(root, cache_dir))
    assert sent.ref.kind == "delta"
    assert layers(lambda: store)(str(sent.ref), None, SourcePolicy()) is None
    assert (
        layers(lambda: store)(
            str(_uploaded(store, tmp_path / "b", cache_dir)[1].ref), None, SourcePolicy()
        )
        is None
    )


def _put_over(tree: dict[str, Member], layer: dict[str, Member]) -> dict[str, Member]:
    """What an engine's archive put makes of tree with layer (in its order)."""
    made = dict(tree)
    for name, member in layer.items():
        if name in made and not (made[name][0] == member[0] == "d"):
            for below in [n for n in made if n == name or n.startswith(f"{name}/")]:
                del made[below]
        made[name] = member
    return made


def test_a_delta_with_a_context_dir_gives_that_part_of_the_tree(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, _ = _uploaded(store, tmp_path, cache_dir)
    edit_everything(root)
    second = submit(store, root, _cache(root, cache_dir))
    assert second.ref.kind == "delta"
    assert streamed_tree(store, str(second.ref), "lib") == _whole_tree(store, root, "lib")


def test_each_delta_is_against_the_last_whole_upload(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, first = _uploaded(store, tmp_path, cache_dir)
    _write(root, "app.py", "print(1)\n")
    second = submit(store, root, _cache(root, cache_dir))
    _write(root, "added.txt", "more\n")
    third = submit(store, root, _cache(root, cache_dir))
    assert second.ref.name == third.ref.name == first.ref.blob
    assert streamed_tree(store, str(third.ref)) == _whole_tree(store, root)


def test_a_directory_unchanged_since_its_delta_sends_nothing(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, _ = _uploaded(store, tmp_path, cache_dir)
    _write(root, "app.py", "print(2)\n")
    sent = submit(store, root, _cache(root, cache_dir))
    again = submit(store, root, _cache(root, cache_dir))
    assert sent.sent and sent.ref.kind == "delta"
    assert not again.sent and again.ref == sent.ref


def test_the_whole_directory_goes_when_its_base_is_no_longer_stored(
    redis_client: redis.Redis, store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, first = _uploaded(store, tmp_path, cache_dir)
    redis_client.delete(keys.blob_meta(first.ref.blob))  # expired, or evicted
    edit_everything(root)
    upload = SourceUpload(store, root, history=_cache(root, cache_dir))
    assert upload.delta is None and upload.ref.kind == "dir" and upload.streams
    upload.open()
    second = upload.send()
    assert second.ref.kind == "dir"
    assert streamed_tree(store, str(second.ref)) == _whole_tree(store, root)
    # and it is the base from now on
    _write(root, "app.py", "print(3)\n")
    assert submit(store, root, _cache(root, cache_dir)).ref.name == second.ref.blob


def test_changes_larger_than_half_the_base_go_whole(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, _ = _uploaded(store, tmp_path, cache_dir)
    _write(root, "static/big.css", "p { margin: 1px }\n" * 8000)
    assert submit(store, root, _cache(root, cache_dir)).ref.kind == "dir"


def test_a_newly_excluded_file_is_removed_by_the_delta(
    store: BlobStore, tmp_path: Path, cache_dir: Path
) -> None:
    root, _ = _uploaded(store, tmp_path, cache_dir)
    _write(root, ".stiignore", "lib/deep/\n")
    upload = SourceUpload(store, root, history=_cache(root, cache_dir))
    assert upload.delta and upload.delta.removed == ("lib/deep",)
    upload.open()
    sent = upload.send()
    assert streamed_tree(store, str(sent.ref)) == _whole_tree(store, root)
    assert "src/lib/deep" not in streamed_tree(store, str(sent.ref))


def test_the_record_is_kept_per_directory_and_broker_under_the_cache_dir(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "sti" / "uploads"
    root = make_tree(tmp_path / "app")
    one = ManifestCache(root, BROKER)
    first = submit(store, root, one)
    assert [path.name for path in cache_root().iterdir()] == [one.path.name]  # no temp file
    record = json.loads(one.path.read_text())
    assert record["base"] == first.ref.blob and record["directory"] == str(root)
    assert record["entries"]["run.sh"][0:3] == ["f", os.lstat(root / "run.sh").st_mode, 29]
    assert ".git/HEAD" not in record["entries"] and "BROKER" not in one.path.read_text()
    other_broker = ManifestCache(root, "redis://elsewhere:6379/0")
    other_directory = ManifestCache(tmp_path / "other", BROKER)
    assert len({one.path, other_broker.path, other_directory.path}) == 3
    assert other_broker.load() is None


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_root() == Path.home() / ".cache" / "sti" / "uploads"


@pytest.mark.parametrize("content", ["", "{", '{"format": "sti-manifest/1"}', "[1, 2]", "null"])
def test_a_record_that_does_not_parse_means_a_whole_upload(
    store: BlobStore, tmp_path: Path, cache_dir: Path, content: str
) -> None:
    root = make_tree(tmp_path / "app")
    cache = _cache(root, cache_dir)
    submit(store, root, cache)
    cache.path.write_text(content)
    edit_everything(root)
    assert submit(store, root, _cache(root, cache_dir)).ref.kind == "dir"


def test_a_delta_reference_names_its_base_by_digest() -> None:
    digest = "sha256:" + "a" * 64
    ref = UploadRef.parse(f"sti+upload://{digest}/delta/{digest.replace(':', '%3A')}")
    assert ref.blobs == (digest, digest)
    assert UploadRef.parse(str(ref)) == ref


def test_a_lost_build_of_a_delta_runs_again_only_while_its_base_is_stored(
    redis_client: redis.Redis,
    store: BlobStore,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sti_worker import tasks

    monkeypatch.setattr(tasks, "blob_store", lambda: store)
    root, first = _uploaded(store, tmp_path, cache_dir)
    _write(root, "app.py", "print(4)\n")
    delta = submit(store, root, _cache(root, cache_dir))
    claim = {"request": json.dumps({"source": str(delta.ref), "build_image": "b", "tag": "t"})}
    assert tasks._rerunnable(claim, 1) == json.loads(claim["request"])
    redis_client.delete(keys.blob_meta(first.ref.blob))
    assert tasks._rerunnable(claim, 1) is None
