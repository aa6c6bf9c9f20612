"""Image facts kept on disk (--local): a new process finds a builder's scripts without looking
into the image again, and a cache it cannot trust makes it look."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.fact_cache import FactCache
from sti_worker.engine.protocol import ImageScripts, inspect_scripts


class CountingHost(DockerHost):
    """A DockerHost that counts the containers it creates (each look into an image makes one)."""

    created = 0

    def create_container(self, *args: Any, **kwargs: Any) -> str:
        self.created += 1
        return super().create_container(*args, **kwargs)


@pytest.fixture
def facts(tmp_path: Path) -> FactCache:
    return FactCache(tmp_path / "facts")


@pytest.fixture
def new_process(facts: FactCache) -> Iterator[Any]:
    """A DockerHost as a new --local run makes it: nothing in memory, the cache on disk."""
    hosts: list[DockerHost] = []

    def make() -> CountingHost:
        host = CountingHost(fact_cache=facts)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


def look(host: DockerHost, image_id: str, **options: Any) -> ImageScripts:
    return inspect_scripts(host, image_id, build_id=uuid.uuid4().hex, role="check", **options)


def test_a_new_process_finds_the_scripts_without_looking(
    new_process: Any, api: docker.APIClient, images: dict[str, str]
) -> None:
    image_id = api.inspect_image(images["sti-fake"])["Id"]
    first = new_process()
    found = look(first, image_id)
    assert first.created == 1
    second = new_process()
    assert look(second, image_id) == found
    assert second.created == 0
    assert found.has("prepare") and found.has("save-artifacts") and found.has_shell


def test_each_question_and_image_has_its_own_answer(
    new_process: Any, api: docker.APIClient, images: dict[str, str]
) -> None:
    with_save = api.inspect_image(images["sti-fake"])["Id"]
    without_save = api.inspect_image(images["sti-fake-no-save"])["Id"]
    first = new_process()
    look(first, with_save)
    second = new_process()
    assert not look(second, without_save).has("save-artifacts")
    assert look(second, with_save, check_artifacts_dir=True).has("save-artifacts")
    assert second.created == 2
    assert look(new_process(), with_save).has("save-artifacts")


def test_a_damaged_answer_makes_it_look_again(
    new_process: Any, facts: FactCache, api: docker.APIClient, images: dict[str, str]
) -> None:
    image_id = api.inspect_image(images["sti-fake"])["Id"]
    found = look(new_process(), image_id)
    (stored,) = facts.directory.glob("*.json")
    answer = json.loads(stored.read_text())
    value = answer["value"]
    without_found = {name: field for name, field in value.items() if name != "found"}
    damaged = [
        without_found,
        {**value, "found": list(value["found"])},
        {**value, "found": {"prepare": {"colour": "red"}}},
        {**value, "scripts": None},
    ]
    for damage in damaged:
        stored.write_text(json.dumps({**answer, "value": damage}))
        again = new_process()
        assert look(again, image_id) == found
        assert again.created == 1
        assert look(new_process(), image_id) == found  # and the answer was stored again
