"""Benchmark: live events to 500 console sockets, email to socket, and the routing queue's drain.

    .venv/bin/python benchmarks/fanout.py [--sockets 500] [--events 50] [--emails 10]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/fanout.py

The processes are the Procfile's: uvicorn serving config.asgi (web), `celery worker` (worker) and,
for the email part, `celery beat` (beat); Redis is REDIS_URL's, else a private one in the temp
folder; the database is a throwaway one (SQLite, or one of its own beside DATABASE_URL's).

- Fan-out: --sockets agents of one department, each signed in (a session cookie) with one console
  socket (/ws/console/, resumed after "hello" and sending heartbeats as the console does), all
  held by this process (asyncio). A worker task (commit_note below, which the worker imports
  with -I) adds a note through actions.add_note and stamps the moment add_note returned, its
  transaction committed; each socket stamps the moment the note's message.created reached it.
  One event at a time, --events of them after 3 warm-up ones; p50 and p99 over every
  (event, socket) pair.
- Email to socket: an inbox of that department on a real Dovecot (plain IMAP on loopback) with a
  poll interval of --poll-interval seconds. Beat runs conversations.poll_due_inboxes every
  --poll-tick seconds (POLL_TICK_SECONDS; settings' default is 10) and the worker polls the inbox
  once the interval has passed since its last poll. Each of --emails messages (after one
  warm-up) is APPENDed at a random moment of the poll cycle (once the one before it arrived,
  after a pause of 0 to interval + 1 s); from the APPEND's OK to its conversation's
  conversation.created on each socket, p50 and p99 over every (email, socket) pair.
- Queue drain: --queue conversations wait in another department; its --queue-agents agents (with
  room for all of them together) come online, and the drain task's function
  (conversations.tasks.routing.drain_queue), called in this process, assigns them. Done first,
  before any server starts.

The agents' rows say "online" before their sockets open, as after a restart of the web process:
otherwise 500 agents coming online at once would first fan out 500 presence events to 500 sockets.
Both clocks are time.time() on this one machine. Also printed, to tell where time goes: the web server's
CPU with the sockets idle and during the fan-out, this process's (the clients'), and how often
the worker actually polled. Settings come from the environment as usual (LIVE_RECHECK_SECONDS,
PRESENCE_* ...). The last line printed is one JSON object, with each target and whether it was met.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import datetime as dt
import itertools
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery import shared_task  # noqa: E402
from common import throwaway_database  # noqa: E402

from tests.servers.processes import stop_process_group  # noqa: E402

FANOUT_P99_TARGET_MS = 250
EMAIL_SLACK_S = 1.0  # email to socket, p99: under the poll interval plus this
WARMUP_EVENTS = 3
NOTE_TASK = "benchmarks.fanout.commit_note"
HEARTBEAT_SECONDS = 20  # static/console/live.js: HEARTBEAT_MS
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


@shared_task(name=NOTE_TASK)
def commit_note(conversation_id: int, agent_id: int, n: int) -> dict:
    """In the worker: a note through the action, and the moment its transaction had committed."""
    from agents.models import Agent
    from conversations import actions
    from conversations.models import Conversation

    conversation = Conversation.objects.get(pk=conversation_id)
    agent = Agent.objects.get(pk=agent_id)
    note = actions.add_note(conversation, f"Fan-out probe {n}", by=agent)
    return {"message": str(note.public_id), "committed": time.time()}


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------
def _environment(workdir: Path, poll_tick: int) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["SWITCHBOARD_VAR_DIR"] = str(workdir / "var")
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["POLL_TICK_SECONDS"] = str(poll_tick)
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "300")  # as a deployment runs (README)


def start_celery(kind: str, workdir: Path, ready: bytes | None) -> subprocess.Popen:
    log = workdir / f"{kind}.log"
    args = [sys.executable, "-m", "celery", "-A", "config", kind, "--loglevel=INFO"]
    if kind == "worker":
        args += ["--concurrency=2", "--include=benchmarks.fanout", f"--hostname=fanout-{os.getpid()}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(args, cwd=ROOT, env=os.environ.copy(), stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while ready is not None and ready not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"celery {kind} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return process


def poll_starts(workdir: Path) -> list[float]:
    """When the worker received each poll of the inbox (its log's timestamps), in seconds."""
    text = (workdir / "worker.log").read_text(errors="replace")
    stamps = re.findall(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                        r"Task conversations\.poll_inbox\[[^\]]+\] received", text)
    return [dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps]


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------
def _agents(prefix: str, count: int, department, **fields) -> list:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from agents.models import Agent, AgentKind

    user_model = get_user_model()
    users = user_model.objects.bulk_create([
        user_model(username=f"{prefix}{n}", email=f"{prefix}{n}@switchboard.test", password=make_password(None))
        for n in range(count)])
    agents = Agent.objects.bulk_create([Agent(kind=AgentKind.HUMAN, user=user, name=f"{prefix.title()} {n}", **fields)
                                        for n, user in enumerate(users)])
    through = Agent.departments.through
    through.objects.bulk_create([through(agent_id=agent.pk, department_id=department.pk) for agent in agents])
    return agents


def fanout_rows(server, account: tuple[str, str], sockets: int, poll_interval: int) -> dict:
    from django.utils import timezone

    from agents.models import Presence
    from conversations.models import Contact, Conversation, Direction, Message
    from departments.models import Department
    from inboxes.models import Inbox, Security

    now = timezone.now()
    department = Department.objects.create(name="Fan-out")
    inbox = Inbox.objects.create(
        address="fanout@switchboard.test", display_name="Fan-out", department=department,
        imap_host=server.host, imap_port=server.ports["none"], imap_security=Security.NONE,
        imap_username=account[0], imap_secret=account[1], poll_interval=poll_interval,
        import_since=now - dt.timedelta(minutes=1))
    agents = _agents("agent", sockets, department, presence=Presence.ONLINE, presence_changed_at=now)
    contact = Contact.objects.create(address="customer@example.test", name="Customer")
    conversation = Conversation.objects.create(inbox=inbox, department=department, contact=contact,
                                               subject="Notes for the fan-out", assignee=agents[0], assigned_at=now)
    Message.objects.create(conversation=conversation, inbox=inbox, direction=Direction.IN,
                           message_id="fanout-first@example.test", from_address=contact.address,
                           subject=conversation.subject, text="Please keep me posted.")
    return {"inbox": inbox, "agents": agents, "conversation": conversation}


def queue_rows(size: int, agent_count: int) -> tuple:
    """`size` conversations waiting in a department of their own; its agents offline, with room for all."""
    from django.utils import timezone

    from agents.models import Presence
    from conversations.models import Contact, Conversation, Direction, Message
    from departments.models import Department
    from inboxes.models import Inbox

    now = timezone.now()
    department = Department.objects.create(name="Queue")
    inbox = Inbox.objects.create(address="queue@switchboard.test", display_name="Queue", department=department)
    contacts = Contact.objects.bulk_create([Contact(address=f"waiting{n}@example.test", name=f"Waiting {n}")
                                            for n in range(size)])
    conversations = Conversation.objects.bulk_create([
        Conversation(inbox=inbox, department=department, contact=contact, subject=f"Waiting {n}",
                     created_at=now - dt.timedelta(seconds=size - n), queued_at=now - dt.timedelta(seconds=size - n),
                     routing_reason="No agent is online.")
        for n, contact in enumerate(contacts)])
    Message.objects.bulk_create([
        Message(conversation=conversation, inbox=inbox, direction=Direction.IN, message_id=f"waiting{n}@example.test",
                header_message_id=f"waiting{n}@example.test", from_address=conversation.contact.address,
                subject=conversation.subject, text="Is anybody there?", created_at=conversation.created_at)
        for n, conversation in enumerate(conversations)])
    agents = _agents("queue", agent_count, department, presence=Presence.OFFLINE,
                     capacity=math.ceil(size / agent_count))
    return department, agents


def measure_drain(department, agents: list, size: int) -> dict:
    """Capacity frees (the agents come online), then the drain assigns the queue, in this process."""
    from agents.models import Presence
    from conversations import actions
    from conversations.live import events
    from conversations.models import Conversation
    from conversations.tasks.routing import drain_queue

    for agent in agents:
        actions.set_presence(agent, Presence.ONLINE, by=None)  # each also asks a worker (none yet) to drain
    started = time.perf_counter()
    result = drain_queue(department.pk)  # the task's own function, run here
    elapsed = time.perf_counter() - started
    events.flush(timeout=60)
    assigned = Conversation.objects.filter(department=department, assignee__isnull=False).count()
    if assigned != size or result["assigned"] != size:
        raise SystemExit(f"the drain assigned {result['assigned']} ({assigned} in the database) of {size}")
    return {"queue_drain_conversations": size, "queue_drain_agents": len(agents),
            "queue_drain_s": round(elapsed, 2), "queue_drain_per_s": round(size / elapsed, 1)}


def session_cookies(users: list) -> list[str]:
    from django.conf import settings
    from django.test import Client

    cookies = []
    for user in users:
        client = Client()
        client.force_login(user)
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}")
    return cookies


def probe_email(n: int, inbox_address: str) -> tuple[str, bytes]:
    message_id = f"probe-{n}-{uuid.uuid4().hex}@example.test"
    raw = (f"From: Customer {n} <probe{n}@example.test>\r\nTo: {inbox_address}\r\nSubject: Probe {n}\r\n"
           f"Date: {format_datetime(dt.datetime.now(dt.UTC))}\r\nMessage-ID: <{message_id}>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           f"Hello, this is probe {n}. My printer is on fire.\r\n")
    return message_id, raw.encode()


def append_now(server, account: tuple[str, str], raw: bytes) -> float:
    """APPEND one message; the moment the server said OK (the message is in the mailbox)."""
    import imaplib

    with server.client(*account) as imap:
        date = imaplib.Time2Internaldate(dt.datetime.now(dt.UTC))
        typ, data = imap.append("INBOX", None, date, raw)
        appended = time.time()
        assert typ == "OK", data
    return appended


def conversations_of(message_ids: list[str]) -> dict[str, str]:
    """Message-ID → the public id of the conversation ingest filed it in."""
    from conversations.models import Message

    rows = Message.objects.filter(header_message_id__in=message_ids).values_list("header_message_id",
                                                                                  "conversation__public_id")
    return {message_id: str(public_id) for message_id, public_id in rows}


def wait_first_poll(inbox_id: int, timeout: float = 60) -> None:
    from django.db import close_old_connections

    from inboxes.models import Inbox

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inbox = Inbox.objects.get(pk=inbox_id)
        if inbox.last_successful_poll_at is not None:
            return
        if inbox.last_error:
            raise SystemExit(f"polling the inbox failed: {inbox.last_error}")
        time.sleep(0.2)
        close_old_connections()
    raise SystemExit(f"the inbox was not polled within {timeout} s (is beat running?)")


# ---------------------------------------------------------------------------
# The console sockets: a small RFC 6455 client on asyncio
# ---------------------------------------------------------------------------
def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients mask theirs)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = os.urandom(4)
    stream = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big") if size else b""
    return header + key + masked


class ConsoleSocket:
    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index, self.reader, self.writer = index, reader, writer
        self.closed: str | None = None

    @classmethod
    async def open(cls, index: int, port: int, cookie: str) -> tuple[ConsoleSocket, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws/console/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if not status.startswith("HTTP/1.1 101"):
            raise SystemExit(f"socket {index}: the server refused the websocket: {status}")
        socket = cls(index, reader, writer)
        opcode, payload = await asyncio.wait_for(socket.frame(), 30)
        hello = json.loads(payload) if opcode == _TEXT else {}
        if hello.get("event") != "hello":
            raise SystemExit(f"socket {index}: expected hello, got {opcode} {payload[:200]!r}")
        # As the console does: resume from the numbers hello gave (nothing missed yet).
        socket.send_json({"type": "resume", "seq": hello["payload"].get("seq") or {}})
        return socket, hello

    async def frame(self) -> tuple[int, bytes]:
        """The next whole message from the server (server frames are not masked)."""
        parts, first = [], None
        while True:
            head = await self.reader.readexactly(2)
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)
            if opcode >= 0x8:  # control frames may come between fragments
                return opcode, payload
            first = opcode if first is None else first
            parts.append(payload)
            if head[0] & 0x80:
                return first, b"".join(parts)

    def send_json(self, message: dict) -> None:
        self.writer.write(_masked(_TEXT, json.dumps(message).encode()))

    def close(self) -> None:
        if self.closed is None:
            self.closed = "closed by us"
            self.writer.write(_masked(_CLOSE, struct.pack("!H", 1000)))
        self.writer.close()


class Console:
    """Every socket, and when each event reached each of them: (event, id) → {socket: time}."""

    def __init__(self) -> None:
        self.sockets: list[ConsoleSocket] = []
        self.arrivals: dict[tuple[str, str], dict[int, float]] = collections.defaultdict(dict)
        self.created: list[str] = []  # conversation.created ids, in order of first arrival
        self.tasks: list[asyncio.Task] = []
        self.retries = 0  # connections that failed and were opened again

    async def connect(self, port: int, cookies: list[str], parallel: int = 20) -> None:
        gate = asyncio.Semaphore(parallel)

        async def one(index: int, cookie: str) -> ConsoleSocket:
            async with gate:
                for attempt in range(3):  # as the console does, reconnect when a connection is refused
                    try:
                        socket, _hello = await ConsoleSocket.open(index, port, cookie)
                        # Read (and answer the server's pings) from now on, not once every socket is open.
                        self.tasks.append(asyncio.ensure_future(self._listen(socket)))
                        self.tasks.append(asyncio.ensure_future(self._heartbeat(socket)))
                        return socket
                    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                        if attempt == 2:
                            raise
                        self.retries += 1
                        await asyncio.sleep(1)
                raise AssertionError("unreachable")

        self.sockets = list(await asyncio.gather(*(one(i, c) for i, c in enumerate(cookies))))

    async def _listen(self, socket: ConsoleSocket) -> None:
        try:
            while True:
                opcode, payload = await socket.frame()
                received = time.time()
                if opcode == _TEXT:
                    message = json.loads(payload)
                    event, body = message.get("event"), message.get("payload") or {}
                    key = body.get("message") if event == "message.created" else body.get("conversation")
                    if key:
                        seen = self.arrivals[(event, key)]
                        seen.setdefault(socket.index, received)
                        if event == "conversation.created" and len(seen) == 1:
                            self.created.append(key)
                elif opcode == _PING:
                    socket.writer.write(_masked(_PONG, payload))
                elif opcode == _CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    socket.closed = socket.closed or f"closed by the server ({code})"
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            socket.closed = socket.closed or f"dropped ({error.__class__.__name__})"

    async def _heartbeat(self, socket: ConsoleSocket) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_SECONDS))
        while socket.closed is None:
            socket.send_json({"type": "heartbeat"})
            await asyncio.sleep(HEARTBEAT_SECONDS)

    @property
    def open_count(self) -> int:
        return sum(1 for socket in self.sockets if socket.closed is None)

    async def wait_all(self, key: tuple[str, str], timeout: float) -> dict[int, float]:
        deadline = time.monotonic() + timeout
        while len(self.arrivals.get(key, ())) < self.open_count and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.arrivals.get(key, {})

    async def close(self) -> None:
        for socket in self.sockets:
            socket.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ---------------------------------------------------------------------------
# The measurements with sockets
# ---------------------------------------------------------------------------
async def measure_fanout(console: Console, conversation_id: int, agent_id: int, events: int,
                         web_pid: int) -> dict:
    from config.celery import app

    latencies, missed, counted = [], 0, 0
    cpu_before = wall_before = ours_before = 0.0
    for n in range(WARMUP_EVENTS + events):
        if n == WARMUP_EVENTS:
            cpu_before, wall_before, ours_before = cpu_seconds(web_pid), time.monotonic(), time.process_time()
        sent = await asyncio.to_thread(app.send_task, NOTE_TASK, args=[conversation_id, agent_id, n])
        done = await asyncio.to_thread(sent.get, timeout=60)
        arrived = await console.wait_all(("message.created", done["message"]), timeout=10)
        if n >= WARMUP_EVENTS:
            counted += 1
            latencies.extend((received - done["committed"]) * 1000 for received in arrived.values())
            missed += len(console.sockets) - len(arrived)
        await asyncio.sleep(0.2)  # one event at a time: the next after this one reached everyone
    wall = time.monotonic() - wall_before
    busy, ours = (cpu_seconds(web_pid) - cpu_before) / wall, (time.process_time() - ours_before) / wall
    if not latencies:
        raise SystemExit("no socket received any note's message.created")
    return {"events": counted, "fanout_p50_ms": round(statistics.median(latencies), 1),
            "fanout_p99_ms": round(percentile(latencies, 99), 1), "fanout_max_ms": round(max(latencies), 1),
            "fanout_missed": missed, "web_cpu_fanout_pct": round(busy * 100),
            "clients_cpu_fanout_pct": round(ours * 100)}


async def measure_email(console: Console, server, account: tuple[str, str], inbox, emails: int,
                        poll_interval: int, rng: random.Random) -> dict:
    appended: dict[str, float] = {}
    lost = 0
    for n in range(1 + emails):  # the first warms the worker up (its parse helper starts on first use)
        message_id, raw = probe_email(n, inbox.address)
        known = len(console.created)
        stamp = await asyncio.to_thread(append_now, server, account, raw)
        deadline = time.monotonic() + 3 * poll_interval + 30
        while time.monotonic() < deadline:
            new = console.created[known:]
            if new and len(console.arrivals[("conversation.created", new[0])]) >= console.open_count:
                break
            await asyncio.sleep(0.01)
        else:
            lost += 1
        if n >= 1:
            appended[message_id] = stamp
            print(f"  email {n}: {(time.time() - stamp) * 1000:7.0f} ms from the APPEND to the last socket",
                  flush=True)
        await asyncio.sleep(rng.uniform(0, poll_interval + EMAIL_SLACK_S))
    conversations = await asyncio.to_thread(conversations_of, list(appended))
    latencies, firsts, missed = [], [], 0
    for message_id, stamp in appended.items():
        arrived = console.arrivals.get(("conversation.created", conversations.get(message_id, "")), {})
        missed += len(console.sockets) - len(arrived)
        times = [(received - stamp) * 1000 for received in arrived.values()]
        latencies.extend(times)
        if times:
            firsts.append(min(times))
    if not latencies:
        raise SystemExit("no socket received any email's conversation.created")
    return {"emails": len(appended), "email_to_socket_p50_ms": round(statistics.median(latencies)),
            "email_to_socket_p99_ms": round(percentile(latencies, 99)),
            "email_to_socket_max_ms": round(max(latencies)),
            "email_to_first_socket_p50_ms": round(statistics.median(firsts)),
            "email_to_first_socket_max_ms": round(max(firsts)), "email_missed": missed, "emails_lost": lost}


async def live(args, port: int, cookies: list[str], world: dict, server, account, web_pid: int,
               workdir: Path) -> dict:
    from django.conf import settings

    console = Console()
    started = time.monotonic()
    await console.connect(port, cookies)
    print(f"{len(console.sockets)} sockets open in {time.monotonic() - started:.1f} s "
          f"({console.retries} connections tried again)", flush=True)
    try:
        await asyncio.sleep(3)  # the connections' own work settles
        cpu, wall = cpu_seconds(web_pid), time.monotonic()
        await asyncio.sleep(4)
        idle = (cpu_seconds(web_pid) - cpu) / (time.monotonic() - wall)
        print(f"the web server with {len(console.sockets)} idle sockets: {idle:.0%} of a core (each socket "
              f"rechecks its permissions and renews its presence every {settings.LIVE_RECHECK_SECONDS} s)", flush=True)
        print(f"fan-out: {args.events} notes, one at a time, to {len(console.sockets)} sockets ...", flush=True)
        fanout = await measure_fanout(console, world["conversation"].pk, world["agents"][0].pk, args.events,
                                      web_pid)
        print(f"email to socket: {args.emails} emails, poll interval {args.poll_interval} s, "
              f"beat tick {args.poll_tick} s ...", flush=True)
        beat = await asyncio.to_thread(start_celery, "beat", workdir, None)
        try:
            await asyncio.to_thread(wait_first_poll, world["inbox"].pk)
            email_started = time.time()
            email = await measure_email(console, server, account, world["inbox"], args.emails, args.poll_interval,
                                        random.Random(args.seed))
        finally:
            await asyncio.to_thread(stop_process_group, beat)
        starts = [t for t in poll_starts(workdir) if t >= email_started]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        email["poll_period_median_s"] = round(statistics.median(gaps), 2) if gaps else None
        email["poll_period_max_s"] = round(max(gaps), 2) if gaps else None
        closed = collections.Counter(s.closed for s in console.sockets if s.closed is not None)
        return {"sockets": len(console.sockets), "sockets_closed": sum(closed.values()),
                "connect_retries": console.retries,
                "web_cpu_idle_pct": round(idle * 100), **fanout, **email, "_closed": dict(closed)}
    finally:
        await console.close()


# ---------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500, help="console sockets, one agent each (default 500)")
    parser.add_argument("--events", type=int, default=50, help="notes fanned out, one at a time (default 50)")
    parser.add_argument("--emails", type=int, default=10, help="emails measured from Dovecot to socket (default 10)")
    parser.add_argument("--poll-interval", type=int, default=5, help="the inbox's poll interval, s (default 5)")
    parser.add_argument("--poll-tick", type=int, default=1, help="beat's POLL_TICK_SECONDS (default 1)")
    parser.add_argument("--queue", type=int, default=1000, help="conversations waiting in the queue (default 1000)")
    parser.add_argument("--queue-agents", type=int, default=20, help="agents who come online for them (default 20)")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * args.sockets + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.sockets + 256)), hard))

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-fanout-bench-"))
    database_url, drop_database = throwaway_database(workdir)
    os.environ["DATABASE_URL"] = database_url
    _environment(workdir, args.poll_tick)
    import django

    django.setup()
    import api  # benchmarks/api.py: the web server as `make run` starts it
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from config import embedded_redis
    from config.celery import app
    from tests.servers.dovecot import DovecotServer

    print(f"load average at the start: {load_average()}", flush=True)
    redis_process = embedded_redis.start(settings.REDIS_SOCKET, persist=False) if settings.REDIS_EMBEDDED else None
    server = web = worker = None
    try:
        call_command("migrate", verbosity=0)
        database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]

        department, queue_agents = queue_rows(args.queue, args.queue_agents)
        drain = measure_drain(department, queue_agents, args.queue)
        print(f"queue drain: {args.queue} conversations to {args.queue_agents} agents in "
              f"{drain['queue_drain_s']} s: {drain['queue_drain_per_s']} conversations/s", flush=True)
        app.control.purge()  # the drains the agents' coming online asked for: done already

        server = DovecotServer(accounts=1).start()
        account = server.account_list()[0]
        world = fanout_rows(server, account, args.sockets, args.poll_interval)
        cookies = session_cookies([agent.user for agent in world["agents"]])
        connections.close_all()
        web, port = api.start_web(workdir)
        worker = start_celery("worker", workdir, b" ready.")
        report = asyncio.run(live(args, port, cookies, world, server, account, web.pid, workdir))
    except BaseException:
        for name in ("web.log", "worker.log", "beat.log"):
            if (workdir / name).exists():
                print(f"--- the end of {name}:\n{(workdir / name).read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stop_process_group(worker)
        if web is not None:
            stop_process_group(web)
        if server is not None:
            server.stop()
        embedded_redis.stop(redis_process)
        drop_database()
        shutil.rmtree(workdir, ignore_errors=True)

    closed = report.pop("_closed")
    email_target_ms = round((args.poll_interval + EMAIL_SLACK_S) * 1000)
    fanout_ok = report["fanout_p99_ms"] < FANOUT_P99_TARGET_MS and report["fanout_missed"] == 0
    email_ok = (report["email_to_socket_p99_ms"] < email_target_ms and report["email_missed"] == 0
                and report["emails_lost"] == 0)
    print(f"fan-out to {report['sockets']} sockets over {report['events']} events: p50 {report['fanout_p50_ms']} ms, "
          f"p99 {report['fanout_p99_ms']} ms, max {report['fanout_max_ms']} ms, {report['fanout_missed']} missed "
          f"({'meets' if fanout_ok else 'misses'} the p99 target of {FANOUT_P99_TARGET_MS} ms); the web server busy "
          f"{report['web_cpu_fanout_pct']}% of a core meanwhile ({report['web_cpu_idle_pct']}% when idle), "
          f"this process (the clients) {report['clients_cpu_fanout_pct']}%")
    print(f"email to socket over {report['emails']} emails x {report['sockets']} sockets: p50 "
          f"{report['email_to_socket_p50_ms']} ms, p99 {report['email_to_socket_p99_ms']} ms, max "
          f"{report['email_to_socket_max_ms']} ms; to the first socket p50 "
          f"{report['email_to_first_socket_p50_ms']} ms, max {report['email_to_first_socket_max_ms']} ms "
          f"({'meets' if email_ok else 'misses'} the p99 target of "
          f"{email_target_ms} ms: poll interval {args.poll_interval} s + {EMAIL_SLACK_S:g} s)")
    print(f"polls during the email part: every {report['poll_period_median_s']} s (median), "
          f"{report['poll_period_max_s']} s at most, with a {args.poll_interval} s interval and a {args.poll_tick} s "
          f"beat tick")
    print(f"queue drain: {args.queue} conversations to {args.queue_agents} agents at {drain['queue_drain_per_s']} "
          f"conversations/s")
    if closed:
        print(f"sockets closed before the end: {closed}")
    print(f"load average at the end: {load_average()}")
    print(json.dumps({
        "sockets": report["sockets"], "database": database, **{k: v for k, v in report.items() if k != "sockets"},
        "poll_interval_s": args.poll_interval, "poll_tick_s": args.poll_tick,
        "live_recheck_s": int(settings.LIVE_RECHECK_SECONDS), **drain,
        "fanout_p99_target_ms": FANOUT_P99_TARGET_MS, "fanout_p99_ok": fanout_ok,
        "email_to_socket_p99_target_ms": email_target_ms, "email_to_socket_p99_ok": email_ok,
    }))


if __name__ == "__main__":
    main()
