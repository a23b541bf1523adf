"""Benchmark: the agent console in a real browser, on the API benchmark's data set on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/console.py

The rows come from benchmarks/api.py's generator (COPY into a throwaway database). The real ASGI
server (uvicorn, the Procfile's web process) serves Debian's chromium, driven by Playwright.
Measured in the page, from the browser's own clock:

- list ready: from navigation start to DOMContentLoaded of "My departments" (the page's deferred
  scripts have run by then: the list is rendered, the keys and htmx answer), over fresh loads;
- conversation open: from the click on a conversation with 50 messages in the list to the
  frame after htmx settled its thread in the pane;
- first load: bytes of HTML, CSS and JavaScript transferred for the first load with an empty cache.

p50/p95 over 50 tries each. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import api  # noqa: E402  (benchmarks/api.py: the data set and the server)
from common import throwaway_database  # noqa: E402

TARGETS = {"list_ready_p95_ms": 1000, "conversation_open_p95_ms": 500, "first_load_kb": 300}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Marks the moment after htmx settled the conversation pane, and the frame after it painted.
OPEN_PROBE = """() => {
  document.body.addEventListener("htmx:afterSettle", (event) => {
    if (event.detail.target && event.detail.target.id === "conversation") {
      requestAnimationFrame(() => { window.__opened = performance.now(); });
    }
  });
}"""


def session_cookie(user, port: int) -> dict:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": f"http://127.0.0.1:{port}"}


def first_load(browser, base: str, cookie: dict) -> dict[str, int]:
    """Bytes transferred by type for one load with an empty cache (a new context has none)."""
    context = browser.new_context(base_url=base)
    context.add_cookies([cookie])
    page = context.new_page()
    responses = []
    page.on("requestfinished", lambda request: responses.append(request))
    page.goto("/?view=departments", wait_until="load")
    page.wait_for_timeout(300)
    totals: dict[str, int] = {}
    for request in responses:
        sizes = request.sizes()
        kind = request.resource_type
        totals[kind] = totals.get(kind, 0) + sizes["responseBodySize"] + sizes["responseHeadersSize"]
    context.close()
    return totals


def list_ready(browser, base: str, cookie: dict, tries: int) -> list[float]:
    context = browser.new_context(base_url=base)
    context.add_cookies([cookie])
    page = context.new_page()
    times = []
    for _ in range(tries + 3):
        response = page.goto("/?view=departments", wait_until="domcontentloaded")
        if response.status != 200 or not page.locator("#rows a.row").count():
            raise SystemExit(f"the list answered {response.status} without rows:\n{page.content()[:3000]}")
        times.append(page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
    context.close()
    return times[3:]  # the first loads warm the server's connections and the browser's cache


def conversation_open(browser, base: str, cookie: dict, ids: list[str], tries: int) -> tuple[list[float], list[float]]:
    """Click to thread shown, and of that the HTTP request for the pane (the rest is the browser's work)."""
    context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 900})
    context.add_cookies([cookie])
    page = context.new_page()
    page.goto("/?view=departments")
    page.wait_for_selector("#live-state.ok")
    page.evaluate(OPEN_PROBE)
    times, fetches = [], []
    for n in range(tries + 3):
        public_id = ids[n % len(ids)]
        started = page.evaluate("""(id) => {
            window.__opened = null;
            const row = document.querySelector(`#rows a.row[data-conversation="${id}"]`);
            const started = performance.now();
            row.click();
            return started;
        }""", public_id)
        page.wait_for_function("(id) => window.__opened && document.querySelector('#pane') && "
                               "document.querySelector('#pane').dataset.conversation === id", arg=public_id)
        count = page.locator("#thread .message").count()
        if count < 50:
            raise SystemExit(f"conversation {public_id} showed {count} messages, not 50")
        times.append(page.evaluate("() => window.__opened") - started)
        fetches.append(page.evaluate("""(id) => {
            const entries = performance.getEntriesByType("resource").filter((e) => e.name.includes(`/c/${id}/`));
            performance.clearResourceTimings();
            return entries.length ? entries[entries.length - 1].duration : 0;
        }""", public_id))
    context.close()
    return times[3:], fetches[3:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--tries", type=int, default=50)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("This benchmark runs on PostgreSQL: set DATABASE_URL (a throwaway database is made "
                         "beside it).")

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-console-bench-"))
    database_url, drop_database = throwaway_database(workdir)
    os.environ["DATABASE_URL"] = database_url
    api._environment(workdir)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from playwright.sync_api import sync_playwright

    from config import embedded_redis
    from conversations.models import Conversation

    redis_process = embedded_redis.start(settings.REDIS_SOCKET, persist=False) if settings.REDIS_EMBEDDED else None
    web = None
    try:
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        api.search_indexes("drop")
        world = api.generate(args.conversations, args.messages)
        api.search_indexes("create")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(f"generated {args.conversations:,} conversations and {world['messages']:,} messages in "
              f"{time.monotonic() - started:.0f} s")
        agent = world["agents"][0]
        department = agent.departments.get()
        # The newest conversations are the 50-message ones: the first rows of the agent's list.
        rows = Conversation.objects.filter(department=department, status="open", pk__lte=api.DETAIL_CONVERSATIONS)
        ids = [str(c) for c in rows.order_by("-last_message_at").values_list("public_id", flat=True)[:50]]
        web, port = api.start_web(workdir)
        base = f"http://127.0.0.1:{port}"
        cookie = session_cookie(agent.user, port)
        connection.close()
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop runs in this thread
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            loaded = first_load(browser, base, cookie)
            ready = list_ready(browser, base, cookie, args.tries)
            opened, fetched = conversation_open(browser, base, cookie, ids, args.tries)
            browser.close()
        ready_figures, open_figures = api.percentiles(ready), api.percentiles(opened)
        first_kb = round(sum(loaded.get(kind, 0) for kind in ("document", "stylesheet", "script")) / 1024, 1)
        result = {
            "conversations": args.conversations, "messages": world["messages"], "tries": args.tries,
            "list_ready_p50_ms": ready_figures["p50"], "list_ready_p95_ms": ready_figures["p95"],
            "conversation_open_p50_ms": open_figures["p50"], "conversation_open_p95_ms": open_figures["p95"],
            "conversation_fetch_p50_ms": api.percentiles(fetched)["p50"],
            "conversation_fetch_p95_ms": api.percentiles(fetched)["p95"], "first_load_kb": first_kb,
            "first_load_by_type_kb": {kind: round(size / 1024, 1) for kind, size in sorted(loaded.items())},
        }
        for key, target in TARGETS.items():
            verdict = "meets" if result[key] < target else "misses"
            print(f"{key}: {result[key]} ({verdict} the target of {target})")
        print(json.dumps(result))
    finally:
        if web is not None:
            api.stop(web)
        embedded_redis.stop(redis_process)
        drop_database()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
