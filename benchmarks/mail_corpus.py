"""Realistic mail for the ingest benchmark: mixed sizes, attachments, several charsets, threads.

Deterministic (seeded), so that runs on different databases see the same messages.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

# (charset, sample text) — bodies are written in each charset, headers as RFC 2047 words.
TEXTS = [
    ("utf-8", "Hello, my order has not arrived yet. Could you check? Thanks — Zoë"),
    ("iso-8859-1", "Bonjour, ma commande n'est pas arrivée. Pouvez-vous vérifier ? Merci, René"),
    ("windows-1252", "Grüße, die Rechnung ist falsch - bitte prüfen. „Danke“"),
    ("koi8-r", "Здравствуйте, мой заказ ещё не пришёл. Проверьте, пожалуйста."),
    ("iso-2022-jp", "こんにちは、注文した商品がまだ届いていません。確認してください。"),
    ("shift_jis", "請求書の金額が間違っているようです。よろしくお願いします。"),
    ("gb2312", "您好, 我的订单还没有到, 请帮我查一下。谢谢"),
    ("utf-8", "Olá, o pagamento falhou duas vezes. Podem ajudar? 🙏"),
]
HTML = "<html><body><p>{text}</p><p><b>Order</b> #{n}</p><img src=\"cid:logo{n}@example.com\"></body></html>"


def _body(rng: random.Random, text: str, lines: int) -> str:
    filler = [text] + [f"Line {i}: " + " ".join(rng.choice(text.split()) for _ in range(8)) for i in range(lines)]
    return "\n".join(filler) + "\n"


def _message(rng: random.Random, n: int, parent: EmailMessage | None, now: dt.datetime) -> EmailMessage:
    charset, text = TEXTS[n % len(TEXTS)]
    customer = parent["X-Bench-Customer"] if parent is not None else str(rng.randrange(1_000_000))
    message = EmailMessage()
    message["From"] = f"Customer {customer} <customer{customer}@example.com>"
    message["To"] = "Support <support@switchboard.test>"
    subject = f"Order {n}: {text[:30]}"
    message["Subject"] = f"Re: {parent['Subject']}" if parent is not None else subject
    message["Date"] = format_datetime(now - dt.timedelta(seconds=n))
    message["Message-ID"] = f"<bench-{n}-{rng.randrange(10**9)}@example.com>"
    message["X-Bench-Customer"] = customer
    if parent is not None:
        message["In-Reply-To"] = parent["Message-ID"]
        message["References"] = parent["Message-ID"]
    body = _body(rng, text, rng.choice([2, 5, 20, 60]))
    message.set_content(body, charset=charset if charset != "iso-2022-jp" else "utf-8")
    if charset == "iso-2022-jp":
        # The email package re-encodes set_content; write the ISO-2022-JP bytes ourselves.
        message.set_payload(body.encode("iso-2022-jp"), charset="iso-2022-jp")
        del message["Content-Transfer-Encoding"]
        message["Content-Transfer-Encoding"] = "7bit"
    roll = rng.random()
    if roll < 0.35:
        message.add_alternative(HTML.format(text=text, n=n), subtype="html")
    if 0.25 < roll < 0.45:
        size = rng.choice([8_000, 30_000, 80_000])
        message.add_attachment(rng.randbytes(size), maintype="application", subtype="pdf",
                               filename=f"invoice-{n}.pdf")
    elif 0.45 <= roll < 0.5:
        message.add_attachment(rng.randbytes(200_000), maintype="image", subtype="png", filename=f"photo-{n}.png")
    return message


def build_corpus(count: int, seed: int = 5000) -> Iterator[bytes]:
    """`count` messages; about a third are replies to earlier ones (threads of 2-4 messages)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    open_threads: list[EmailMessage] = []
    for n in range(count):
        parent = rng.choice(open_threads) if open_threads and rng.random() < 0.35 else None
        message = _message(rng, n, parent, now)
        if parent is not None:
            open_threads.remove(parent)
        if parent is None or rng.random() < 0.5:
            open_threads.append(message)
        if len(open_threads) > 200:
            open_threads.pop(0)
        yield message.as_bytes(policy=SMTP)


def big_attachment_message(size: int, seed: int = 25) -> bytes:
    rng = random.Random(seed)
    message = EmailMessage()
    message["From"] = "Customer <big@example.com>"
    message["To"] = "support@switchboard.test"
    message["Subject"] = f"A {size // (1024 * 1024)} MB attachment"
    message["Message-ID"] = "<bench-big-attachment@example.com>"
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message.set_content("The file you asked for is attached.")
    message.add_attachment(rng.randbytes(size), maintype="application", subtype="octet-stream",
                           filename="big.bin")
    return message.as_bytes(policy=SMTP)
