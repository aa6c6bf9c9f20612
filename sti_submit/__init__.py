"""The laptop side of sti: the `sti-submit` CLI and the Python API.

    from sti_submit import BuildRequest, StiClient

Names are imported on first use, so `sti-submit --help` does not pay for Celery and Redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sti.errors import ExitCode, StiError
    from sti.model import BuildRequest, Result, ValidateRequest
    from sti_submit.client import StiClient

_PUBLIC = {
    "StiClient": "sti_submit.client",
    "BuildRequest": "sti.model",
    "ValidateRequest": "sti.model",
    "Result": "sti.model",
    "StiError": "sti.errors",
    "ExitCode": "sti.errors",
}

__all__ = ["BuildRequest", "ExitCode", "Result", "StiClient", "StiError", "ValidateRequest"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'sti_submit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
