"""On PYTHONPATH, makes this interpreter a laptop install: the worker's packages (Celery and
redis-py among them) are absent."""

import importlib.abc
import sys

ABSENT = ("docker", "git", "structlog", "celery", "kombu", "redis", "sti_worker")


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Absent())
