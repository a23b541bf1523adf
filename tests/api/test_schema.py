"""The OpenAPI schema validates without a warning, describes every route and its errors, and the
docs page works offline (its assets come from this server)."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.api.test_permissions import CASES

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory, django_db_blocker) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    with django_db_blocker.unblock():
        # Validates against the OpenAPI 3 meta-schema and fails on any generator warning.
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_every_route_and_method_is_in_the_schema(schema):
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    api_cases = [case for case in CASES if not case.route.startswith("api-")]
    assert len(documented) == len(api_cases)


def test_every_operation_describes_its_errors(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert {"401", "404", "429"} <= set(operation["responses"]), (method, path)
            if method != "get":
                assert "400" in operation["responses"], (method, path)


def test_the_reply_documents_the_idempotency_key_and_the_conflict(schema):
    reply = schema["paths"]["/api/conversations/{conversation}/replies/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in reply["parameters"] if p["in"] == "header"}
    assign = schema["paths"]["/api/conversations/{conversation}/assign/"]["post"]
    assert "409" in assign["responses"]


def test_the_docs_page_loads_its_assets_from_this_server():
    client = APIClient()
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    assert not [url for url in assets if re.match(r"(https?:)?//", url)]
    bundle = next(url for url in assets if url.endswith("swagger-ui-bundle.js"))
    assert client.get(bundle).status_code == 200
    assert client.get("/api/schema/").status_code == 200
