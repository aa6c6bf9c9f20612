"""StepOnce: a step delivered again (a broker outage restores its message) neither runs twice
at once nor takes effect twice."""

from __future__ import annotations

import time
import uuid

import redis

from sti.leases import StepOnce


def test_a_second_execution_waits_while_the_first_holds_the_step(
    redis_client: redis.Redis,
) -> None:
    task_id = str(uuid.uuid4())
    first, copy = StepOnce(redis_client, task_id, 60), StepOnce(redis_client, task_id, 60)
    assert first.begin()
    assert not copy.begin()
    first.release()
    assert copy.begin()
    copy.release()


def test_a_copy_delivered_after_the_step_ran_gets_its_output(redis_client: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    first = StepOnce(redis_client, task_id, 60)
    assert first.output() is None
    assert first.begin()
    first.end('{"state": "after"}', expires_s=60)
    copy = StepOnce(redis_client, task_id, 60)
    assert copy.output() == '{"state": "after"}'
    assert copy.begin()  # the lease went with the first execution
    copy.release()
    assert 0 < redis_client.ttl(f"sti:step:{task_id}:output") <= 60


def test_the_lease_of_an_execution_that_died_expires(redis_client: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    dead = StepOnce(redis_client, task_id, 1)
    assert dead.begin()
    redis_client.pexpire(f"sti:step:{task_id}:running", 50)
    time.sleep(0.1)
    successor = StepOnce(redis_client, task_id, 60)
    assert successor.begin()
    dead.release()  # not the owner any more: the successor keeps the step
    assert not StepOnce(redis_client, task_id, 60).begin()
    successor.release()
