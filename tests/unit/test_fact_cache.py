"""FactCache: image facts kept on disk between --local runs, best effort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sti_worker.engine.fact_cache import FactCache, default_directory


def test_an_answer_put_is_got_back(tmp_path: Path) -> None:
    cache = FactCache(tmp_path / "facts")
    cache.put("question", {"found": [1, "two"], "yes": True})
    assert FactCache(tmp_path / "facts").get("question") == {"found": [1, "two"], "yes": True}


def test_an_unknown_question_is_a_miss(tmp_path: Path) -> None:
    assert FactCache(tmp_path).get("never asked") is None


def test_a_file_that_is_not_json_is_a_miss(tmp_path: Path) -> None:
    cache = FactCache(tmp_path)
    cache.put("question", 1)
    (only,) = tmp_path.glob("*.json")
    only.write_bytes(b"\x00not json")
    assert cache.get("question") is None


def test_a_file_answering_another_question_is_a_miss(tmp_path: Path) -> None:
    cache = FactCache(tmp_path)
    cache.put("question", "right")
    (only,) = tmp_path.glob("*.json")
    only.write_text('{"key": "another question", "value": "wrong"}')
    assert cache.get("question") is None
    only.write_text('["question", "wrong"]')
    assert cache.get("question") is None


def test_a_directory_it_cannot_write_loses_the_answer_silently(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the directory would be")
    cache = FactCache(blocked / "facts")
    cache.put("question", 1)
    assert cache.get("question") is None


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: object, target: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    FactCache(tmp_path).put("question", 1)
    assert list(tmp_path.iterdir()) == []


def test_only_the_newest_answers_are_kept(tmp_path: Path) -> None:
    cache = FactCache(tmp_path, kept=3)
    for number in range(5):
        cache.put(f"question {number}", number)
        newest = max(tmp_path.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
        os.utime(newest, (1_000_000 + number, 1_000_000 + number))
    assert len(list(tmp_path.iterdir())) == 3
    assert [cache.get(f"question {number}") for number in range(5)] == [None, None, 2, 3, 4]


def test_the_directory_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_directory() == tmp_path / "sti" / "image-facts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_directory() == tmp_path / ".cache" / "sti" / "image-facts"
