"""One small mail backend: SMTP when configured, otherwise a local outbox directory.

The outbox keeps each message as a JSON file (newest last by name) and logs it, so operators and
tests can read what would have been sent.

Mail goes out on a thread of its own, never asyncio's shared pool, where a slow or silent mail
server (smtplib waits up to SMTP_TIMEOUT_S per step) would hold the threads that compress seat
maps and render ``/metrics``. At most MAX_WAITING mails wait for it; past that, and when the mail
server refuses or fails, ``send`` raises ``MailNotSent`` (503), logged once as the mail server's
failure, not as a database's.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

import orjson

from seatlock.errors import Unavailable
from seatlock.settings import Settings

logger = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 15
MAX_WAITING = 32  # mails queued for the mail thread before the next is refused at once


class MailNotSent(Unavailable):
    """The mail server did not take the mail, or too many mails wait for it (503)."""

    def __init__(self) -> None:
        super().__init__("The mail could not be sent right now; please try again")


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str
    kind: str = ""  # e.g. "password_reset", "ticket_confirmation"; for the outbox and tests


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="seatlock-mail")
        self._waiting = 0  # mails handed to the mail thread and not yet done

    async def send(self, mail: Mail) -> None:
        """Send ``mail`` (or write it to the outbox), or raise MailNotSent."""
        if self._waiting >= MAX_WAITING:
            logger.warning(
                "mail to %s (%s) refused: %d mails wait", mail.to, mail.subject, MAX_WAITING
            )
            raise MailNotSent
        deliver = self._send_smtp if self._settings.smtp_host else self._write_outbox
        self._waiting += 1
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, deliver, mail)
            return
        except (OSError, smtplib.SMTPException) as exc:
            failure = exc
        finally:
            self._waiting -= 1
        # Raised here, outside the handler: the failure is not its context, so the 503's log
        # line does not take a refused connection to the mail server for PostgreSQL's.
        logger.warning("mail to %s (%s) not sent: %r", mail.to, mail.subject, failure)
        raise MailNotSent

    def close(self) -> None:
        """Let the mail thread finish its mail; mails not begun are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

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
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT_S) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.send_message(message)
        logger.info("mail to %s (%s) sent via %s", mail.to, mail.subject, s.smtp_host)
