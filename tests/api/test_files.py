"""Attachments and raw sources download; nothing the customer sent renders in the agent's browser."""

from __future__ import annotations

import pytest

from tests import factories
from tests.api.conftest import World

pytestmark = pytest.mark.django_db


def test_an_attachment_downloads_never_rendered(world: World):
    attachment = factories.AttachmentFactory(message=world.incoming, content_type="text/html", filename="page.html")
    response = world.client("alice").get(f"/api/attachments/{attachment.public_id}/?inline=1")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="page.html"' in response["Content-Disposition"]
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == b"attachment bytes"


@pytest.mark.parametrize(("content_type", "inline"), [("image/png", True), ("image/svg+xml", False)])
def test_only_raster_images_may_show_inline(world: World, content_type, inline):
    attachment = factories.AttachmentFactory(message=world.incoming, content_type=content_type, filename="x")
    response = world.client("alice").get(f"/api/attachments/{attachment.public_id}/?inline=1")
    assert response["Content-Disposition"].startswith("inline" if inline else "attachment")
    assert "sandbox" in response["Content-Security-Policy"]


def test_the_raw_source_downloads_as_message_rfc822(world: World):
    response = world.client("maria").get(f"/api/messages/{world.incoming.public_id}/raw/")

    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"].startswith("attachment;")
    assert b"".join(response.streaming_content).startswith(b"From: ann@example.test")
