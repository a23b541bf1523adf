"""Benchmark: the REST API at 100,000 conversations and 1,000,000 messages on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/api.py

The rows are written by COPY into a throwaway database (never the one DATABASE_URL names), not
through ingest. Then the real ASGI server (uvicorn, as `make run` starts it) answers, over one
keep-alive connection, at least 200 requests of each kind: the conversation list (a page of 50,
with filters cycling: all, open, unassigned, one inbox, one department), a search (words of the
subject, the contact and the message text), the detail of a conversation with 50 messages, and
reply creation. Each is timed at the client (p50, p95). The queries per request are counted in
this process with the same views (Django's test client under CaptureQueriesContext): the web
process cannot be observed from outside. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import throwaway_database  # noqa: E402

from tests.servers.processes import stop_process_group  # noqa: E402

TARGETS_MS = {"list": 50, "detail": 50, "search": 150}
DEPARTMENTS, INBOXES_PER_DEPARTMENT, AGENTS_PER_DEPARTMENT = 5, 2, 4
DETAIL_CONVERSATIONS, DETAIL_MESSAGES = 1000, 50
# Message text: 3,000 made-up words drawn with Zipf's law (the word of rank r with weight 1/r), as
# words are in real mail: a few in most messages, most in few. Searches name words of middling
# rank, a contact and a subject; one word of the first ranks (in most messages) is timed apart.
SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "bar", "cen", "dol", "fim", "gat"]
WORDS = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES][:3000]
WEIGHTS = list(itertools.accumulate(1 / rank for rank in range(1, len(WORDS) + 1)))
SUBJECTS = ["Printer on fire", "Invoice question", "Refund for order", "Password reset", "Delivery late",
            "Account locked", "Broken cartridge", "Toner empty"]
SEARCHES = [WORDS[200], WORDS[500], WORDS[1000], WORDS[2000], "customer4242", "Invoice question",
            f"{WORDS[300]} {WORDS[700]}"]
FREQUENT = WORDS[3]


# ---------------------------------------------------------------------------
# Rows, by COPY
# ---------------------------------------------------------------------------
def _template(model, **given) -> tuple[list[str], list]:
    """Every column of `model` but its id, with the field's default (or the value given)."""
    from django.db import models

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.column in given:
            value = given[field.column]
        elif field.has_default():
            value = field.get_default()
        elif field.null:
            value = None
        else:
            value = ""
        if isinstance(field, models.JSONField) and value is not None:
            value = json.dumps(value)
        columns.append(field.column)
        values.append(value)
    return columns, values


def _copy(model, rows: Iterator[dict], **given) -> int:
    """COPY rows (dicts of the columns that vary) into the model's table; returns how many."""
    from django.db import connection

    columns, base = _template(model, **given)
    position = {column: i for i, column in enumerate(columns)}
    names = ", ".join(connection.ops.quote_name(c) for c in ["id", *columns])
    written = 0
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(model._meta.db_table)} ({names}) FROM STDIN") as copy:
        for row in rows:
            values = list(base)
            for column, value in row.items():
                if column != "id":
                    values[position[column]] = value
            copy.write_row([row["id"], *values])
            written += 1
    return written


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=WEIGHTS, k=n))


def generate(conversations: int, messages: int) -> dict:
    """The organisation, then contacts, conversations, messages and attachments by COPY."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from agents.models import Agent
    from conversations.models import Attachment, Contact, Conversation, Message
    from departments.models import Department
    from inboxes.models import Inbox

    rng = random.Random(42)
    departments = [Department.objects.create(name=f"Department {d}") for d in range(DEPARTMENTS)]
    inboxes = [Inbox.objects.create(address=f"support{d}-{i}@switchboard.test", display_name=f"Support {d}-{i}",
                                    department=department, smtp_host="127.0.0.1", smtp_port=9)
               for d, department in enumerate(departments) for i in range(INBOXES_PER_DEPARTMENT)]
    agents = []
    for d, department in enumerate(departments):
        for a in range(AGENTS_PER_DEPARTMENT):
            user = get_user_model().objects.create_user(f"agent{d}-{a}", password=None)
            agent = Agent.objects.create(user=user, name=f"Agent {d}-{a}")
            agent.departments.set([department])
            agents.append(agent)
    manager = get_user_model().objects.create_user("manager", is_staff=True, password=None)

    now = timezone.now()
    contacts = conversations // 2
    _copy(Contact, ({"id": n + 1, "public_id": uuid.uuid4(), "address": f"customer{n}@example.test",
                     "name": f"Customer{n} {rng.choice(SUBJECTS).split()[0]}", "created_at": now}
                    for n in range(contacts)))

    per_detail = DETAIL_MESSAGES
    rest = messages - DETAIL_CONVERSATIONS * per_detail
    others = conversations - DETAIL_CONVERSATIONS
    counts = [per_detail] * DETAIL_CONVERSATIONS + [rest // others + (1 if n < rest % others else 0)
                                                    for n in range(others)]
    inbox_of = [inboxes[n % len(inboxes)] for n in range(conversations)]
    statuses = ["open"] * 5 + ["pending"] * 2 + ["closed"] * 3

    agents_of = {department.pk: agents[d * AGENTS_PER_DEPARTMENT:(d + 1) * AGENTS_PER_DEPARTMENT]
                 for d, department in enumerate(departments)}

    def conversation_rows() -> Iterator[dict]:
        for n in range(conversations):
            inbox = inbox_of[n]
            department_agents = agents_of[inbox.department_id]
            last = now - timezone.timedelta(seconds=n * 30)
            yield {"id": n + 1, "public_id": uuid.uuid4(), "inbox_id": inbox.pk, "department_id": inbox.department_id,
                   "contact_id": rng.randrange(contacts) + 1, "subject": rng.choice(SUBJECTS),
                   "status": rng.choice(statuses), "priority": rng.randrange(4),
                   "assignee_id": rng.choice(department_agents).pk if rng.random() < 0.7 else None,
                   "created_at": last - timezone.timedelta(days=2), "updated_at": last, "last_message_at": last}

    _copy(Conversation, conversation_rows())

    def message_rows() -> Iterator[dict]:
        pk = 0
        for n, count in enumerate(counts):
            inbox = inbox_of[n]
            start = now - timezone.timedelta(seconds=n * 30) - timezone.timedelta(minutes=count)
            for m in range(count):
                pk += 1
                outgoing = m % 2 == 1
                yield {"id": pk, "public_id": uuid.uuid4(), "conversation_id": n + 1, "inbox_id": inbox.pk,
                       "direction": "out" if outgoing else "in", "message_id": f"m{pk}@bench.test",
                       "header_message_id": f"m{pk}@bench.test", "from_address": inbox.address if outgoing
                       else f"customer{n % contacts}@example.test", "subject": "Re: " + SUBJECTS[n % len(SUBJECTS)],
                       "text": _text(rng, 30), "created_at": start + timezone.timedelta(minutes=m),
                       "sent_at": start + timezone.timedelta(minutes=m),
                       "delivery_status": "sent" if outgoing else ""}

    written = _copy(Message, message_rows())

    def attachment_rows() -> Iterator[dict]:
        # Every fifth message of the detail conversations carries a file (rows only; nobody downloads them).
        for pk, message_pk in enumerate(range(1, DETAIL_CONVERSATIONS * per_detail + 1, 5), start=1):
            yield {"id": pk, "public_id": uuid.uuid4(), "message_id": message_pk, "file": f"attachments/b{pk}",
                   "filename": f"file{pk}.pdf", "content_type": "application/pdf", "size": 1000}

    _copy(Attachment, attachment_rows())
    with connection.cursor() as cursor:
        for model in (Contact, Conversation, Message, Attachment):
            table = model._meta.db_table
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), "  # noqa: S608  (our own table names)
                           f"(SELECT max(id) FROM {table}))", [table])
    return {"departments": departments, "inboxes": inboxes, "agents": agents, "manager": manager,
            "messages": written}


def search_indexes(action: str) -> None:
    """Drop the search indexes before the COPY, build them after: quicker than row by row."""
    import importlib

    from django.db import connection

    migration = importlib.import_module("conversations.api.migrations.0002_search_indexes")
    with connection.schema_editor() as editor:
        (migration.create if action == "create" else migration.drop)(None, editor)


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------
class Client:
    """One keep-alive HTTP connection to the web server, with a token."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request(method, path, body=json.dumps(body) if body is not None else None,
                                headers=self.headers)
        response = self.connection.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1000


def timed(client: Client, requests: list[tuple[str, str, dict | None]], expect: int) -> list[float]:
    times = []
    for method, path, body in requests:
        status, ms = client.request(method, path, body)
        if status != expect:
            raise SystemExit(f"{method} {path} answered {status}, not {expect}")
        times.append(ms)
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[int(len(ordered) * 0.95) - 1], 1)}


def count_queries(token: str, path: str, method: str = "get", body: dict | None = None) -> int:
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    client = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
    with CaptureQueriesContext(connection) as queries:
        response = getattr(client, method)(path, body, content_type="application/json") if body else \
            getattr(client, method)(path)
    assert response.status_code < 300, (path, response.status_code, response.content[:300])
    return len(queries)


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------
def start_web(workdir: Path) -> tuple[subprocess.Popen, int]:
    from tests.servers.asgi import free_port, wait_for, web_command

    port = free_port()
    log = (workdir / "web.log").open("wb")
    process = subprocess.Popen(web_command(port), cwd=ROOT, env=os.environ.copy(), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return process, port


def _environment(workdir: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["SWITCHBOARD_VAR_DIR"] = str(workdir / "var")
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "300")  # as a deployment runs (README)
    os.environ["API_THROTTLE_PER_MINUTE"] = "1000000"


def measure(port: int, world: dict, conversations: list, detail_ids: list, n: int, rng: random.Random,
            issue: Callable[..., str]) -> tuple[dict, dict]:
    """Client-side times of each kind of request, and the queries of each, counted in this process."""
    agent = world["agents"][0]
    department = world["departments"][0]
    inbox = world["inboxes"][0]
    token = issue(agent.user)
    client = Client(port, token)
    filters = ["", "&status=open", "&view=unassigned", f"&inbox={inbox.public_id}",
               f"&view=department&department={department.public_id}", "&view=mine"]
    lists = [("GET", f"/api/conversations/?page_size=50{filters[i % len(filters)]}", None) for i in range(n)]
    searches = [("GET", f"/api/conversations/?page_size=50&q={SEARCHES[i % len(SEARCHES)].replace(' ', '+')}",
                 None) for i in range(n)]
    details = [("GET", f"/api/conversations/{rng.choice(detail_ids)}/", None) for _ in range(n)]
    replies = [("POST", f"/api/conversations/{rng.choice(conversations)}/replies/",
                {"text": f"Reply {i}: we are looking into it."}) for i in range(n)]
    for warm in (lists[:10], searches[:6], details[:5]):
        timed(client, warm, 200)
    frequent = [("GET", f"/api/conversations/?page_size=50&q={FREQUENT}", None)] * 20
    times = {"list": timed(client, lists, 200), "search": timed(client, searches, 200),
             "detail": timed(client, details, 200), "reply": timed(client, replies, 201),
             "search_frequent_word": timed(client, frequent, 200)}
    queries = {
        "list_queries_page_10": count_queries(token, "/api/conversations/?page_size=10"),
        "list_queries_page_100": count_queries(token, "/api/conversations/?page_size=100"),
        "search_queries": count_queries(token, "/api/conversations/?page_size=50&q=refund"),
        "detail_queries": count_queries(token, f"/api/conversations/{detail_ids[0]}/"),
        "reply_queries": count_queries(token, f"/api/conversations/{conversations[0]}/replies/", "post",
                                       {"text": "Counted."}),
    }
    return times, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind (at least 200)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (its name is printed)")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("This benchmark runs on PostgreSQL: set DATABASE_URL (a throwaway database is made "
                         "beside it).")

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-api-bench-"))
    database_url, drop_database = throwaway_database(workdir)
    os.environ["DATABASE_URL"] = database_url
    _environment(workdir)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from config import embedded_redis
    from conversations.api.models import ApiToken
    from conversations.models import Conversation

    def issue(user) -> str:
        token = ApiToken(name="bench", user=user)
        secret = token.new_secret()
        token.save()
        return secret

    redis_process = embedded_redis.start(settings.REDIS_SOCKET, persist=False) if settings.REDIS_EMBEDDED else None
    web = None
    try:
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
        search_indexes("drop")
        world = generate(args.conversations, args.messages)
        copied = time.monotonic() - started
        search_indexes("create")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        generation = time.monotonic() - started
        print(f"generated {args.conversations:,} conversations and {world['messages']:,} messages in "
              f"{generation:.0f} s (COPY {copied:.0f} s, search indexes and ANALYZE {generation - copied:.0f} s)")
        department_ids = {a.departments.get().pk for a in world["agents"][:1]}
        conversations = [str(c) for c in Conversation.objects.filter(department_id__in=department_ids)
                         .values_list("public_id", flat=True)[:5000]]
        detail_ids = [str(c) for c in Conversation.objects.filter(pk__lte=DETAIL_CONVERSATIONS,
                                                                  department_id__in=department_ids)
                      .values_list("public_id", flat=True)]
        connection.close()
        web, port = start_web(workdir)
        n = max(200, args.requests)
        times, queries = measure(port, world, conversations, detail_ids, n, random.Random(7), issue)
        figures = {kind: percentiles(values) for kind, values in times.items()}
        for kind, figure in figures.items():
            target = TARGETS_MS.get(kind)
            verdict = "" if target is None else (" (meets" if figure["p95"] < target else " (misses") + \
                f" the {target} ms target)"
            print(f"{kind:7s} p50 {figure['p50']:6.1f} ms  p95 {figure['p95']:6.1f} ms over "
                  f"{len(times[kind])} requests{verdict}")
        print("queries per request: " + ", ".join(f"{k} {v}" for k, v in queries.items()))
        print(json.dumps({
            "conversations": args.conversations, "messages": world["messages"],
            "list_p50_ms": figures["list"]["p50"], "list_p95_ms": figures["list"]["p95"],
            "detail_p50_ms": figures["detail"]["p50"], "detail_p95_ms": figures["detail"]["p95"],
            "search_p50_ms": figures["search"]["p50"], "search_p95_ms": figures["search"]["p95"],
            "reply_p50_ms": figures["reply"]["p50"], "reply_p95_ms": figures["reply"]["p95"],
            "search_frequent_word_p95_ms": figures["search_frequent_word"]["p95"],
            **queries, "requests_each": n, "generation_s": round(generation, 1),
        }))
    finally:
        if web is not None:
            stop_process_group(web)
        embedded_redis.stop(redis_process)
        if args.keep:
            print(f"kept {settings.DATABASES['default']['NAME']}")
        else:
            drop_database()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
