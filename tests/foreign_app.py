"""Another team's Celery app: it knows sti only by task name and JSON, nothing of its code."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

broker = os.environ["FOREIGN_BROKER_URL"]
app = Celery("foreign", broker=broker, backend=broker)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_default_queue="foreign",
)


@app.task(name="foreign.collect")
def collect(result: dict[str, Any]) -> dict[str, Any]:
    """Receives the sti result object at the end of a chain, as a deploy step would."""
    return {"received_kind": result["kind"], "success": result["success"], "tag": result["tag"]}
