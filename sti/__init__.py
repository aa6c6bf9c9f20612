"""sti's core, imported by both sides: the request and result model, the errors, the names on
the queue and in Redis, the settings, the upload reference and blob store, cancel flags and
leases. It imports neither sti_submit nor sti_worker, nor docker-py nor GitPython."""
