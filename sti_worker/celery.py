"""What `celery -A sti_worker` loads: the app with its tasks and worker hooks registered."""

from . import hooks, tasks
from .app import app

__all__ = ["app", "hooks", "tasks"]
