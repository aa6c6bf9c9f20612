"""A stand-in for DockerHost with only what cleanup, the tag step and housekeeping call, in
memory.

Images are ids with an optional build-id label; references (repository:tag) point at them; a
container may hold an image in use. Removal behaves as the engine does for sti's calls: an image
still named by a reference or used by a container stays (remove_image returns False). Every call
is recorded in `calls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from sti.errors import TagImageFailed
from sti_worker.engine.docker_host import DockerHost, LogSink, MadeImage
from sti_worker.engine.pipeline import Workbench
from sti_worker.engine.sources import Sources


@dataclass
class FakeContainer:
    id: str
    image: str | None = None


@dataclass
class FakeDocker:
    labels: dict[str, str | None] = field(default_factory=dict)  # image id -> build id label
    references: dict[str, str] = field(default_factory=dict)  # "repository:tag" -> image id
    containers: dict[str, FakeContainer] = field(default_factory=dict)  # name -> container
    parents: dict[str, str] = field(default_factory=dict)  # image id -> the id it was made of
    refuse_tags: set[str] = field(default_factory=set)  # tagging these fails
    trim_problem: str | None = None
    source_images_keep: int = 10
    calls: list[tuple[str, str]] = field(default_factory=list)

    def as_host(self) -> DockerHost:
        return cast(DockerHost, self)

    def bench(self, sink: LogSink = lambda line: None) -> Workbench:
        """What a step works with: this engine, the in-process sources, sink as the log."""
        return Workbench(self.as_host(), Sources(), sink)

    # set-up helpers (not DockerHost methods, not recorded)

    def add_image(self, image_id: str, build_id: str | None = None, *refs: str) -> str:
        self.labels[image_id] = build_id
        for ref in refs:
            self.references[ref] = image_id
        return image_id

    def add_container(self, name: str, image: str | None = None) -> str:
        self.containers[name] = FakeContainer(f"id-of-{name}", image)
        return self.containers[name].id

    # the DockerHost methods pipeline's cleanup and tag step use

    def image_id(self, ref: str) -> str | None:
        self.calls.append(("image_id", ref))
        return self.references.get(ref)

    def tag(self, image_id: str, ref: str) -> None:
        self.calls.append(("tag", f"{image_id} {ref}"))
        if ref in self.refuse_tags:
            raise TagImageFailed(f"tagging {image_id} as {ref} failed: refused by the fake")
        self.references[ref] = image_id

    def untag(self, ref: str) -> None:
        self.calls.append(("untag", ref))
        self.references.pop(ref, None)

    def containers_named(self, prefix: str) -> list[str]:
        self.calls.append(("containers_named", prefix))
        return [c.id for name, c in sorted(self.containers.items()) if name.startswith(prefix)]

    def remove_container(self, container_id: str) -> None:
        self.calls.append(("remove_container", container_id))
        for name, container in list(self.containers.items()):
            if container.id == container_id:
                del self.containers[name]

    def references_in(self, repository: str) -> list[str]:
        self.calls.append(("references_in", repository))
        return sorted(ref for ref in self.references if ref.rpartition(":")[0] == repository)

    def image_made(self, ref: str) -> MadeImage | None:
        self.calls.append(("image_made", ref))
        created = self.created(ref)
        if ref not in self.references or created is None:
            return None
        image = self.references[ref]
        return MadeImage(image, created, self.parents.get(image))

    def created(self, ref: str) -> str | None:
        """Made a nanosecond after the reference before it (in the order references came)."""
        return f"2026-12-07T10:00:00.{list(self.references).index(ref):09d}Z"

    def remove_reference(self, ref: str) -> None:
        self.calls.append(("remove_reference", ref))
        self.references.pop(ref, None)

    def remove_image(self, image_id: str) -> bool:
        self.calls.append(("remove_image", image_id))
        if image_id not in self.labels:
            return True
        named = image_id in self.references.values()
        used = any(c.image == image_id for c in self.containers.values())
        if named or used:
            return False
        del self.labels[image_id]
        return True

    def untagged_images_of(self, build_id: str) -> list[str]:
        self.calls.append(("untagged_images_of", build_id))
        named = set(self.references.values())
        return [i for i, label in self.labels.items() if label == build_id and i not in named]

    def trim_build_cache(self) -> str | None:
        self.calls.append(("trim_build_cache", ""))
        return self.trim_problem
