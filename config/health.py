"""GET /healthz: the state of the database and Redis, for load balancers."""

from __future__ import annotations

import time

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.redis import get_redis


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    get_redis().ping()
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict] = {}
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        started = time.monotonic()
        try:
            status = check()
            checks[name] = {"status": status}
        except Exception as exc:
            checks[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        checks[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    healthy = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
