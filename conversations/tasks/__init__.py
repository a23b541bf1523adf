"""Celery tasks that join the layers below: polling inboxes and delivering replies.

Celery's autodiscovery imports this package; each module registers its own tasks.
"""

from conversations.tasks import delivery, polling, routing

__all__ = ["delivery", "polling", "routing"]
