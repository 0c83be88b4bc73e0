"""The mailer against a mail server that accepts connections and never answers: mail waits on a
thread of its own (asyncio's shared pool stays free), at most MAX_WAITING mails wait, and each
ends as MailNotSent (503) once smtplib's timeout passes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seatlock.accounts import mail
from seatlock.accounts.mail import Mail, Mailer, MailNotSent
from seatlock.settings import Settings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never sends a greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


async def test_a_silent_mail_server_holds_only_the_mail_thread(
    silent_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail, "SMTP_TIMEOUT_S", 0.3)
    monkeypatch.setattr(mail, "MAX_WAITING", 3)
    mailer = Mailer(Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=silent_server))
    message = Mail("someone@example.com", "Hello", "Hi", kind="test")
    try:
        sends = [asyncio.create_task(mailer.send(message)) for _ in range(3)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(MailNotSent):  # a fourth waits for none of them: refused at once
            await mailer.send(message)
        assert await asyncio.to_thread(lambda: 42) == 42  # the shared pool is free
        assert time.perf_counter() - started < 0.2
        for send in sends:  # each times out in turn on the one mail thread
            with pytest.raises(MailNotSent):
                await send
    finally:
        mailer.close()
