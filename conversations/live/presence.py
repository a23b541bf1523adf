"""Presence: online while a console socket is open, away when the agent says so, offline after
the last socket closes and a grace period (PRESENCE_GRACE_SECONDS, so a page reload changes
nothing). It lives in Redis, where every web process sees it, and is mirrored to
Agent.presence (through actions.set_presence) for routing and the admin.

Per agent, a sorted set maps each of their sockets to the time it stops counting: a live
socket's heartbeat keeps pushing that PRESENCE_SOCKET_TTL_SECONDS ahead, a socket that closes
sets it to now. So the set's highest score is when the agent was last seen, whether their
sockets closed cleanly or died with a web process; and "away" is a flag of the agent's own,
which survives reloads. AI agents are online while enabled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.conf import settings

from agents.models import Agent, AgentKind, Presence
from config.redis import get_redis
from conversations import actions

_PREFIX = "switchboard:presence"


def _sockets_key(agent_id: int) -> str:
    return f"{_PREFIX}:{agent_id}:sockets"


def _away_key(agent_id: int) -> str:
    return f"{_PREFIX}:{agent_id}:away"


def _ttl() -> float:
    return float(settings.PRESENCE_SOCKET_TTL_SECONDS)


def _grace() -> float:
    return float(settings.PRESENCE_GRACE_SECONDS)


def decide(scores: Iterable[float], away: bool, now: float, *, grace: float) -> str | None:
    """The presence these facts mean; None while within the grace period (keep what it was)."""
    scores = list(scores)
    if any(score > now for score in scores):
        return Presence.AWAY if away else Presence.ONLINE
    if scores and max(scores) + grace > now:
        return None
    return Presence.OFFLINE


def socket_opened(agent_id: int, socket: str) -> None:
    heartbeats([(agent_id, socket)])


def heartbeat(agent_id: int, socket: str) -> None:
    """A live socket says it is still there (the consumer calls this every few seconds)."""
    heartbeats([(agent_id, socket)])


def heartbeats(sockets: Iterable[tuple[int, str]]) -> None:
    """Many sockets' heartbeats (a web process's, at once) in one round trip."""
    sockets = list(sockets)
    if not sockets:
        return
    until, now = time.time() + _ttl(), time.time()
    with get_redis().pipeline(transaction=False) as pipe:
        for agent_id, socket in sockets:
            pipe.zadd(_sockets_key(agent_id), {socket: until})
        for agent_id in {agent_id for agent_id, _ in sockets}:
            _expire_in(pipe, agent_id, now)
        pipe.execute()


def socket_closed(agent_id: int, socket: str) -> None:
    get_redis().zadd(_sockets_key(agent_id), {socket: time.time()})
    _expire(agent_id)


def set_away(agent_id: int, away: bool) -> None:
    if away:
        get_redis().set(_away_key(agent_id), "1")
    else:
        get_redis().delete(_away_key(agent_id))


def _expire(agent_id: int) -> None:
    with get_redis().pipeline(transaction=False) as pipe:
        _expire_in(pipe, agent_id, time.time())
        pipe.execute()


def _expire_in(pipe, agent_id: int, now: float) -> None:
    """Forget sockets long past counting, and the whole set once nothing is left to remember."""
    key = _sockets_key(agent_id)
    pipe.zremrangebyscore(key, "-inf", now - _grace() - _ttl())
    pipe.expire(key, int(_grace() + 2 * _ttl()) + 60)


def current(agent: Agent, now: float | None = None) -> str | None:
    """The agent's presence as Redis says it now; None while in the grace period."""
    if agent.kind == AgentKind.AI:
        return Presence.ONLINE if agent.enabled else Presence.OFFLINE
    redis = get_redis()
    with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(_sockets_key(agent.pk), 0, -1, withscores=True)
        pipe.exists(_away_key(agent.pk))
        entries, away = pipe.execute()
    return decide((score for _member, score in entries), bool(away), time.time() if now is None else now,
                  grace=_grace())


def reconcile(agent: Agent) -> Agent:
    """Mirror what Redis says to Agent.presence (and tell the departments) when they differ."""
    presence = current(agent)
    if presence is None or presence == agent.presence:
        return agent
    return actions.set_presence(agent, presence, by=None)


def reconcile_all() -> int:
    """Reconcile every agent the row or Redis says may be around (the beat sweep); how many changed."""
    ids = set(Agent.objects.exclude(presence=Presence.OFFLINE).values_list("pk", flat=True))
    ids |= set(Agent.objects.filter(kind=AgentKind.AI, enabled=True).values_list("pk", flat=True))
    for key in get_redis().scan_iter(match=f"{_PREFIX}:*:sockets", count=500):
        ids.add(int(key.split(b":")[2]))
    changed = 0
    for agent in Agent.objects.filter(pk__in=ids):
        if reconcile(agent).presence != agent.presence:
            changed += 1
    return changed
