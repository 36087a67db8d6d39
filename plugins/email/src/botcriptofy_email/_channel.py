"""The ``email`` notification channel: one multipart (text + HTML) message per person, over aiosmtplib."""

from __future__ import annotations

import fnmatch
import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from botcriptofy import Delivery, DeliveryRefused, Kernel

from ._settings import EmailSettings

PLUGIN = "email"


def settings_of(kernel: Kernel) -> EmailSettings:
    settings = kernel.settings_for(PLUGIN)
    assert isinstance(settings, EmailSettings)
    return settings


def unsubscribable(delivery: Delivery, settings: EmailSettings) -> bool:
    category = delivery.notification.category
    return delivery.notification.severity != "critical" and not any(fnmatch.fnmatchcase(category, p) for p in settings.always_send)


def compose(delivery: Delivery, settings: EmailSettings) -> EmailMessage:
    assert delivery.recipient is not None and delivery.recipient.email
    message = EmailMessage()
    message["Subject"] = delivery.subject or delivery.notification.category
    message["From"] = settings.from_address
    message["To"] = delivery.recipient.email
    domain = parseaddr(settings.from_address)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(idstring=f"n{delivery.id}", domain=domain)
    message["Date"] = formatdate(localtime=False)
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    if settings.unsubscribe_url and unsubscribable(delivery, settings):
        message["List-Unsubscribe"] = f"<{settings.unsubscribe_url}>"
        if settings.unsubscribe_url.startswith("https://"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(delivery.text)
    lang = "pt-BR" if delivery.locale == "pt-BR" else "en"
    body = delivery.html.replace("\n", "<br>\n")
    page = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(delivery.subject)}</title></head>'
        f"<body><h1>{html.escape(delivery.subject)}</h1><p>{body}</p></body></html>"
    )
    message.add_alternative(page, subtype="html")
    return message


class EmailChannel:
    name = "email"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def route(self, address: str) -> str | None:
        return "person"

    async def send(self, delivery: Delivery) -> None:
        settings = settings_of(self.kernel.current())
        if delivery.recipient is None or not delivery.recipient.email:
            raise DeliveryRefused("the person has no e-mail address")
        await aiosmtplib.send(
            compose(delivery, settings),
            hostname=settings.host,
            port=settings.port,
            username=settings.username or None,
            password=settings.password or None,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            validate_certs=settings.verify_certificates,
            timeout=settings.timeout,
        )
