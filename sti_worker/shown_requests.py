"""What a worker shows of an sti.build message it received (the task-received event Flower and
`celery events` show, its log, `celery inspect`): the keywords as sti-submit writes them, with
--build-env values hidden, whatever the sender wrote. Another Celery app's send_task writes
Celery's own kwargsrepr, with every value in clear."""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

from sti.celery_protocol import keywords_repr


class KeywordsHidden(Request):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shown = keywords_repr(self._kwargs)
        self._kwargsrepr = shown
        self._request_dict["kwargsrepr"] = shown  # the task's own request: its failure log

    def info(self, safe: bool = False) -> dict[str, Any]:
        """`celery inspect active/reserved/scheduled` asks for the arguments themselves."""
        return dict(super().info(safe=True))
