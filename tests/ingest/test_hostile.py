"""The hostile corpus: every malformed or malicious message ends up stored or quarantined, with
nothing written outside the storage root and nothing unstorable in the text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.models import Attachment, Message, QuarantinedMessage
from tests.fixtures.hostile.generate import big_cases

HOSTILE = Path(__file__).resolve().parent.parent / "fixtures" / "hostile"
UNSAFE = re.compile("[\x00\ud800-\udfff]")
STORAGE_KEY = re.compile(r"(raw/\d{4}/\d\d/\d\d/[0-9a-f]{32}\.eml|attachments/\d{4}/\d\d/\d\d/[0-9a-f]{32})")


def corpus() -> dict[str, bytes]:
    files = {path.stem: path.read_bytes() for path in sorted(HOSTILE.glob("*.eml"))}
    return {**files, **big_cases()}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_the_corpus_is_large_enough():
    assert len(list(HOSTILE.glob("*.eml"))) >= 30


def test_every_hostile_message_is_stored_or_quarantined(inbox, media_root, tmp_path):
    outside_before = files_under(tmp_path) - files_under(media_root)

    outcomes = {}
    for uid, (name, raw) in enumerate(corpus().items(), start=1):
        result = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=1, imap_uid=uid)
        outcomes[name] = result
        if result.quarantined is not None:
            assert result.quarantined.error, name
            continue
        message = result.message
        assert message is not None, name
        message.refresh_from_db()
        stored = [message.subject, message.text, message.html, message.from_name, message.from_address,
                  json.dumps([message.to, message.cc, message.reply_to])]
        for value in stored:
            assert not UNSAFE.search(value), name

    assert len(outcomes) == len(corpus())
    assert files_under(tmp_path) - files_under(media_root) == outside_before
    # Every stored file has a key of ours; no sender's name became a path.
    for path in files_under(media_root):
        assert STORAGE_KEY.fullmatch(path.relative_to(media_root).as_posix()), path
    for attachment in Attachment.objects.all():
        assert Path(attachment.file.path).resolve().is_relative_to(media_root.resolve())
        assert not UNSAFE.search(attachment.filename)
    for message in Message.objects.all():
        assert Path(message.raw.path).resolve().is_relative_to(media_root.resolve())


@pytest.fixture
def hostile(inbox):
    """Ingest one corpus message by name and return the stored message."""

    def ingest(name: str) -> Message:
        result = ingest_email(inbox, corpus()[name])
        assert result.message is not None, result.quarantined and result.quarantined.error
        result.message.refresh_from_db()
        return result.message

    return ingest


@pytest.mark.parametrize(
    ("name", "field", "expected"),
    [
        ("iso_2022_jp", "subject", "ご注文について"),
        ("iso_2022_jp", "text", "お世話になっております。注文の件でご連絡しました。"),
        ("koi8_r", "subject", "Вопрос по заказу"),
        ("koi8_r", "text", "Здравствуйте! Где мой заказ?"),
        ("unknown_charset_x_foo", "text", "Grüße aus Köln, Straße"),
        ("windows1252_labelled_utf8", "text", "Café crème, déjà vu \u2014 naïve façade"),
        ("raw_8bit_headers", "subject", "Überweisung für März"),
        ("raw_8bit_headers", "from_name", "Jürgen Müller"),
        ("nul_in_subject_and_body", "subject", "Hello World"),
        ("nul_in_subject_and_body", "text", "Body with a  NUL byte."),
        ("control_chars_in_subject", "subject", "Bell Esc [31m red"),
        ("crlf_injection_subject", "subject", "Hi Bcc: victim@example.net"),
        ("html_only", "text", "Only\xa0HTML & no text part.\nSecond paragraph."),
        ("utf16_body", "text", "Hello in UTF-16 \u2713"),
        ("broken_quoted_printable", "text", "Bad escapes =ZZ =4 and café"),
        ("mixed_line_endings", "text", "Line one\nLine two\nLine three"),
        ("missing_from", "from_address", ""),
    ],
)
def test_what_the_agent_reads(hostile, name, field, expected):
    assert getattr(hostile(name), field).strip() == expected


def test_garbage_base64_is_shown_as_sent_not_as_noise(hostile):
    message = hostile("base64_garbage")

    assert "this is not base64" in message.text
    assert "base64" in message.parse_problems


def test_script_and_handlers_are_gone_from_html(hostile):
    html = hostile("script_in_html").html

    assert "Please" in html
    for dangerous in ("<script", "steal()", "onload", "onerror", "javascript:", "<iframe", "<form", "data:text",
                      "<style", "url("):
        assert dangerous not in html
    assert 'src="https://images.example.com/remote.png"' in html


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("traversal_filename", "../../etc/passwd"),
        ("absolute_filename", "C:\\Windows\\system32\\evil.dll"),
        ("encoded_word_filename", "Приложение.txt"),
    ],
)
def test_hostile_file_names_are_data_only(hostile, media_root, name, filename):
    attachment = hostile(name).attachments.get()

    assert attachment.filename == filename
    assert attachment.file.read() == b"root:x:0:0:pwned"
    assert Path(attachment.file.path).resolve().is_relative_to(media_root.resolve())
    assert Path(attachment.file.name).name not in filename


def test_file_names_lose_control_characters_and_length(hostile):
    cleaned = hostile("nul_crlf_filename").attachments.get().filename
    huge = hostile("huge_filename").attachments.get().filename

    assert not re.search(r"[\x00\r\n]", cleaned)
    assert cleaned.startswith("evil")
    assert len(huge) <= 255
    assert huge.endswith(".pdf")


def test_forwarded_message_and_inline_image_are_attachments(hostile):
    forwarded = hostile("message_rfc822_part").attachments.get()
    image = hostile("inline_image_no_disposition").attachments.get()

    assert forwarded.content_type == "message/rfc822"
    assert b"Subject: The original" in forwarded.file.read()
    assert image.inline
    assert image.content_id == "shot"
    assert image.content_type == "image/gif"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("dsn_bounce", "Delivery or read report"),
        ("auto_reply", "Auto-Submitted: auto-replied"),
        ("mailing_list", "Precedence: list"),
    ],
)
def test_automatic_mail_is_flagged(hostile, name, reason):
    message = hostile(name)

    assert message.is_automatic
    assert message.automatic_reason.startswith(reason)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("header_line_1mb", "The Subject header was 1,048,"),
        ("nested_50_deep", "nested deeper than 32 levels"),
        ("nested_2000_deep", "nested too deeply to read"),
        ("parts_1200", "more than 500 MIME parts"),
        ("parts_1200", "Text parts after the first 50 are only in the raw message."),
        ("very_long_message_id", "too long"),
        ("broken_boundary", "no readable parts"),
    ],
)
def test_over_limit_content_is_recorded_as_a_problem(hostile, name, problem):
    message = hostile(name)

    assert problem in message.parse_problems


def test_two_messages_sharing_a_message_id_are_both_kept(inbox):
    first = ingest_email(inbox, corpus()["duplicate_message_id_a"])
    second = ingest_email(inbox, corpus()["duplicate_message_id_b"])
    again = ingest_email(inbox, corpus()["duplicate_message_id_b"])

    assert first.message.message_id == "same@example.com"
    assert second.created
    assert second.message.message_id_conflict
    assert second.message.message_id_synthetic
    assert second.message.header_message_id == "same@example.com"
    assert second.message.text.strip() == "A different message, same id."
    assert again.created is False
    assert again.message == second.message
    assert Message.objects.count() == 2
    assert QuarantinedMessage.objects.count() == 0
