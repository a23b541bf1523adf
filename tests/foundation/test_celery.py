"""Celery runs as configured: JSON only, late acks, and a real worker answers over Redis."""

from __future__ import annotations

from config.celery import app


def test_tasks_are_json_and_acknowledged_late():
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.task_time_limit
    assert conf.task_soft_time_limit


def test_a_real_worker_answers_over_redis(celery_worker_factory):
    worker = celery_worker_factory(name="pingme")
    replies = app.control.ping(destination=[f"pingme@{__import__('socket').gethostname()}"], timeout=5)
    assert replies, worker.log()
