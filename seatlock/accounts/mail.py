"""One small mail backend: SMTP when configured, otherwise a local outbox directory.

The outbox keeps each message as a JSON file (newest last by name) and logs it, so operators and
tests can read what would have been sent.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
import uuid
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

import orjson

from seatlock.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str
    kind: str = ""  # e.g. "password_reset", "ticket_confirmation"; for the outbox and tests


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, mail: Mail) -> None:
        if self._settings.smtp_host:
            await asyncio.to_thread(self._send_smtp, mail)
        else:
            await asyncio.to_thread(self._write_outbox, mail)

    def outbox(self) -> list[Mail]:
        """Messages in the local outbox, oldest first."""
        directory = self._settings.outbox_dir
        if not directory.exists():
            return []
        return [Mail(**orjson.loads(p.read_bytes())) for p in sorted(directory.glob("*.json"))]

    def _write_outbox(self, mail: Mail) -> None:
        directory: Path = self._settings.outbox_dir
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        partial = directory / f".{name}.partial"  # readers glob *.json: never see half a file
        partial.write_bytes(orjson.dumps(asdict(mail)))
        partial.rename(directory / name)
        logger.info("mail to %s (%s) written to outbox %s", mail.to, mail.subject, name)

    def _send_smtp(self, mail: Mail) -> None:
        s = self._settings
        message = EmailMessage()
        message["From"] = s.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=15) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.send_message(message)
        logger.info("mail to %s (%s) sent via %s", mail.to, mail.subject, s.smtp_host)
