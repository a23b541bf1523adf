"""Who may hear an event: the one permission rule, applied by every socket to every event.

An agent hears the events of their departments; a manager hears all; an event that names no
department (none today) reaches only the agents it names. A socket's listener is rebuilt from
the database and the session every few seconds, for all of a web process's sockets at once,
so removing an agent from a department, deactivating the user or signing them out elsewhere
reaches open sockets at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from agents.models import Agent, AgentKind
from conversations.permissions import department_ids_for_users
from departments.models import Department


@dataclass(frozen=True)
class Listener:
    user_id: int
    departments: frozenset[int] | None  # None: a manager, who hears every department
    public_ids: dict[int, str]  # department id → public id, for the departments heard
    agent_id: int | None = None
    agent_public_id: str | None = None
    human: bool = True


def may_hear(listener: Listener, departments: Sequence[int], agents: Sequence[int] = ()) -> bool:
    """The rule itself: decided for each event each socket receives."""
    if listener.departments is None:
        return True
    if departments:
        return any(department in listener.departments for department in departments)
    return listener.agent_id is not None and listener.agent_id in agents


def listener_for(user_id: int, session_key: str | None) -> Listener | None:
    """What this user's socket may hear now; None when they may not listen at all (gone,
    deactivated, or their session ended or belongs to someone else)."""
    return listeners_for([(user_id, session_key)])[(user_id, session_key)]


def listeners_for(sockets: Iterable[tuple[int, str | None]]) -> dict[tuple[int, str | None], Listener | None]:
    """listener_for for many (user id, session key) pairs in a few queries, whatever their
    number: a web process rechecks all its sockets at once."""
    sockets = set(sockets)
    # Only what the rule reads (a recheck of 500 sockets every few seconds shares the process
    # with their fan-out): activity, staff, and the password hash a session is checked against.
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in={u for u, _ in sockets})
             .only("is_active", "is_staff", "password")}
    sessions = _sessions({key for _, key in sockets if key is not None})
    signed_in = {(user_id, key) for user_id, key in sockets
                 if (user := users.get(user_id)) is not None and user.is_active
                 and (key is None or _session_holds(sessions.get(key), user))}
    allowed = department_ids_for_users(users[user_id] for user_id in {u for u, _ in signed_in})
    agents = {user_id: (pk, public_id, kind) for user_id, pk, public_id, kind in
              Agent.objects.filter(user_id__in=allowed).values_list("user_id", "pk", "public_id", "kind")}
    departments = {pk: str(public_id) for pk, public_id in Department.objects.values_list("pk", "public_id")}
    listeners: dict[tuple[int, str | None], Listener | None] = dict.fromkeys(sockets)
    for user_id, key in signed_in:
        heard, agent = allowed[user_id], agents.get(user_id)
        agent_id, agent_public_id, kind = agent if agent else (None, None, AgentKind.HUMAN)
        listeners[(user_id, key)] = Listener(
            user_id=user_id, departments=None if heard is None else frozenset(heard),
            public_ids=dict(departments) if heard is None else {d: departments[d] for d in heard if d in departments},
            agent_id=agent_id, agent_public_id=str(agent_public_id) if agent else None,
            human=kind == AgentKind.HUMAN,
        )
    return listeners


def _sessions(keys: set[str]) -> dict[str, dict]:
    """The data of each live session among `keys`: one query with the database's session store."""
    if not keys:
        return {}
    engine = import_module(settings.SESSION_ENGINE)
    if settings.SESSION_ENGINE in ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"):
        store = engine.SessionStore()
        rows = (Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
                .values_list("session_key", "session_data"))
        return {key: _decoded(store, key, data) for key, data in rows}
    return {key: data for key in keys if (data := engine.SessionStore(key).load())}


# Decoded session data by key, while the stored text is unchanged: decoding checks a signature,
# and the same few hundred sessions are rechecked every few seconds.
_DECODED: dict[str, tuple[str, dict]] = {}
_DECODED_MAX = 10_000


def _decoded(store: object, key: str, data: str) -> dict:
    cached = _DECODED.get(key)
    if cached is not None and cached[0] == data:
        return cached[1]
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    decoded = store.decode(data)
    _DECODED[key] = (data, decoded)
    return decoded


def _session_holds(data: dict | None, user: object) -> bool:
    """The session still signs this user in (not flushed by a sign-out, not from before a
    password change)."""
    if not data or str(data.get(SESSION_KEY)) != str(user.pk) or not data.get(BACKEND_SESSION_KEY):
        return False
    stored = data.get(HASH_SESSION_KEY) or ""
    return constant_time_compare(stored, user.get_session_auth_hash())
